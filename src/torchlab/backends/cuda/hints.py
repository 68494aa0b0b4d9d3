"""What goes wrong with CUDA inside the environment, each as a one-line hint, and the error
texts of torch, NVML and NCCL that say so (known_failures, distributed_failures)."""

from __future__ import annotations

import os
import re

from ... import system
from ...variants import images_for
from .. import Hint, KnownFailure
from ..cpu import shm_too_small
from .driver import DRIVER_URL, TOOLKIT_URL, WSL_DRIVER_FIX, cuda_text, needed_driver
from .kernels import arch_list


def cpu_only_build() -> Hint:
    import torch

    return Hint(
        f"torch {torch.__version__} is a CPU-only build, so it cannot use a GPU",
        f"use a CUDA build of torch: {images_for('cuda')}",
    )


def rocm_build(hip: str) -> Hint:
    import torch

    return Hint(
        f"torch {torch.__version__} is a ROCm (HIP {hip}) build: its cuda devices "
        "are AMD GPUs, which the CUDA backend does not drive",
        "expect the device kind of the backend that drives ROCm, or use a CUDA build of "
        f"torch: {images_for('cuda')}",
    )


def no_driver() -> Hint:
    if system.wsl():
        return wsl_no_gpu()
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


def wsl_no_gpu() -> Hint:
    """Why WSL 2 (or a container of Docker Desktop on it) has no GPU: it gets one as /dev/dxg
    with the Windows driver's libraries in /usr/lib/wsl/lib, from NVIDIA's Windows driver
    alone; a Linux driver installed inside WSL only hides them."""
    where = "this container on WSL 2" if system.in_container() else "WSL 2"
    if not system.WSL_GPU.exists():
        if system.in_container():
            return Hint(
                f"{where} has no GPU (no /dev/dxg): it was started without GPU access",
                "start it with GPU access in Docker Desktop with its WSL 2 backend (docker run "
                f"--gpus all, or compose's GPU reservation); if that fails too, {WSL_DRIVER_FIX}",
            )
        return Hint(f"{where} has no GPU (no /dev/dxg): Windows passes none to it", WSL_DRIVER_FIX)
    return Hint(
        f"{where} has the GPU (/dev/dxg) but no driver that loads (libcuda.so.1 in "
        f"{system.WSL_DRIVER_LIBRARIES})",
        WSL_DRIVER_FIX + (", then restart Docker Desktop" if system.in_container() else ""),
    )


def no_gpu_visible() -> Hint:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return Hint(
        "the NVIDIA driver is there but no GPU is visible"
        + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""),
        "check nvidia-smi on the host, and unset or correct CUDA_VISIBLE_DEVICES",
    )


def driver_too_old(found: int | None) -> Hint:
    import torch

    supports = f"supports CUDA {cuda_text(found)}" if found else "is too old"
    build = torch.version.cuda
    needs = needed_driver(int(build.split(".")[0])) if build else "a newer driver"
    return Hint(
        f"the NVIDIA driver {supports}, but this torch is built for CUDA {build}: it needs {needs}",
        f"upgrade the host's NVIDIA driver ({DRIVER_URL}), or use an image built for the CUDA "
        "this driver supports",
    )


def arch_missing(sm: str | None) -> Hint:
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


def known_failures() -> list[KnownFailure]:
    return [
        KnownFailure(
            re.compile(r"Torch not compiled with CUDA enabled"), lambda _: cpu_only_build()
        ),
        KnownFailure(
            re.compile(r"Failed to initialize NVML: Unknown Error"), lambda _: _nvml_unknown()
        ),
        KnownFailure(
            re.compile(
                r"NVIDIA driver on your system is too old \(found version (?P<found>\d+)\)"
                r"|CUDA driver version is insufficient for CUDA runtime version"
            ),
            lambda match: driver_too_old(int(match["found"]) if match["found"] else None),
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
            lambda _: no_driver(),
        ),
        KnownFailure(
            re.compile(
                r"CUDA capability (?P<sm>sm_\d+) is not compatible"
                # torch 2.9: "cuda capability 6.1."; torch 2.13: "compute capability (CC) 6.1."
                r"|which is of (?:cuda|compute) capability (?:\(CC\) )?"
                r"(?P<major>\d+)\.(?P<minor>\d+)"
                r"|no kernel image is available for execution on the device"
            ),
            lambda match: arch_missing(
                match["sm"] or (match["major"] and f"sm_{match['major']}{match['minor']}")
            ),
        ),
    ]


def distributed_failures() -> list[KnownFailure]:
    """NCCL's error texts."""
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
