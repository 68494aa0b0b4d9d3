"""Autograd on each device gives the gradients calculus gives."""

from __future__ import annotations

import torch
from _compare import assert_matches_cpu


def test_elementwise_gradient_matches_analytic(device):
    x_cpu = torch.linspace(-2, 2, 101, dtype=torch.float32)
    x = x_cpu.to(device).requires_grad_()
    (x**3 + torch.sin(x)).sum().backward()
    assert_matches_cpu(x.grad, 3 * x_cpu**2 + torch.cos(x_cpu), torch.float32)


def test_matmul_gradients_match_analytic(device):
    generator = torch.Generator().manual_seed(5)
    weight_cpu = torch.randn(4, 3, generator=generator)
    inputs_cpu = torch.randn(3, 6, generator=generator)
    weight = weight_cpu.to(device).requires_grad_()
    inputs = inputs_cpu.to(device).requires_grad_()
    (weight @ inputs).sum().backward()
    # d/dW sum(W X) = 1 X^T, and d/dX sum(W X) = W^T 1
    assert_matches_cpu(weight.grad, torch.ones(4, 6) @ inputs_cpu.T, torch.float32)
    assert_matches_cpu(inputs.grad, weight_cpu.T @ torch.ones(4, 6), torch.float32)


def test_mse_gradient_matches_analytic(device):
    prediction_cpu = torch.tensor([1.0, 2.0, 3.0, 4.0])
    target_cpu = torch.tensor([1.5, 1.5, 3.5, 2.0])
    prediction = prediction_cpu.to(device).requires_grad_()
    torch.nn.functional.mse_loss(prediction, target_cpu.to(device)).backward()
    # d/dp mean((p - t)^2) = 2 (p - t) / n
    assert_matches_cpu(prediction.grad, 2 * (prediction_cpu - target_cpu) / 4, torch.float32)


def test_no_grad_records_nothing(device):
    x = torch.ones(3, device=device, requires_grad=True)
    with torch.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
