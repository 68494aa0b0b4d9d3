"""The CPU: always there, and what the other backends are checked against."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from .. import system
from ..variants import by_name
from . import Backend, Hint, KnownFailure, Status

# The instruction sets that run bfloat16 natively; without them autocast(bf16) is emulated.
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_model_and_flags() -> tuple[str | None, set[str]]:
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


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile (Inductor) would use on the CPU."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _shm_too_small() -> Hint:
    size = system.human_bytes(system.shm_bytes())
    return Hint(
        f"DataLoader workers ran out of shared memory (/dev/shm is {size})",
        "give the container more: docker run --shm-size=2g "
        f"(compose.yaml already does: make {by_name('cpu').service})",
    )


def _no_compiler() -> Hint:
    return Hint(
        "torch.compile found no C++ compiler",
        "install one (apt-get install g++) or set CXX; the torchlab images carry g++",
    )


class CpuBackend(Backend):
    name = "cpu"
    device_type = "cpu"
    priority = 0

    def status(self) -> Status:
        return Status(usable=True)

    def devices(self) -> list[Any]:
        import torch

        return [torch.device("cpu")]

    def describe(self) -> dict[str, Any]:
        import torch

        model, flags = _cpu_model_and_flags()
        return {
            "model": model,
            "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "bf16_native": any(flag in flags for flag in _BF16_CPU_FLAGS),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "openmp": torch.backends.openmp.is_available(),
            "cxx_compiler": cxx_compiler(),
        }

    def known_failures(self) -> list[KnownFailure]:
        return [
            KnownFailure(
                re.compile(
                    r"insufficient shared memory \(shm\)"
                    r"|unable to (?:write to|allocate shared memory).*No space left on device"
                ),
                lambda _: _shm_too_small(),
            ),
            # Workers that cannot allocate their batch in /dev/shm do not always die: the
            # loader can wait on them forever, so a stalled loader on a small shm is this too.
            KnownFailure(
                re.compile(r"DataLoader timed out after \d+ seconds"),
                lambda _: _shm_too_small() if system.shm_is_small(system.shm_bytes()) else None,
            ),
            KnownFailure(re.compile(r"No working C\+\+ compiler found"), lambda _: _no_compiler()),
        ]

    def check_build(self) -> list[str]:
        import torch

        if torch.version.cuda is not None:
            return [
                f"torch {torch.__version__} is a CUDA {torch.version.cuda} build; "
                "the cpu image must carry the CPU-only build"
            ]
        return []


BACKEND = CpuBackend()
