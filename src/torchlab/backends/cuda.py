"""NVIDIA GPUs through CUDA."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import warnings
from typing import Any

from .. import system
from ..variants import images_for
from . import Backend, BuildCheck, Hint, KnownFailure, Status

TOOLKIT_URL = (
    "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html"
)
DRIVER_URL = "https://www.nvidia.com/Download/index.aspx"
# Any of these on the host means Docker can hand GPUs to containers (--gpus).
CONTAINER_TOOLKIT_COMMANDS = ("nvidia-ctk", "nvidia-container-runtime-hook", "nvidia-container-cli")

# Datasheet peaks: dense bf16 tensor-core TFLOP/s (no sparsity) and memory TB/s,
# matched against torch.cuda.get_device_name() in order.
PUBLISHED_PEAKS = (
    (r"H100 80GB HBM3|H100 SXM", 989.4, 3.35),
    (r"H100 NVL", 835.0, 3.9),
    (r"H100 PCIe", 756.0, 2.0),
    (r"H200", 989.4, 4.8),
    (r"B200", 2250.0, 8.0),
    (r"A100.*80GB", 312.0, 2.039),
    (r"A100", 312.0, 1.555),
    (r"L40S", 362.1, 0.864),
    (r"\bL4\b", 121.0, 0.3),
)


def arch_list() -> list[str]:
    """The GPU architectures this torch build carries kernels for (empty for a CPU build).

    torch.cuda.get_arch_list() answers [] when no GPU is visible, so read the build flags.
    """
    import torch

    flags = getattr(torch._C, "_cuda_getArchFlags", lambda: None)()
    return flags.split() if flags else []


def serving_arch(capability: tuple[int, int], arches: list[str]) -> str | None:
    """The entry of the arch list whose code runs on a GPU of this capability, if any.

    A cubin for sm_XY runs on sm_XZ for Z >= Y (same major); PTX (compute_XY) is
    compiled on the fly for any GPU of capability XY or newer.
    """
    major, minor = capability
    for arch in arches:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch)
        if not match:
            continue
        kind, arch_major, arch_minor, suffix = match[1], int(match[2]), int(match[3]), match[4]
        if kind == "sm" and suffix and (arch_major, arch_minor) != (major, minor):
            continue  # sm_90a code runs on sm_90 only
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return arch
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return arch
    return None


def _library(name: str) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def driver_cuda_version() -> int | None:
    """The newest CUDA the installed driver supports, as 13000 for 13.0; None without one."""
    libcuda = _library("libcuda.so.1")
    if libcuda is None:
        return None
    version = ctypes.c_int()
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value == 0:
        return None
    return version.value


def nvml_driver() -> tuple[str | None, str | None]:
    """(driver version, NVML error): what nvidia-smi would print first."""
    nvml = _library("libnvidia-ml.so.1")
    if nvml is None:
        return None, None
    nvml.nvmlErrorString.restype = ctypes.c_char_p
    code = nvml.nvmlInit_v2()
    if code != 0:
        return None, f"Failed to initialize NVML: {nvml.nvmlErrorString(code).decode()}"
    try:
        buffer = ctypes.create_string_buffer(96)
        if nvml.nvmlSystemGetDriverVersion(buffer, len(buffer)) != 0:
            return None, None
        return buffer.value.decode(), None
    finally:
        nvml.nvmlShutdown()


def _cuda_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def _build_cuda() -> str | None:
    import torch

    return torch.version.cuda


def _hip_version() -> str | None:
    import torch

    return getattr(torch.version, "hip", None)


def _cpu_only_build() -> Hint:
    import torch

    return Hint(
        f"torch {torch.__version__} is a CPU-only build, so it cannot use a GPU",
        f"use a CUDA build of torch: {images_for('cuda')}",
    )


def _rocm_build() -> Hint:
    import torch

    return Hint(
        f"torch {torch.__version__} is a ROCm (HIP {_hip_version()}) build: its cuda devices "
        "are AMD GPUs, which the CUDA backend does not drive",
        "expect the device kind of the backend that drives ROCm, or use a CUDA build of "
        f"torch: {images_for('cuda')}",
    )


def _no_driver() -> Hint:
    if system.in_container():
        return Hint(
            "no NVIDIA driver is visible in this container: it was started without GPU access",
            "start it with GPU access (docker run --gpus all, or compose's GPU reservation), "
            f"which needs the NVIDIA Container Toolkit on the host: {TOOLKIT_URL}",
        )
    return Hint(
        "no NVIDIA driver found on this machine",
        f"install the NVIDIA driver ({DRIVER_URL}), then check that nvidia-smi lists the GPU",
    )


def _driver_too_old(found: int | None) -> Hint:
    supports = f"supports CUDA {_cuda_text(found)}" if found else "is too old"
    return Hint(
        f"the NVIDIA driver {supports}, but this torch is built for CUDA {_build_cuda()}",
        f"upgrade the host's NVIDIA driver to one for CUDA {_build_cuda()} or newer: {DRIVER_URL}",
    )


def _arch_missing(sm: str | None) -> Hint:
    gpu = f"this GPU ({sm})" if sm else "this GPU"
    built = " ".join(arch_list()) or "the build's arch list"
    return Hint(
        f"{gpu} has no kernels in this torch build (built for {built})",
        "use a GPU whose architecture is in that list (compute capability 7.5 or newer), "
        "or a torch build compiled for this GPU",
    )


def _nvml_unknown() -> Hint:
    return Hint(
        "the container has lost access to the GPU (NVML: Unknown Error, typically after "
        "the host ran systemctl daemon-reload)",
        "recreate the container (a restart keeps the lost access): remove it and start it again",
    )


class CudaBackend(Backend):
    name = "cuda"
    device_type = "cuda"
    priority = 20
    checks_host = True
    distributed_backend = "nccl"
    bench_matmul_size = 8192
    bench_copy_megabytes = 2048

    def recognises_build(self) -> bool:
        return _hip_version() is None

    def status(self) -> Status:
        import torch

        if not self.recognises_build():
            return Status(False, _rocm_build())
        if torch.version.cuda is None:
            return Status(False, _cpu_only_build())
        _, nvml_error = nvml_driver()
        if nvml_error:
            return Status(False, self.explain(nvml_error))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            count = torch.cuda.device_count()
        messages = [str(warning.message) for warning in caught]
        if count == 0:
            try:
                torch.cuda.init()
            except Exception as error:  # torch says why in its own words; we map them
                messages.append(str(error))
            for message in messages:
                hint = self.explain(message)
                if hint:
                    return Status(False, hint)
            if driver_cuda_version() is None:
                return Status(False, _no_driver())
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            return Status(
                False,
                Hint(
                    "the NVIDIA driver is there but no GPU is visible"
                    + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""),
                    "check nvidia-smi on the host, and unset or correct CUDA_VISIBLE_DEVICES",
                ),
            )
        arches = arch_list()
        for index in range(count):
            capability = torch.cuda.get_device_capability(index)
            if serving_arch(capability, arches) is None:
                return Status(False, _arch_missing(f"sm_{capability[0]}{capability[1]}"))
        return Status(True)

    def devices(self) -> list[Any]:
        import torch

        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]

    def describe(self) -> dict[str, Any]:
        import torch

        facts: dict[str, Any] = {"build_cuda": torch.version.cuda}
        if torch.version.cuda is None:
            return facts
        arches = arch_list()
        driver, nvml_error = nvml_driver()
        driver_cuda = driver_cuda_version()
        facts.update(
            cudnn=torch.backends.cudnn.version(),
            nccl=".".join(map(str, torch.cuda.nccl.version())),
            arch_list=arches,
            driver=driver,
            nvml_error=nvml_error,
            driver_cuda=_cuda_text(driver_cuda) if driver_cuda else None,
            driver_supports_build=(
                driver_cuda // 1000 >= int(torch.version.cuda.split(".")[0])
                if driver_cuda
                else None
            ),
        )
        gpus = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # status() reports why a GPU is unusable
            count = torch.cuda.device_count()
        for index in range(count):
            properties = torch.cuda.get_device_properties(index)
            capability = (properties.major, properties.minor)
            gpus.append(
                {
                    "index": index,
                    "name": properties.name,
                    "capability": f"{properties.major}.{properties.minor}",
                    "sm": f"sm_{properties.major}{properties.minor}",
                    "memory_bytes": properties.total_memory,
                    "multiprocessors": properties.multi_processor_count,
                    # bf16 tensor cores came with Ampere (sm_80)
                    "bf16": properties.major >= 8,
                    "arch_in_build": serving_arch(capability, arches),
                }
            )
        facts["gpus"] = gpus
        return facts

    def known_failures(self) -> list[KnownFailure]:
        return [
            KnownFailure(
                re.compile(r"Torch not compiled with CUDA enabled"), lambda _: _cpu_only_build()
            ),
            KnownFailure(
                re.compile(r"Failed to initialize NVML: Unknown Error"), lambda _: _nvml_unknown()
            ),
            KnownFailure(
                re.compile(
                    r"NVIDIA driver on your system is too old \(found version (?P<found>\d+)\)"
                    r"|CUDA driver version is insufficient for CUDA runtime version"
                ),
                lambda match: _driver_too_old(int(match["found"]) if match["found"] else None),
            ),
            KnownFailure(
                re.compile(
                    r"Found no NVIDIA driver on your system"
                    r"|libcuda\.so\.1: cannot open shared object file"
                ),
                lambda _: _no_driver(),
            ),
            KnownFailure(
                re.compile(
                    r"CUDA capability (?P<sm>sm_\d+) is not compatible"
                    # torch 2.9: "cuda capability 6.1."; torch 2.13: "compute capability (CC) 6.1."
                    r"|which is of (?:cuda|compute) capability (?:\(CC\) )?"
                    r"(?P<major>\d+)\.(?P<minor>\d+)"
                    r"|no kernel image is available for execution on the device"
                ),
                lambda match: _arch_missing(
                    match["sm"] or (match["major"] and f"sm_{match['major']}{match['minor']}")
                ),
            ),
        ]

    def distributed_failures(self) -> list[KnownFailure]:
        from .cpu import shm_too_small

        return [
            KnownFailure(
                re.compile(
                    r"Bootstrap : no socket interface found|NET/Socket : No usable listening"
                    r"|no usable interface|NCCL_SOCKET_IFNAME"
                ),
                lambda _: Hint(
                    "NCCL found no network interface it could use between the nodes",
                    "name the one the nodes share: NCCL_SOCKET_IFNAME=eth0 (ip -brief address "
                    "lists them; exclude docker0 and lo)",
                ),
            ),
            KnownFailure(
                re.compile(
                    r"failed to extend /dev/shm|Error while creating shared memory segment"
                    r"|unable to allocate shared memory"
                ),
                lambda _: shm_too_small("NCCL's transport between this node's GPUs"),
            ),
            KnownFailure(
                re.compile(r"NCCL version mismatch|mismatched NCCL"),
                lambda _: Hint(
                    "the ranks load different NCCL versions",
                    "run the same image, of the same revision, on every node",
                ),
            ),
        ]

    def host_requirements(self) -> Hint | None:
        if not shutil.which("nvidia-smi"):
            return Hint(
                "no NVIDIA driver on this host (nvidia-smi not found)",
                f"install the NVIDIA driver ({DRIVER_URL}) and check that nvidia-smi lists the GPU",
            )
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if listing.returncode != 0 or "GPU" not in listing.stdout:
            said = (listing.stdout + listing.stderr).strip() or "no GPU listed"
            return self.explain(said) or Hint(
                f"nvidia-smi sees no usable GPU ({said.splitlines()[0]})",
                "fix the host's driver until nvidia-smi -L lists the GPU",
            )
        if not any(shutil.which(tool) for tool in CONTAINER_TOOLKIT_COMMANDS):
            return Hint(
                "the NVIDIA Container Toolkit is not installed, so containers cannot reach the GPU",
                f"install it ({TOOLKIT_URL}), then: sudo nvidia-ctk runtime configure "
                "--runtime=docker && sudo systemctl restart docker",
            )
        return None

    def build_checks(self) -> dict[str, BuildCheck]:
        return {
            **super().build_checks(),
            "cuda_major": _check_cuda_major,
            "archs": _check_archs,
            "cudnn": _check_cudnn,
        }

    def supports_bf16(self, device: Any) -> bool:
        import torch

        return torch.cuda.get_device_capability(device)[0] >= 8

    def published_peak(self, device: Any) -> dict[str, float] | None:
        import torch

        name = torch.cuda.get_device_name(device)
        for pattern, bf16_tflops, memory_tbps in PUBLISHED_PEAKS:
            if re.search(pattern, name):
                return {"bf16_tflops": bf16_tflops, "memory_tbps": memory_tbps}
        return None

    def synchronize(self, device: Any) -> None:
        import torch

        torch.cuda.synchronize(device)


def _check_cuda_major(major: int) -> list[str]:
    import torch

    if torch.version.cuda is None:
        return [f"torch {torch.__version__} has no CUDA; CUDA {major} is promised"]
    if int(torch.version.cuda.split(".")[0]) != major:
        return [f"torch is built for CUDA {torch.version.cuda}, not {major}"]
    return []


def _check_archs(required: list[str]) -> list[str]:
    arches = arch_list()
    return [f"the arch list {arches} lacks {arch}" for arch in required if arch not in arches]


def _check_cudnn(expected: bool) -> list[str]:
    import torch

    return (
        ["cuDNN cannot be loaded"] if expected and not torch.backends.cudnn.is_available() else []
    )


BACKEND = CudaBackend()
