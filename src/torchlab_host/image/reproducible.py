"""make verify-reproducible: build one commit twice, from two fresh clones with --no-cache, and
compare the two images layer by layer; or, with AGAINST=<image>, build it once and compare with
an image already built from that commit (CI's own no-cache build). Prints "N of M layers
identical" and, for each layer that differs, the step that made it and its first differing files
with what differs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from torchlab_host import ROOT
from torchlab_host.core.checkout import revision, run_host_tools
from torchlab_host.core.engine import docker_must, quiet, require_docker
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings

SHOWN_FILES = 5
VERIFY_IMAGE = "torchlab-verify"


def clone_head(into: Path) -> str:
    """A fresh clone of the checkout's HEAD (its files as git gives them: new dates, modes
    from this umask); returns the commit."""
    cloned = quiet(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(into)])
    if cloned.returncode != 0:
        raise HostError(f"cloning {ROOT} failed: {cloned.stderr.strip()}")
    return revision(into)


def build_in(checkout: Path, variant: str, tag: str, given: Settings) -> None:
    """The clone's own host tools build the clone with this checkout's settings, with no layer
    from any earlier build."""
    flags = f"{given['DOCKER_BUILD_FLAGS']} --no-cache".strip()
    built = run_host_tools(
        "build", variant, "--tag", tag, root=checkout, given=given,
        settings={"DOCKER_BUILD_FLAGS": flags},
        capture_output=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    if built.returncode != 0:
        raise HostError(f"building {tag} from {checkout} failed: {built.stderr.strip()[-400:]}")


def diff_ids(image: str) -> list[str]:
    inspected = quiet(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", image])
    return json.loads(inspected.stdout)


def describe(entry: tarfile.TarInfo, content: IO[bytes] | None) -> dict[str, object]:
    digest = hashlib.sha256()
    if content is not None:
        for block in iter(lambda: content.read(1 << 20), b""):
            digest.update(block)
    return {
        "type": entry.type.decode(),
        "mode": oct(entry.mode),
        "owner": f"{entry.uid}:{entry.gid}",
        "mtime": int(entry.mtime),
        "link": entry.linkname,
        "content": digest.hexdigest()[:12] if entry.isfile() else "",
    }


Files = dict[str, dict[str, object]]


def layer_files(saved: Path) -> list[tuple[str, Files]]:
    """Every layer of a `docker save` archive, in order: the step that made it, and each of its
    files' type, mode, owner, date, link and content digest, by path."""
    with tarfile.open(saved) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        config = json.load(archive.extractfile(manifest["Config"]))
        layers = []
        for member in manifest["Layers"]:
            files = {}
            with tarfile.open(fileobj=archive.extractfile(member), mode="r|") as layer:
                for entry in layer:
                    content = layer.extractfile(entry) if entry.isfile() else None
                    files[entry.name] = describe(entry, content)
            layers.append(files)
    history = [step for step in config["history"] if not step.get("empty_layer")]
    steps = [step.get("created_by", "") for step in history]
    return list(zip(steps, layers, strict=True))


def differences(first: Files, second: Files) -> list[str]:
    """The paths that differ between two layers, with what differs, in path order."""
    found = []
    for path in sorted(set(first) | set(second)):
        if path not in first or path not in second:
            found.append(f"{path}: only in build {1 if path in first else 2}")
        elif first[path] != second[path]:
            fields = [key for key in first[path] if first[path][key] != second[path][key]]
            said = ", ".join(f"{key} {first[path][key]} / {second[path][key]}" for key in fields)
            found.append(f"{path}: {said}")
    return found


def step_name(created_by: str) -> str:
    """The Dockerfile step of a layer, as `docker history` shows it, shortened."""
    step = created_by.split(" #(nop) ")[-1].replace("/opt/torchlab/scripts/reproducible-run ", "")
    step = step.split(" -c ", 1)[-1] if step.startswith("bash") else step
    return " ".join(step.split())[:90]


def built_revision(image: str) -> str:
    """The commit an image says it was built from (its OCI revision label); "" if none."""
    inspected = quiet([
        "docker", "image", "inspect", "--format",
        '{{index .Config.Labels "org.opencontainers.image.revision"}}', image,
    ])  # fmt: skip
    if inspected.returncode != 0:
        raise HostError(f"there is no image {image} here. Fix: make build-<variant> first")
    return inspected.stdout.strip()


def compare(tags: list[str], commit: str, variant: str, folder: Path) -> int:
    """Print how many layers the two images share and, for each that differs, why; 0 if all."""
    first, second = diff_ids(tags[0]), diff_ids(tags[1])
    same = sum(a == b for a, b in zip(first, second, strict=False))
    total = max(len(first), len(second))
    print(f"torchlab: {same} of {total} layers identical in {tags[0]} and {tags[1]}, both "
          f"{variant} at {commit[:12]}")  # fmt: skip
    if same == total:
        return 0
    saved = []
    for number, tag in enumerate(tags, 1):
        archive = folder / f"build-{number}.tar"
        docker_must("save", "--output", str(archive), tag)
        saved.append(layer_files(archive))
        archive.unlink()
    for index, ((step, one), (_, two)) in enumerate(zip(*saved, strict=False), 1):
        if first[index - 1] == second[index - 1]:
            continue
        differing = differences(one, two)
        print(f"  layer {index} ({step_name(step)}): {len(differing)} files differ")
        for line in differing[:SHOWN_FILES]:
            print(f"    {line}")
    return 1


def verify(variant: str, settings: Settings, against: str | None = None) -> int:
    require_docker()
    if revision().endswith("-dirty"):
        print("torchlab: verifying the commit HEAD; the uncommitted changes are not in it")
    head = revision().removesuffix("-dirty")
    if against and built_revision(against) != head:
        raise HostError(
            f"{against} was built from {built_revision(against)[:12] or 'an unknown commit'}, "
            f"not HEAD ({head[:12]}). Fix: make build-{variant} DOCKER_BUILD_FLAGS=--no-cache "
            "in a clean checkout of HEAD, or leave AGAINST out to build twice"
        )
    builds = [f"{VERIFY_IMAGE}:{variant}-{number}" for number in (1, 2)][: 1 if against else 2]
    with tempfile.TemporaryDirectory(prefix="torchlab-reproducible-") as folder:
        try:
            commit = head
            for number, tag in enumerate(builds, 1):
                checkout = Path(folder) / f"clone-{number}"
                commit = clone_head(checkout)
                print(f"torchlab: build {number} of {len(builds)}: {tag} from a fresh clone, "
                      "--no-cache")  # fmt: skip
                build_in(checkout, variant, tag, settings)
            return compare([against, *builds] if against else builds, commit, variant, Path(folder))
        finally:  # by ID: each build also tagged its image with its inputs tag
            inspect = ["docker", "image", "inspect", "--format", "{{.Id}}"]
            built = [quiet([*inspect, tag]) for tag in builds]
            kept = quiet([*inspect, against]).stdout.strip() if against else ""
            ids = [found.stdout.strip() for found in built if found.returncode == 0]
            ids = [image for image in ids if image != kept]
            if ids:
                quiet(["docker", "image", "rm", "--force", *ids])
