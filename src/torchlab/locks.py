"""The locks (requirements/*.txt): the exact pins every image and venv is built from.

A pin that holds on one machine only carries a marker of one form, the only one a lock may
hold: `torch==2.10.0 ; platform_machine == 'aarch64'` (make lock writes it where the platforms'
resolutions differ). pip reads it itself; these functions read it for a given machine.

Standard library only: the host-side commands read them before any environment exists.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)"
    r"(?:\s*;\s*platform_machine\s*==\s*'([A-Za-z0-9_]+)')?",
    re.MULTILINE,
)


def canonical(name: str) -> str:
    """A distribution's name as pip compares it (PEP 503): Torch_XLA and torch-xla are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def marker(machine: str) -> str:
    """The marker of a pin that holds on one machine alone."""
    return f"platform_machine == '{machine}'"


def pins(text: str, machine: str | None = None) -> dict[str, str]:
    """Every `name==version` of a lock's text that holds on a machine (this one unless named),
    by canonical name."""
    machine = machine or platform.machine()
    return {
        canonical(match[1]): match[2] for match in PIN.finditer(text) if match[3] in (None, machine)
    }


def read_pins(lock: Path, machine: str | None = None) -> dict[str, str]:
    return pins(lock.read_text(), machine)
