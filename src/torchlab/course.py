"""The course notebooks a user's labs folder starts with, in a hub: copied in on the first
start of their server, never over a file of theirs. Standard library only."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def course_dir() -> Path:
    """The image's pristine copy of the course ($TORCHLAB_COURSE)."""
    return Path(os.environ.get("TORCHLAB_COURSE", "/opt/torchlab/labs"))


def seed(course: Path, labs: Path, marker: Path) -> list[str]:
    """Copy the course into labs once (the marker remembers), skipping every file that exists:
    a notebook someone edited, or deleted after the first start, stays as they left it."""
    if marker.exists() or not course.is_dir():
        return []
    copied = []
    for source in sorted(course.rglob("*")):
        target = labs / source.relative_to(course)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            shutil.copyfile(source, target)
            copied.append(str(target.relative_to(labs)))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return copied
