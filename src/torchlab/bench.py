"""Measurements: matmul throughput, memory bandwidth, DataLoader throughput and what batching
saves a small model.

The same functions run on the host and inside the images, so their numbers compare.
"""

from __future__ import annotations

import statistics
from typing import Any

from .backends import Backend, all_backends
from .devices import timed

MATMUL_DTYPES = ("float32", "bfloat16")


def matmul_tflops(device: Any, dtype: str, size: int, repeats: int = 5) -> float:
    import torch

    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    seconds = timed(lambda: a @ b, device, repeats=repeats)
    return 2 * size**3 / seconds / 1e12


def copy_gbps(device: Any, megabytes: int, repeats: int = 5) -> float:
    """Device memory bandwidth of a copy, counting the bytes read and the bytes written."""
    import torch

    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = timed(lambda: target.copy_(source), device, repeats=repeats)
    return 2 * source.numel() / seconds / 1e9


CPU_MATMUL_SIZES = (512, 1024, 2048)


def cpu_benchmarks(repeats: int = 3) -> dict[str, Any]:
    """What `torchlab bench` reports: the same numbers on the host and in a container, so
    their ratio shows what the container costs (threads, shm and CPU limits)."""
    import torch

    return {
        "threads": torch.get_num_threads(),
        "matmul_float32_gflops": {
            str(size): round(
                statistics.median(
                    matmul_tflops("cpu", "float32", size, repeats=products_for(size)) * 1e3
                    for _ in range(repeats)
                ),
                1,
            )
            for size in CPU_MATMUL_SIZES
        },
        "dataloader_2_workers_mbps": round(
            statistics.median(dataloader_mbps(workers=2) for _ in range(repeats)), 1
        ),
        "batching_per_example_speedup": round(
            statistics.median(batching_per_example_speedup() for _ in range(repeats)), 1
        ),
    }


def products_for(size: int, seconds: float = 0.5) -> int:
    """How many float32 products of `size` fill `seconds` on the CPU: the median of a few
    millisecond-long products moved by 40% with the hiccups of a shared 2-core VM."""
    one_product = 2 * size**3 / (matmul_tflops("cpu", "float32", size, repeats=1) * 1e12)
    return max(3, int(seconds / one_product))


def median_of_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One `cpu_benchmarks` report holding the median of each number over several reports."""
    return {
        "threads": reports[0]["threads"],
        "matmul_float32_gflops": {
            size: round(statistics.median(r["matmul_float32_gflops"][size] for r in reports), 1)
            for size in reports[0]["matmul_float32_gflops"]
        },
        "dataloader_2_workers_mbps": round(
            statistics.median(r["dataloader_2_workers_mbps"] for r in reports), 1
        ),
        "batching_per_example_speedup": round(
            statistics.median(r["batching_per_example_speedup"] for r in reports), 1
        ),
    }


def dataloader_mbps(workers: int = 2, batch_megabytes: int = 64, batches: int = 32) -> float:
    """MB/s of batches handed from DataLoader worker processes to this one (through shm)."""
    import time

    import torch
    from torch.utils.data import DataLoader, Dataset

    elements = batch_megabytes * 2**20 // 4

    class Batches(Dataset):
        def __len__(self) -> int:
            return batches

        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.full((elements,), float(index))

    loader = DataLoader(Batches(), batch_size=None, num_workers=workers)
    start = time.perf_counter()
    received = sum(batch.numel() * 4 for batch in loader)
    return received / (time.perf_counter() - start) / 1e6


BATCHING_SIZES = (1, 256)


def batching_per_example_speedup(repeats: int = 25) -> float:
    """The time per example at batch 1 over that at batch 256, eager, of labs/08's DigitNet:
    what batching requests saves a small model on this CPU. It is measured here rather than
    asserted in the lab, since a busy machine moves it by several times."""
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    ).eval()  # fmt: skip
    per_example = []
    with torch.no_grad():
        for size in BATCHING_SIZES:
            batch = torch.rand(size, 1, 8, 8)
            seconds = timed(lambda batch=batch: model(batch), "cpu", repeats=repeats)
            per_example.append(seconds / size)
    return per_example[0] / per_example[-1]


STEP_WIDTH, STEP_BATCH = 1024, 256


def training_step_ms(seconds: float = 3.0) -> dict[str, Any]:
    """The threads torch runs and the milliseconds per training step of a float32 MLP (three
    1024-wide layers, batch 256), nearly all of it matmuls: in a container under a CPU
    limit, more threads than its CPUs spend its quota early and wait out each period (CFS
    throttling). The mean over `seconds` of steps, not a median: throttled steps are the cost."""
    import time

    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Linear(STEP_WIDTH, STEP_WIDTH), nn.ReLU(),
        nn.Linear(STEP_WIDTH, STEP_WIDTH), nn.ReLU(),
        nn.Linear(STEP_WIDTH, STEP_WIDTH),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    batch, target = torch.randn(STEP_BATCH, STEP_WIDTH), torch.randn(STEP_BATCH, STEP_WIDTH)

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.mse_loss(model(batch), target).backward()
        optimizer.step()

    for _ in range(3):
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    return {"threads": torch.get_num_threads(), "step_ms": round(elapsed / steps * 1e3, 1)}


def benchmark_device(backend: Backend, device: Any) -> dict[str, Any]:
    size = backend.bench_matmul_size
    results: dict[str, Any] = {"device": str(device), "matmul_size": size}
    for dtype in MATMUL_DTYPES:
        if dtype == "bfloat16" and not backend.native_bf16(device):
            continue
        results[f"matmul_{dtype}_tflops"] = round(matmul_tflops(device, dtype, size), 3)
    results["copy_gbps"] = round(copy_gbps(device, backend.bench_copy_megabytes), 1)
    peak = backend.published_peak(device)
    if peak:
        results["published_peak"] = peak
        if "matmul_bfloat16_tflops" in results:
            results["bf16_fraction_of_peak"] = round(
                results["matmul_bfloat16_tflops"] / peak["bf16_tflops"], 3
            )
        results["memory_fraction_of_peak"] = round(
            results["copy_gbps"] / (peak["memory_tbps"] * 1e3), 3
        )
    return results


def device_benchmarks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Benchmarks for every device the probe found usable."""
    measured = []
    for backend in all_backends():
        if report["backends"][backend.name]["usable"]:
            measured += [benchmark_device(backend, device) for device in backend.devices()]
    return measured
