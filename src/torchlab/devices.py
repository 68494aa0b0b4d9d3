"""What the notebooks import: pick the device, keep code device-agnostic, repeat runs exactly."""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends import Backend, DeviceUnavailable, all_backends, for_device, get

if TYPE_CHECKING:
    import torch


def expected() -> str | None:
    """The device kind this environment must use ($TORCHLAB_EXPECT; each lab container sets it)."""
    return os.environ.get("TORCHLAB_EXPECT") or None


def best_device(expect: str | None = None) -> torch.device:
    """The device to run on.

    With `expect` (or $TORCHLAB_EXPECT) it is a device of that kind or DeviceUnavailable,
    whose message says what is wrong and how to fix it: never a silent fall-back to the CPU.
    Without, it is the most capable usable device (cuda, then xla, then cpu).
    """
    kind = expect or expected()
    if kind:
        backend = get(kind)
        status = backend.status()
        if not status.usable:
            raise DeviceUnavailable(backend.name, status.hint)
        return backend.devices()[0]
    for backend in all_backends():
        if backend.status().usable:
            return backend.devices()[0]
    raise RuntimeError("no usable device, not even the CPU")


def data_dir(name: str = "") -> Path:
    """Where labs keep datasets: the lab's data folder, which survives the container
    ($TORCHLAB_DATA/datasets), else ~/.cache/torchlab/datasets. Created when missing."""
    base = os.environ.get("TORCHLAB_DATA")
    folder = (Path(base) if base else Path.home() / ".cache/torchlab") / "datasets" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _device(device: torch.device | str) -> torch.device:
    import torch

    return torch.device(device)


def backend_for(device: torch.device | str) -> Backend:
    """The backend that drives a device (its name is the probe's key for it)."""
    return for_device(_device(device))


def synchronize(device: torch.device | str) -> None:
    """Wait for the device to finish its queued work: call it before reading a timer."""
    device = _device(device)
    backend_for(device).synchronize(device)


def mark_step(device: torch.device | str) -> None:
    """End one training step: XLA runs the step's graph here; elsewhere it does nothing."""
    device = _device(device)
    backend_for(device).mark_step(device)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch on every device, so a run repeats bit for bit.

    `deterministic` also makes torch refuse nondeterministic kernels (on CUDA this needs
    CUBLAS_WORKSPACE_CONFIG, which the images set).
    """
    import torch

    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass
    torch.manual_seed(seed)  # every CUDA device too
    for backend in all_backends():
        backend.seed(seed)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic


def timed(
    work: Callable[[], Any], device: torch.device | str, repeats: int = 5, warmup: int = 1
) -> float:
    """Median wall time of `work()` in seconds, synchronising the device around each run."""
    for _ in range(warmup):
        work()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


__all__ = [
    "DeviceUnavailable",
    "backend_for",
    "best_device",
    "data_dir",
    "expected",
    "mark_step",
    "seed_everything",
    "synchronize",
    "timed",
]
