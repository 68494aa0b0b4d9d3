"""The checkout: its commit, the files git tracks, and running the host tools of one (this
checkout, or a copy or clone of it that a measurement or a check builds from)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from torchlab_host import ROOT
from torchlab_host.core.settings import Settings


def git(root: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, text=True)


def revision(root: Path = ROOT) -> str:
    """The commit, with -dirty when tracked files changed since; "unknown" outside git."""
    head = git(root, "rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown"
    dirty = git(root, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


def commit_time(root: Path = ROOT) -> int | None:
    committed = git(root, "log", "-1", "--format=%ct")
    return int(committed.stdout) if committed.returncode == 0 and committed.stdout.strip() else None


def copy_tracked(into: Path, root: Path = ROOT) -> Path:
    """A copy of the files git tracks (and the untracked ones it does not ignore)."""
    listed = git(root, "ls-files", "--cached", "--others", "--exclude-standard").stdout.split()
    for name in listed:
        if (root / name).is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, target)
    return into


def host_environment(
    root: Path = ROOT, given: Settings | None = None, **settings: str
) -> dict[str, str]:
    """The environment in which `python -m torchlab_host` is the host tools of root's checkout:
    with what the person set here (given), which a copy or a clone without .env would miss."""
    handed = given.handed_on() if given else {}
    return dict(os.environ, **handed, PYTHONPATH=str(root / "src"), **settings)


def run_host_tools(
    *arguments: str,
    root: Path = ROOT,
    given: Settings | None = None,
    settings: dict[str, str] | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess:
    """The host tools of root's checkout, in a process of their own, with this checkout's
    settings (given) and more (settings); output captured unless kwargs say otherwise."""
    kwargs.setdefault("capture_output", True)
    return subprocess.run(
        [sys.executable, "-m", "torchlab_host", *arguments],
        cwd=root,
        env=host_environment(root, given, **(settings or {})),
        text=True,
        check=False,
        **kwargs,
    )
