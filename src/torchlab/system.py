"""Facts about the machine and the container, from the standard library alone.

The one reader of /proc and /sys here: the probe, the backends and the host's benchmark ask it.
"""

from __future__ import annotations

import math
import os
import platform
import re
import resource
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GIB = 1024**3
# DataLoader workers hand batches over through /dev/shm; Docker's default of 64 MiB crashes them.
SHM_MINIMUM = 1 * GIB
# The limits a container's processes run under, by the names docker run --ulimit gives them.
LIMITS = {"memlock": resource.RLIMIT_MEMLOCK, "stack": resource.RLIMIT_STACK}
# The kernel's first IPC namespace always has this inode (PROC_IPC_INIT_INO): a container
# in it was started with --ipc=host.
HOST_IPC_INODE = 0xEFFFFFFF
# Environment variables that decide which device a process sees and how it behaves.
DEVICE_ENVIRONMENT = (
    "TORCHLAB_EXPECT",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
    "PJRT_DEVICE",
    "CUBLAS_WORKSPACE_CONFIG",
)

# WSL 2 hands Linux the GPU (and Docker Desktop hands a GPU container it) as the Windows
# driver's paravirtual device and that driver's Linux libraries, never as /dev/nvidia*.
WSL_GPU = Path("/dev/dxg")
WSL_DRIVER_LIBRARIES = Path("/usr/lib/wsl/lib")
KERNEL_RELEASE = Path("/proc/sys/kernel/osrelease")
MOUNTS = Path("/proc/mounts")
CGROUP = Path("/sys/fs/cgroup")
# Torch sizes its intra-op pool from these (MKL_NUM_THREADS over OMP_NUM_THREADS), OpenMP and
# MKL theirs: a user who set either chose their own threads.
USER_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
THREADS_FROM_LIMIT = "TORCHLAB_CPU_LIMIT_THREADS"


def selinux_enforcing(root: Path = Path("/")) -> bool:
    """SELinux enforces here (Fedora, RHEL): bind mounts need a label for containers to use."""
    try:
        return (root / "sys/fs/selinux/enforce").read_text().strip() == "1"
    except OSError:
        return False


def in_container() -> bool:
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        cgroup = Path("/proc/1/cgroup").read_text()
    except OSError:
        return False
    return any(word in cgroup for word in ("docker", "containerd", "kubepods", "libpod"))


def wsl() -> bool:
    """Whether this runs on WSL 2's kernel, Microsoft's (5.15.167.4-microsoft-standard-WSL2):
    in a Linux distribution on Windows, or in a container of Docker Desktop there."""
    try:
        return "microsoft" in KERNEL_RELEASE.read_text().lower()
    except OSError:
        return False


def _unescaped(field: str) -> str:
    """A /proc/mounts field, its blanks and backslashes unescaped (\\040, \\134)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)


def windows_drive(folder: Path) -> str | None:
    """Where the Windows drive a folder lies on is mounted (/mnt/c), or None: WSL mounts
    Windows' drives as drvfs (over 9p in WSL 2), which is slow for Linux programs and has no
    Unix permissions. The folder's own mount is the longest mount point above it."""
    try:
        lines = MOUNTS.read_text().splitlines()
    except OSError:
        return None
    folder = folder.resolve()
    mounts = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 4:
            source, point, kind, options = fields[:4]
            mounts[Path(_unescaped(point))] = "drvfs" in (source, kind) or "aname=drvfs" in options
    above = [point for point in mounts if folder.is_relative_to(point)]
    own = max(above, key=lambda point: len(point.parts), default=None)
    return str(own) if own is not None and mounts[own] else None


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


def _cgroup_cpu_limit(cgroup: Path = CGROUP) -> float | None:
    """CPUs this cgroup may use (cgroup v2 cpu.max or v1 quota), None when unlimited."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup / "cpu/cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def cpu_limit_threads(limit: float | None, cpu_count: int | None) -> int | None:
    """The threads that fit a CPU quota: ceil(quota/period), at least 1, at most the host's
    cores; None without a quota (torch's own default then: one per core). More threads than
    the quota's CPUs each get a slice of its time and wait for the next period (CFS throttling),
    so they compute slower than fewer would."""
    if limit is None:
        return None
    return max(1, min(math.ceil(limit), cpu_count or 1))


def thread_environment(
    environ: Mapping[str, str] = os.environ, cgroup: Path = CGROUP
) -> dict[str, str]:
    """What every container's entrypoint exports before any Python or torch starts, so each
    process's PyTorch and OpenMP threads fit the container's CPU limit; nothing where the user
    chose their own (OMP_NUM_THREADS or MKL_NUM_THREADS: torch reads both) or there is no
    limit. TORCHLAB_CPU_LIMIT_THREADS says to the probe that the number is the limit's."""
    if any(environ.get(name) for name in USER_THREAD_VARIABLES):
        return {}
    threads = cpu_limit_threads(_cgroup_cpu_limit(cgroup), os.cpu_count())
    if threads is None:
        return {}
    return dict.fromkeys((*USER_THREAD_VARIABLES, THREADS_FROM_LIMIT), str(threads))


def threads_source(environ: Mapping[str, str] = os.environ) -> str:
    """Where this process's thread count came from: the CPU limit, the user's variable, or
    torch's default."""
    chosen = [name for name in USER_THREAD_VARIABLES if environ.get(name)]
    marked = environ.get(THREADS_FROM_LIMIT)
    if marked and all(environ[name] == marked for name in chosen):
        return "the CPU limit"
    if chosen:
        return f"your {chosen[-1]}"  # torch reads MKL_NUM_THREADS over OMP_NUM_THREADS
    return "torch's default (one per core)"


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
        "wsl": wsl(),  # its GPU comes through /dev/dxg, its Windows drives are slow
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


def limits(hard: bool = False) -> dict[str, int]:
    """This process's soft (or hard) limits by their ulimit names, in bytes (-1: none)."""
    found = {}
    for name, which in LIMITS.items():
        limit = resource.getrlimit(which)[1 if hard else 0]
        found[name] = -1 if limit == resource.RLIM_INFINITY else limit
    return found


def ipc_namespace() -> str:
    """ "host" where this process shares the host's IPC namespace (--ipc=host), else "own"."""
    try:
        return "host" if os.stat("/proc/self/ns/ipc").st_ino == HOST_IPC_INODE else "own"
    except OSError:
        return "own"


def container() -> dict[str, Any]:
    labs = labs_dir()
    return {
        "in_container": in_container(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "shm_bytes": shm_bytes(),
        "limits": limits(),
        "ipc": ipc_namespace(),
        "labs_dir": str(labs),
        "labs_exists": labs.is_dir(),
        "labs_writable": labs.is_dir() and os.access(labs, os.W_OK | os.X_OK),
        "environment": {name: os.environ.get(name) for name in DEVICE_ENVIRONMENT},
    }


def meets(have: int, wanted: int) -> bool:
    """A limit of have is at least wanted (-1: none)."""
    return have == -1 or (wanted != -1 and have >= wanted)


def limit_text(limit: int) -> str:
    return "unlimited" if limit == -1 else human_bytes(limit)


def device_settings_problem(
    container: dict[str, Any], wanted: dict[str, Any], hub_server: bool
) -> str | None:
    """Which of the settings a device's containers are started with (the manifest's compose
    block: its ipc and ulimits) this container lacks, as one line with its fix; a hub's server
    keeps its own IPC namespace by design (many users share the host)."""
    missing = [
        f"{name} {limit_text(container['limits'][name])} (wanted {limit_text(limit)})"
        for name, limit in wanted.get("ulimits", {}).items()
        if name in container["limits"] and not meets(container["limits"][name], limit)
    ]
    flags = [f"--ulimit {name}={limit}" for name, limit in wanted.get("ulimits", {}).items()]
    if wanted.get("ipc") == "host" and not hub_server:
        flags.insert(0, "--ipc=host")
        if container["ipc"] != "host":
            missing.insert(0, "its own IPC namespace (wanted the host's)")
    if not missing:
        return None
    return (
        f"this container has {', '.join(missing)}: NCCL and pinned memory across GPUs need "
        f"them. Fix: docker run {' '.join(flags)} (torchlab's compose.yaml sets them)"
    )


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


if __name__ == "__main__":
    # docker/entrypoint: `eval "$(python -I -m torchlab.system)"`, the thread settings as
    # shell exports (numbers only, so nothing in them needs quoting).
    for name, value in thread_environment().items():
        print(f"export {name}={value}")
