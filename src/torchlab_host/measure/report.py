"""make bench's tables (artifacts/bench.md, and the tables of docs/performance.md)."""

from __future__ import annotations

from functools import reduce
from operator import getitem
from typing import Any

# The goals this project set itself (docs/performance.md); image sizes are the manifest's.
TARGETS = {
    "rebuild_s": 15.0,
    "lab_to_url_s": 5.0,
    # make lab's own work beyond what JupyterLab itself takes to start in the same image.
    "lab_over_bare_s": 1.0,
    "container_ratio": 0.95,
    "ddp_speed_of_host": 0.95,
    # A class that clicks Start together: every server ready, the slowest twentieth in a minute.
    "class_p95_s": 60.0,
}
IMAGE_ROWS = (
    ("uncompressed size (GB)", "size_gb"),
    ("layers", "layers"),
    ("build, warm package cache, cold layer cache (s)", "build_cold_layers_s"),
    ("rebuild after a one-line toolkit change (s)", "rebuild_one_line_s"),
    ("`make lab-<x>` to its printed URL (s)", "lab_to_url_s"),
    ("bare JupyterLab in the same image to its URL (s)", "bare_jupyterlab_to_url_s"),
    ("in-image suite, CPU mode (s)", "suite_s"),
    ("probe (s)", "probe_s"),
)


def verdict(value: float | None, target: float, higher_is_better: bool = False) -> str:
    if value is None:
        return "n/a"
    met = value >= target if higher_is_better else value <= target
    return "yes" if met else "NO"


def header(first: str, columns: list[str]) -> list[str]:
    return [f"| {first} | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]


def markdown(results: dict[str, Any]) -> str:
    lines = []
    if "images" in results:
        lines += images_table(results["images"])
        lines += ["", *container_table(results["container_vs_host"])]
        lines += ["", *goals_table(results["images"], results["container_vs_host"])]
        lines += ["", *gpu_table(results["gpu"])]
    if results.get("platforms"):
        lines += ["", *platforms_table(results["platforms"])]
    if "hub" in results:
        lines += ["", *hub_table(results["hub"])]
    if "ddp" in results:
        lines += ["", *ddp_table(results["ddp"])]
    if "cpu_limit" in results:
        lines += ["", *cpu_limit_table(results["cpu_limit"])]
    m = results["machine"]
    lines += [
        "",
        f"Measured {m['date']} on {m['cpus']} CPUs ({m['cpu']}), {m['ram_gb']} GiB RAM, "
        f"kernel {m['kernel']}, Docker {m['docker']}; medians of {results['repeats']} runs. "
        "Reproduce: `make bench`.",
    ]
    return "\n".join(lines).strip("\n")


def images_table(images: dict[str, Any]) -> list[str]:
    names = list(images)
    lines = header("", [f"`torchlab:{name}`" for name in names])
    for label, key in IMAGE_ROWS:
        cells = [str(images[name].get(key, "n/a")) for name in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    notebooks = sorted({lab for name in names for lab in images[name].get("labs_s", {})})
    if notebooks:
        lines += ["", *header("each lab, CPU mode (s)", names)]
        for lab in notebooks:
            cells = [str(images[name].get("labs_s", {}).get(lab, "not run")) for name in names]
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return lines


def platforms_table(platforms: dict[str, Any]) -> list[str]:
    """Each image on each platform built here; another platform's times are QEMU's."""
    columns = ["size (GB)", "run here", "import torch (s)", "1024² matmul (ms)", "vs native"]
    lines = header("image, platform", columns)
    for name, measured in platforms.items():
        for platform, facts in measured.items():
            ratio = (
                f"{facts['import_vs_native']}x, {facts['matmul_vs_native']}x"
                if "import_vs_native" in facts
                else "-"
            )
            lines.append(
                f"| `torchlab:{name}` {platform} | {facts['size_gb']} | {facts['run']} | "
                f"{facts['import_s']} | {facts['matmul_ms']} | {ratio} |"
            )
    return lines


def container_table(ratio: dict[str, Any]) -> list[str]:
    lines = header(
        "in the cpu container vs on the host, median (range)", ["host", "container", "ratio"]
    )
    runs = ratio["runs"]

    def with_range(side: str, *keys: str) -> str:
        """The median, and the range over the runs: how noisy the machine was."""
        median, *values = (reduce(getitem, keys, report) for report in (ratio[side], *runs[side]))
        return f"{median} ({min(values)}-{max(values)})"

    for size in ratio["host"]["matmul_float32_gflops"]:
        gflops = ("matmul_float32_gflops", size)
        lines.append(
            f"| float32 matmul {size}x{size} (GFLOP/s) | {with_range('host', *gflops)} | "
            f"{with_range('container', *gflops)} | {ratio['ratio'][f'matmul_{size}']} |"
        )
    speedup = "batching_per_example_speedup"
    return [
        *lines,
        f"| DataLoader, 2 workers (MB/s) | {ratio['host']['dataloader_2_workers_mbps']} | "
        f"{ratio['container']['dataloader_2_workers_mbps']} | {ratio['ratio']['dataloader']} |",
        f"| batching: time per example at batch 1 over batch 256 (08's DigitNet, eager) | "
        f"{with_range('host', speedup)} | {with_range('container', speedup)} | "
        f"{ratio['ratio']['batching']} |",
    ]


def goals_table(images: dict[str, Any], ratio: dict[str, Any]) -> list[str]:
    cpu = images.get("cpu", {})
    # Throughput's goal: batching's ratio is a quotient of two speed-ups, not a cost.
    worst_ratio = min(value for name, value in ratio["ratio"].items() if name != "batching")
    lines = header("goal", ["measured", "met"])
    lines += [
        f"| {name} image <= {facts['size_ceiling_gb']:g} GB | {facts['size_gb']} | "
        f"{verdict(facts['size_gb'], facts['size_ceiling_gb'])} |"
        for name, facts in images.items()
    ]
    return [
        *lines,
        f"| rebuild after a toolkit change <= {TARGETS['rebuild_s']:g} s (cpu) | "
        f"{cpu.get('rebuild_one_line_s', 'n/a')} | "
        f"{verdict(cpu.get('rebuild_one_line_s'), TARGETS['rebuild_s'])} |",
        f"| make lab to its URL <= {TARGETS['lab_to_url_s']:g} s (cpu) | "
        f"{cpu.get('lab_to_url_s', 'n/a')} | "
        f"{verdict(cpu.get('lab_to_url_s'), TARGETS['lab_to_url_s'])} |",
        f"| make lab within {TARGETS['lab_over_bare_s']:g} s of bare JupyterLab (cpu) | "
        f"{cpu.get('lab_over_bare_s', 'n/a')} | "
        f"{verdict(cpu.get('lab_over_bare_s'), TARGETS['lab_over_bare_s'])} |",
        f"| container/host compute >= {TARGETS['container_ratio']} | {worst_ratio} | "
        f"{verdict(worst_ratio, TARGETS['container_ratio'], higher_is_better=True)} |",
    ]


def gpu_table(gpu: list[dict[str, Any]] | str) -> list[str]:
    if isinstance(gpu, str):
        return [f"GPU: {gpu}."]
    lines = header("GPU", ["bf16 matmul TFLOP/s", "of peak", "copy GB/s", "of peak"])
    return lines + [
        f"| {g['device']} | {g.get('matmul_bfloat16_tflops')} | "
        f"{g.get('bf16_fraction_of_peak', 'n/a')} | {g['copy_gbps']} | "
        f"{g.get('memory_fraction_of_peak', 'n/a')} |"
        for g in gpu
    ]


def hub_table(hub: dict[str, Any]) -> list[str]:
    ready = hub["start_to_ready_s"]
    together, restart = hub["class_at_once"], hub["restart_while_starting"]
    quantiles = together["ready_s"]
    class_met = "NO" if together["failed"] else verdict(quantiles["p95"], TARGETS["class_p95_s"])
    return [
        *header("the hub (`make hub`, cpu profile)", ["measured"]),
        f"| a class of {together['users']} starts at once: servers ready, failed | "
        f"{together['ready']}, {len(together['failed'])} |",
        f"| its ready time (s): p50, p95, max | "
        f"{quantiles['p50']}, {quantiles['p95']}, {quantiles['max']} |",
        f"| goal: all ready, p95 <= {TARGETS['class_p95_s']:g} s | {class_met} |",
        f"| hub restarted while {restart['starting_at_the_restart']} of "
        f"{restart['users']} servers start: back in (s) | {restart['hub_back_s']} |",
        f"| after it: running, started again, failed, users who lost files | "
        f"{restart['running_after_the_restart']}, {restart['started_again']}, "
        f"{len(restart['failed'])}, {len(restart['files_lost'])} |",
        f'| "start my server" to a ready lab (s): first, median, slowest | '
        f"{ready['first']}, {ready['median']}, {ready['slowest']} |",
        f"| memory of an idle user's server (MiB) | {hub['idle_server_mib']} |",
        f"| idle users started one after another | {hub['idle_users_started']} "
        f"(stopped by {hub['stopped_by']}) |",
        f"| idle users this machine's free memory holds | {hub['idle_users_by_memory']} |",
    ]


def ddp_table(ddp: dict[str, Any]) -> list[str]:
    names = list(ddp["busbw_gbps"])
    lines = header("all_reduce busbw (GB/s), nodes x processes", names)
    for size in ddp["busbw_gbps"][names[0]]:
        label = f"{int(size) // 2**20} MiB" if int(size) >= 2**20 else f"{size} B"
        lines.append(
            f"| {label} | " + " | ".join(str(ddp["busbw_gbps"][n][size]) for n in names) + " |"
        )
    lines.append(
        "| latency of 8 B (us) | " + " | ".join(str(ddp["latency_us"][n]) for n in names) + " |"
    )
    steps = ddp["ddp_step_ms"]
    goal = TARGETS["ddp_speed_of_host"]
    met = verdict(ddp["ddp_speed_of_host"], goal, higher_is_better=True)
    return [
        *lines,
        "",
        f"| DDP step, 2 nodes x 1 process, global batch {ddp['global_batch']} | ms | "
        f"of the host's speed | goal >= {goal} met |",
        "| --- | --- | --- | --- |",
        f"| two containers (make test-ddp) | {steps['containers_2x1']} | "
        f"{ddp['ddp_speed_of_host']} | {met} |",
        f"| the same torchrun, two agents on the host | {steps['host_2x1']} | 1.0 | |",
    ]


def cpu_limit_table(measured: dict[str, Any]) -> list[str]:
    """The same training step under a CPU limit with torch's default threads and torchlab's."""
    default, sized = measured["default"], measured["torchlab"]
    return [
        *header(
            f"a matmul-heavy training step in the cpu image limited to {measured['cpus']} CPU "
            "(`docker run --cpus`)",
            ["threads", "ms per step"],
        ),
        f"| torch's default: one thread per host core (OMP_NUM_THREADS="
        f"{measured['host_cores']}) | {default['threads']} | {default['step_ms']} |",
        f"| torchlab's, from the CPU limit | {sized['threads']} | {sized['step_ms']} |",
        f"| torchlab's speed over the default's | | {measured['speedup']}x |",
    ]
