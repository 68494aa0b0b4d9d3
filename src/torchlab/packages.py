"""What is installed here beyond the locks: packages a lab user added, and packages the image
was built without. Standard library only.

The locks install into the image's venv, which belongs to root. `pip install X` as the lab user
lands in the user's own site-packages ($PYTHONUSERBASE, per variant, in the lab's data folder),
constrained by the locks' pins ($PIP_CONSTRAINT), so it never replaces what a lock installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from .locks import canonical, read_pins


class MissingPackage(ImportError):
    """A package a lab needs is not here; the message is the one line that says why and what
    to do. Jupyter shows that line alone, without a traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def built_from(setting: str) -> str:
    """How this environment was built: an image says it in its environment
    ($TORCHLAB_LOCKS, $TORCHLAB_WITHOUT), a host venv in <venv>/.locked (make venv writes it)."""
    if os.environ.get(setting):
        return os.environ[setting]
    try:
        return json.loads(Path(sys.prefix, ".locked").read_text()).get(setting, "")
    except (OSError, ValueError):  # not a venv of make venv (or one made before it said)
        return ""


def lock_files() -> list[Path]:
    """The locks this environment was built from."""
    return [Path(path) for path in built_from("TORCHLAB_LOCKS").split()]


def locked() -> dict[str, str]:
    """Every pin of this environment's locks, by name."""
    pins: dict[str, str] = {}
    for path in lock_files():
        pins.update(read_pins(path))
    return pins


def left_out() -> list[str]:
    """What this environment was built without, when told to (TORCHLAB_WITHOUT)."""
    return sorted(canonical(name) for name in built_from("TORCHLAB_WITHOUT").split())


def user_site() -> Path:
    return Path(site.getusersitepackages())


def locked_site() -> Path:
    """The venv's own site-packages, which the locks fill."""
    return Path(sysconfig.get_paths()["purelib"])


def added() -> dict[str, str]:
    """The packages a lab user installed, by name, with their versions."""
    if not user_site().is_dir():
        return {}
    return {
        canonical(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions(path=[str(user_site())])
    }


def locked_installed() -> dict[str, str]:
    """What the venv holds (the locks' packages and the toolkit), by name."""
    return {
        canonical(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions(path=[str(locked_site())])
    }


def prepare_user_site() -> None:
    """Create the user's site-packages before a kernel starts: Python puts it on sys.path only
    when it exists, so a notebook's first %pip install is importable without a restart."""
    if site.ENABLE_USER_SITE:
        user_site().mkdir(parents=True, exist_ok=True)


def require(*names: str) -> None:
    """Stop a lab with one line when a package it needs is not here, saying why."""
    for name in names:
        if importlib.util.find_spec(name) is not None:
            continue
        if canonical(name) in left_out():
            raise MissingPackage(
                f"{name} is not in this image: it was built without it "
                f"(TORCHLAB_WITHOUT={' '.join(left_out())}), where its wheel was out "
                f"of reach. Fix: use an image built with {name}, or skip this lab"
            )
        raise MissingPackage(f"{name} is not installed here. Fix: pip install {name}")


def remove_added(names: list[str]) -> int:
    """Uninstall packages a lab user added (all of them without names); the locks' stay.

    pip in a venv refuses to uninstall from the user's site ("outside environment"), so this
    runs pip under the venv's base interpreter, which Debian marks externally managed: the
    flag that overrides that mark reaches nothing here but the user's own site-packages.
    """
    ours = added()
    unknown = [name for name in names if canonical(name) not in ours]
    if unknown:
        print(
            f"torchlab: {', '.join(unknown)} is not a package you added (torchlab packages "
            "lists those; the locks' packages stay)",
            file=sys.stderr,
        )
        return 1
    chosen = [canonical(name) for name in names] or sorted(ours)
    if not chosen:
        return 0
    return subprocess.run(
        [
            sys._base_executable,
            "-m",
            "pip",
            "uninstall",
            "--yes",
            "--break-system-packages",
            *chosen,
        ],
        env=dict(os.environ, PYTHONPATH=str(locked_site())),
        check=False,
    ).returncode
