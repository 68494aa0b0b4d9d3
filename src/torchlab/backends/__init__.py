"""Device backends: everything torchlab knows about one kind of device, behind `Backend`.

Every module in this package that defines `BACKEND` is a backend (a package, like cuda/,
counts as one), so adding one (ROCm, torch_tpu) is adding one file. A backend recognises its
own torch build and claims the devices of its `device_type`: a ROCm backend claims the `cuda`
devices of a HIP build, which the CUDA backend then leaves alone. Modules import torch
lazily: the host tools read this package without torch installed.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
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


@dataclass(frozen=True)
class HostTooOld(Hint):
    """The device is on the host, but its driver is older than one image needs: `found` says
    what the host has, `needs` what the image needs (the host tools name the image)."""

    found: str = ""
    needs: str = ""


class UnknownDevice(ValueError):
    """A device kind no backend drives (a name, or a torch device's type); the message is one
    line that names the kinds there are. Not a KeyError: a KeyError is a bug, and shows so."""


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


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def release(version: str) -> str:
    """A version without its local label: 2.9.0+cpu is release 2.9.0."""
    return version.split("+")[0]


def same_release(distributions: list[str]) -> list[str]:
    """What keeps these distributions from being one release (torch == torch_xla)."""
    versions = {name: installed_version(name) for name in distributions}
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        return [f"{', '.join(missing)} not installed"]
    if len({release(version) for version in versions.values()}) > 1:
        return [
            " and ".join(f"{name} {version}" for name, version in versions.items())
            + " do not match"
        ]
    return []


def includes(distributions: list[str]) -> list[str]:
    """What keeps these distributions from being installed (torchvision, on a platform whose
    index has it)."""
    missing = [name for name in distributions if installed_version(name) is None]
    return [f"{', '.join(missing)} not installed"] if missing else []


BuildCheck = Callable[[Any], list[str]]


class Backend(ABC):
    name: ClassVar[str]  # "cuda": the device kind, `--expect` value, the manifest's `device`
    device_type: ClassVar[str]  # torch.device(...).type of the devices it claims
    priority: ClassVar[int]  # best_device() prefers the usable backend with the highest
    # Whether host_requirements() can tell that the device reaches containers on this host.
    checks_host: ClassVar[bool] = False
    # torch.distributed's backend for this kind of device (torchlab distributed); None where
    # the proof cannot cover it, and distributed_unsupported() says why.
    distributed_backend: ClassVar[str | None] = "gloo"
    # Relative error a float32 matmul may show against a float64 CPU reference.
    float32_matmul_tolerance: ClassVar[float] = 1e-5
    # `probe --bench` sizes: large enough to reach the device's steady throughput.
    bench_matmul_size: ClassVar[int] = 2048
    bench_copy_megabytes: ClassVar[int] = 256

    def recognises_build(self) -> bool:
        """Whether this torch build is this backend's to drive (two backends may share a
        device_type: CUDA and ROCm builds both call their devices `cuda`)."""
        return True

    @abstractmethod
    def status(self) -> Status:
        """Whether this kind of device is usable here; if not, the hint that says why."""

    @abstractmethod
    def devices(self) -> list[torch.device]:
        """The usable devices of this kind (call only when status() is usable)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Facts for the probe: versions, builds, the devices and their properties."""

    def warnings(self) -> list[str]:
        """What works but is not as it should be here, a line each with its fix (the probe
        shows them)."""
        return []

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

    def distributed_unsupported(self) -> Hint:
        """Why torchlab distributed cannot prove this kind of device, and what to use."""
        raise NotImplementedError(f"{self.name} has a distributed backend")

    def distributed_failures(self) -> list[KnownFailure]:
        """Error texts of this device's collective library (NCCL for CUDA), and their hints."""
        return []

    def host_requirements(self, build: Mapping[str, Any] | None = None) -> Hint | None:
        """What the Docker host lacks before containers can reach this device (None: nothing);
        given an image's build promises (the manifest's `build`), also whether the host's
        driver and devices suit that image (a HostTooOld hint where the driver does not).

        Runs on the host, without torch."""
        return None

    def build_checks(self) -> dict[str, BuildCheck]:
        """The manifest's `build` keys this backend asserts, each a check that lists problems."""
        return {"same_release": same_release, "includes": includes}

    def check_build(self, expectations: Mapping[str, Any]) -> list[str]:
        """What keeps this torch build from being what the manifest promises (empty: nothing)."""
        checks = self.build_checks()
        problems = [
            f"the manifest asks for '{key}', which the {self.name} backend does not check"
            for key in expectations
            if key not in checks
        ]
        for key, expected in expectations.items():
            if key in checks:
                problems += checks[key](expected)
        return problems

    def supports_bf16(self, device: torch.device) -> bool:
        return True

    def native_bf16(self, device: torch.device) -> bool:
        """Whether bf16 runs in hardware here, so its throughput is worth measuring (emulated,
        a 2048 matmul takes minutes and says nothing about the device)."""
        return self.supports_bf16(device)

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
    raise UnknownDevice(f"unknown device kind '{name}': choose one of {names}")


def for_device(device: torch.device) -> Backend:
    """The backend that claims a device: of its type, and recognising this torch build."""
    for backend in all_backends():
        if backend.device_type == device.type and backend.recognises_build():
            return backend
    raise UnknownDevice(f"no torchlab backend drives devices of type '{device.type}' in this build")
