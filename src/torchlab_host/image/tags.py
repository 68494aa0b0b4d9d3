"""The images on this machine: their names, their inputs tags (torchlab:cpu-inputs-<digest>,
the name of the image one set of inputs makes), and removing the ones newer builds replaced."""

from __future__ import annotations

import json
import re
import subprocess

from torchlab_host.core.engine import quiet, run

# Every image this project builds carries it (lab images and the hub).
SOURCE_LABEL = "org.opencontainers.image.source=https://github.com/torchlab/torchlab"
INPUTS = re.compile(r"^(?:(?P<name>.+)-)?inputs-(?P<digest>[0-9a-f]{12})$")


def inputs_tag(image: str, digest: str) -> str:
    """torchlab:cpu -> torchlab:cpu-inputs-<digest>; torchlab-hub -> torchlab-hub:inputs-<digest>"""
    repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    return f"{repository}:{tag + '-' if tag else ''}inputs-{digest}"


def image_of_inputs_tag(tag: str) -> str | None:
    """The image an inputs tag belongs to (torchlab:cpu-inputs-... -> torchlab:cpu), or None
    when the tag is no inputs tag."""
    repository, _, name = tag.rpartition(":")
    match = INPUTS.match(name) if repository and "/" not in name else None
    if not match:
        return None
    return f"{repository}:{match['name']}" if match["name"] else f"{repository}:latest"


def inputs_tag_among(tags: list[str]) -> str | None:
    """Which of an image's names is its inputs tag, if any is."""
    return next((tag for tag in tags if image_of_inputs_tag(tag)), None)


def image_exists(image: str) -> bool:
    return quiet(["docker", "image", "inspect", image]).returncode == 0


def image_tags(image: str) -> list[str]:
    """Every name of the image that image names (its own, its inputs tag), or none."""
    listed = quiet(["docker", "image", "inspect", "--format", "{{json .RepoTags}}", image])
    return sorted(map(local_name, json.loads(listed.stdout))) if listed.returncode == 0 else []


def local_name(tag: str) -> str:
    """An image's name as Docker gives it: Podman names the images it builds or loads without a
    registry localhost/torchlab:cpu, and finds them as torchlab:cpu too."""
    return tag.removeprefix("localhost/")


def prune_replaced_images() -> int:
    """Remove the torchlab images that newer builds replaced, and no one else's: an inputs tag
    whose image is no longer the one its name points to, and untagged images."""
    listed = quiet(
        ["docker", "image", "ls", "--filter", f"label={SOURCE_LABEL}", "--format",
         "{{.Repository}}:{{.Tag}} {{.ID}}"]
    ).stdout  # fmt: skip
    image_of = dict(line.split() for line in listed.splitlines())
    replaced = [
        tag
        for tag, image_id in image_of.items()
        if image_of_inputs_tag(tag) and image_of.get(image_of_inputs_tag(tag)) != image_id
    ]
    if replaced:
        quiet(["docker", "image", "rm", *replaced])
    return run(
        ["docker", "image", "prune", "--force", "--filter", f"label={SOURCE_LABEL}"],
        stdout=subprocess.DEVNULL,
    ).returncode
