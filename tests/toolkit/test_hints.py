"""Known failures, in the words torch, torch_xla, NVML and the DataLoader really use, map to one
line that says what is wrong and how to fix it."""

from __future__ import annotations

import pytest

from torchlab import system
from torchlab.backends import cuda, get, xla

# Texts as the libraries print them (PyTorch's c10/cuda/CUDAFunctions.cpp and torch/cuda,
# nvidia-smi, torch_xla 2.9 with torch 2.13 installed, libtpu on a machine without a TPU,
# the DataLoader on Docker's 64 MB /dev/shm, Inductor without g++).
NO_DRIVER = (
    "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA "
    "GPU and installed a driver from http://www.nvidia.com/Download/index.aspx"
)
DRIVER_TOO_OLD = (
    "UserWarning: CUDA initialization: The NVIDIA driver on your system is too old (found version "
    "12080). Please update your GPU driver by downloading and installing a new version from the "
    "URL: http://www.nvidia.com/Download/index.aspx Alternatively, go to: https://pytorch.org to "
    "install a PyTorch version that has been compiled with your version of the CUDA driver. "
    "(Triggered internally at /pytorch/c10/cuda/CUDAFunctions.cpp:119.)"
)
ARCH_NOT_COMPATIBLE = (
    "\nNVIDIA GeForce RTX 5090 with CUDA capability sm_120 is not compatible with the current "
    "PyTorch installation.\nThe current PyTorch install supports CUDA capabilities sm_50 sm_60 "
    "sm_70 sm_75 sm_80 sm_86 sm_90.\nIf you want to use the NVIDIA GeForce RTX 5090 GPU with "
    "PyTorch, please check the instructions at https://pytorch.org/get-started/locally/\n"
)
GPU_TOO_OLD_TORCH_2_9 = (
    "\n    Found GPU0 NVIDIA GeForce GTX 1080 which is of cuda capability 6.1.\n    Minimum and "
    "Maximum cuda capability supported by this version of PyTorch is\n    (7.0) - (12.0)\n    "
)
GPU_TOO_OLD_TORCH_2_13 = (
    "Found GPU0 NVIDIA GeForce GTX 1080 which is of compute capability (CC) 6.1.\nThe following "
    "list shows the CCs this version of PyTorch was built for and the hardware CCs it supports:"
)
NO_KERNEL_IMAGE = (
    "torch.AcceleratorError: CUDA error: no kernel image is available for execution on the device"
)
NVML_UNKNOWN = "Failed to initialize NVML: Unknown Error"
CPU_ONLY_BUILD = "AssertionError: Torch not compiled with CUDA enabled"
XLA_SKEW = (
    "ImportError: /opt/venv/lib/python3.11/site-packages/_XLAC.cpython-311-x86_64-linux-gnu.so: "
    "undefined symbol: _ZN5torch8autograd10deleteNodeEPNS0_4NodeE"
)
TPU_METADATA = (
    "Failed to get TPU metadata (agent-worker-number) from instance metadata for variable "
    "TPU_WORKER_ID: INTERNAL: Failed to fetch URL after 30 tries (http status: 403); curl "
    "status: No error"
)
XLA_MISSING = "ModuleNotFoundError: No module named 'torch_xla'"
SHM_WORKER = (
    "RuntimeError: unable to allocate shared memory(shm) for file </torch_10_1657191807_1>: "
    "No space left on device (28)"
)
SHM_STALL = "RuntimeError: DataLoader timed out after 60 seconds"
NO_COMPILER = (
    "InductorError: InvalidCxxCompiler: No working C++ compiler found in "
    "torch._inductor.config.cpp.cxx: (None, 'g++')"
)


def hint_for(backend: str, text: str):
    hint = get(backend).explain(text)
    assert hint is not None, f"{backend} did not recognise: {text!r}"
    assert "\n" not in str(hint), "a hint is one line"
    return hint


def test_no_driver_inside_a_container_names_gpu_access_and_the_toolkit(monkeypatch):
    monkeypatch.setattr(system, "in_container", lambda: True)
    hint = hint_for("cuda", NO_DRIVER)
    assert "without GPU access" in hint.problem
    assert "docker run --gpus all" in hint.fix and cuda.TOOLKIT_URL in hint.fix


def test_no_driver_on_a_host_names_the_driver(monkeypatch):
    monkeypatch.setattr(system, "in_container", lambda: False)
    hint = hint_for("cuda", NO_DRIVER)
    assert "no NVIDIA driver found" in hint.problem
    assert cuda.DRIVER_URL in hint.fix


def test_driver_too_old_says_which_cuda_it_supports_and_which_is_needed():
    hint = hint_for("cuda", DRIVER_TOO_OLD)
    assert "supports CUDA 12.8" in hint.problem
    assert "upgrade" in hint.fix and cuda.DRIVER_URL in hint.fix


@pytest.mark.parametrize(
    ("text", "sm"),
    [
        (ARCH_NOT_COMPATIBLE, "sm_120"),
        (GPU_TOO_OLD_TORCH_2_9, "sm_61"),
        (GPU_TOO_OLD_TORCH_2_13, "sm_61"),
        (NO_KERNEL_IMAGE, None),
    ],
    ids=["not-compatible", "too-old-2.9", "too-old-2.13", "no-kernel-image"],
)
def test_gpu_arch_missing_from_the_build(text, sm):
    hint = hint_for("cuda", text)
    assert "has no kernels in this torch build" in hint.problem
    if sm:
        assert sm in hint.problem
    assert "compute capability" in hint.fix


def test_nvml_unknown_error_means_recreate_the_container():
    hint = hint_for("cuda", NVML_UNKNOWN)
    assert "lost access to the GPU" in hint.problem
    assert "recreate the container" in hint.fix


def test_cpu_only_build_points_at_the_cuda_image():
    hint = hint_for("cuda", CPU_ONLY_BUILD)
    assert "CPU-only build" in hint.problem and "torchlab:cuda" in hint.fix


def test_torch_and_torch_xla_skew_names_both_versions_and_the_matching_install(monkeypatch):
    versions = {"torch": "2.13.0+cpu", "torch_xla": "2.9.0"}
    monkeypatch.setattr(xla, "installed_version", versions.get)
    hint = hint_for("xla", XLA_SKEW)
    assert "torch 2.13.0+cpu and torch_xla 2.9.0 do not match" in hint.problem
    assert "pip install torch==2.9.0 'torch_xla[tpu]==2.9.0'" in hint.fix


def test_tpu_not_found(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "TPU")
    hint = hint_for("xla", TPU_METADATA)
    assert "no TPU found" in hint.problem and "PJRT_DEVICE=TPU" in hint.problem
    assert "PJRT_DEVICE=CPU" in hint.fix


def test_torch_xla_missing_points_at_the_xla_image():
    assert "torchlab:xla" in hint_for("xla", XLA_MISSING).fix


def test_dataloader_out_of_shared_memory(monkeypatch):
    monkeypatch.setattr(system, "shm_bytes", lambda: 64 * 2**20)
    hint = hint_for("cpu", SHM_WORKER)
    assert "/dev/shm is 64.0 MiB" in hint.problem
    assert "--shm-size" in hint.fix


def test_a_stalled_dataloader_is_blamed_on_shm_only_when_shm_is_small(monkeypatch):
    monkeypatch.setattr(system, "shm_bytes", lambda: 64 * 2**20)
    assert "shared memory" in hint_for("cpu", SHM_STALL).problem
    monkeypatch.setattr(system, "shm_bytes", lambda: 8 * 2**30)
    assert get("cpu").explain(SHM_STALL) is None


def test_torch_compile_without_a_compiler():
    assert "g++" in hint_for("cpu", NO_COMPILER).fix


@pytest.mark.parametrize("backend", ["cpu", "cuda", "xla"])
def test_an_unknown_error_gets_no_made_up_hint(backend):
    assert (
        get(backend).explain("RuntimeError: shape '[2, 3]' is invalid for input of size 5") is None
    )


# WSL 2's kernel release, as /proc/sys/kernel/osrelease says it in a distribution and in
# Docker Desktop's containers.
WSL2_KERNEL = "5.15.167.4-microsoft-standard-WSL2\n"


@pytest.fixture
def wsl(tmp_path, monkeypatch):
    """wsl(gpu=False, container=True): this machine as WSL 2 (its kernel release), in a
    container or not, with WSL's GPU device or without it: fake folders where the probe
    looks."""

    def machine(gpu: bool = False, container: bool = True) -> None:
        (tmp_path / "osrelease").write_text(WSL2_KERNEL)
        monkeypatch.setattr(system, "KERNEL_RELEASE", tmp_path / "osrelease")
        monkeypatch.setattr(system, "WSL_GPU", tmp_path / "dev/dxg")
        monkeypatch.setattr(system, "WSL_DRIVER_LIBRARIES", tmp_path / "usr/lib/wsl/lib")
        if gpu:
            (tmp_path / "dev").mkdir()
            (tmp_path / "dev/dxg").touch()
        monkeypatch.setattr(system, "in_container", lambda: container)

    return machine


def test_wsl2_is_told_by_its_kernel(wsl, tmp_path, monkeypatch):
    (tmp_path / "debian-release").write_text("6.1.0-27-cloud-amd64\n")
    monkeypatch.setattr(system, "KERNEL_RELEASE", tmp_path / "debian-release")
    assert not system.wsl() and system.machine()["wsl"] is False
    wsl()
    assert system.wsl() and system.machine()["wsl"] is True


def test_a_container_on_wsl2_without_the_gpu_names_docker_desktop_and_gpus_all(wsl):
    wsl(gpu=False)
    hint = hint_for("cuda", NO_DRIVER)
    assert hint.problem == (
        "this container on WSL 2 has no GPU (no /dev/dxg): it was started without GPU access"
    )
    assert "Docker Desktop with its WSL 2 backend" in hint.fix and "--gpus all" in hint.fix
    assert "NVIDIA Container Toolkit" not in str(hint)  # Docker Desktop brings its own


def test_wsl2_itself_without_the_gpu_names_the_windows_driver_not_a_linux_one(wsl):
    wsl(gpu=False, container=False)
    hint = hint_for("cuda", NO_DRIVER)
    assert hint.problem == "WSL 2 has no GPU (no /dev/dxg): Windows passes none to it"
    assert "NVIDIA's Windows driver on Windows" in hint.fix
    assert "never a Linux driver inside WSL" in hint.fix and "wsl --update" in hint.fix


def test_wsl2_with_the_gpu_but_without_a_driver_that_loads(wsl, tmp_path):
    wsl(gpu=True)
    hint = hint_for("cuda", NO_DRIVER)
    assert hint.problem == (
        "this container on WSL 2 has the GPU (/dev/dxg) but no driver that loads (libcuda.so.1 "
        f"in {tmp_path / 'usr/lib/wsl/lib'})"
    )
    assert "restart Docker Desktop" in hint.fix


def test_the_probe_says_wsl2_in_its_os_line(wsl):
    from torchlab import probe

    wsl()
    report = probe.collect(smoke=False)
    assert report["machine"]["wsl"] is True
    [os_line] = [line for line in probe.render_table(report).splitlines() if "  OS " in line]
    assert "(WSL 2)" in os_line
