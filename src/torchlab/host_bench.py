"""`make bench`: what each image costs and how fast it is, measured on this machine.

Every timing is repeated (BENCH_REPEATS, at least 3) and reported as its median: the machine
is noisy. Writes artifacts/bench.json and artifacts/bench.md, and prints the table.
Standard library only, like torchlab.host, whose commands it times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import host
from .bench import median_of_reports
from .variants import Variant, by_name

# The goals this project set itself (README, "Performance").
TARGETS = {
    "cpu_size_gb": 1.6,
    "cuda_size_gb": 5.6,
    "rebuild_s": 15.0,
    "healthy_s": 5.0,
    "container_ratio": 0.95,
}


def timed(command: list[str], environment: dict[str, str] | None = None, **kwargs) -> float:
    start = time.monotonic()
    result = subprocess.run(command, env=environment, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise host.HostError(f"{' '.join(command)} failed: {result.stderr.strip()[-500:]}")
    return time.monotonic() - start


def median_of(repeats: int, measure) -> float:
    return round(statistics.median(measure() for _ in range(repeats)), 1)


def host_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "torchlab.host", *arguments]


def with_pythonpath(root: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(root / "src"), **extra)


def image_facts(variant: Variant) -> dict[str, Any]:
    inspected = json.loads(host.quiet(["docker", "image", "inspect", variant.image]).stdout)[0]
    return {
        "size_gb": round(inspected["Size"] / 1e9, 3),
        "layers": len(inspected["RootFS"]["Layers"]),
    }


def one_line_rebuild(variant: Variant) -> float:
    """Rebuild after appending one line to the toolkit, in a copy of the tracked tree.

    The line is new every time, so no earlier build's layers can answer for it."""
    files = host.quiet(["git", "-C", str(host.ROOT), "ls-files"]).stdout.split()
    with tempfile.TemporaryDirectory() as copy:
        for name in files:
            target = Path(copy, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(host.ROOT / name, target)
        with open(Path(copy, "src/torchlab/variants.py"), "a") as edited:
            edited.write(f"# one-line edit {time.time_ns()}\n")
        return timed(host_command("build", variant.lab), with_pythonpath(Path(copy)))


def rebuild_from_checkout(variant: Variant) -> None:
    """Put the checkout's own toolkit back into the image, and drop the images it replaces."""
    timed(host_command("build", variant.lab), with_pythonpath(host.ROOT))
    host.prune_replaced_images()


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
    environment = with_pythonpath(host.ROOT)
    try:
        return timed(host_command("up", variant.lab), environment)
    finally:
        subprocess.run(host_command("down"), env=environment, capture_output=True)


def suite(variant: Variant) -> float:
    on_cpu = [] if variant.name == "cpu" else ["--on-cpu"]
    return timed(host_command("test", variant.lab, *on_cpu), with_pythonpath(host.ROOT))


def probe(variant: Variant) -> float:
    cpu_mode = {"cpu": [], "cuda": ["-e", "TORCHLAB_EXPECT=cpu"], "xla": ["-e", "PJRT_DEVICE=CPU"]}
    return timed(
        ["docker", "run", "--rm", *cpu_mode[variant.name], variant.image, "torchlab", "probe"]
    )


def lab_runs_here(variant: Variant) -> bool:
    """Only a lab whose device is on this machine can turn healthy (lab-tpu needs a TPU)."""
    from .backends import get

    return variant.name == "cpu" or (
        variant.name == "cuda" and get("cuda").host_requirements() is None
    )


def bench_variant(variant: Variant, repeats: int) -> dict[str, Any]:
    print(f"bench: {variant.image}", file=sys.stderr, flush=True)
    results = image_facts(variant)
    no_cache = with_pythonpath(host.ROOT, DOCKER_BUILD_FLAGS="--no-cache")

    def cold_build() -> float:
        seconds = timed(host_command("build", variant.lab), no_cache)
        host.prune_replaced_images()  # GBs each time
        return seconds

    results["build_cold_layers_s"] = median_of(repeats, cold_build)
    results["rebuild_one_line_s"] = median_of(repeats, lambda: one_line_rebuild(variant))
    rebuild_from_checkout(variant)
    if lab_runs_here(variant):
        results["start_to_healthy_s"] = median_of(repeats, lambda: start_to_healthy(variant))
    results["suite_s"] = median_of(repeats, lambda: suite(variant))
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
                host.compose(
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


def gpu_benchmarks() -> list[dict[str, Any]] | str:
    from .backends import get

    if get("cuda").host_requirements() is not None:
        return "no GPU reaches containers on this machine"
    report = host.compose(
        "--profile",
        "test",
        "run",
        "--rm",
        "test-gpu",
        "torchlab",
        "probe",
        "--json",
        "--bench",
        capture=True,
    )
    return json.loads(report.stdout)["bench"]


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    docker = host.quiet(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "ram_gb": round(memory_kb / 2**20, 1),
        "kernel": platform.release(),
        "docker": docker,
        "date": time.strftime("%Y-%m-%d"),
    }


def verdict(value: float | None, target: float, higher_is_better: bool = False) -> str:
    if value is None:
        return "n/a"
    met = value >= target if higher_is_better else value <= target
    return "yes" if met else "NO"


def markdown(results: dict[str, Any]) -> str:
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
    cpu, cuda = images.get("cpu", {}), images.get("cuda", {})
    worst_ratio = min(ratio["ratio"].values())
    lines += [
        "",
        "| goal | measured | met |",
        "| --- | --- | --- |",
        f"| cpu image <= {TARGETS['cpu_size_gb']} GB | {cpu.get('size_gb', 'n/a')} | "
        f"{verdict(cpu.get('size_gb'), TARGETS['cpu_size_gb'])} |",
        f"| cuda image <= {TARGETS['cuda_size_gb']} GB | {cuda.get('size_gb', 'n/a')} | "
        f"{verdict(cuda.get('size_gb'), TARGETS['cuda_size_gb'])} |",
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
    m = results["machine"]
    lines += [
        "",
        f"Measured {m['date']} on {m['cpus']} CPUs ({m['cpu']}), {m['ram_gb']} GiB RAM, "
        f"kernel {m['kernel']}, Docker {m['docker']}; medians of {results['repeats']} runs. "
        "Reproduce: `make bench`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m torchlab.host_bench", description=__doc__)
    parser.add_argument(
        "--rebuild-check",
        metavar="LAB",
        help="only time one rebuild of LAB's image after a one-line toolkit change",
    )
    parser.add_argument("--ceiling", type=float, default=30.0, help="for --rebuild-check (s)")
    args = parser.parse_args(argv)
    repeats = max(3, int(os.environ.get("BENCH_REPEATS") or 3))
    labs = (os.environ.get("BENCH_LABS") or "cpu gpu tpu").split()
    venv_python = host.ROOT / os.environ.get("VENV", ".venv") / "bin/python"
    try:
        host.require_docker()
        if args.rebuild_check:
            return rebuild_check(by_name(args.rebuild_check), args.ceiling)
        host.require_compose()
        results = {
            "machine": machine(),
            "repeats": repeats,
            "images": {by_name(lab).name: bench_variant(by_name(lab), repeats) for lab in labs},
            "container_vs_host": container_vs_host(venv_python, repeats),
            "gpu": gpu_benchmarks(),
        }
    except (host.HostError, KeyError) as error:
        print(f"torchlab: {error.args[0]}", file=sys.stderr)
        return 1
    host.ARTIFACTS.mkdir(exist_ok=True)
    (host.ARTIFACTS / "bench.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (host.ARTIFACTS / "bench.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
