"""A build context, staged where anyone can see it (build/<name>/, make context), and the
inputs tag that names the image those inputs make."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from torchlab_host import ROOT
from torchlab_host.core.checkout import commit_time
from torchlab_host.image.spec import Build, input_arguments

STAGED = ROOT / "build"
NOT_IN_CONTEXT = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


def source_date_epoch(files: list[Path], said: str) -> int:
    """The time every file of the build context carries: SOURCE_DATE_EPOCH (said), else the
    commit's, else (a tree that is no checkout) the newest of the files'."""
    if said:
        return int(said)
    return commit_time() or int(max(path.stat().st_mtime for path in files))


def stage(build: Build, folder: Path | None = None) -> Path:
    """Write the build context into folder (build/<name>/ unless told): the checkout files the
    Dockerfile copies and the generated ones, with one date and the modes a checkout under any
    umask would give (0755 for folders and programs, else 0644), so the same commit gives the
    same layers."""
    context = folder or STAGED / build.name
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for name, checkout_path in build.context.items():
        source, target = ROOT / checkout_path, context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=NOT_IN_CONTEXT)
        else:
            shutil.copy2(source, target)
    files = [path for path in context.rglob("*") if path.is_file()]
    epoch = source_date_epoch(files, build.settings["SOURCE_DATE_EPOCH"])
    build.generated(context)
    for path in [context, *context.rglob("*")]:
        if not path.is_symlink():
            program = path.is_dir() or path.stat().st_mode & 0o100
            path.chmod(0o755 if program else 0o644)
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    return context


def inputs_digest(build: Build, context: Path) -> str:
    """What an image is made of, as 12 hex digits: its staged context (paths, modes, contents)
    and the build arguments that are inputs, less what only says how it was made (the commit,
    where pip found the wheels), and its platform. The same inputs give the same digest on any
    machine."""
    digest = hashlib.sha256()
    for path in sorted(context.rglob("*")):
        digest.update(f"{path.relative_to(context)}\0{path.stat().st_mode:o}\0".encode())
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(json.dumps(input_arguments(build), sort_keys=True).encode())
    digest.update(build.platform.encode())
    return digest.hexdigest()[:12]
