"""make slurm-image: a variant's image in the form deploy/slurm/runtime.sh starts it with
TORCHLAB_RUNTIME, made from the local engine's image or from a make image-save file (checked
against its .sha256 first), under the name the Slurm scripts look for by default:

- podman: the image in this machine's podman storage (a node's, or the nodes' where they share
  it; elsewhere `podman load -i` the file on each node);
- apptainer: torchlab-<variant>.sif in the checkout (apptainer build; read-only at run time);
- enroot: torchlab-<variant>.sqsh in the checkout (enroot import, from the engine: enroot reads
  no archive), which pyxis starts with TORCHLAB_IMAGE=$PWD/torchlab-<variant>.sqsh.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from torchlab.variants import Variant
from torchlab_host import ROOT
from torchlab_host.core.engine import require_docker
from torchlab_host.core.errors import HostError
from torchlab_host.image import archive
from torchlab_host.image.tags import image_tags

RUNTIMES = ("apptainer", "enroot", "podman")
TOOL_HINTS = {
    "apptainer": "install Apptainer (apptainer.org/docs/admin), or convert where it is",
    "enroot": "install enroot (github.com/NVIDIA/enroot), or convert where it is",
    "podman": "apt-get install podman",
}


def convert(variant: Variant, runtime: str, file: str | None = None) -> str:
    """What the runtime now starts for the variant: podman's image name, or the file made."""
    if runtime not in RUNTIMES:
        raise HostError(
            f"TORCHLAB_RUNTIME={runtime} is not a runtime deploy/slurm knows",
            f"TORCHLAB_RUNTIME={' or '.join(RUNTIMES)}",
        )
    if shutil.which(runtime) is None:
        raise HostError(f"{runtime} is not on this machine", TOOL_HINTS[runtime])
    source = archive.verified(Path(file)) if file else None
    if source is None:
        require_docker()
        if not image_tags(variant.image):
            raise HostError(
                f"{variant.image} is not here to convert for {runtime}",
                f"build it (make build-{variant.name}), or name an image-save file: FILE=...",
            )
    made = {"apptainer": to_sif, "enroot": to_squashfs, "podman": to_podman}[runtime]
    result = made(variant, source)
    print(f"torchlab: {runtime} starts {result} ({variant.image}"
          f"{f', from {source.name}' if source else ''})")  # fmt: skip
    return result


def to_podman(variant: Variant, source: Path | None) -> str:
    if source:
        _must(["podman", "load", "--input", str(source)], "podman load")
    else:
        # docker save streams the image straight into podman load: no file on disk.
        with subprocess.Popen(["docker", "save", variant.image], stdout=subprocess.PIPE) as saved:
            loading = subprocess.run(["podman", "load"], stdin=saved.stdout, capture_output=True,
                                     text=True)  # fmt: skip
        if saved.returncode or loading.returncode:
            raise HostError(f"docker save {variant.image} | podman load failed: "
                            f"{loading.stderr.strip()[-300:]}")  # fmt: skip
    return variant.image


def to_sif(variant: Variant, source: Path | None) -> str:
    target = ROOT / f"torchlab-{variant.name}.sif"
    origin = f"docker-archive://{source}" if source else f"docker-daemon://{variant.image}"
    _must(["apptainer", "build", "--force", str(target), origin], "apptainer build")
    return str(target)


def to_squashfs(variant: Variant, source: Path | None) -> str:
    if source:
        raise HostError(
            "enroot imports from an engine, not from an image-save file",
            f"make image-load FILE={source}, then make slurm-image VARIANT={variant.name} "
            "TORCHLAB_RUNTIME=enroot",
        )
    target = ROOT / f"torchlab-{variant.name}.sqsh"
    target.unlink(missing_ok=True)  # enroot import refuses to write over a file
    _must(["enroot", "import", "--output", str(target), f"dockerd://{variant.image}"],
          "enroot import")  # fmt: skip
    return str(target)


def _must(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise HostError(f"{what} failed: {done.stderr.strip()[-300:]}")
