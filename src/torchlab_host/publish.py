"""make publish: push a built image to $TORCHLAB_REGISTRY under the names users pull, and sign it.

.github/workflows/publish.yml runs it after make build-<variant> and the image's tests, then
attaches the SBOM (written here from the image itself) and the build provenance to the
pushed digest. Names, for torchlab:cpu at version 0.1.0 and commit 1a2b3c4:
    <registry>/torchlab:cpu, cpu-0.1.0, cpu-1a2b3c4, and cpu-inputs-<digest> (make lab's own)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torchlab
from torchlab.variants import Variant

from .checkout import revision
from .engine import docker_must, quiet, require_docker, streamed
from .errors import HostError
from .images import image_tags, inputs_tag_among
from .registry import configured_registry


def published_names(variant: Variant, registry: str, commit: str, inputs: str) -> list[str]:
    repository = f"{registry}/{variant.image.partition(':')[0]}"
    return [
        f"{repository}:{variant.name}",
        f"{repository}:{variant.name}-{torchlab.__version__}",
        f"{repository}:{variant.name}-{commit[:7]}",
        f"{registry}/{inputs}",
    ]


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


def publish(variant: Variant, sbom_file: str) -> None:
    require_docker()
    registry = configured_registry()
    tags = image_tags(variant.image)
    inputs = inputs_tag_among(tags)
    if inputs is None:
        raise HostError(f"{variant.image} is not built here", f"make build-{variant.name}")
    commit = revision().removesuffix("-dirty")
    names = published_names(variant, registry, commit, inputs)
    for name in names:
        docker_must("tag", variant.image, name)
        code, _ = streamed(["docker", "push", name])
        if code != 0:
            host = registry.split("/")[0]
            raise HostError(f"pushing {name} failed", f"log in first: docker login {host}")
    repository = names[0].partition(":")[0]
    pushed = quiet(
        ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", variant.image]
    ).stdout
    digest = next(d.split("@")[1] for d in json.loads(pushed) if d.startswith(f"{repository}@"))
    sbom_of(variant.image, Path(sbom_file))
    if shutil.which("cosign"):  # keyless in CI: GitHub's OIDC token names the workflow
        signed = quiet(["cosign", "sign", "--yes", f"{repository}@{digest}"])
        if signed.returncode != 0:
            raise HostError(f"cosign sign failed: {signed.stderr.strip()[-500:]}")
    else:
        print("torchlab: cosign is not installed, so the image is not signed")
    print(f"torchlab: pushed {', '.join(names)} at {digest}")
    outputs = os.environ.get("GITHUB_OUTPUT")
    if outputs:  # for the workflow's attestation steps
        with open(outputs, "a") as step_outputs:
            step_outputs.write(f"name={repository}\ndigest={digest}\n")
