"""make wheels: every lock's wheels for the images' platforms, in <folder>/<lock>/, for builds
that reach no index (WHEELHOUSE=<folder>)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from torchlab.locks import canonical, pins
from torchlab.variants import MACHINES, Manifest
from torchlab_host.core.engine import run
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lockfiles.files import GLIBC_MINOR, PYTHON_VERSION, as_installed, lock_platforms
from torchlab_host.lockfiles.sources import shielded, sources

# Pinned packages PyPI publishes only as source archives: downloaded as such, built by pip
# inside the image (their build requirements are in the same lock: requirements/hub.in).
SOURCE_ONLY = ("onetimepass",)


def platform_options(platform: str) -> list[str]:
    """pip download's options for the images' interpreter on one platform (linux/arm64)."""
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    machine = MACHINES[platform]
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(17, GLIBC_MINOR + 1)]
    platforms += [f"manylinux2014_{machine}", f"linux_{machine}"]
    return [
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        *(f"--abi={tag}" for tag in (abi, "abi3", "none")),
        *(f"--platform={platform}" for platform in platforms),
    ]


def link_shared_wheels(folder: Path, target: Path, lock_text: str) -> int:
    """Hard-link into target the wheels another lock's folder already holds at a version this
    lock pins (the xla and cuda12 locks share torch and its CUDA libraries, some 4 GB): one
    copy on disk, one download. pip still checks each against this lock's hashes, and fetches
    again any that differ. Returns how many it linked."""
    pinned = pins(lock_text)
    linked = 0
    for sibling in sorted(folder.iterdir()):
        if not sibling.is_dir() or sibling == target:
            continue
        for wheel in sibling.glob("*.whl"):
            name, version = wheel.name.split("-")[:2]
            here = target / wheel.name
            if pinned.get(canonical(name)) == version and not here.exists():
                os.link(wheel, here)
                linked += 1
    return linked


def download(folder: Path, locks: list[str], manifest: Manifest, settings: Settings) -> None:
    """Each lock's wheels for every platform its images ship for (PLATFORM=...: for that one
    alone), side by side in its folder (pip in each image picks its own)."""
    only = settings.only_platform
    for name in locks:
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for platform in lock_platforms(name, manifest):
            if only and platform != only:
                continue
            # pip judges markers by the machine it runs on: it reads this platform's pins alone.
            with as_installed(name, manifest, settings, platform) as lock_copy:
                linked = link_shared_wheels(folder, target, lock_copy.read_text())
                if linked:
                    print(f"torchlab: {linked} wheels linked from other locks' folders", flush=True)
                download_one(name, platform, lock_copy, target, manifest, settings)


def download_one(
    name: str,
    platform: str,
    lock_copy: Path,
    target: Path,
    manifest: Manifest,
    settings: Settings,
) -> None:
    print(f"torchlab: downloading {name}.txt for {platform} into {target}/", flush=True)
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
            *(f"--no-binary={package}" for package in SOURCE_ONLY),
            *platform_options(platform),
            *sources(name, manifest, settings, settings.wheelhouse),
            "--dest",
            str(target),
            "--requirement",
            str(lock_copy),
        ],
        env=shielded(name, manifest, target, settings),
    )
    if result.returncode != 0:
        raise HostError(
            f"downloading the {platform} wheels of requirements/{name}.txt failed (pip's output "
            "is above)",
            "check that this machine reaches the package index and that make check-locks "
            "passes, then make wheels",
        )
