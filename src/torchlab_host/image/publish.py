"""make publish: push a variant's images to $TORCHLAB_REGISTRY, one per platform, and the names
users pull over all of them, and sign those.

Each platform's image goes under its inputs tag (make lab's own: the inputs include the
platform, so each platform has its own). The names, for cuda at version 0.1.0 and commit
1a2b3c4: <registry>/torchlab:cuda, cuda-0.1.0 and cuda-1a2b3c4, each one manifest list over
every platform of variants.toml, so that docker pull gives each machine its own. PLATFORM=...
pushes that platform's image alone (a runner of that platform, in .github/workflows/
publish.yml); without it, every platform built here goes, then the names, once the registry
holds every platform. The workflow then attaches the SBOM and the build provenance to the
digest of the names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torchlab
from torchlab.variants import Manifest, Variant
from torchlab_host.core.checkout import revision
from torchlab_host.core.engine import docker_must, quiet, require_docker, streamed
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.image import registry as registries
from torchlab_host.image.context import inputs_digest, stage
from torchlab_host.image.registry import insecure
from torchlab_host.image.spec import variant_build
from torchlab_host.image.tags import image_exists, inputs_tag


def published_names(variant: Variant, registry: str, commit: str) -> list[str]:
    """The names users pull: each one manifest list over every platform's image."""
    repository = f"{registry}/{variant.image.partition(':')[0]}"
    return [
        f"{repository}:{variant.name}",
        f"{repository}:{variant.name}-{torchlab.__version__}",
        f"{repository}:{variant.name}-{commit[:7]}",
    ]


def platform_images(variant: Variant, manifest: Manifest, settings: Settings) -> dict[str, str]:
    """platform -> the inputs tag of the variant's image for it (local name); the platform is
    one of the inputs, and what a build there may leave out one of its context's."""
    tags = {}
    for platform in variant.platforms:
        build = variant_build(variant, manifest, settings, platform)
        tags[platform] = inputs_tag(build.image, inputs_digest(build, stage(build)))
    return tags


def sbom_of(image: str, into: Path) -> None:
    """The SBOM the build put in the image, at the path its label names."""
    label = quiet(
        ["docker", "image", "inspect", "--format", '{{index .Config.Labels "org.torchlab.sbom"}}',
         image]
    ).stdout.strip()  # fmt: skip
    shown = quiet(["docker", "run", "--rm", "--network", "none", image, "cat", label])
    if shown.returncode != 0:
        raise HostError(f"{image} has no SBOM at {label}: {shown.stderr.strip()}")
    into.write_text(shown.stdout)


def push(local: str, published: str) -> None:
    docker_must("tag", local, published)
    code, _ = streamed(["docker", "push", published])
    if code != 0:
        host = published.split("/")[0]
        raise HostError(f"pushing {published} failed", f"log in first: docker login {host}")


def in_registry(published: str) -> bool:
    return quiet(["docker", "manifest", "inspect", *insecure(published), published]).returncode == 0


def list_over(name: str, images: list[str]) -> str:
    """Push one manifest list under name over these pushed images; its digest."""
    docker_must("manifest", "create", "--amend", *insecure(name), name, *images)
    pushed = quiet(["docker", "manifest", "push", "--purge", *insecure(name), name])
    if pushed.returncode != 0:
        raise HostError(f"pushing the manifest list {name} failed: {pushed.stderr.strip()[-300:]}")
    return pushed.stdout.strip().splitlines()[-1]


def pushed_digest(local: str, repository: str) -> str:
    """The registry's digest of an image just pushed to repository."""
    said = docker_must("image", "inspect", "--format", "{{json .RepoDigests}}", local)
    return next(d.split("@")[1] for d in json.loads(said) if d.startswith(f"{repository}@"))


def sign(reference: str) -> None:
    if not shutil.which("cosign"):
        print(f"torchlab: cosign is not installed, so {reference} is not signed")
        return
    # Keyless in CI (GitHub's OIDC token names the workflow); a list with its platforms' images.
    signed = quiet(["cosign", "sign", "--yes", "--recursive", reference])
    if signed.returncode != 0:
        raise HostError(f"cosign sign failed: {signed.stderr.strip()[-500:]}")


def github_outputs(name: str, digest: str) -> None:
    outputs = os.environ.get("GITHUB_OUTPUT")
    if outputs:  # for the workflow's attestation steps
        with open(outputs, "a") as step_outputs:
            step_outputs.write(f"name={name}\ndigest={digest}\n")


def publish_platform(variant: Variant, platform: str, tag: str, registry: str, sbom: Path) -> None:
    """One platform's image, under its inputs tag, with its SBOM written beside."""
    if not image_exists(tag):
        raise HostError(
            f"{variant.image} for {platform} is not built here",
            f"make build-{variant.name} PLATFORM={platform}",
        )
    published = f"{registry}/{tag}"
    push(tag, published)
    repository = published.rpartition(":")[0]
    digest = pushed_digest(tag, repository)
    sbom_of(tag, sbom)
    print(f"torchlab: pushed {published} ({platform}) at {digest}", flush=True)
    github_outputs(repository, digest)


def publish(variant: Variant, manifest: Manifest, settings: Settings, sbom_file: str) -> None:
    """PLATFORM=...: that platform's image. Otherwise every platform's built here, then the
    names over all of them, once the registry holds each."""
    require_docker()
    registry = registries.configured(settings)
    local = platform_images(variant, manifest, settings)
    if settings.only_platform:
        only = settings.platform_of(variant, f"make publish VARIANT={variant.name}")
        publish_platform(variant, only, local[only], registry, Path(sbom_file))
        return
    for platform, tag in local.items():
        if image_exists(tag):
            publish_platform(variant, platform, tag, registry, Path(sbom_file))
    images = [f"{registry}/{tag}" for tag in local.values()]
    missing = [p for p, image in zip(local, images, strict=True) if not in_registry(image)]
    if missing:
        raise HostError(
            f"the registry has no {variant.image} for {', '.join(missing)}, so its names "
            "cannot cover every platform",
            f"build and push it first: make build-{variant.name} PLATFORM={missing[0]} "
            f"&& make publish VARIANT={variant.name} PLATFORM={missing[0]}",
        )
    names = published_names(variant, registry, revision().removesuffix("-dirty"))
    digests = {list_over(name, images) for name in names}
    [digest] = digests  # one list, under every name
    repository = names[0].rpartition(":")[0]
    sign(f"{repository}@{digest}")
    print(f"torchlab: {', '.join(names)} cover {', '.join(local)} at {digest}")
    github_outputs(repository, digest)
