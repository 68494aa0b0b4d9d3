"""What each image costs and how fast it is: size, cold build, one-line rebuild, lab start-up,
its suite and each lab in it, the probe; the cpu container against the host; the GPUs."""

from __future__ import annotations

import json
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from torchlab import healthcheck
from torchlab.backends import get
from torchlab.bench import median_of_reports
from torchlab.variants import Manifest, Variant
from torchlab_host.core.addresses import free_loopback_port
from torchlab_host.core.checkout import copy_tracked, run_host_tools
from torchlab_host.core.engine import docker_must, quiet
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.image.tags import prune_replaced_images
from torchlab_host.lab.services import SELFTEST, run_in_service, test_service
from torchlab_host.measure.timing import host_tools_seconds, median_of, seconds_of

BARE_TIMEOUT_S = 120
# pytest's --durations line for one lab notebook of the device suite.
LAB_DURATION = re.compile(
    r"^([\d.]+)s call\s+\S*test_notebooks\.py::test_notebook_runs_and_checks_itself\[(\S+)\]",
    re.M,
)


def image_facts(variant: Variant) -> dict[str, Any]:
    inspected = json.loads(quiet(["docker", "image", "inspect", variant.image]).stdout)[0]
    return {
        "size_gb": round(inspected["Size"] / 1e9, 3),
        "size_ceiling_gb": variant.size_ceiling_gb,
        "layers": len(inspected["RootFS"]["Layers"]),
    }


def one_line_rebuild(variant: Variant, settings: Settings) -> float:
    """Rebuild after appending one line to the toolkit, in a copy of the tracked tree (with
    this checkout's settings, which its .env does not carry there). The line is new every
    time, so no earlier build's layers can answer for it."""
    with tempfile.TemporaryDirectory() as folder:
        copy = copy_tracked(Path(folder))
        with open(copy / "src/torchlab/devices.py", "a") as edited:
            edited.write(f"# one-line edit {time.time_ns()}\n")
        return host_tools_seconds("build", variant.name, root=copy, given=settings)


def rebuild_from_checkout(variant: Variant) -> None:
    """Put the checkout's own toolkit back into the image, and drop the images it replaces."""
    host_tools_seconds("build", variant.name)
    prune_replaced_images()


def rebuild_check(variant: Variant, ceiling_s: float, settings: Settings) -> int:
    """CI's check: one rebuild after a one-line toolkit change, at most ceiling_s seconds."""
    seconds = one_line_rebuild(variant, settings)
    rebuild_from_checkout(variant)
    print(f"rebuild of {variant.image} after a one-line toolkit change: {seconds:.1f} s")
    if seconds > ceiling_s:
        print(
            f"torchlab: the rebuild took longer than {ceiling_s:g} s: a layer before the "
            "toolkit's was rebuilt. Fix: keep docker/Dockerfile's COPY toolkit/ after the installs",
            file=sys.stderr,
        )
        return 1
    return 0


def lab_to_url(variant: Variant) -> float:
    """`make lab-<x>` until it has printed the lab's URL (the server answers there then)."""
    try:
        return host_tools_seconds("lab", variant.name)
    finally:
        run_host_tools("down")


def bare_jupyterlab_to_url(variant: Variant) -> float:
    """JupyterLab alone, started in the same image with docker run: the floor make lab's start
    is held to. Timed the same way, from the command to the first answer of its API."""
    port, token = free_loopback_port(), secrets.token_hex(16)
    start = time.monotonic()
    container = docker_must(
        "run", "--detach", "--publish", f"127.0.0.1:{port}:8888", "--env", f"JUPYTER_TOKEN={token}",
        variant.image, "jupyter", "lab", "--ip=0.0.0.0", "--no-browser",
    ).strip()  # fmt: skip
    try:
        server = {"hostname": "127.0.0.1", "port": port, "base_url": "/", "token": token}
        while not healthcheck.check(server, timeout=1.0):
            if time.monotonic() - start > BARE_TIMEOUT_S:
                raise HostError(f"bare JupyterLab in {variant.image} did not answer in 120 s")
            time.sleep(0.05)
        return time.monotonic() - start
    finally:
        quiet(["docker", "rm", "--force", container])


def lab_beside_bare(variant: Variant, repeats: int) -> dict[str, float]:
    """make lab and bare JupyterLab, in turn, so a slow spell on a shared machine hits both."""
    lab, bare = [], []
    for _ in range(repeats):
        lab.append(lab_to_url(variant))
        bare.append(bare_jupyterlab_to_url(variant))
    lab_s, bare_s = statistics.median(lab), statistics.median(bare)
    return {
        "lab_to_url_s": round(lab_s, 1),
        "bare_jupyterlab_to_url_s": round(bare_s, 1),
        "lab_over_bare_s": round(lab_s - bare_s, 1),
    }


def suite(variant: Variant, settings: Settings) -> tuple[float, dict[str, float]]:
    """The image's suite in the mode this machine allows: its seconds, and each lab's."""
    service = test_service(variant, on_cpu=True)
    start = time.monotonic()
    result = run_in_service(settings, service, *SELFTEST, "--durations=0")
    if result.returncode != 0:
        raise HostError(f"the suite in {service} failed: {result.stdout.strip()[-500:]}")
    seconds = time.monotonic() - start
    return seconds, {name: float(taken) for taken, name in LAB_DURATION.findall(result.stdout)}


def probe(variant: Variant, settings: Settings) -> float:
    """The probe in the image, in the mode this machine allows (its suite's service)."""
    service = test_service(variant, on_cpu=True)
    return seconds_of(
        lambda: run_in_service(settings, service, "torchlab", "probe"), f"the probe in {service}"
    )


def lab_runs_here(variant: Variant) -> str | None:
    """Why a variant's lab cannot turn healthy here (its device is elsewhere), or None."""
    backend = get(variant.device)
    if variant.device == "cpu":
        return None
    if not backend.checks_host:
        return f"the host cannot tell whether a {variant.device} device is here"
    hint = backend.host_requirements(variant.build_here())
    return hint.problem if hint else None


def plan(manifest: Manifest, names: list[str]) -> list[str]:
    """What `make bench` measures for each variant, one line each (the bench's --plan)."""
    lines = []
    for name in names:
        variant = manifest.variant(name)
        mode = " ".join(f"{k}={v}" for k, v in variant.cpu_mode.items()) or "its own device"
        absent = lab_runs_here(variant)
        lab = f"lab start-up not timed ({absent})" if absent else "lab start-up"
        lines.append(
            f"{variant.image}: size (ceiling {variant.size_ceiling_gb:g} GB), cold build, "
            f"one-line rebuild, suite and probe in CPU mode ({mode}), {lab}"
        )
    return lines


def bench_variant(variant: Variant, repeats: int, settings: Settings) -> dict[str, Any]:
    print(f"bench: {variant.image}", file=sys.stderr, flush=True)
    results = image_facts(variant)

    def cold_build() -> float:
        seconds = host_tools_seconds(
            "build", variant.name, settings={"DOCKER_BUILD_FLAGS": "--no-cache"}
        )
        prune_replaced_images()  # GBs each time
        return seconds

    results["build_cold_layers_s"] = median_of(repeats, cold_build)
    results["rebuild_one_line_s"] = median_of(repeats, lambda: one_line_rebuild(variant, settings))
    rebuild_from_checkout(variant)
    if lab_runs_here(variant) is None:
        results.update(lab_beside_bare(variant, repeats))
    runs = [suite(variant, settings) for _ in range(repeats)]
    results["suite_s"] = round(statistics.median(seconds for seconds, _ in runs), 1)
    results["labs_s"] = {
        name: round(statistics.median(labs[name] for _, labs in runs), 1) for name in runs[0][1]
    }
    results["probe_s"] = median_of(repeats, lambda: probe(variant, settings))
    return results


def container_vs_host(venv_python: Path, repeats: int, settings: Settings) -> dict[str, Any]:
    """Host and container runs alternate, so a slow spell on a shared machine hits both sides
    instead of making one of them look slow."""
    on_host, in_container = [], []
    for _ in range(repeats):
        on_host.append(
            json.loads(
                subprocess.run(
                    [str(venv_python), "-m", "torchlab", "bench"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
        )
        # The cpu test service: the labs' shared memory and user, as a lab runs it.
        benched = run_in_service(settings, "test-cpu", "torchlab", "bench")
        in_container.append(json.loads(benched.stdout))
    compared = compare(median_of_reports(on_host), median_of_reports(in_container))
    return {**compared, "runs": {"host": on_host, "container": in_container}}


def compare(on_host: dict[str, Any], in_container: dict[str, Any]) -> dict[str, Any]:
    ratios = {
        f"matmul_{size}": round(
            in_container["matmul_float32_gflops"][size] / on_host["matmul_float32_gflops"][size], 3
        )
        for size in on_host["matmul_float32_gflops"]
    }
    ratios["dataloader"] = round(
        in_container["dataloader_2_workers_mbps"] / on_host["dataloader_2_workers_mbps"], 3
    )
    ratios["batching"] = round(
        in_container["batching_per_example_speedup"] / on_host["batching_per_example_speedup"], 3
    )
    return {"host": on_host, "container": in_container, "ratio": ratios}


def gpu_benchmarks(manifest: Manifest, settings: Settings) -> list[dict[str, Any]] | str:
    """`torchlab probe --bench` in each variant whose accelerator reaches containers here."""
    measured = []
    for variant in manifest.variants:
        if variant.device == "cpu" or lab_runs_here(variant) is not None:
            continue
        service = test_service(variant)
        report = run_in_service(settings, service, "torchlab", "probe", "--json", "--bench")
        measured += json.loads(report.stdout)["bench"]
    return measured or "no accelerator reaches containers on this machine"
