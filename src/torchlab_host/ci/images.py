"""The image steps of CI's plan, which a person can run too: the images here and the disk left
(make image-sizes), removing a variant's image (make image-remove) and its round trip through a
file (make image-round-trip)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from torchlab.variants import Manifest, Variant
from torchlab_host.core.engine import docker_must, require_docker
from torchlab_host.core.errors import HostError
from torchlab_host.image import archive
from torchlab_host.image.tags import image_exists, image_tags


def sizes(manifest: Manifest) -> None:
    """Every torchlab image here with its size (a variant's against its ceiling in the
    manifest, in the 10^9 bytes of Docker's GB), and the disk left for the next build."""
    require_docker()
    listed = docker_must("image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}")
    ceilings = {variant.image: variant.size_ceiling_gb for variant in manifest.variants}
    for line in listed.splitlines():
        if line.startswith("torchlab"):
            image = line.split()[0]
            ceiling = f" (ceiling {ceilings[image]:g} GB)" if image in ceilings else ""
            print(f"{line}{ceiling}")
    root = docker_must("info", "--format", "{{.DockerRootDir}}").strip()
    try:
        left = shutil.disk_usage(root).free
    except OSError:  # the engine's disk is another machine's (Docker Desktop's VM)
        print(f"the engine keeps its images in {root}, which is not on this machine's disks")
        return
    print(f"{left / 1e9:.1f} GB left in {root} for the next build")


def remove(variant: Variant, prune: bool = True) -> None:
    """Every name of a variant's image (its own, its inputs tag), and so the image; without
    prune, the layers beneath it stay (a later build's cache)."""
    require_docker()
    tags = image_tags(variant.image)
    if not tags:
        raise HostError(f"{variant.image} is not here to remove")
    docker_must("image", "rm", *([] if prune else ["--no-prune"]), *tags)
    print(f"torchlab: removed {', '.join(tags)}")


def round_trip(variant: Variant) -> None:
    """make image-save, the image removed (its layers beneath stay), make image-load: what
    follows tests the image as a machine without a registry gets it."""
    file = Path(tempfile.gettempdir()) / f"torchlab-ci-{variant.name}.tar.gz"
    try:
        archive.save(variant, str(file))
        remove(variant, prune=False)
        if image_exists(variant.image):
            raise HostError(f"{variant.image} is still here after removing it")
        archive.load(str(file))
    finally:
        file.unlink(missing_ok=True)
        archive.checksum_file(file).unlink(missing_ok=True)
