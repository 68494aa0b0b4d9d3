"""The lab's token, which only starting a lab writes into the checkout's .env (where compose
reads it too), readable by its owner alone."""

from __future__ import annotations

import os
import secrets

from torchlab_host.core.settings import Settings


def token(settings: Settings) -> str:
    """JUPYTER_TOKEN from the settings; a new random one is written to .env."""
    if settings["JUPYTER_TOKEN"]:
        return settings["JUPYTER_TOKEN"]
    new = secrets.token_hex(24)
    descriptor = os.open(settings.env_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a") as file:
        file.write(f"JUPYTER_TOKEN={new}\n")
    return new
