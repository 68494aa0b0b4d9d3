"""PyTorch's and OpenMP's threads from the container's CPU quota (what docker/entrypoint
exports), on fake cgroup folders: v2's cpu.max, v1's cfs quota and period; a user's own
OMP_NUM_THREADS or MKL_NUM_THREADS wins; the probe says where its number came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchlab import probe, system

SRC = Path(__file__).parents[2] / "src"


def cgroup_v2(folder: Path, cpu_max: str) -> Path:
    (folder / "cpu.max").write_text(cpu_max + "\n")
    return folder


def cgroup_v1(folder: Path, quota: int, period: int) -> Path:
    (folder / "cpu").mkdir()
    (folder / "cpu/cpu.cfs_quota_us").write_text(f"{quota}\n")
    (folder / "cpu/cpu.cfs_period_us").write_text(f"{period}\n")
    return folder


@pytest.fixture
def host_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)


@pytest.mark.parametrize(
    ("cpu_max", "threads"),
    [
        ("100000 100000", "1"),  # docker run --cpus 1
        ("150000 100000", "2"),  # --cpus 1.5: the part CPU is a thread's
        ("50000 100000", "1"),  # --cpus 0.5: at least one
        ("200000 100000", "2"),
        ("1600000 100000", "8"),  # above the host's cores: at most them
    ],
)
def test_a_cgroup_v2_quota_sizes_the_threads_to_its_cpus_rounded_up(
    tmp_path, host_cores, cpu_max, threads
):
    exported = system.thread_environment({}, cgroup_v2(tmp_path, cpu_max))
    assert exported == {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "TORCHLAB_CPU_LIMIT_THREADS": threads,
    }


def test_a_cgroup_v1_quota_sizes_them_the_same(tmp_path, host_cores):
    exported = system.thread_environment({}, cgroup_v1(tmp_path, 250000, 100000))
    assert exported["OMP_NUM_THREADS"] == "3"


UNLIMITED = {
    "v2 max": lambda folder: cgroup_v2(folder, "max 100000"),
    "v1 -1": lambda folder: cgroup_v1(folder, -1, 100000),
    "no cgroup files": lambda folder: folder,
}


@pytest.mark.parametrize("unlimited", UNLIMITED.values(), ids=UNLIMITED.keys())
def test_without_a_quota_nothing_is_set_and_torch_keeps_its_default(
    tmp_path, host_cores, unlimited
):
    assert system.thread_environment({}, unlimited(tmp_path)) == {}


@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_a_users_own_thread_count_wins_over_the_limit(tmp_path, host_cores, variable):
    assert system.thread_environment({variable: "4"}, cgroup_v2(tmp_path, "100000 100000")) == {}


def test_the_entrypoints_command_prints_the_exports_a_shell_evaluates(tmp_path):
    """`python -I -m torchlab.system`, as docker/entrypoint runs it: shell exports whose eval
    gives a shell the same variables (here, on this machine's own cgroup)."""
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(SRC)}
    printed = subprocess.run(
        [sys.executable, "-m", "torchlab.system"],
        capture_output=True, text=True, check=True, env=environment,
    ).stdout  # fmt: skip
    evaluated = subprocess.run(
        ["sh", "-c", 'eval "$1"; echo "${OMP_NUM_THREADS:-}"', "sh", printed],
        capture_output=True, text=True, check=True, env=environment,
    ).stdout.strip()  # fmt: skip
    expected = system.thread_environment({}).get("OMP_NUM_THREADS", "")
    assert evaluated == expected
    user_set = subprocess.run(
        [sys.executable, "-m", "torchlab.system"],
        capture_output=True, text=True, check=True, env={**environment, "OMP_NUM_THREADS": "3"},
    ).stdout  # fmt: skip
    assert user_set == ""


@pytest.mark.parametrize(
    ("environ", "source"),
    [
        ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TORCHLAB_CPU_LIMIT_THREADS": "1"},
         "the CPU limit"),
        # docker exec -e OMP_NUM_THREADS=3 into a container whose entrypoint set 1
        ({"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "1", "TORCHLAB_CPU_LIMIT_THREADS": "1"},
         "your MKL_NUM_THREADS"),
        ({"OMP_NUM_THREADS": "3", "TORCHLAB_CPU_LIMIT_THREADS": "1"}, "your OMP_NUM_THREADS"),
        ({"OMP_NUM_THREADS": "2"}, "your OMP_NUM_THREADS"),
        ({}, "torch's default (one per core)"),
    ],
)  # fmt: skip
def test_the_probe_says_where_the_thread_count_came_from(environ, source):
    assert system.threads_source(environ) == source


def test_the_probe_table_shows_torchs_threads_beside_the_hosts_cores(monkeypatch):
    import torch

    monkeypatch.setattr(system, "_cgroup_cpu_limit", lambda *a: None)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCHLAB_CPU_LIMIT_THREADS"):
        monkeypatch.delenv(name, raising=False)
    report = probe.collect(smoke=False)
    [line] = [line for line in probe.render_table(report).splitlines() if "threads" in line[:16]]
    assert line.split(None, 1)[1] == (
        f"{torch.get_num_threads()} for torch of the host's {os.cpu_count()} cores, "
        "from torch's default (one per core)"
    )
    assert not [warning for warning in report["warnings"] if "threads in a limit" in warning]


def test_the_probe_warns_where_torch_runs_more_threads_than_the_limit_gives(monkeypatch):
    import torch

    monkeypatch.setattr(system, "_cgroup_cpu_limit", lambda *a: 1.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    report = probe.collect(smoke=False)
    assert (
        "torch runs 4 threads in a limit of 1 CPUs (from your OMP_NUM_THREADS): they wait for "
        "the CPU time they are refused. Fix: export OMP_NUM_THREADS=1 (torchlab's entrypoint "
        "sets it)"
    ) in report["warnings"]
