"""A user's own environments (torchlab env): named, outside the image's locks, each with a
Jupyter kernel of its own, kept in the lab's data folder.

The image's venv obeys its locks, as it must for a lab everyone shares; a course that needs
another release of a locked package (an older torch, a pinned transformers) gets an environment
of its own. uv, which the image carries, makes it from the index in seconds. Its kernel lives
beside it (JUPYTER_PATH names the folder), so the environment and its kernel are kept and
removed together, and the image's default kernel stays the locked one. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# A name that is a folder, a kernel's name (Jupyter's are lower case) and a word on a command
# line.
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# The image's own kernel, which an environment of the same name would hide.
LOCKED_KERNEL = "python3"
# What a kernel of the lab inherits that would tie the environment to the image's locks and
# packages: the locks' pins (pip), the user site of the image's variant, the image's venv.
IMAGE_ONLY = ("PIP_CONSTRAINT", "PYTHONUSERBASE", "VIRTUAL_ENV")


class EnvProblem(Exception):
    """What is wrong with a torchlab env command, as one line with its fix."""


def root() -> Path:
    """Where environments live: the lab's data folder, else the user's own data folder."""
    data = os.environ.get("TORCHLAB_DATA")
    return Path(data) / "envs" if data else Path.home() / ".local/share/torchlab/envs"


def kernels_dir() -> Path:
    """The environments' kernels, in a Jupyter data folder of their own (JUPYTER_PATH names
    it in an image): an environment's name can never start with a dot."""
    return root() / ".jupyter" / "kernels"


def folder(name: str) -> Path:
    return root() / name


def display_name(name: str) -> str:
    return f"{name} (not locked)"


def checked_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise EnvProblem(
            f"{name!r} is not an environment name. Fix: use small letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    if name == LOCKED_KERNEL:
        raise EnvProblem(
            f"{name} is the name of the image's own, locked kernel. Fix: choose another name"
        )
    return name


def python_of(name: str) -> Path:
    return folder(name) / "bin" / "python"


def base_python() -> str:
    """The interpreter the image's venv was made from: the environments get the same Python."""
    return getattr(sys, "_base_executable", sys.executable)


def installer() -> str:
    found = shutil.which("uv")
    if found is None:
        raise EnvProblem(
            "uv, which makes the environments, is not installed here. Fix: pip install uv"
        )
    return found


def uv_environment() -> dict[str, str]:
    """uv's environment: none of the image's locks or venv, and the index pip is told to use."""
    env = {key: value for key, value in os.environ.items() if key not in IMAGE_ONLY}
    if os.environ.get("PIP_INDEX_URL") and not os.environ.get("UV_DEFAULT_INDEX"):
        env["UV_DEFAULT_INDEX"] = os.environ["PIP_INDEX_URL"]
    return env


def kernel_spec(name: str) -> dict:
    """The kernel's spec: the environment's Python, started without what ties a lab's kernels
    to the image (env -u), with the environment first on PATH, so !pip and %pip are its own."""
    unset = [word for variable in IMAGE_ONLY for word in ("-u", variable)]
    path = f"{folder(name) / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {
        "argv": [
            "/usr/bin/env",
            *unset,
            f"PATH={path}",
            f"VIRTUAL_ENV={folder(name)}",
            str(python_of(name)),
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ],
        "display_name": display_name(name),
        "language": "python",
        "metadata": {"torchlab": {"locked": False, "environment": str(folder(name))}},
    }


def create(name: str, requirements: list[str]) -> Path:
    """Make the environment (the image's Python, its requirements and ipykernel, with pip, so
    %pip works in it) and register its kernel. A half-made one is removed again."""
    checked_name(name)
    if folder(name).exists():
        raise EnvProblem(
            f"the environment {name} exists already. Fix: torchlab env remove {name}, then "
            "create it again"
        )
    uv, env = installer(), uv_environment()
    steps = [
        [uv, "venv", "--quiet", "--seed", "--python", base_python(), str(folder(name))],
        [uv, "pip", "install", "--python", str(python_of(name)), "ipykernel", *requirements],
    ]
    try:
        for step in steps:
            if subprocess.run(step, env=env, check=False).returncode != 0:
                raise EnvProblem(
                    f"uv could not make the environment {name} (its output is above). Fix: "
                    "correct the requirement it names, or the network it could not reach"
                )
        spec = kernels_dir() / name
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps(kernel_spec(name), indent=2) + "\n")
    except BaseException:
        remove(name, missing_ok=True)
        raise
    return folder(name)


def remove(name: str, missing_ok: bool = False) -> None:
    """Remove the environment and its kernel."""
    checked_name(name)
    if not folder(name).exists() and not missing_ok:
        known = ", ".join(listed()) or "none"
        raise EnvProblem(f"there is no environment {name} (yours: {known}). Fix: torchlab env list")
    shutil.rmtree(kernels_dir() / name, ignore_errors=True)
    shutil.rmtree(folder(name), ignore_errors=True)


def listed() -> list[str]:
    """The environments' names."""
    if not root().is_dir():
        return []
    return sorted(path.name for path in root().iterdir() if NAME.fullmatch(path.name))


def packages_of(name: str) -> dict[str, str]:
    """What an environment holds, by name, with versions (read from its files, not run)."""
    found = {}
    for site in (folder(name) / "lib").glob("python*/site-packages"):
        for dist in metadata.distributions(path=[str(site)]):
            found[dist.metadata["Name"].lower()] = dist.version
    return found


def summary() -> list[dict]:
    """Each environment, as the probe reports it: not locked, its kernel, its packages."""
    return [
        {
            "name": name,
            "locked": False,
            "path": str(folder(name)),
            "kernel": display_name(name)
            if (kernels_dir() / name / "kernel.json").is_file()
            else None,
            "packages": packages_of(name),
        }
        for name in listed()
    ]
