"""`make bench`: what each image costs and how fast it is, measured on this machine.

Every timing is repeated (BENCH_REPEATS, at least 3) and reported as its median: the machine
is noisy. Writes artifacts/bench.json and artifacts/bench.md, and prints the table. It times
the same host commands a person runs, in subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from torchlab import system, variants
from torchlab.backends import get
from torchlab.bench import median_of_reports
from torchlab.variants import Manifest, Variant

from . import ARTIFACTS, ROOT, bench_ddp, bench_hub
from .engine import compose, quiet, require_compose, require_docker
from .errors import HostError
from .images import prune_replaced_images
from .labs import test_service

# The goals this project set itself (README, "Performance"); image sizes are the manifest's.
TARGETS = {
    "rebuild_s": 15.0,
    "healthy_s": 5.0,
    "container_ratio": 0.95,
}


def timed(command: list[str], environment: dict[str, str] | None = None, **kwargs) -> float:
    start = time.monotonic()
    result = subprocess.run(command, env=environment, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise HostError(f"{' '.join(command)} failed: {result.stderr.strip()[-500:]}")
    return time.monotonic() - start


def median_of(repeats: int, measure) -> float:
    return round(statistics.median(measure() for _ in range(repeats)), 1)


def host_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "torchlab_host", *arguments]


def in_checkout(root: Path, **extra: str) -> dict[str, str]:
    """The environment that runs the host tools of the checkout at root."""
    return dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{root / 'src'}", **extra)


def image_facts(variant: Variant) -> dict[str, Any]:
    inspected = json.loads(quiet(["docker", "image", "inspect", variant.image]).stdout)[0]
    return {
        "size_gb": round(inspected["Size"] / 1e9, 3),
        "size_ceiling_gb": variant.size_ceiling_gb,
        "layers": len(inspected["RootFS"]["Layers"]),
    }


def one_line_rebuild(variant: Variant) -> float:
    """Rebuild after appending one line to the toolkit, in a copy of the tracked tree.

    The line is new every time, so no earlier build's layers can answer for it."""
    files = quiet(["git", "-C", str(ROOT), "ls-files"]).stdout.split()
    with tempfile.TemporaryDirectory() as copy:
        for name in files:
            target = Path(copy, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        with open(Path(copy, "src/torchlab/devices.py"), "a") as edited:
            edited.write(f"# one-line edit {time.time_ns()}\n")
        return timed(host_command("build", variant.name), in_checkout(Path(copy)), cwd=copy)


def rebuild_from_checkout(variant: Variant) -> None:
    """Put the checkout's own toolkit back into the image, and drop the images it replaces."""
    timed(host_command("build", variant.name), in_checkout(ROOT), cwd=ROOT)
    prune_replaced_images()


def rebuild_check(variant: Variant, ceiling_s: float) -> int:
    """CI's check: one rebuild after a one-line toolkit change, at most ceiling_s seconds."""
    seconds = one_line_rebuild(variant)
    rebuild_from_checkout(variant)
    print(f"rebuild of {variant.image} after a one-line toolkit change: {seconds:.1f} s")
    if seconds > ceiling_s:
        print(
            f"torchlab: the rebuild took longer than {ceiling_s:g} s: a layer before the "
            "toolkit's was rebuilt. Fix: keep docker/Dockerfile's COPY src after the installs",
            file=sys.stderr,
        )
        return 1
    return 0


def start_to_healthy(variant: Variant) -> float:
    environment = in_checkout(ROOT)
    try:
        return timed(host_command("lab", variant.name), environment, cwd=ROOT)
    finally:
        subprocess.run(host_command("down"), env=environment, cwd=ROOT, capture_output=True)


# pytest's --durations line for one lab notebook of the device suite.
LAB_DURATION = re.compile(
    r"^([\d.]+)s call\s+\S*test_notebooks\.py::test_notebook_runs_and_checks_itself\[(\S+)\]",
    re.M,
)


def suite(variant: Variant) -> tuple[float, dict[str, float]]:
    """The image's suite in the mode this machine allows: its seconds, and each lab's."""
    service = test_service(variant, on_cpu=True)
    start = time.monotonic()
    result = compose(
        "--profile",
        "test",
        "run",
        "--rm",
        service,
        "torchlab",
        "selftest",
        "--durations=0",
        capture=True,
    )
    if result.returncode != 0:
        raise HostError(f"the suite in {service} failed: {result.stdout.strip()[-500:]}")
    seconds = time.monotonic() - start
    return seconds, {name: float(taken) for taken, name in LAB_DURATION.findall(result.stdout)}


def probe(variant: Variant) -> float:
    """The probe in the image, in the mode this machine allows (its suite's service)."""
    service = test_service(variant, on_cpu=True)
    start = time.monotonic()
    result = compose("--profile", "test", "run", "--rm", service, "torchlab", "probe", capture=True)
    if result.returncode != 0:
        raise HostError(f"the probe in {service} failed: {result.stderr.strip()[-500:]}")
    return time.monotonic() - start


def lab_runs_here(variant: Variant) -> str | None:
    """Why a variant's lab cannot turn healthy here (its device is elsewhere), or None."""
    backend = get(variant.device)
    if variant.device == "cpu":
        return None
    if not backend.checks_host:
        return f"the host cannot tell whether a {variant.device} device is here"
    hint = backend.host_requirements()
    return hint.problem if hint else None


def plan(manifest: Manifest, names: list[str]) -> list[str]:
    """What `make bench` measures for each variant, one line each (make bench BENCH_PLAN=1)."""
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


def bench_variant(variant: Variant, repeats: int) -> dict[str, Any]:
    print(f"bench: {variant.image}", file=sys.stderr, flush=True)
    results = image_facts(variant)
    no_cache = in_checkout(ROOT, DOCKER_BUILD_FLAGS="--no-cache")

    def cold_build() -> float:
        seconds = timed(host_command("build", variant.name), no_cache, cwd=ROOT)
        prune_replaced_images()  # GBs each time
        return seconds

    results["build_cold_layers_s"] = median_of(repeats, cold_build)
    results["rebuild_one_line_s"] = median_of(repeats, lambda: one_line_rebuild(variant))
    rebuild_from_checkout(variant)
    if lab_runs_here(variant) is None:
        results["start_to_healthy_s"] = median_of(repeats, lambda: start_to_healthy(variant))
    runs = [suite(variant) for _ in range(repeats)]
    results["suite_s"] = round(statistics.median(seconds for seconds, _ in runs), 1)
    results["labs_s"] = {
        name: round(statistics.median(labs[name] for _, labs in runs), 1) for name in runs[0][1]
    }
    results["probe_s"] = median_of(repeats, lambda: probe(variant))
    return results


def container_vs_host(venv_python: Path, repeats: int) -> dict[str, Any]:
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
        in_container.append(
            json.loads(
                compose(
                    "--profile",
                    "test",
                    "run",
                    "--rm",
                    "test-cpu",
                    "torchlab",
                    "bench",
                    capture=True,
                ).stdout
            )
        )
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
    return {"host": on_host, "container": in_container, "ratio": ratios}


def gpu_benchmarks(manifest: Manifest) -> list[dict[str, Any]] | str:
    """`torchlab probe --bench` in each variant whose accelerator reaches containers here."""
    measured = []
    for variant in manifest.variants:
        if variant.device == "cpu" or lab_runs_here(variant) is not None:
            continue
        report = compose(
            "--profile",
            "test",
            "run",
            "--rm",
            test_service(variant),
            "torchlab",
            "probe",
            "--json",
            "--bench",
            capture=True,
        )
        measured += json.loads(report.stdout)["bench"]
    return measured or "no accelerator reaches containers on this machine"


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


def verdict(value: float | None, target: float, higher_is_better: bool = False) -> str:
    if value is None:
        return "n/a"
    met = value >= target if higher_is_better else value <= target
    return "yes" if met else "NO"


def markdown(results: dict[str, Any]) -> str:
    lines = images_table(results) if "images" in results else []
    if "hub" in results:
        lines += ["", *hub_table(results["hub"])]
    if "ddp" in results:
        lines += ["", *bench_ddp.table(results["ddp"])]
    m = results["machine"]
    lines += [
        "",
        f"Measured {m['date']} on {m['cpus']} CPUs ({m['cpu']}), {m['ram_gb']} GiB RAM, "
        f"kernel {m['kernel']}, Docker {m['docker']}; medians of {results['repeats']} runs. "
        "Reproduce: `make bench`.",
    ]
    return "\n".join(lines).strip("\n")


def hub_table(hub: dict[str, Any]) -> list[str]:
    ready = hub["start_to_ready_s"]
    return [
        "| the hub (`make hub`, cpu profile) | measured |",
        "| --- | --- |",
        f'| "start my server" to a ready lab (s): first, median, slowest | '
        f"{ready['first']}, {ready['median']}, {ready['slowest']} |",
        f"| memory of an idle user's server (MiB) | {hub['idle_server_mib']} |",
        f"| idle users started one after another | {hub['idle_users_started']} "
        f"(stopped by {hub['stopped_by']}) |",
        f"| idle users this machine's free memory holds | {hub['idle_users_by_memory']} |",
    ]


def images_table(results: dict[str, Any]) -> list[str]:
    images = results["images"]
    names = list(images)
    rows = [
        ("uncompressed size (GB)", "size_gb"),
        ("layers", "layers"),
        ("build, warm package cache, cold layer cache (s)", "build_cold_layers_s"),
        ("rebuild after a one-line toolkit change (s)", "rebuild_one_line_s"),
        ("`make lab-<x>` to healthy (s)", "start_to_healthy_s"),
        ("in-image suite, CPU mode (s)", "suite_s"),
        ("probe (s)", "probe_s"),
    ]
    lines = [
        "| | " + " | ".join(f"`torchlab:{name}`" for name in names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for label, key in rows:
        cells = [str(images[name].get(key, "n/a")) for name in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    notebooks = sorted({lab for name in names for lab in images[name].get("labs_s", {})})
    if notebooks:
        lines += ["", "| each lab, CPU mode (s) | " + " | ".join(names) + " |"]
        lines.append("| --- |" + " --- |" * len(names))
        for lab in notebooks:
            cells = [str(images[name].get("labs_s", {}).get(lab, "not run")) for name in names]
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    ratio = results["container_vs_host"]
    lines += [
        "",
        "| in the cpu container vs on the host, median (range) | host | container | ratio |",
        "| --- | --- | --- | --- |",
    ]
    runs = ratio["runs"]

    def with_range(side: str, size: str) -> str:
        """The median, and the range over the runs: how noisy the machine was."""
        values = [run["matmul_float32_gflops"][size] for run in runs[side]]
        median = ratio[side]["matmul_float32_gflops"][size]
        return f"{median} ({min(values)}-{max(values)})"

    for size in ratio["host"]["matmul_float32_gflops"]:
        lines.append(
            f"| float32 matmul {size}x{size} (GFLOP/s) | {with_range('host', size)} | "
            f"{with_range('container', size)} | {ratio['ratio'][f'matmul_{size}']} |"
        )
    lines.append(
        f"| DataLoader, 2 workers (MB/s) | {ratio['host']['dataloader_2_workers_mbps']} | "
        f"{ratio['container']['dataloader_2_workers_mbps']} | "
        f"{ratio['ratio']['dataloader']} |"
    )
    cpu = images.get("cpu", {})
    worst_ratio = min(ratio["ratio"].values())
    lines += ["", "| goal | measured | met |", "| --- | --- | --- |"]
    lines += [
        f"| {name} image <= {facts['size_ceiling_gb']:g} GB | {facts['size_gb']} | "
        f"{verdict(facts['size_gb'], facts['size_ceiling_gb'])} |"
        for name, facts in images.items()
    ]
    lines += [
        f"| rebuild after a toolkit change <= {TARGETS['rebuild_s']:g} s (cpu) | "
        f"{cpu.get('rebuild_one_line_s', 'n/a')} | "
        f"{verdict(cpu.get('rebuild_one_line_s'), TARGETS['rebuild_s'])} |",
        f"| start to healthy <= {TARGETS['healthy_s']:g} s (cpu) | "
        f"{cpu.get('start_to_healthy_s', 'n/a')} | "
        f"{verdict(cpu.get('start_to_healthy_s'), TARGETS['healthy_s'])} |",
        f"| container/host compute >= {TARGETS['container_ratio']} | {worst_ratio} | "
        f"{verdict(worst_ratio, TARGETS['container_ratio'], higher_is_better=True)} |",
    ]
    gpu = results["gpu"]
    if isinstance(gpu, str):
        lines += ["", f"GPU: {gpu}."]
    else:
        lines += [
            "",
            "| GPU | bf16 matmul TFLOP/s | of peak | copy GB/s | of peak |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {g['device']} | {g.get('matmul_bfloat16_tflops')} | "
            f"{g.get('bf16_fraction_of_peak', 'n/a')} | {g['copy_gbps']} | "
            f"{g.get('memory_fraction_of_peak', 'n/a')} |"
            for g in gpu
        ]
    return lines


PARTS = ("images", "hub", "ddp")


def run_bench(manifest: Manifest, names: list[str], repeats: int, parts: list[str]) -> dict:
    require_docker()
    require_compose()
    venv_python = ROOT / os.environ.get("VENV", ".venv") / "bin/python"
    results: dict[str, Any] = {"machine": this_machine(), "repeats": repeats}
    if "images" in parts:
        selected = [manifest.variant(name) for name in names]
        results["images"] = {variant.name: bench_variant(variant, repeats) for variant in selected}
        results["container_vs_host"] = container_vs_host(venv_python, repeats)
        results["gpu"] = gpu_benchmarks(manifest)
    if "hub" in parts:
        print("bench: the hub", file=sys.stderr, flush=True)
        results["hub"] = bench_hub.measure()
    if "ddp" in parts:
        print("bench: torchrun across containers", file=sys.stderr, flush=True)
        results["ddp"] = bench_ddp.measure(venv_python, repeats)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m torchlab_host.bench", description=__doc__)
    parser.add_argument(
        "--rebuild-check",
        metavar="VARIANT",
        help="only time one rebuild of VARIANT's image after a one-line toolkit change",
    )
    parser.add_argument("--ceiling", type=float, default=30.0, help="for --rebuild-check (s)")
    parser.add_argument("--plan", action="store_true", help="say what it would measure, and stop")
    args = parser.parse_args(argv)
    repeats = max(3, int(os.environ.get("BENCH_REPEATS") or 3))
    try:
        manifest = variants.load()
        names = (os.environ.get("BENCH_VARIANTS") or " ".join(manifest.names)).split()
        if args.plan:
            print("\n".join(plan(manifest, names)))
            return 0
        if args.rebuild_check:
            require_docker()
            return rebuild_check(manifest.variant(args.rebuild_check), args.ceiling)
        parts = (os.environ.get("BENCH_PARTS") or " ".join(PARTS)).split()
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise HostError(f"BENCH_PARTS names {unknown}: choose from {', '.join(PARTS)}")
        results = run_bench(manifest, names, repeats, parts)
    except (HostError, KeyError, variants.ManifestError) as error:
        print(f"torchlab: {error.args[0]}", file=sys.stderr)
        return 1
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "bench.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (ARTIFACTS / "bench.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
