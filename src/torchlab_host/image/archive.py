"""An image as a file, for machines without a registry: make image-save writes the image (its
name and its inputs tag) as a gzip-compressed `docker save` archive with a checksum file beside
it, in the format `sha256sum -c` reads; make image-load (and make slurm-image FILE=...) checks
the archive against it, then loads it.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from pathlib import Path

from torchlab.variants import Variant
from torchlab_host import ROOT
from torchlab_host.core.engine import require_docker
from torchlab_host.core.errors import HostError
from torchlab_host.image.tags import image_tags, inputs_tag_among, local_name

CHUNK = 1 << 20


def checksum_file(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def save(variant: Variant, file: str | None) -> Path:
    require_docker()
    tags = image_tags(variant.image)
    if not tags:
        raise HostError(
            f"{variant.image} is not here to save", f"build it: make build-{variant.name}"
        )
    inputs = inputs_tag_among(tags) or variant.image
    archive = Path(file) if file else ROOT / f"{inputs.replace(':', '-')}.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    # Level 1: torch's libraries barely compress further, and level 6 takes three times longer.
    with subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE) as saving:
        assert saving.stdout is not None
        with (
            archive.open("wb") as raw,
            gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0
            ) as compressed,
        ):
            for block in iter(lambda: saving.stdout.read(CHUNK), b""):
                compressed.write(block)
    if saving.returncode != 0:
        archive.unlink(missing_ok=True)
        raise HostError(f"docker save {' '.join(tags)} failed")
    checksum_file(archive).write_text(f"{sha256_of(archive)}  {archive.name}\n")
    size = archive.stat().st_size / 1e9
    print(f"torchlab: wrote {archive} ({size:.2f} GB, {', '.join(tags)}) and its .sha256")
    return archive


def verified(archive: Path) -> Path:
    """An image-save archive whose .sha256 beside it matches it, else HostError."""
    if not archive.is_file():
        raise HostError(f"{archive} is not a file", "name the file make image-save wrote")
    expected_file = checksum_file(archive)
    if not expected_file.is_file():
        raise HostError(
            f"{expected_file.name} is missing beside {archive.name}",
            "copy it along with the archive (make image-save writes both)",
        )
    expected = expected_file.read_text().split()[0]
    if sha256_of(archive) != expected:
        raise HostError(
            f"{archive.name} does not match its checksum in {expected_file.name}: "
            "the copy is damaged or altered",
            "copy it again from where make image-save wrote it",
        )
    return archive


def load(file: str) -> list[str]:
    archive = verified(Path(file))
    require_docker()
    # Decompressed here: Docker's load takes gzip, Podman's Docker-compatible one does not.
    with subprocess.Popen(
        ["docker", "load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=False,
    ) as loading, gzip.open(archive, "rb") as unpacked:  # fmt: skip
        assert loading.stdin is not None and loading.stdout is not None
        try:
            for block in iter(lambda: unpacked.read(CHUNK), b""):
                loading.stdin.write(block)
        except BrokenPipeError:
            pass  # the engine stopped reading: its error follows
        loading.stdin.close()
        said, complaint = loading.stdout.read().decode(), loading.stderr.read().decode()
    if loading.returncode != 0:
        raise HostError(f"docker load of {archive.name} failed: {complaint.strip()[-300:]}")
    # Docker says "Loaded image: NAME" per name, Podman "Loaded image(s): NAME,NAME".
    tags = [
        local_name(name)
        for line in said.splitlines()
        if line.startswith("Loaded image")
        for name in line.split(": ", 1)[1].split(",")
    ]
    print(f"torchlab: loaded {', '.join(tags)} from {archive.name} (checksum verified)")
    return tags
