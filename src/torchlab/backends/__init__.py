"""Device backends: everything torchlab knows about one kind of device, behind `Backend`.

Every module in this package that defines `BACKEND` is a backend, so adding one (ROCm,
torch_tpu) is adding one file. Modules import torch lazily: the host-side commands read
this package without torch installed.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Hint:
    """A known failure in one line: what is wrong, and what fixes it."""

    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem}. Fix: {self.fix}"


class DeviceUnavailable(RuntimeError):
    """An expected device is not usable. Raised instead of falling back to another device."""

    def __init__(self, backend: str, hint: Hint):
        super().__init__(f"expected {backend}, but {hint}")
        self.backend = backend
        self.hint = hint


@dataclass(frozen=True)
class Status:
    usable: bool
    hint: Hint | None = None


@dataclass(frozen=True)
class KnownFailure:
    """An error text this backend recognises, and how to turn a match into a hint.

    `hint` may answer None when the match alone does not establish the cause."""

    pattern: re.Pattern[str]
    hint: Callable[[re.Match[str]], Hint | None]


class Backend(ABC):
    name: ClassVar[str]  # "cuda": the backend, its image variant and `--expect` value
    device_type: ClassVar[str]  # torch.device(...).type that this backend drives
    priority: ClassVar[int]  # best_device() prefers the usable backend with the highest
    # Relative error a float32 matmul may show against a float64 CPU reference.
    float32_matmul_tolerance: ClassVar[float] = 1e-5
    # `probe --bench` sizes: large enough to reach the device's steady throughput.
    bench_matmul_size: ClassVar[int] = 2048
    bench_copy_megabytes: ClassVar[int] = 256

    @abstractmethod
    def status(self) -> Status:
        """Whether this kind of device is usable here; if not, the hint that says why."""

    @abstractmethod
    def devices(self) -> list[torch.device]:
        """The usable devices of this kind (call only when status() is usable)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Facts for the probe: versions, builds, the devices and their properties."""

    def known_failures(self) -> list[KnownFailure]:
        return []

    def explain(self, error: BaseException | str) -> Hint | None:
        """Turn the text of a known failure into a hint; None when it is not a known one."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        for failure in self.known_failures():
            match = failure.pattern.search(text)
            hint = failure.hint(match) if match else None
            if hint:
                return hint
        return None

    def host_requirements(self) -> Hint | None:
        """What the Docker host lacks before containers can reach this device (None: nothing).

        Runs on the host, without torch."""
        return None

    def check_build(self) -> list[str]:
        """What is wrong with this torch build for this backend's image (empty when right)."""
        return []

    def supports_bf16(self, device: torch.device) -> bool:
        return True

    def published_peak(self, device: torch.device) -> dict[str, float] | None:
        """The vendor's dense bf16 TFLOP/s and memory TB/s for this device, when known."""
        return None

    def synchronize(self, device: torch.device) -> None:  # noqa: B027 (doing nothing is the default)
        """Wait until all work queued on the device has finished (for honest timings)."""

    def mark_step(self, device: torch.device) -> None:  # noqa: B027 (doing nothing is the default)
        """End one training step (XLA cuts and runs its lazy graph here)."""

    def seed(self, seed: int) -> None:  # noqa: B027 (doing nothing is the default)
        """Seed generators that torch.manual_seed does not reach."""

    def smoke(self, device: torch.device, size: int = 1024) -> dict[str, Any]:
        """A timed float32 matmul on the device, checked against a float64 CPU reference."""
        import torch

        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator)
        b = torch.randn(size, size, generator=generator)
        reference = a.double() @ b.double()
        on_device_a, on_device_b = a.to(device), b.to(device)
        self.synchronize(device)
        on_device_a @ on_device_b  # warm-up: kernels load, XLA compiles
        self.synchronize(device)
        start = time.perf_counter()
        result = on_device_a @ on_device_b
        self.synchronize(device)
        elapsed = time.perf_counter() - start
        error = ((result.cpu().double() - reference).norm() / reference.norm()).item()
        return {
            "device": str(device),
            "op": f"matmul {size}x{size} float32",
            "ms": round(elapsed * 1e3, 3),
            "gflops": round(2 * size**3 / elapsed / 1e9, 1),
            "relative_error": error,
            "ok": error < self.float32_matmul_tolerance,
        }


@functools.cache
def all_backends() -> tuple[Backend, ...]:
    """Every backend in this package, the most preferred first."""
    found = []
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        backend = getattr(module, "BACKEND", None)
        if isinstance(backend, Backend):
            found.append(backend)
    return tuple(sorted(found, key=lambda backend: -backend.priority))


def get(name: str) -> Backend:
    for backend in all_backends():
        if backend.name == name:
            return backend
    names = ", ".join(backend.name for backend in all_backends())
    raise KeyError(f"unknown device kind '{name}': choose one of {names}")


def for_device(device: torch.device) -> Backend:
    for backend in all_backends():
        if backend.device_type == device.type:
            return backend
    raise KeyError(f"no torchlab backend drives devices of type '{device.type}'")
