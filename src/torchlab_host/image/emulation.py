"""Another platform's programs on this machine: QEMU's user mode, which the kernel runs them
under through its binfmt_misc handler. Building another platform's image (make build-cpu
PLATFORM=linux/arm64) and its base (make base-image PLATFORM=...) need one, and PyTorch's
aarch64 builds need QEMU 8 or newer (7.2, Debian 12's own, crashes torch 2.13 at import)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from torchlab.variants import MACHINES, this_platform
from torchlab_host import ROOT
from torchlab_host.core.engine import quiet, run
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings

BINFMT = Path("/proc/sys/fs/binfmt_misc")
OLDEST = (8, 0)
VERSION = re.compile(r"^qemu-\S+ version (\d+)\.(\d+)", re.MULTILINE)
FIX = "make qemu (as root: QEMU 10 from Debian's bookworm-backports, registered with binfmt_misc)"
# The CPU QEMU emulates for a platform's programs, which it reads from their environment
# (QEMU_CPU). torch needs ARMv8.2 (on cortex-a72, ARMv8.0, a matmul dies with SIGILL); measured
# here, a 1024x1024 matmul takes 4.5 s on neoverse-n1 and 89.5 s on QEMU's default, max, whose
# extra extensions (SVE) are slow to emulate.
CPU_MODELS = {"linux/arm64": "neoverse-n1"}


def handler_name(platform: str) -> str:
    """binfmt_misc's entry for a platform's programs, as Debian's qemu-user names it."""
    return f"qemu-{MACHINES[platform]}"


def emulated_environment(platform: str) -> dict[str, str]:
    """What another platform's programs need in their environment here, to run under QEMU at
    their best (nothing for this machine's own)."""
    if platform == this_platform() or platform not in CPU_MODELS:
        return {}
    return {"QEMU_CPU": CPU_MODELS[platform]}


def require_emulation(platform: str, binfmt: Path = BINFMT) -> str:
    """The QEMU that runs a platform's programs here, new enough for PyTorch; else one line
    that says what is missing or too old, and make qemu."""
    entry = binfmt / handler_name(platform)
    said = entry.read_text() if entry.is_file() else ""
    interpreter = re.search(r"^interpreter (\S+)$", said, re.MULTILINE)
    if not said.startswith("enabled") or not interpreter:
        raise HostError(f"this machine cannot run {platform} programs: {entry} is not there", FIX)
    # Debian's is a link, <arch>-binfmt-P, that runs only under binfmt_misc: ask the emulator.
    emulator = Path(interpreter[1]).resolve()
    version = VERSION.search(quiet([str(emulator), "--version"]).stdout)
    found = (int(version[1]), int(version[2])) if version else None
    if found is None or found < OLDEST:
        shown = f"QEMU {found[0]}.{found[1]}" if found else "no QEMU that says its version"
        raise HostError(
            f"{platform} programs run here under {emulator}, {shown}, which crashes "
            f"PyTorch's {MACHINES[platform]} build; it needs QEMU {OLDEST[0]} or newer",
            FIX,
        )
    return f"QEMU {found[0]}.{found[1]}"


def install(settings: Settings) -> None:
    """make qemu: QEMU's user mode, new enough, registered for every platform but this one's."""
    others = [platform for platform in MACHINES if platform != this_platform()]
    arches = [MACHINES[platform] for platform in others]
    mirror = {"DEBIAN_MIRROR": settings["DEBIAN_MIRROR"]}
    script = ROOT / "scripts/install-qemu"
    if run([str(script), *arches], env=dict(os.environ, **mirror)).returncode:
        raise HostError("installing QEMU failed (its output is above)")
    for platform in others:
        print(f"torchlab: {require_emulation(platform)} runs {platform} programs here")
