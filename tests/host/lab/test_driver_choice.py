"""make lab chooses the CUDA image the host's driver and GPUs can run, from what nvidia-smi
prints there (recorded in data/nvidia-smi/), and refuses in one line where none suits:
never a CUDA 13 image on a driver that stops at CUDA 12, never a silent fall-back to the CPU
while a GPU is there. The `host` fixture (conftest.py) is the fake nvidia-smi of a recorded host."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchlab import variants
from torchlab.backends import HostTooOld, cuda, get
from torchlab_host.core.errors import HostError
from torchlab_host.lab import manage as lab

RECORDED = Path(__file__).parents[1] / "data/nvidia-smi"
MANIFEST = variants.load()


def test_every_recorded_driver_reads_as_its_series_and_cuda():
    read = {path.stem: cuda.smi_driver(path.read_text()) for path in RECORDED.glob("[0-9]*.txt")}
    assert read == {
        "470": ("470.256.02", (11, 4)),
        "535": ("535.183.01", (12, 2)),
        "550": ("550.127.05", (12, 4)),
        "570": ("570.133.20", (12, 8)),
        "580": ("580.95.05", (13, 0)),
    }
    assert cuda.smi_driver((RECORDED / "mismatch.txt").read_text()) is None


@pytest.mark.parametrize(
    ("recording", "chosen"),
    [("580", "cuda"), ("570", "cuda12"), ("550", "cuda12"), ("535", "cuda12")],
)
def test_make_lab_chooses_the_image_the_driver_supports(host, recording, chosen):
    host(recording)
    assert lab.auto_variant(MANIFEST).name == chosen


def test_a_v100_gets_the_cuda12_image_even_on_a_cuda_13_driver(host):
    host("580", gpu="Tesla V100-SXM2-32GB, 7.0")
    assert lab.auto_variant(MANIFEST).name == "cuda12"
    with pytest.raises(HostError) as raised:
        lab.require_host_device(MANIFEST.variant("cuda"), MANIFEST)
    assert str(raised.value) == (
        "the Tesla V100-SXM2-32GB is sm_70, but torchlab:cuda needs a GPU it has kernels for "
        f"({' '.join(MANIFEST.variant('cuda').build['archs'])}). Fix: use make lab-cuda12, or "
        "use an image whose build carries sm_70"
    )


@pytest.mark.parametrize("recording", ["570", "550", "535"])
def test_make_lab_cuda_on_a_cuda_12_driver_names_cuda12_and_the_driver_it_needs(host, recording):
    host(recording)
    driver, (major, minor) = cuda.smi_driver((RECORDED / f"{recording}.txt").read_text())
    with pytest.raises(HostError) as raised:
        lab.require_host_device(MANIFEST.variant("cuda"), MANIFEST)
    assert str(raised.value) == (
        f"the NVIDIA driver {driver} supports CUDA {major}.{minor}, but torchlab:cuda needs "
        "CUDA 13 (driver 580 or newer). Fix: use make lab-cuda12, or upgrade the host's NVIDIA "
        f"driver to 580 or newer: {cuda.DRIVER_URL}"
    )
    lab.require_host_device(MANIFEST.variant("cuda12"), MANIFEST)


def test_a_driver_too_old_for_every_image_is_refused_not_run_on_the_cpu(host):
    host("470")
    with pytest.raises(HostError) as raised:
        lab.auto_variant(MANIFEST)
    assert str(raised.value) == (
        "the NVIDIA driver 470.256.02 supports CUDA 11.4, but torchlab:cuda needs CUDA 13 "
        "(driver 580 or newer) and torchlab:cuda12 needs CUDA 12 (driver 525 or newer). "
        f"Fix: upgrade the host's NVIDIA driver to 525 or newer: {cuda.DRIVER_URL} "
        "(or run the lab on the CPU: make lab-cpu)"
    )


@pytest.mark.parametrize(
    ("recording", "said"),
    [
        ("not-loaded", "the NVIDIA driver is installed but not loaded"),
        ("mismatch", "the NVIDIA kernel module and the driver's libraries are different"),
    ],
)
def test_a_broken_driver_is_named_and_make_lab_runs_on_the_cpu(host, recording, said):
    host(recording)
    hint = get("cuda").host_requirements(MANIFEST.variant("cuda").build)
    assert hint.problem.startswith(said) and not isinstance(hint, HostTooOld)
    with pytest.raises(HostError, match=f"^{said}.*make lab-cpu"):
        lab.require_host_device(MANIFEST.variant("cuda"), MANIFEST)
    assert lab.auto_variant(MANIFEST).name == "cpu"
