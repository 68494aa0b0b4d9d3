"""DataLoader workers hand large batches over through /dev/shm: Docker's 64 MB default breaks it."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from torchlab.backends import get

BATCH_BYTES = 256 * 2**20
BATCHES = 4
# On a small /dev/shm the loader can wait for its workers forever; fail instead of hanging.
WAIT_FOR_A_BATCH_S = 60


class LargeBatches(Dataset):
    def __len__(self) -> int:
        return BATCHES

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.full((BATCH_BYTES // 4,), float(index))


def test_two_workers_pass_256_megabyte_batches(device):
    loader = DataLoader(
        LargeBatches(),
        batch_size=None,
        num_workers=2,
        pin_memory=device.type == "cuda",
        timeout=WAIT_FOR_A_BATCH_S,
    )
    seen = []
    try:
        for batch in loader:
            assert batch.numel() * batch.element_size() >= BATCH_BYTES
            on_device = batch.to(device)
            seen.append(on_device[:: 2**20].sum().item() / (BATCH_BYTES // 4 // 2**20))
    except RuntimeError as error:
        pytest.fail(str(get("cpu").explain(error) or error), pytrace=False)
    assert seen == [float(index) for index in range(BATCHES)]
