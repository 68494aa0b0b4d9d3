"""Settings from the environment or the checkout's .env (where compose reads them too), and
the lab's token, which only starting a lab writes there."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from torchlab_host import ROOT


def env_file() -> Path:
    return ROOT / ".env"


def configured(name: str) -> str | None:
    """A setting from the environment, else from .env."""
    if os.environ.get(name):
        return os.environ[name]
    path = env_file()
    if path.exists():
        match = re.search(rf"^{name}=(\S+)$", path.read_text(), re.MULTILINE)
        if match:
            return match[1]
    return None


def token() -> str:
    """JUPYTER_TOKEN from the environment or .env; a new random one is written to .env, which
    only its owner may read."""
    existing = configured("JUPYTER_TOKEN")
    if existing:
        return existing
    new = secrets.token_hex(24)
    descriptor = os.open(env_file(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a") as file:
        file.write(f"JUPYTER_TOKEN={new}\n")
    return new
