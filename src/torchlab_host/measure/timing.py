"""Timing commands the way a person runs them, and the medians the reports give."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable

from torchlab_host.core.checkout import run_host_tools
from torchlab_host.core.errors import HostError


def seconds_of(done: Callable[[], subprocess.CompletedProcess], what: str) -> float:
    """How long a command took; HostError with its last output when it failed."""
    start = time.monotonic()
    result = done()
    if result.returncode != 0:
        said = (result.stderr or result.stdout or "").strip()[-500:]
        raise HostError(f"{what} failed: {said}")
    return time.monotonic() - start


def host_tools_seconds(*arguments: str, **kwargs) -> float:
    """Seconds of one host tools command (python -m torchlab_host ...)."""
    return seconds_of(lambda: run_host_tools(*arguments, **kwargs), " ".join(arguments))


def median_of(repeats: int, measure: Callable[[], float]) -> float:
    return round(statistics.median(measure() for _ in range(repeats)), 1)
