"""Tensors on each device give the CPU's answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _compare import TOLERANCE, assert_matches_cpu, relative_error

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
ALL_DTYPES = [*FLOAT_DTYPES, torch.int8, torch.int32, torch.int64, torch.bool]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_creation_keeps_shape_dtype_and_device(device, dtype):
    tensors = [
        torch.zeros(2, 3, dtype=dtype, device=device),
        torch.ones(2, 3, dtype=dtype, device=device),
        torch.full((2, 3), 1, dtype=dtype, device=device),
        torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=dtype, device=device),
    ]
    tensors.append(torch.zeros_like(tensors[-1]))
    for tensor in tensors:
        assert tensor.shape == (2, 3)
        assert tensor.dtype == dtype
        assert tensor.device.type == device.type
    assert tensors[1].sum().item() == 6


def test_arange_and_random_creation(device):
    assert torch.arange(0, 10, 2, device=device).cpu().tolist() == [0, 2, 4, 6, 8]
    torch.manual_seed(0)
    uniform = torch.rand(1000, device=device)
    assert uniform.min().item() >= 0 and uniform.max().item() < 1
    normal = torch.randn(10_000, device=device)
    assert abs(normal.mean().item()) < 0.05 and abs(normal.std().item() - 1) < 0.05


def test_elementwise_and_broadcasting_match_cpu(device):
    generator = torch.Generator().manual_seed(1)
    matrix = torch.randn(64, 32, generator=generator)
    row = torch.randn(32, generator=generator)
    column = torch.randn(64, 1, generator=generator)
    expected = (matrix + row) * column - matrix.abs().sqrt() / (1 + row.exp())
    on_device = (matrix.to(device) + row.to(device)) * column.to(device) - matrix.to(
        device
    ).abs().sqrt() / (1 + row.to(device).exp())
    assert on_device.shape == (64, 32)
    assert_matches_cpu(on_device, expected, torch.float32)


def test_broadcasting_rejects_incompatible_shapes(device):
    with pytest.raises(RuntimeError):
        torch.ones(3, 4, device=device) + torch.ones(5, device=device)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_matmul_matches_float64_cpu_reference(device, backend, dtype):
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(128, 256, generator=generator).to(dtype)
    b = torch.randn(256, 64, generator=generator).to(dtype)
    reference = a.double() @ b.double()
    result = a.to(device) @ b.to(device)
    assert result.shape == (128, 64) and result.dtype == dtype
    tolerance = TOLERANCE[dtype]
    if dtype == torch.float32:
        tolerance = max(tolerance, backend.float32_matmul_tolerance)
    error = relative_error(result, reference)
    assert error < tolerance, f"{dtype} matmul is off by {error:.2e} (relative)"


def test_matmul_shape_rule(device):
    assert (torch.ones(2, 3, device=device) @ torch.ones(3, 5, device=device)).shape == (2, 5)
    with pytest.raises(RuntimeError):
        torch.ones(2, 3, device=device) @ torch.ones(2, 3, device=device)


def test_reductions_match_cpu(device):
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(50, 40, generator=generator)
    on_device = values.to(device)
    assert_matches_cpu(on_device.sum(dim=0), values.sum(dim=0), torch.float32)
    assert_matches_cpu(on_device.mean(dim=1), values.mean(dim=1), torch.float32)
    assert_matches_cpu(on_device.std(dim=0), values.std(dim=0), torch.float32)
    assert on_device.max().item() == values.max().item()
    assert on_device.min().item() == values.min().item()
    assert on_device.argmax().item() == values.argmax().item()
    assert on_device.argmin(dim=1).cpu().tolist() == values.argmin(dim=1).tolist()


def test_reshape_view_permute_stack_and_indexing_match_cpu(device):
    values = torch.arange(24)
    on_device = values.to(device)
    checks = [
        (lambda t: t.reshape(2, 3, 4)),
        (lambda t: t.view(4, 6).t().contiguous()),
        (lambda t: t.reshape(2, 3, 4).permute(2, 0, 1)),
        (lambda t: torch.stack([t, t * 2], dim=1)),
        (lambda t: torch.cat([t, t]).reshape(6, 8)[1:4, ::3]),
        (lambda t: t.reshape(1, 24, 1).squeeze()),
        (lambda t: t.unsqueeze(0).unsqueeze(-1).shape),
        (lambda t: t.reshape(4, 6)[t.reshape(4, 6) % 5 == 0]),
        (lambda t: t.reshape(4, 6)[[0, 3], [1, 5]]),
    ]
    for check in checks:
        result, expected = check(on_device), check(values)
        if isinstance(expected, torch.Size):
            assert result == expected
        else:
            assert result.shape == expected.shape and torch.equal(result.cpu(), expected)


def test_numpy_interop(device):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    shared = torch.from_numpy(array)
    array[0, 0] = 100  # from_numpy shares memory with the array on the CPU
    assert shared[0, 0].item() == 100
    on_device = torch.from_numpy(array).to(device) * 2
    back = on_device.cpu().numpy()
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, array * 2)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_round_trip_to_device_and_back_is_exact(device, dtype):
    generator = torch.Generator().manual_seed(4)
    values = (torch.randn(257, generator=generator) * 50).to(dtype)
    assert torch.equal(values.to(device).cpu(), values)


def test_tensors_move_between_devices_of_one_kind(device):
    import torchlab.backends as backends

    others = [d for d in backends.for_device(device).devices() if d != device]
    if not others:
        pytest.skip(f"only one {device.type} device here")
    values = torch.arange(10.0, device=device)
    assert torch.equal(values.to(others[0]).cpu(), values.cpu())
