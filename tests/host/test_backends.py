"""The backend registry and the device-choice rules, without an accelerator."""

from __future__ import annotations

import pytest
import torch

import torchlab
from torchlab.backends import DeviceUnavailable, all_backends, cuda, for_device, get


def test_every_device_kind_has_one_backend_module():
    assert [backend.name for backend in all_backends()] == ["cuda", "xla", "cpu"]
    assert for_device(torch.device("cpu")).name == "cpu"
    with pytest.raises(KeyError, match="unknown device kind 'rocm'"):
        get("rocm")


@pytest.mark.parametrize(
    ("capability", "served_by"),
    [
        ((8, 0), "sm_80"),  # A100: its own cubins
        ((8, 6), "sm_80"),  # RTX 3090: sm_80 code runs on sm_86
        ((9, 0), "sm_90"),  # H100
        ((12, 0), "sm_120"),
        ((6, 1), None),  # GTX 1080: nothing in the list runs on it
        ((10, 3), "sm_100"),
    ],
)
def test_which_arch_serves_a_gpu(capability, served_by):
    arches = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    assert cuda.serving_arch(capability, arches) == served_by


def test_ptx_serves_newer_gpus_and_arch_specific_code_only_its_own():
    assert cuda.serving_arch((12, 0), ["sm_90", "compute_90"]) == "compute_90"
    assert cuda.serving_arch((9, 0), ["sm_90a"]) == "sm_90a"
    assert cuda.serving_arch((10, 0), ["sm_90a"]) is None


def test_best_device_without_expectation_is_the_best_usable(monkeypatch):
    monkeypatch.delenv("TORCHLAB_EXPECT", raising=False)
    assert torchlab.best_device().type == "cpu"  # the host has the cpu build


def test_best_device_never_falls_back_when_a_kind_is_expected(monkeypatch):
    monkeypatch.setenv("TORCHLAB_EXPECT", "cuda")
    with pytest.raises(DeviceUnavailable, match=r"expected cuda, but .*\. Fix: .*make lab-gpu"):
        torchlab.best_device()
    assert torchlab.best_device("cpu").type == "cpu"


def test_seed_everything_repeats_random_numbers():
    torchlab.seed_everything(3)
    first = torch.randn(5)
    torchlab.seed_everything(3)
    assert torch.equal(first, torch.randn(5))
    torchlab.seed_everything(3, deterministic=False)


def test_timed_reports_a_median_in_seconds():
    seconds = torchlab.timed(lambda: torch.ones(256, 256) @ torch.ones(256, 256), "cpu", repeats=3)
    assert 0 < seconds < 10
