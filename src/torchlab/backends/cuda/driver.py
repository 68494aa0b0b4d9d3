"""The NVIDIA driver: which one is there and the newest CUDA it supports, read from nvidia-smi
on the host and from the driver's own libraries (libcuda, NVML) in a container; and whether a
host's driver and GPUs suit an image (host_requirements, which the host tools call without
torch).
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ... import system
from .. import Hint, HostTooOld
from .kernels import serving_arch

TOOLKIT_URL = (
    "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html"
)
DRIVER_URL = "https://www.nvidia.com/Download/index.aspx"
# Any of these on the host means Docker can hand GPUs to containers (--gpus).
CONTAINER_TOOLKIT_COMMANDS = ("nvidia-ctk", "nvidia-container-runtime-hook", "nvidia-container-cli")
# On WSL 2, Docker Desktop's engine hands GPUs to containers itself; the docker command of a
# distribution it serves is a link into its tools, mounted here.
DOCKER_DESKTOP_TOOLS = Path("/mnt/wsl/docker-desktop")
# NVIDIA's Windows driver alone gives WSL 2 its GPU, libraries and nvidia-smi (/usr/lib/wsl/lib).
WSL_DRIVER_FIX = (
    f"install or update NVIDIA's Windows driver on Windows ({DRIVER_URL}; never a Linux driver "
    "inside WSL), then in PowerShell: wsl --update; wsl --shutdown"
)

# The oldest driver branch that supports each CUDA major (NVIDIA's CUDA compatibility table);
# a build for any 12.x runs on all of them (minor version compatibility).
MINIMUM_DRIVER = {11: 450, 12: 525, 13: 580}
# nvidia-smi's header: the driver, and the newest CUDA it supports. That CUDA is what the
# driver's cuDriverGetVersion answers, the number the NVIDIA Container Toolkit checks too.
SMI_HEADER = re.compile(
    r"Driver Version:\s*(?P<driver>\d[\d.]*)\s+CUDA Version:\s*(?P<major>\d+)\.(?P<minor>\d+)"
)


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


# nvidia-smi -L: a line per GPU, and under a GPU partitioned with MIG a line per instance.
SMI_LISTED_GPU = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+) \(UUID: (?P<uuid>GPU-[^)\s]+)\)$")
SMI_LISTED_MIG = re.compile(
    r"^\s+MIG (?P<profile>\S+)\s+Device\s+\d+: \(UUID: (?P<uuid>MIG-[^)\s]+)\)$"
)
# Which GPUs are in MIG mode: "GPU-..., Enabled" ("Disabled", or "[N/A]" for a GPU without MIG).
# One in MIG mode runs nothing itself, and -L lists it bare until its instances are made, as
# after each reboot (the mode stays, the instances go).
SMI_MIG_MODE_QUERY = ("--query-gpu=uuid,mig.mode.current", "--format=csv,noheader")


class ListedDevice(NamedTuple):
    """A device a container can be handed by its UUID: a whole GPU, or one MIG instance."""

    uuid: str
    name: str


class UnusableGpu(Exception):
    """A GPU nvidia-smi lists that a container handed it could not use; `hint` says why and what
    makes it usable."""

    def __init__(self, hint: Hint):
        super().__init__(str(hint))
        self.hint = hint


def smi_devices(listing: str, mig_modes: str = "") -> list[ListedDevice]:
    """The devices in nvidia-smi -L's output: each GPU, or, for a GPU partitioned with MIG,
    its MIG instances instead (a MIG-enabled GPU itself runs nothing). With mig_modes (what
    SMI_MIG_MODE_QUERY answers), a GPU in MIG mode that -L lists without instances, which has
    nothing to hand out, is UnusableGpu."""
    in_mig_mode = {
        uuid.strip()
        for uuid, _, mode in (line.partition(",") for line in mig_modes.splitlines())
        if mode.strip() == "Enabled"
    }
    devices: list[ListedDevice] = []
    gpus: list[tuple[str, ListedDevice]] = []  # each GPU, with its index
    partitioned: set[str] = set()
    for line in listing.splitlines():
        if match := SMI_LISTED_GPU.match(line.rstrip()):
            gpus.append((match["index"], ListedDevice(match["uuid"], match["name"])))
            devices.append(gpus[-1][1])
        elif gpus and (match := SMI_LISTED_MIG.match(line.rstrip())):
            _, gpu = gpus[-1]
            partitioned.add(gpu.uuid)
            devices.append(ListedDevice(match["uuid"], f"{gpu.name} MIG {match['profile']}"))
    bare = [index for index, gpu in gpus if gpu.uuid in in_mig_mode - partitioned]
    if bare:
        raise UnusableGpu(_mig_without_instances(bare))
    return [device for device in devices if device.uuid not in partitioned]


def _mig_without_instances(indexes: list[str]) -> Hint:
    """The GPUs of these indexes are in MIG mode, and -L lists none of their instances."""
    first, others = indexes[0], indexes[1:]
    which = f"GPUs {', '.join(indexes)} are" if others else f"GPU {first} is"
    likewise = f"; the same for GPU {', '.join(others)}" if others else ""
    return Hint(
        f"{which} in MIG mode without MIG instances (they do not outlast a reboot), so a "
        "container handed one can use nothing",
        f"create its instances: sudo nvidia-smi mig -i {first} -cgi PROFILE,... -C (nvidia-smi "
        f"mig -i {first} -lgip lists the profiles), or turn MIG mode off: sudo nvidia-smi -i "
        f"{first} -mig 0{likewise}",
    )


def host_devices() -> list[ListedDevice]:
    """The GPUs and MIG instances this host's nvidia-smi lists, to be handed out by UUID
    (UnusableGpu: a GPU in MIG mode without instances)."""
    return smi_devices(_nvidia_smi("-L"), _nvidia_smi(*SMI_MIG_MODE_QUERY))


def needed_driver(cuda_major: int) -> str:
    oldest = MINIMUM_DRIVER.get(cuda_major)
    return f"CUDA {cuda_major} (driver {oldest} or newer)" if oldest else f"CUDA {cuda_major}"


def cuda_text(version: int) -> str:
    """A CUDA version as the driver answers it (13000) in words (13.0)."""
    return f"{version // 1000}.{version % 1000 // 10}"


def host_requirements(
    build: Mapping[str, Any], explain: Callable[[str], Hint | None]
) -> Hint | None:
    """What the host lacks before containers reach its GPUs, or what keeps its driver and GPUs
    from suiting an image with these build promises; None: nothing. `explain` is the backend's
    reading of a known failure, for what nvidia-smi says instead of listing the GPUs."""
    if not shutil.which("nvidia-smi"):
        if system.wsl():
            return Hint("no NVIDIA driver reaches WSL 2 (nvidia-smi not found)", WSL_DRIVER_FIX)
        return Hint(
            "no NVIDIA driver on this host (nvidia-smi not found)",
            f"install the NVIDIA driver ({DRIVER_URL}) and check that nvidia-smi lists the GPU",
        )
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if listing.returncode != 0 or "GPU" not in listing.stdout:
        said = (listing.stdout + listing.stderr).strip() or "no GPU listed"
        return explain(said) or Hint(
            f"nvidia-smi sees no usable GPU ({said.splitlines()[0]})",
            "fix the host's driver until nvidia-smi -L lists the GPU",
        )
    reaches_containers = any(shutil.which(tool) for tool in CONTAINER_TOOLKIT_COMMANDS) or (
        system.wsl() and _docker_desktop()  # its engine hands out the GPU itself
    )
    if not reaches_containers:
        return _no_container_toolkit()
    if "cuda_major" in build and (too_old := _driver_suits(build["cuda_major"])):
        return too_old
    return _gpus_suit(build["archs"]) if "archs" in build else None


def _no_container_toolkit() -> Hint:
    if system.wsl():
        return Hint(
            "this WSL 2 distribution's Docker cannot hand the GPU to containers (it is neither "
            "Docker Desktop's nor has the NVIDIA Container Toolkit)",
            "use Docker Desktop with its WSL 2 backend and its WSL integration for this "
            f"distribution, or install the toolkit for the Docker Engine here ({TOOLKIT_URL})",
        )
    return Hint(
        "the NVIDIA Container Toolkit is not installed, so containers cannot reach the GPU",
        f"install it ({TOOLKIT_URL}), then: sudo nvidia-ctk runtime configure "
        "--runtime=docker && sudo systemctl restart docker",
    )


def _docker_desktop() -> bool:
    """Whether this WSL 2 distribution's docker command is Docker Desktop's."""
    docker = shutil.which("docker")
    return docker is not None and Path(docker).resolve().is_relative_to(DOCKER_DESKTOP_TOOLS)


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


# In a container, the driver's libraries (the NVIDIA Container Toolkit mounts them) answer
# what nvidia-smi would, without nvidia-smi.
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
