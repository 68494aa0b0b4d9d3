"""Training on each device: it converges, repeats exactly, saves, autocasts and compiles."""

from __future__ import annotations

import pytest
import torch
from _compare import assert_matches_cpu

import torchlab

WEIGHT, BIAS = 0.7, 0.3


def _line(device, count=200, noise=0.02):
    x = torch.linspace(0, 1, count, device=device).unsqueeze(1)
    return x, WEIGHT * x + BIAS + noise * torch.randn(count, 1, device=device)


def _train(device, steps, seed):
    torchlab.seed_everything(seed, deterministic=True)
    model = torch.nn.Linear(1, 1).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = _line(device)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torchlab.mark_step(device)
        losses.append(loss.detach())
    return model, [loss.item() for loss in losses]


def test_training_loop_converges_to_the_line(device):
    model, losses = _train(device, steps=300, seed=0)
    assert losses[-1] < 0.001 < losses[0]
    assert abs(model.weight.item() - WEIGHT) < 0.02
    assert abs(model.bias.item() - BIAS) < 0.02


def test_seeded_runs_repeat_bit_for_bit(device):
    first, _ = _train(device, steps=20, seed=42)
    second, _ = _train(device, steps=20, seed=42)
    other, _ = _train(device, steps=20, seed=7)
    for a, b, c in zip(first.parameters(), second.parameters(), other.parameters(), strict=True):
        assert torch.equal(a.detach().cpu(), b.detach().cpu())
        assert not torch.equal(a.detach().cpu(), c.detach().cpu())


def test_state_dict_saved_on_the_device_loads_anywhere(device, tmp_path):
    """Saved on the device, loaded onto the CPU, then into a model on the device: the idiom
    that works on every device (XLA cannot load its own tags with map_location=xla)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    model.to(device)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(tensor.device.type == "cpu" for tensor in state.values())
    restored = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    ).to(device)
    restored.load_state_dict(state)
    for name, tensor in restored.state_dict().items():
        assert tensor.device.type == device.type
        assert torch.equal(tensor.cpu(), model.state_dict()[name].cpu()), name
    inputs = torch.randn(4, 8).to(device)
    assert torch.equal(restored(inputs).cpu(), model(inputs).cpu())


def test_autocast_bfloat16(device, backend):
    if not backend.supports_bf16(device):
        pytest.skip(f"{device} has no bfloat16 support")
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32).to(device)
    inputs = torch.randn(16, 64).to(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        low = layer(inputs)
    assert low.dtype == torch.bfloat16
    assert_matches_cpu(low, layer(inputs).float(), torch.bfloat16)


def test_torch_compile_matches_eager(device):
    if device.type == "xla":
        pytest.skip("torch.compile on XLA goes through the openxla backend, not Inductor")
    torch._dynamo.reset()

    def step(x, weight):
        return torch.nn.functional.gelu(x @ weight).sum(dim=1) + x.mean()

    compiled = torch.compile(step, backend="inductor", fullgraph=True)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(32, 16, generator=generator).to(device)
    weight = torch.randn(16, 8, generator=generator).to(device)
    assert_matches_cpu(compiled(x, weight), step(x, weight), torch.float32)


def test_xla_train_step_runs_without_cpu_fallbacks(device):
    if device.type != "xla":
        pytest.skip("XLA only")
    import torch_xla
    import torch_xla.core.xla_model as xm
    import torch_xla.debug.metrics as metrics

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8).to(device), torch.randn(32, 1).to(device)
    metrics.clear_all()
    steps = 3
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch_xla.sync()
    xm.wait_device_ops()  # XLA executes after sync() returns; count once it is done
    fallbacks = [name for name in metrics.counter_names() if name.startswith("aten::")]
    assert not fallbacks, f"ops fell back to the CPU: {fallbacks}"
    assert metrics.metric_data("ExecuteTime")[0] == steps
    # The step's graph is compiled once, then reused: a recompiling step would be slow.
    assert metrics.counter_value("UncachedCompile") == 1
    assert metrics.counter_value("CachedCompile") == steps - 1
    assert torch.isfinite(loss.cpu())
