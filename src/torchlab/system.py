"""Facts about the machine and the container, from the standard library alone.

The one reader of /proc and /sys here: the probe, the backends and the host's benchmark ask it.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

GIB = 1024**3
# DataLoader workers hand batches over through /dev/shm; Docker's default of 64 MiB crashes them.
SHM_MINIMUM = 1 * GIB
# Environment variables that decide which device a process sees and how it behaves.
DEVICE_ENVIRONMENT = (
    "TORCHLAB_EXPECT",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
    "PJRT_DEVICE",
    "CUBLAS_WORKSPACE_CONFIG",
)


def in_container() -> bool:
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        cgroup = Path("/proc/1/cgroup").read_text()
    except OSError:
        return False
    return any(word in cgroup for word in ("docker", "containerd", "kubepods", "libpod"))


def _meminfo() -> dict[str, int]:
    values = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return values


def cpu_model_and_flags() -> tuple[str | None, set[str]]:
    """The CPU's model name and its instruction-set flags (/proc/cpuinfo, first CPU)."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _cgroup_cpu_limit() -> float | None:
    """CPUs this cgroup may use (cgroup v2 cpu.max or v1 quota), None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def machine() -> dict[str, Any]:
    memory = _meminfo()
    libc, libc_version = platform.libc_ver()
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "os": _os_name(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": cpu_model_and_flags()[0],
        "glibc": libc_version if libc == "glibc" else None,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_limit": _cgroup_cpu_limit(),
        "ram_bytes": memory.get("MemTotal"),
        "ram_available_bytes": memory.get("MemAvailable"),
    }


def shm_bytes() -> int | None:
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return None
    return stats.f_blocks * stats.f_frsize


def shm_free_bytes() -> int | None:
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def shm_is_small(size: int | None) -> bool:
    return size is not None and size < SHM_MINIMUM


def labs_dir() -> Path:
    """The work folder (the course is brought into it): $TORCHLAB_LABS, else ./labs, else the
    current folder."""
    configured = os.environ.get("TORCHLAB_LABS")
    if configured:
        return Path(configured)
    return Path("labs") if Path("labs").is_dir() else Path.cwd()


def container() -> dict[str, Any]:
    labs = labs_dir()
    return {
        "in_container": in_container(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "shm_bytes": shm_bytes(),
        "labs_dir": str(labs),
        "labs_exists": labs.is_dir(),
        "labs_writable": labs.is_dir() and os.access(labs, os.W_OK | os.X_OK),
        "environment": {name: os.environ.get(name) for name in DEVICE_ENVIRONMENT},
    }


def labs_problem(container: dict[str, Any]) -> str | None:
    """Why notebooks could not be saved in the labs folder, as one line with its fix."""
    labs = container["labs_dir"]
    if not container["labs_exists"]:
        return (
            f"the labs folder {labs} is missing. Fix: mount your notebooks there "
            f'(docker run -v "$PWD/labs:{labs}"), or set TORCHLAB_LABS to where they are'
        )
    if not container["labs_writable"]:
        return (
            f"the labs folder {labs} is not writable by uid {container['uid']}, so notebooks "
            "could not be saved. Fix: on the host, chown -R $(id -u):$(id -g) labs"
        )
    return None


def human_bytes(count: int | None) -> str:
    if count is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
