"""Threads under a CPU limit: one matmul-heavy training step in the cpu image limited to 1 CPU
(docker run --cpus 1), with torch's default threads, one per host core (OMP_NUM_THREADS set to
them, which the entrypoint leaves as a user's own), beside the threads torchlab sets from the
limit. One run of each: the step's own timing is a mean over seconds of steps."""

from __future__ import annotations

import json
import sys
from typing import Any

from torchlab import system
from torchlab.variants import Manifest
from torchlab_host.core.engine import docker_must

CPUS = 1
STEP = "import json; from torchlab import bench; print(json.dumps(bench.training_step_ms()))"


def step_in_limited_container(image: str, *options: str) -> dict[str, Any]:
    printed = docker_must(
        "run", "--rm", "--cpus", str(CPUS), *options, image, "python", "-c", STEP
    )  # fmt: skip
    return json.loads(printed.strip().splitlines()[-1])


def measure(manifest: Manifest) -> dict[str, Any]:
    image = manifest.variant("cpu").image
    print(f"bench: threads in {image} limited to {CPUS} CPU", file=sys.stderr, flush=True)
    host_cores = system.machine()["cpu_count"]
    default = step_in_limited_container(image, "--env", f"OMP_NUM_THREADS={host_cores}")
    sized = step_in_limited_container(image)
    return {
        "cpus": CPUS,
        "host_cores": host_cores,
        "default": default,
        "torchlab": sized,
        "speedup": round(default["step_ms"] / sized["step_ms"], 2),
    }
