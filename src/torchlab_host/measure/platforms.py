"""make bench BENCH_PARTS=platforms: each image for another platform than this machine's
(linux/arm64 on an x86 machine), built here if missing and run under emulation (QEMU's user
mode): its size, and torch's import and a 1024x1024 float32 matmul in it beside the same in
this platform's image. The times measure the emulation, not the platform: a Mac or a Graviton
runs the same image natively."""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

from torchlab.variants import Manifest, Variant, this_platform
from torchlab_host.core.engine import quiet
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.image import emulation
from torchlab_host.image.build import ensure_image
from torchlab_host.image.spec import variant_build

# What one run measures, in the image's own Python: the import, then the median of five
# matmuls after one to warm up.
TIMED = (
    "import json, statistics, time\n"
    "start = time.perf_counter()\n"
    "import torch\n"
    "imported = time.perf_counter() - start\n"
    "a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)\n"
    "a @ b\n"
    "runs = []\n"
    "for _ in range(5):\n"
    "    start = time.perf_counter(); a @ b; runs.append(time.perf_counter() - start)\n"
    "print(json.dumps({'import_s': imported, 'matmul_ms': 1000 * statistics.median(runs)}))\n"
)


def image_of(variant: Variant, manifest: Manifest, settings: Settings, platform: str) -> str:
    """The variant's image for a platform, built if missing; its inputs tag."""
    return ensure_image(variant_build(variant, manifest, settings, platform), manifest)


def timed(image: str, platform: str, repeats: int) -> dict[str, float]:
    emulated = emulation.emulated_environment(platform)
    runs = []
    for _ in range(repeats):
        ran = quiet(
            ["docker", "run", "--rm", "--network", "none", "--platform", platform,
             *(f"--env={name}={value}" for name, value in emulated.items()),
             image, "python", "-c", TIMED]
        )  # fmt: skip
        if ran.returncode != 0:
            raise HostError(f"timing torch in {image} ({platform}) failed: {ran.stderr[-500:]}")
        runs.append(json.loads(ran.stdout.strip().splitlines()[-1]))
    return {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}


def size_gb(image: str) -> float:
    said = quiet(["docker", "image", "inspect", "--format", "{{.Size}}", image]).stdout
    return round(int(said) / 1e9, 3)


def measure(
    manifest: Manifest, settings: Settings, names: list[str], repeats: int
) -> dict[str, Any]:
    """variant -> platform -> its size, import and matmul; this platform's beside, as native."""
    here = this_platform()
    found: dict[str, Any] = {}
    for variant in (manifest.variant(name) for name in names):
        others = [platform for platform in variant.platforms if platform != here]
        if not others or here not in variant.platforms:
            continue
        print(f"bench: {variant.image} on {', '.join(others)}", file=sys.stderr, flush=True)
        native_image = image_of(variant, manifest, settings, here)
        native = {"size_gb": size_gb(native_image), **timed(native_image, here, repeats)}
        found[variant.name] = {here: {**native, "run": "native"}}
        for platform in others:
            image = image_of(variant, manifest, settings, platform)
            measured = timed(image, platform, repeats)
            found[variant.name][platform] = {
                "size_gb": size_gb(image),
                **measured,
                "run": f"emulated ({emulation.require_emulation(platform)}, "
                f"QEMU_CPU={emulation.emulated_environment(platform).get('QEMU_CPU', 'default')})",
                "import_vs_native": round(measured["import_s"] / native["import_s"], 1),
                "matmul_vs_native": round(measured["matmul_ms"] / native["matmul_ms"], 1),
            }
    return found
