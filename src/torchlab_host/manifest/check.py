"""`make check`: what the manifest asks of the rest of the checkout is there, and the files
written from it are up to date; otherwise one line each names what and how to fix it."""

from __future__ import annotations

import json

from torchlab.backends import all_backends
from torchlab.locks import pins
from torchlab.variants import MACHINES, Manifest, Variant
from torchlab_host.lockfiles.files import REQUIREMENTS, lock_file
from torchlab_host.manifest import generate


def problems(manifest: Manifest) -> list[str]:
    """Everything that disagrees with the manifest, one line each, with its fix."""
    found = []
    backends = {backend.name for backend in all_backends()}
    for variant in manifest.variants:
        if variant.device not in backends:
            found.append(
                f"variants.toml: variant {variant.name} wants device '{variant.device}', which no "
                f"backend drives. Fix: add src/torchlab/backends/{variant.device}.py with BACKEND"
            )
        for lock in (manifest.shared_lock, variant.lock):
            if not (REQUIREMENTS / f"{lock}.in").exists():
                found.append(
                    f"requirements/{lock}.in for variant {variant.name} is missing. Fix: write "
                    "it (the packages only this image has), then make lock"
                )
            elif not lock_file(lock).exists():
                found.append(f"requirements/{lock}.txt is missing. Fix: make lock")
        if lock_file(variant.lock).exists():
            found += torch_disagreements(variant)
    found += [
        f"{path} is out of date with {' and '.join(sources)}. Fix: make generate"
        for path, sources in generate.stale(manifest).items()
    ]
    return found


def torch_disagreements(variant: Variant) -> list[str]:
    """Each platform whose torch in the manifest is not the one its lock pins for its machine."""
    found = []
    for platform, shipped in variant.platforms.items():
        pinned = pins(lock_file(variant.lock).read_text(), MACHINES[platform]).get("torch")
        if pinned != shipped.torch:
            found.append(
                f"variants.toml ships torch {shipped.torch} in {variant.name} on {platform}, and "
                f"requirements/{variant.lock}.txt pins {pinned or 'none'} for "
                f"{MACHINES[platform]}. Fix: make the two agree (requirements/{variant.lock}.in, "
                "then make lock)"
            )
    return found


# GitHub's hosted runner of each platform: images build natively there, never emulated.
RUNNERS = {"linux/amd64": "ubuntu-24.04", "linux/arm64": "ubuntu-24.04-arm"}


def ci_matrix(manifest: Manifest) -> str:
    """The workflows' image matrix, one row per variant and platform it ships for, and the
    variants alone (GitHub Actions reads each from its line as a job output)."""
    rows = [
        {"variant": variant.name, "platform": platform, "runner": RUNNERS[platform]}
        for variant in manifest.variants
        for platform in variant.platforms
    ]
    return f"matrix={json.dumps({'include': rows})}\nvariants={json.dumps(manifest.names)}"
