"""The locks (requirements/*.txt): resolving them, downloading their wheels, installing them.

Where pip looks is decided here, and only here:
- with a wheelhouse (a folder, or the URL the image build is served it at): <wheelhouse>/<lock>/
  alone, never an index;
- otherwise pip's own configuration (PyPI unless configured), plus, for a variant whose torch
  comes from PyTorch's CPU wheel pages, those pages (or the folders in TORCH_CPU_WHEELS).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from torchlab.locks import pins
from torchlab.variants import Manifest

from . import ROOT
from .engine import run
from .errors import fail

# The images' interpreter: Debian bookworm's CPython 3.11 on glibc 2.36, x86-64.
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
TORCH_CPU_PAGES = ("https://download.pytorch.org/whl/cpu/torch/",)
REQUIREMENTS = ROOT / "requirements"
INSTALL_LOCK = ROOT / "docker/install-lock"
WHEELHOUSE_DIR = Path(os.environ.get("WHEELHOUSE_DIR") or ROOT / "wheelhouse")


def lock_file(lock: str) -> Path:
    return REQUIREMENTS / f"{lock}.txt"


def require_locks(names: list[str]) -> None:
    for name in names:
        if not lock_file(name).exists():
            raise fail(
                f"the lock requirements/{name}.txt is missing",
                f"write requirements/{name}.in (what only this image adds), then make lock",
            )


def all_locks(manifest: Manifest) -> list[str]:
    """Every lock, in the order they resolve: each is constrained by locks before it."""
    ordered = [manifest.shared_lock, *(variant.lock for variant in manifest.variants)]
    ordered += [lock for lock in manifest.host_locks if lock not in ordered]
    return list(dict.fromkeys(ordered))


def constraints(lock: str, manifest: Manifest) -> list[str]:
    """The locks a lock is resolved against, so the packages they share have one version."""
    if lock == manifest.shared_lock:
        return []
    if lock in manifest.host_locks and lock not in {v.lock for v in manifest.variants}:
        return list(manifest.host_locks[: manifest.host_locks.index(lock)])
    return [manifest.shared_lock]


def torch_source(lock: str, manifest: Manifest) -> str | None:
    for variant in manifest.variants:
        if variant.lock == lock:
            return variant.torch_from
    return None


def torch_cpu_links() -> list[str]:
    return (os.environ.get("TORCH_CPU_WHEELS") or " ".join(TORCH_CPU_PAGES)).split()


def sources(lock: str, manifest: Manifest, wheelhouse: str | None = None) -> list[str]:
    """pip's options saying where the wheels of one lock come from."""
    if wheelhouse:
        return ["--no-index", "--find-links", f"{wheelhouse.rstrip('/')}/{lock}/"]
    if torch_source(lock, manifest) == "pytorch-cpu":
        return [option for link in torch_cpu_links() for option in ("--find-links", link)]
    return []


def shielded(lock: str, manifest: Manifest, folder: Path) -> dict[str, str]:
    """pip's environment for a lock. Where pip's own configuration is in play, a find-links
    folder holding torch 2.13.0+cpu would satisfy torch==2.13.0 (local versions sort higher),
    so the locks that pin PyPI's builds look in their own folder instead."""
    environment = dict(os.environ)
    if not os.environ.get("WHEELHOUSE") and torch_source(lock, manifest) == "pypi":
        environment["PIP_FIND_LINKS"] = str(folder)
    return environment


def lock(manifest: Manifest, uv: str) -> None:
    """requirements/*.in -> requirements/*.txt: exact pins with hashes, for the images' Python."""
    for name in all_locks(manifest):
        options = [f"--constraint=requirements/{c}.txt" for c in constraints(name, manifest)]
        if torch_source(name, manifest) == "pytorch-cpu":
            options += [f"--find-links={link}" for link in torch_cpu_links()]
        print(f"torchlab: resolving requirements/{name}.in", flush=True)
        result = run(
            [
                uv,
                "pip",
                "compile",
                "--quiet",
                "--generate-hashes",
                "--custom-compile-command",
                "make lock",
                "--python-version",
                PYTHON_VERSION,
                "--python-platform",
                f"x86_64-manylinux_2_{GLIBC_MINOR}",
                *options,
                "--output-file",
                f"requirements/{name}.txt",
                f"requirements/{name}.in",
            ],
            cwd=ROOT,
        )
        if result.returncode != 0:
            raise fail(
                f"resolving requirements/{name}.in failed (uv's output is above)",
                "fix the requirement it names, then make lock",
            )


def download(folder: Path, locks: list[str], manifest: Manifest) -> None:
    """Fill folder/<lock>/ with the wheels each lock pins, for the images' platform."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(17, GLIBC_MINOR + 1)]
    platforms += ["manylinux2014_x86_64", "linux_x86_64"]
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    for name in locks:
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        print(f"torchlab: downloading requirements/{name}.txt into {target}/", flush=True)
        result = run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--progress-bar",
                "off",
                "--no-deps",
                "--require-hashes",
                "--only-binary=:all:",
                "--implementation",
                "cp",
                "--python-version",
                PYTHON_VERSION,
                *(f"--abi={tag}" for tag in (abi, "abi3", "none")),
                *(f"--platform={platform}" for platform in platforms),
                *sources(name, manifest, os.environ.get("WHEELHOUSE")),
                "--dest",
                str(target),
                "--requirement",
                str(lock_file(name)),
            ],
            env=shielded(name, manifest, target),
        )
        if result.returncode != 0:
            raise fail(
                f"downloading the wheels of requirements/{name}.txt failed (pip's output is above)",
                "check that this machine reaches the package index, then make wheels",
            )


def require_python(python: str) -> None:
    """The locks pin wheels for one Python: a venv from another one would not install them."""
    found = run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    if found.stdout.strip() != PYTHON_VERSION:
        said = found.stdout.strip() or "missing"
        raise fail(
            f"the locks are for Python {PYTHON_VERSION}, but {python} is {said}",
            f"install python{PYTHON_VERSION} and set PYTHON=python{PYTHON_VERSION}",
        )


def venv(path: Path, locks: list[str], manifest: Manifest) -> bool:
    """A venv holding exactly these locks and the toolkit (editable); False if already fresh."""
    require_locks(locks)
    marker = path / ".locked"
    inputs = [lock_file(name) for name in locks] + [ROOT / "pyproject.toml"]
    if marker.exists() and all(
        source.stat().st_mtime <= marker.stat().st_mtime for source in inputs
    ):
        return False
    python = os.environ.get("PYTHON") or "python3"
    if not (path / "bin/python").exists():
        require_python(python)
    for name in locks:
        installed = run(
            [
                str(INSTALL_LOCK),
                str(path),
                str(lock_file(name)),
                *sources(name, manifest, os.environ.get("WHEELHOUSE")),
            ],
            env=dict(shielded(name, manifest, WHEELHOUSE_DIR / name), PYTHON=python),
        )
        if installed.returncode != 0:
            raise fail(
                f"installing requirements/{name}.txt into {path} failed (pip's output is above)",
                f"fix what it names, or remove {path} and run the command again",
            )
    toolkit = run(
        [
            str(path / "bin/python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--editable",
            str(ROOT),
        ]
    )
    if toolkit.returncode != 0:
        raise fail(f"installing the toolkit into {path} failed", f"remove {path} and try again")
    marker.touch()
    return True


def torch_version(locks: list[str]) -> str:
    """The torch a set of locks pins ("unknown" when none does), for the image labels."""
    found = "unknown"
    for name in locks:
        found = pins(lock_file(name).read_text()).get("torch", found)
    return found
