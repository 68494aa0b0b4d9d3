"""`make bench`: what each image costs and how fast it is, measured on this machine: the
images (image_costs), their other platforms under emulation (platforms), a class on the hub
(hub_scale), torchrun across containers (ddp_speed), the threads of a container under a CPU
limit (cpu_limit), written as artifacts/bench.{json,md} (report).

Every timing is repeated (BENCH_REPEATS, at least 3) and reported as its median: the machine
is noisy. It times the same host commands a person runs, in subprocesses.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from torchlab import system
from torchlab.variants import Manifest
from torchlab_host import ARTIFACTS, ROOT
from torchlab_host.core.engine import quiet, require_engine
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.measure import cpu_limit, ddp_speed, hub_scale, image_costs, platforms, report

PARTS = ("images", "platforms", "hub", "ddp", "threads")


def this_machine() -> dict[str, Any]:
    facts = system.machine()
    docker = quiet(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    return {
        "cpu": facts["cpu_model"],
        "cpus": facts["cpu_count"],
        "ram_gb": round(facts["ram_bytes"] / 2**30, 1),
        "kernel": facts["kernel"],
        "docker": docker,
        "date": time.strftime("%Y-%m-%d"),
    }


def run_bench(
    manifest: Manifest, settings: Settings, names: list[str], repeats: int, parts: list[str]
) -> dict:
    require_engine()
    venv_python = ROOT / settings["VENV"] / "bin/python"
    results: dict[str, Any] = {"machine": this_machine(), "repeats": repeats}
    if "images" in parts:
        selected = [manifest.variant(name) for name in names]
        results["images"] = {
            v.name: image_costs.bench_variant(v, repeats, settings) for v in selected
        }
        results["container_vs_host"] = image_costs.container_vs_host(venv_python, repeats, settings)
        results["gpu"] = image_costs.gpu_benchmarks(manifest, settings)
    if "platforms" in parts:
        results["platforms"] = platforms.measure(manifest, settings, names, repeats)
    if "hub" in parts:
        print("bench: the hub", file=sys.stderr, flush=True)
        results["hub"] = hub_scale.measure()
    if "ddp" in parts:
        print("bench: torchrun across containers", file=sys.stderr, flush=True)
        results["ddp"] = ddp_speed.measure(venv_python, repeats)
    if "threads" in parts:
        results["cpu_limit"] = cpu_limit.measure(manifest)
    return results


def bench(manifest: Manifest, settings: Settings, plan_only: bool) -> int:
    """make bench (BENCH_VARIANTS, BENCH_PARTS, BENCH_REPEATS): the tables, printed and in
    artifacts/bench.md, the numbers in artifacts/bench.json."""
    repeats = max(3, int(settings["BENCH_REPEATS"]))
    names = settings.words("BENCH_VARIANTS") or manifest.names
    if plan_only:
        print("\n".join(image_costs.plan(manifest, names)))
        return 0
    parts = settings.words("BENCH_PARTS") or list(PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise HostError(
            f"BENCH_PARTS names {', '.join(unknown)}",
            f"choose from {', '.join(PARTS)}: make bench BENCH_PARTS=images",
        )
    results = run_bench(manifest, settings, names, repeats, parts)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "bench.json").write_text(json.dumps(results, indent=2))
    table = report.markdown(results)
    (ARTIFACTS / "bench.md").write_text(table + "\n")
    print(table)
    return 0
