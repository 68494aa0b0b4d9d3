"""The course in a user's work folder. The image holds the course ($TORCHLAB_COURSE); every start
of a lab, a hub server or a dev container brings into the work folder what is new or changed
since the last start, and never writes over a file the user changed: the new version of such a
file lands beside it. A record in the work folder remembers what each course file was when it
was last delivered. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# Each course file's sha256 as last delivered, by its path in the course.
RECORD = ".torchlab-course.json"
# What a newer course version of a file the user changed is called, beside theirs.
UPDATE_SUFFIX = ".course-update"


def course_dir() -> Path:
    """The image's pristine copy of the course ($TORCHLAB_COURSE)."""
    return Path(os.environ.get("TORCHLAB_COURSE", "/opt/torchlab/labs"))


def beside(relative: str) -> str:
    """Where a new course version goes beside a user's edit: 04_x.course-update.ipynb."""
    path = Path(relative)
    return str(path.with_name(f"{path.stem}{UPDATE_SUFFIX}{path.suffix}"))


@dataclass
class Delivery:
    """What one start brought: new files, files the user had not changed brought up to date,
    and new versions placed beside the user's edited files."""

    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    beside: list[str] = field(default_factory=list)

    def line(self) -> str | None:
        """The start-up line: what arrived, or None when nothing did."""
        if not (self.new or self.updated or self.beside):
            return None
        parts = [f"{len(self.new)} new", f"{len(self.updated)} updated"]
        if self.beside:
            parts.append(f"{len(self.beside)} beside your edits ({', '.join(self.beside)})")
        return f"torchlab: the course brought {', '.join(parts)} into your work folder"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deliver(course: Path, work: Path) -> Delivery:
    """Bring the course into the work folder. A file the user deleted after it was delivered
    stays deleted; one they changed stays theirs."""
    record = work / RECORD
    delivered: dict[str, str] = json.loads(record.read_text()) if record.is_file() else {}
    brought = Delivery()
    for source in sorted(course.rglob("*")):
        if not source.is_file():
            continue
        relative = source.relative_to(course).as_posix()
        target = work / relative
        current, before = digest(source), delivered.get(relative)
        if target.is_file():
            theirs = digest(target)
            if theirs == current:
                pass
            elif theirs == before:
                shutil.copyfile(source, target)
                brought.updated.append(relative)
            elif current != before:
                shutil.copyfile(source, work / beside(relative))
                brought.beside.append(beside(relative))
        elif before is None and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            brought.new.append(relative)
        delivered[relative] = current
    written = record.with_name(f"{RECORD}.new")
    written.write_text(json.dumps(delivered, indent=1, sort_keys=True) + "\n")
    written.replace(record)
    return brought
