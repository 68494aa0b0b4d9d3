"""make bench's threads part: the same step in a container limited to 1 CPU with torch's
default threads (OMP_NUM_THREADS set to the host's cores, which the entrypoint leaves alone)
and with torchlab's, their ratio, and the table that publishes them (the engine recorded)."""

from __future__ import annotations

import json

from torchlab import system, variants
from torchlab_host.measure import cpu_limit, report

MANIFEST = variants.load()


def test_the_step_runs_twice_under_one_cpu_and_the_ratio_is_defaults_time_over_torchlabs(
    monkeypatch,
):
    runs = []

    def recorded(*arguments: str) -> str:
        runs.append(arguments)
        # Eight threads in one CPU's time: throttled, slower than one.
        step = {"threads": 8, "step_ms": 90.0} if "OMP_NUM_THREADS=8" in arguments else {
            "threads": 1, "step_ms": 60.0}  # fmt: skip
        return "a line before\n" + json.dumps(step)

    monkeypatch.setattr(cpu_limit, "docker_must", recorded)
    monkeypatch.setattr(system, "machine", lambda: {"cpu_count": 8})
    measured = cpu_limit.measure(MANIFEST)
    image = MANIFEST.variant("cpu").image
    assert [run[:4] for run in runs] == [("run", "--rm", "--cpus", "1")] * 2
    assert runs[0][4:7] == ("--env", "OMP_NUM_THREADS=8", image)
    assert runs[1][4] == image
    assert measured["default"] == {"threads": 8, "step_ms": 90.0}
    assert measured["torchlab"] == {"threads": 1, "step_ms": 60.0}
    assert measured["speedup"] == 1.5


def test_the_table_shows_both_thread_counts_their_times_and_the_ratio():
    measured = {
        "cpus": 1,
        "host_cores": 2,
        "default": {"threads": 2, "step_ms": 61.2},
        "torchlab": {"threads": 1, "step_ms": 51.0},
        "speedup": 1.2,
    }
    assert report.cpu_limit_table(measured) == [
        "| a matmul-heavy training step in the cpu image limited to 1 CPU (`docker run --cpus`) "
        "| threads | ms per step |",
        "| --- | --- | --- |",
        "| torch's default: one thread per host core (OMP_NUM_THREADS=2) | 2 | 61.2 |",
        "| torchlab's, from the CPU limit | 1 | 51.0 |",
        "| torchlab's speed over the default's | | 1.2x |",
    ]
