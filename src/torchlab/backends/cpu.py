"""The CPU: always there, and what the other backends are checked against."""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from .. import system
from . import Backend, BuildCheck, Hint, KnownFailure, Status

# The instruction sets that run bfloat16 natively; without them autocast(bf16) is emulated.
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile (Inductor) would use on the CPU."""
    return shutil.which(os.environ.get("CXX", "g++"))


def shm_too_small(who: str = "DataLoader workers") -> Hint:
    size = system.human_bytes(system.shm_bytes())
    return Hint(
        f"{who} ran out of shared memory (/dev/shm is {size})",
        "give the container more: docker run --shm-size=2g "
        "(torchlab's compose.yaml gives every lab 2 GB)",
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

        model, flags = system.cpu_model_and_flags()
        return {
            "model": model,
            "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "bf16_native": any(flag in flags for flag in _BF16_CPU_FLAGS),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "openmp": torch.backends.openmp.is_available(),
            "cxx_compiler": cxx_compiler(),
        }

    def native_bf16(self, device: Any) -> bool:
        _, flags = system.cpu_model_and_flags()
        return any(flag in flags for flag in _BF16_CPU_FLAGS)

    def known_failures(self) -> list[KnownFailure]:
        return [
            KnownFailure(
                re.compile(
                    r"insufficient shared memory \(shm\)"
                    r"|unable to (?:write to|allocate shared memory).*No space left on device"
                ),
                lambda _: shm_too_small(),
            ),
            # Workers that cannot allocate their batch in /dev/shm do not always die: the
            # loader can wait on them forever, so a stalled loader on a small shm is this too.
            KnownFailure(
                re.compile(r"DataLoader timed out after \d+ seconds"),
                lambda _: shm_too_small() if system.shm_is_small(system.shm_bytes()) else None,
            ),
            KnownFailure(re.compile(r"No working C\+\+ compiler found"), lambda _: _no_compiler()),
        ]

    def build_checks(self) -> dict[str, BuildCheck]:
        return {**super().build_checks(), "cpu_only": _check_cpu_only}


def _check_cpu_only(expected: bool) -> list[str]:
    import torch

    gpu_runtime = torch.version.cuda or getattr(torch.version, "hip", None)
    if expected and gpu_runtime:
        return [f"torch {torch.__version__} is built for a GPU ({gpu_runtime}), not CPU-only"]
    return []


BACKEND = CpuBackend()
