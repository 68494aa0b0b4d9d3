"""Comparing a device's results with the CPU's."""

from __future__ import annotations

import torch

# Relative (Frobenius) error a result may show against a float64 CPU reference, per dtype:
# about a few units of the dtype's rounding error for sums of a few hundred terms.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2,
}


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    result, reference = result.detach().cpu().double(), reference.detach().cpu().double()
    return ((result - reference).norm() / reference.norm()).item()


def assert_matches_cpu(result: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> None:
    error = relative_error(result, reference)
    assert error < TOLERANCE[dtype], f"{dtype} result is off by {error:.2e} (relative)"
