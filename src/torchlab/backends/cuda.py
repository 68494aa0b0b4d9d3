"""NVIDIA GPUs through CUDA."""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import shutil
import struct
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import system
from ..variants import images_for
from . import Backend, BuildCheck, Hint, HostTooOld, KnownFailure, Status

TOOLKIT_URL = (
    "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html"
)
DRIVER_URL = "https://www.nvidia.com/Download/index.aspx"
# Any of these on the host means Docker can hand GPUs to containers (--gpus).
CONTAINER_TOOLKIT_COMMANDS = ("nvidia-ctk", "nvidia-container-runtime-hook", "nvidia-container-cli")

# The oldest driver branch that supports each CUDA major (NVIDIA's CUDA compatibility table);
# a build for any 12.x runs on all of them (minor version compatibility).
MINIMUM_DRIVER = {11: 450, 12: 525, 13: 580}
# nvidia-smi's header: the driver, and the newest CUDA it supports. That CUDA is what the
# driver's cuDriverGetVersion answers, the number the NVIDIA Container Toolkit checks too.
SMI_HEADER = re.compile(
    r"Driver Version:\s*(?P<driver>\d[\d.]*)\s+CUDA Version:\s*(?P<major>\d+)\.(?P<minor>\d+)"
)
# A fatbinary (the kernels nvcc compiled, in a library's .nv_fatbin section) starts so.
FATBIN_MAGIC = 0xBA55ED50

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


def kernel_archs(library: Path) -> list[str]:
    """What a CUDA library really carries, read from its fatbinary headers: sm_XY for each
    compiled kernel image, compute_XY for PTX. Needs no GPU and no driver, unlike
    torch.cuda.get_arch_list(), and unlike the build flags it reads the kernels themselves."""
    found: set[str] = set()
    with open(library, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for name, start, size in _elf_sections(data):
            if name == ".nv_fatbin":
                found |= _fatbin_archs(data, start, start + size)
    return sorted(found, key=lambda arch: (int(arch.split("_")[1]), arch))


def _elf_sections(data: mmap.mmap) -> list[tuple[str, int, int]]:
    """(name, offset, size) of each section of a 64-bit little-endian ELF file."""
    (table,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, table + i * entry_size) for i in range(count)]
    names = headers[names_index][4]
    sections = []
    for name, _, _, _, offset, size in headers:
        end = data.find(b"\0", names + name)
        sections.append((data[names + name : end].decode(), offset, size))
    return sections


def _fatbin_archs(data: mmap.mmap, position: int, end: int) -> set[str]:
    """The architectures of every entry of the fatbinaries between position and end: each
    fatbinary is a header (magic, version, header size, body size) and entries (kind: 1 PTX,
    2 ELF; header size; body size; the architecture at byte 28)."""
    found = set()
    while position + 16 <= end:
        magic, _, header_size, body_size = struct.unpack_from("<IHHQ", data, position)
        if magic != FATBIN_MAGIC:
            position += 8  # fatbinaries are 8-byte aligned within the section
            continue
        entry, stop = position + header_size, position + header_size + body_size
        while entry < stop:
            kind, _, entry_header, entry_body = struct.unpack_from("<HHIQ", data, entry)
            (arch,) = struct.unpack_from("<I", data, entry + 28)
            found.add(f"{'sm' if kind == 2 else 'compute'}_{arch}")
            if entry_header == 0:
                break
            entry += entry_header + entry_body
        position = stop
    return found


def smi_driver(said: str) -> tuple[str, tuple[int, int]] | None:
    """(driver version, the newest CUDA it supports) from nvidia-smi's output; None where it
    printed no header (an error instead)."""
    match = SMI_HEADER.search(said)
    return (match["driver"], (int(match["major"]), int(match["minor"]))) if match else None


def smi_gpus(said: str) -> list[tuple[str, tuple[int, int]]]:
    """(name, compute capability) of each GPU in nvidia-smi's --query-gpu=name,compute_cap
    --format=csv,noheader output."""
    gpus = []
    for line in said.splitlines():
        name, _, capability = line.rpartition(",")
        major, _, minor = capability.strip().partition(".")
        if name and major.isdigit() and minor.isdigit():
            gpus.append((name.strip(), (int(major), int(minor))))
    return gpus


def needed_driver(cuda_major: int) -> str:
    oldest = MINIMUM_DRIVER.get(cuda_major)
    return f"CUDA {cuda_major} (driver {oldest} or newer)" if oldest else f"CUDA {cuda_major}"


def _nvidia_smi(*arguments: str) -> str:
    return subprocess.run(["nvidia-smi", *arguments], capture_output=True, text=True).stdout


def _driver_suits(cuda_major: int) -> HostTooOld | None:
    driver = smi_driver(_nvidia_smi())
    if driver is None or driver[1][0] >= cuda_major:
        return None  # no header to judge by: the image's probe says what is wrong, if anything
    version, (major, minor) = driver
    return HostTooOld(
        f"the NVIDIA driver {version} supports CUDA {major}.{minor}, but this image needs "
        f"{needed_driver(cuda_major)}",
        f"upgrade the host's NVIDIA driver to {MINIMUM_DRIVER.get(cuda_major, 'a newer one')} "
        f"or newer: {DRIVER_URL}",
        found=f"the NVIDIA driver {version} supports CUDA {major}.{minor}",
        needs=needed_driver(cuda_major),
    )


def _gpus_suit(archs: list[str]) -> HostTooOld | None:
    for name, capability in smi_gpus(
        _nvidia_smi("--query-gpu=name,compute_cap", "--format=csv,noheader")
    ):
        if serving_arch(capability, archs) is None:
            sm = f"sm_{capability[0]}{capability[1]}"
            return HostTooOld(
                f"the {name} ({sm}) has no kernels in this image (built for {' '.join(archs)})",
                f"use an image whose build carries {sm}",
                found=f"the {name} is {sm}",
                needs=f"a GPU it has kernels for ({' '.join(archs)})",
            )
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
    build = _build_cuda()
    needs = needed_driver(int(build.split(".")[0])) if build else "a newer driver"
    return Hint(
        f"the NVIDIA driver {supports}, but this torch is built for CUDA {build}: it needs {needs}",
        f"upgrade the host's NVIDIA driver ({DRIVER_URL}), or use an image built for the CUDA "
        "this driver supports",
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
            driver_needed=needed_driver(int(torch.version.cuda.split(".")[0])),
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
                re.compile(r"couldn't communicate with the NVIDIA driver"),
                lambda _: Hint(
                    "the NVIDIA driver is installed but not loaded (nvidia-smi cannot reach it)",
                    "load it (sudo modprobe nvidia), or reboot after installing the driver",
                ),
            ),
            KnownFailure(
                re.compile(r"Driver/library version mismatch"),
                lambda _: Hint(
                    "the NVIDIA kernel module and the driver's libraries are different versions "
                    "(the driver was upgraded while the old module stayed loaded)",
                    "reboot the host, or unload and reload the nvidia kernel modules",
                ),
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

    def host_requirements(self, build: Mapping[str, Any] | None = None) -> Hint | None:
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
        build = build or {}
        if "cuda_major" in build and (too_old := _driver_suits(build["cuda_major"])):
            return too_old
        return _gpus_suit(build["archs"]) if "archs" in build else None

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
    import torch

    library = Path(torch.__file__).parent / "lib/libtorch_cuda.so"
    if not library.exists():
        return [f"torch {torch.__version__} has no CUDA library; kernels for {required} promised"]
    kernels = kernel_archs(library)
    return [
        f"{library.name} has no {arch} kernels (it has {kernels})"
        for arch in required
        if arch not in kernels
    ]


def _check_cudnn(expected: bool) -> list[str]:
    import torch

    return (
        ["cuDNN cannot be loaded"] if expected and not torch.backends.cudnn.is_available() else []
    )


BACKEND = CudaBackend()
