"""torchlab: one PyTorch lab on CPU, CUDA and XLA that proves its device works.

    import torchlab
    device = torchlab.best_device()  # cuda, xla or cpu; $TORCHLAB_EXPECT makes it strict

Names are imported on first use, so the host-side commands and the container health check
run without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "best_device": "devices",
    "expected": "devices",
    "mark_step": "devices",
    "seed_everything": "devices",
    "synchronize": "devices",
    "timed": "devices",
    "backend_for": "devices",
    "data_dir": "devices",
    "require": "packages",
    "MissingPackage": "packages",
    "DeviceUnavailable": "backends",
    "Hint": "backends",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
