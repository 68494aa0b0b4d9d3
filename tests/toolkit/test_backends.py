"""The backend registry and the device-choice rules, without an accelerator."""

from __future__ import annotations

import sys
import types

import pytest
import torch

import torchlab
from torchlab.backends import (
    DeviceUnavailable,
    UnknownDevice,
    all_backends,
    cuda,
    for_device,
    get,
)


def test_every_device_kind_has_one_backend_module():
    assert [backend.name for backend in all_backends()] == ["cuda", "xla", "cpu"]
    assert for_device(torch.device("cpu")).name == "cpu"
    with pytest.raises(UnknownDevice, match="unknown device kind 'rocm': choose one of cuda, xla"):
        get("rocm")
    with pytest.raises(UnknownDevice, match="no torchlab backend drives devices of type 'meta'"):
        for_device(torch.device("meta"))


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
    with pytest.raises(DeviceUnavailable, match=r"expected cuda, but .*\. Fix: .*torchlab:cuda"):
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


# A backend in a file of its own, as a ROCm backend would be: a HIP build of torch calls AMD
# GPUs `cuda` devices, and this backend, not the CUDA one, claims them.
ROCM_BACKEND = '''
"""AMD GPUs through ROCm."""

import torch

from torchlab.backends import Backend, Hint, Status


class RocmBackend(Backend):
    name = "rocm"
    device_type = "cuda"
    priority = 25

    def recognises_build(self):
        return getattr(torch.version, "hip", None) is not None

    def status(self):
        if not self.recognises_build():
            return Status(False, Hint("torch is not a ROCm build", "use a ROCm build of torch"))
        if torch.cuda.device_count() == 0:
            return Status(False, Hint("no AMD GPU is visible", "check rocm-smi"))
        return Status(True)

    def devices(self):
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]

    def describe(self):
        return {"hip": torch.version.hip}

    def build_checks(self):
        def hip_major(major):
            found = torch.version.hip.split(".")[0]
            return [] if found == str(major) else [f"torch is built for HIP {found}, not {major}"]

        return {**super().build_checks(), "hip_major": hip_major}


BACKEND = RocmBackend()
'''


@pytest.fixture
def hip_build(tmp_path, monkeypatch):
    """The ROCm backend file in the backends' search path, and torch as a HIP build with one
    GPU: version.hip set, version.cuda None."""
    from torchlab import backends

    (tmp_path / "rocm.py").write_text(ROCM_BACKEND)
    monkeypatch.setattr(backends, "__path__", [*backends.__path__, str(tmp_path)])
    monkeypatch.setattr(torch.version, "hip", "6.4.43482", raising=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("TORCHLAB_EXPECT", raising=False)
    all_backends.cache_clear()
    yield
    all_backends.cache_clear()
    sys.modules.pop("torchlab.backends.rocm", None)


def test_a_new_device_kind_is_one_backend_file_that_claims_its_devices(hip_build):
    assert [backend.name for backend in all_backends()] == ["rocm", "cuda", "xla", "cpu"]
    assert for_device(torch.device("cuda", 0)).name == "rocm"
    assert torchlab.best_device() == torch.device("cuda", 0)
    assert torchlab.best_device("rocm") == torch.device("cuda", 0)


def test_the_cuda_backend_leaves_a_hip_build_alone_and_says_why(hip_build):
    cuda_backend = get("cuda")
    assert not cuda_backend.recognises_build()
    status = cuda_backend.status()
    assert not status.usable and "is a ROCm (HIP 6.4.43482) build" in status.hint.problem
    with pytest.raises(DeviceUnavailable, match=r"expected cuda, but .* ROCm \(HIP"):
        torchlab.best_device("cuda")


def test_the_new_backend_asserts_its_own_build_expectations(hip_build):
    assert get("rocm").check_build({"hip_major": 6}) == []
    assert get("rocm").check_build({"hip_major": 7}) == ["torch is built for HIP 6, not 7"]
    assert get("rocm").check_build({"cuda_major": 13}) == [
        "the manifest asks for 'cuda_major', which the rocm backend does not check"
    ]


def test_the_probe_reports_the_new_backend(hip_build):
    from torchlab import probe

    report = probe.collect(smoke=False)
    assert report["backends"]["rocm"]["usable"]
    assert report["backends"]["rocm"]["devices"] == ["cuda:0"]
    assert report["backends"]["rocm"]["facts"] == {"hip": "6.4.43482"}
    assert not report["backends"]["cuda"]["usable"]


# What the hub hands a student's server (nvidia-smi -L's UUIDs, data/nvidia-smi/ of the host
# tests): Docker names them in the container's NVIDIA_VISIBLE_DEVICES, and CUDA sees them alone.
HANDED = {
    "gpu": ("NVIDIA H100 80GB HBM3", (9, 0), "GPU-64961c01-5804-4666-ad60-f36482a5f8b3"),
    "mig": ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", (8, 0), "MIG-8b2b5909-3247-4abe-8604-08909006f9e9"),
}


@pytest.mark.parametrize("handed", list(HANDED))
def test_the_probe_lists_the_device_the_container_was_handed_and_no_other(handed, monkeypatch):
    """A hub server on an eight-GPU host, given one device: torch as a CUDA build that sees
    that one (the NVIDIA runtime mounts it alone), with the driver's answers."""
    import uuid

    from torchlab import probe
    from torchlab.backends.cuda import backend

    name, (major, minor), handed_uuid = HANDED[handed]
    properties = types.SimpleNamespace(
        name=name, major=major, minor=minor, total_memory=80 * 2**30, multi_processor_count=132,
        uuid=uuid.UUID(handed_uuid.split("-", 1)[1]),
    )  # fmt: skip
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", handed_uuid)
    monkeypatch.delenv("TORCHLAB_EXPECT", raising=False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (major, minor))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: properties)
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 29, 7), raising=False)
    monkeypatch.setattr(backend, "arch_list", lambda: ["sm_80", "sm_90"])
    monkeypatch.setattr(backend, "nvml_driver", lambda: ("580.95.05", None))
    monkeypatch.setattr(backend, "driver_cuda_version", lambda: 13000)

    report = probe.collect(smoke=False)
    cuda_entry = report["backends"]["cuda"]
    assert cuda_entry["usable"] and cuda_entry["devices"] == ["cuda:0"]
    [gpu] = cuda_entry["facts"]["gpus"]
    assert (gpu["name"], gpu["uuid"]) == (name, handed_uuid)
    assert report["container"]["environment"]["NVIDIA_VISIBLE_DEVICES"] == handed_uuid
    assert f"uuid {handed_uuid}" in probe.render_table(report)
