"""A Debian package added in the manifest (variants.toml: a variant's debian_packages) and the
image rebuilt is the documented way to a system package: it works as the lab's user and the
image's SBOM lists it; a name Debian does not have fails the build in one line. Built on the
cpu image's cached layers, under a tag of its own."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest
from support import REPO, docker

from torchlab import variants
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.image.build import build_image
from torchlab_host.image.context import stage
from torchlab_host.image.spec import variant_build
from torchlab_host.image.tags import inputs_tag_among

TAG = "torchlab-test:cpu-debian-packages"


def with_packages(*names: str) -> tuple[str, variants.Manifest]:
    """variants.toml with these Debian packages added to the cpu variant, as a user edits it."""
    text = (REPO / "variants.toml").read_text()
    listed = ", ".join(f'"{name}"' for name in names)
    text, count = re.subn(
        r"^(\[variants\.cpu\]\n)", rf"\1debian_packages = [{listed}]\n", text, flags=re.M
    )
    assert count == 1
    return text, variants.parse(text, REPO / "variants.toml")


@pytest.fixture
def build_with(tmp_path):
    """Build the cpu image from a manifest with these packages added, as TAG."""

    def build(*names: str) -> None:
        text, manifest = with_packages(*names)
        settings = Settings.load(dict(os.environ), REPO / ".env")
        spec = dataclasses.replace(
            variant_build(manifest.variant("cpu"), manifest, settings), image=TAG
        )
        context = stage(spec, tmp_path / "context")
        (context / "toolkit/opt/torchlab/variants.toml").write_text(text)  # the image's copy
        build_image(spec, manifest, context)

    yield build
    tags = docker(
        "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "torchlab-test"
    ).stdout.split()
    if tags:
        docker("image", "rm", *tags, check=False)


def test_a_debian_package_added_in_the_manifest_is_in_the_image_and_its_sbom(build_with):
    build_with("ffmpeg")
    version = docker("run", "--rm", TAG, "ffmpeg", "-hide_banner", "-version").stdout
    assert version.startswith("ffmpeg version "), version
    assert docker("run", "--rm", TAG, "id", "-u").stdout.strip() == "1000"  # the lab's user
    sbom = json.loads(docker("run", "--rm", TAG, "sh", "-c", 'cat "$TORCHLAB_SBOM"').stdout)
    assert "ffmpeg" in {component["name"] for component in sbom["components"]}
    assert inputs_tag_among(
        docker(
            "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "torchlab-test"
        ).stdout.split()
    )


def test_a_package_debian_does_not_have_fails_the_build_in_one_line(build_with):
    with pytest.raises(HostError) as raised:
        build_with("ffmpeg", "torchlab-no-such-package")
    line = str(raised.value)
    assert line == (
        "Debian bookworm has no package torchlab-no-such-package (variants.toml: "
        "variants.cpu.debian_packages). Fix: correct it there "
        "(https://packages.debian.org/bookworm/ lists them), then make build-cpu"
    )
