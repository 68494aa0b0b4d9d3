"""The locks (requirements/*.txt): the exact pins every image and venv is built from.

Standard library only: the host-side commands read them before any environment exists.
"""

from __future__ import annotations

import re
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def canonical(name: str) -> str:
    """A distribution's name as pip compares it (PEP 503): Torch_XLA and torch-xla are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """Every `name==version` of a lock's text, by canonical name."""
    return {canonical(match[1]): match[2] for match in PIN.finditer(text)}


def read_pins(lock: Path) -> dict[str, str]:
    return pins(lock.read_text())
