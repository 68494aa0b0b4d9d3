"""XLA devices through torch_xla: TPUs, or the CPU when PJRT_DEVICE=CPU."""

from __future__ import annotations

import os
import re
from typing import Any

from ..variants import images_for
from . import Backend, Hint, KnownFailure, Status, installed_version, release, same_release


def versions_match() -> bool:
    """torch_xla is installed, and it is the release of the installed torch."""
    return not same_release(["torch", "torch_xla"])


def pjrt_device() -> str | None:
    return os.environ.get("PJRT_DEVICE") or None


def _wants_tpu() -> bool:
    return (pjrt_device() or "").upper().startswith("TPU")


def tpu_chips() -> int:
    """TPU chips on this machine's PCI bus, counted the way torch_xla counts them."""
    from torch_xla._internal import tpu

    return tpu.num_available_chips()


def _not_installed() -> Hint:
    return Hint("torch_xla is not installed here", f"use {images_for('xla')}")


def _version_skew() -> Hint:
    torch_version = installed_version("torch")
    xla_version = installed_version("torch_xla")
    wanted = release(xla_version or "")
    return Hint(
        f"torch {torch_version} and torch_xla {xla_version} do not match",
        f"install the same release of both: pip install torch=={wanted} "
        f"'torch_xla[tpu]=={wanted}' ({images_for('xla')} has them)",
    )


def _no_tpu() -> Hint:
    return Hint(
        f"no TPU found on this machine (PJRT_DEVICE={pjrt_device()})",
        "run on a Cloud TPU VM, or set PJRT_DEVICE=CPU to run XLA on the CPU",
    )


class XlaBackend(Backend):
    name = "xla"
    device_type = "xla"
    priority = 10
    distributed_backend = None

    @property
    def float32_matmul_tolerance(self) -> float:  # type: ignore[override]
        # TPUs multiply float32 in bfloat16 passes unless told to use full precision.
        return 1e-2 if _wants_tpu() else 1e-5

    def recognises_build(self) -> bool:
        return installed_version("torch_xla") is not None

    def status(self) -> Status:
        if not self.recognises_build():
            return Status(False, _not_installed())
        if not versions_match():
            return Status(False, _version_skew())
        if pjrt_device() is None:
            return Status(
                False,
                Hint(
                    "PJRT_DEVICE is not set, so torch_xla would pick a device itself and fall "
                    "back to the CPU when it finds no TPU",
                    "set PJRT_DEVICE=TPU on a TPU VM (torchlab's TPU lab does) "
                    "or PJRT_DEVICE=CPU to run XLA on the CPU",
                ),
            )
        try:
            # libtpu retries the cloud metadata server and then hangs when there is no TPU:
            # count the chips before the runtime starts.
            if _wants_tpu() and tpu_chips() == 0:
                return Status(False, _no_tpu())
            import torch_xla.runtime as xr

            if xr.global_runtime_device_count() == 0:
                return Status(
                    False,
                    _no_tpu()
                    if _wants_tpu()
                    else Hint(
                        f"the XLA runtime found no {pjrt_device()} device",
                        "set PJRT_DEVICE=TPU on a TPU VM or PJRT_DEVICE=CPU to run on the CPU",
                    ),
                )
        except Exception as error:  # the runtime says why; known reasons become hints
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return Status(
                False,
                self.explain(error)
                or Hint(
                    f"the XLA runtime did not start ({type(error).__name__}: {first_line})",
                    "run torchlab probe in this environment and read the runtime's log above",
                ),
            )
        return Status(True)

    def devices(self) -> list[Any]:
        import torch_xla

        return [torch_xla.device()]

    def describe(self) -> dict[str, Any]:
        torch_version = installed_version("torch")
        xla_version = installed_version("torch_xla")
        facts: dict[str, Any] = {
            "torch_xla": xla_version,
            "torch": torch_version,
            "versions_match": versions_match(),
            "pjrt_device": pjrt_device(),
            "libtpu": installed_version("libtpu"),
        }
        if facts["versions_match"]:
            facts["tpu_chips"] = tpu_chips()
            if self.status().usable:
                import torch_xla.runtime as xr

                facts["device_type"] = xr.device_type()
                facts["device_count"] = xr.global_runtime_device_count()
        return facts

    def distributed_unsupported(self) -> Hint:
        # Measured with torch_xla 2.9 under torchrun, PJRT_DEVICE=CPU: init_process_group("xla")
        # succeeds, but each process is a world of its own: all_gather brings zeros for the
        # other ranks' parts and broadcast changes nothing. No TPU here to prove it on.
        return Hint(
            "torchlab distributed does not cover XLA: on the CPU, torch_xla's collectives do "
            "not reach the other processes, and TPUs start theirs with torch_xla.launch, not "
            "torchrun",
            "on a TPU VM, train with torch_xla.launch; run the proof in the cpu image (gloo) "
            "or the cuda image (NCCL)",
        )

    def known_failures(self) -> list[KnownFailure]:
        return [
            KnownFailure(re.compile(r"No module named '?torch_xla"), lambda _: _not_installed()),
            KnownFailure(re.compile(r"_XLAC[^\n]*undefined symbol"), lambda _: _version_skew()),
            KnownFailure(
                re.compile(
                    r"Failed to get TPU metadata"
                    r"|could not determine TPU worker hostnames"
                    r"|TPU initialization failed"
                    r"|No ba16c7433 device found"
                ),
                lambda _: _no_tpu(),
            ),
        ]

    def synchronize(self, device: Any) -> None:
        import torch_xla
        import torch_xla.core.xla_model as xm

        torch_xla.sync()
        xm.wait_device_ops()

    def mark_step(self, device: Any) -> None:
        import torch_xla

        torch_xla.sync()

    def seed(self, seed: int) -> None:
        if self.status().usable:
            import torch_xla.core.xla_model as xm

            xm.set_rng_state(seed)


BACKEND = XlaBackend()
