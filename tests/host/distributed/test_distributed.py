"""torchlab distributed on this machine: torchrun with two processes (gloo on the CPU), and
the arithmetic and hints it reports with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchlab import distributed
from torchlab.backends import get

REPO = Path(__file__).resolve().parents[3]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def torchrun(*arguments: str, nproc: int = 2, **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TORCHLAB_EXPECT"}
    env.update(OMP_NUM_THREADS="1", **environment)
    return subprocess.run(
        [str(TORCHRUN), f"--nproc-per-node={nproc}", "-m", "torchlab", "distributed", *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def report() -> dict:
    ran = torchrun("--json", "--max-bytes", str(2**20), "--batch-bytes", str(2**20), "--steps", "3")
    assert ran.returncode == 0, ran.stderr[-3000:]
    return json.loads(ran.stdout)


def test_the_world_is_the_one_torchrun_made(report):
    assert report["world"] == {"ranks": 2, "nodes": 1, "backend": "gloo", "device": "cpu"}
    assert [(r["rank"], r["local_rank"], r["node"]) for r in report["ranks"]] == [
        (0, 0, 0),
        (1, 1, 0),
    ]


def test_every_check_passed_in_order(report):
    assert report["checks"] == [
        "the world is what torchrun promised",
        "every rank runs the same software",
        "/dev/shm holds the batches",
        "all_reduce adds exactly",
        "all_gather brings every rank's tensor",
        "broadcast copies rank 0's tensor exactly",
        "DDP keeps every rank's parameters identical (3 steps)",
        "DDP equals one process with the global batch (within 1e-05)",
    ]
    assert report["ddp"]["max_relative_difference"] <= distributed.DDP_TOLERANCE
    assert report["ddp"]["global_batch"] == 2 * report["ddp"]["local_batch"]


def test_all_reduce_is_measured_from_8_bytes_up_as_nccl_tests_does(report):
    rows = report["all_reduce"]
    assert [row["bytes"] for row in rows] == distributed.message_sizes(2**20)
    for row in rows:
        algbw = row["bytes"] / (row["time_us"] / 1e6) / 1e9
        assert row["algbw_gbps"] == pytest.approx(algbw, rel=0.01, abs=1e-3)
        assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"], abs=1e-3)  # 2(n-1)/n = 1


def test_the_table_names_every_rank_and_size():
    ran = torchrun("--max-bytes", "4096", "--batch-bytes", str(2**16), "--steps", "2")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.startswith("torchlab distributed proof: 2 ranks on 1 node(s), backend gloo")
    assert "  ok  DDP equals one process" in ran.stdout and "4 KiB" in ran.stdout
    assert not [line for line in ran.stderr.splitlines() if line.startswith("torchlab")]


def test_too_little_shm_for_the_batches_fails_on_every_rank_with_the_fix():
    ran = torchrun("--max-bytes", "64", "--batch-bytes", str(2**50))
    assert ran.returncode != 0
    lines = [line for line in ran.stderr.splitlines() if line.startswith("torchlab: ")]
    assert len(lines) == 2, ran.stderr  # one line per rank, none hanging
    assert all(
        "/dev/shm holds the batches failed on rank 0, 1: /dev/shm on node 0" in line
        for line in lines
    ), lines
    assert "--shm-size=2g" in lines[0]


def test_outside_torchrun_it_says_how_to_start_it():
    env = {k: v for k, v in os.environ.items() if k not in distributed.EXPECTED_FROM_TORCHRUN}
    ran = subprocess.run(
        [sys.executable, "-m", "torchlab", "distributed"], capture_output=True, text=True, env=env
    )
    assert ran.returncode == 1
    assert ran.stderr.strip().endswith("Fix: torchrun --nproc-per-node 2 -m torchlab distributed")


def test_message_sizes_grow_fourfold_up_to_the_largest():
    assert distributed.message_sizes(256 * 2**20)[:3] == [8, 32, 128]
    assert distributed.message_sizes(256 * 2**20)[-2:] == [128 * 2**20, 256 * 2**20]
    assert distributed.message_sizes(100) == [8, 32, 100]


def test_bus_bandwidth_is_nccl_tests_definition():
    assert distributed.bus_bandwidth(10.0, 2) == 10.0
    assert distributed.bus_bandwidth(10.0, 4) == 15.0
    assert distributed.bus_bandwidth(10.0, 8) == 17.5


@pytest.mark.parametrize(
    ("backend", "text", "said"),
    [
        ("cpu", "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection "
         "closed by peer [172.18.0.3]:60912", "another rank stopped in the middle"),
        ("cpu", "torch.distributed.DistNetworkError: The client socket has timed out after 60s "
         "while trying to connect to (torchlab-ddp-node-0, 29400).", "did not answer in time"),
        ("cpu", "RuntimeError: The server socket has failed to listen on any local network "
         "address. Connection refused", "cannot reach the others"),
        ("cuda", "torch.distributed.DistBackendError: NCCL error: unhandled system error, NCCL "
         "WARN Bootstrap : no socket interface found", "NCCL found no network interface"),
        ("cuda", "NCCL WARN Error: failed to extend /dev/shm/nccl-AB12 to 9637892 bytes",
         "out of shared memory"),
    ],
)  # fmt: skip
def test_what_distributed_runs_fail_with_becomes_a_hint(backend, text, said):
    hint = distributed.explain(RuntimeError(text), get(backend))
    assert said in str(hint) and "Fix: " in str(hint) and "\n" not in str(hint)


@pytest.mark.parametrize(
    "path", ["deploy/slurm/torchlab.sbatch", "deploy/kubernetes/pytorchjob.yaml"]
)
def test_clusters_start_each_node_as_make_test_ddp_does(path):
    """One torchrun line, in the toolkit: every launcher runs `torchlab torchrun`."""
    from torchlab_host.distributed import torchrun as ddp

    text = (REPO / path).read_text()
    assert " ".join(ddp.node_command([])) in text, f"{path} starts its nodes another way"
    assert "--rdzv" not in text, f"{path} writes its own torchrun line"


def test_the_torchrun_line_comes_from_the_environment_each_launcher_sets():
    from torchlab.launch import SETTINGS, torchrun_command

    environment = dict(
        NNODES="2", NPROC_PER_NODE="4", RDZV_HOST="node0", RDZV_PORT="29400", RDZV_ID="job-7"
    )
    assert torchrun_command(environment, ["-m", "torchlab", "distributed"]) == [
        "torchrun", "--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d",
        "--rdzv-endpoint=node0:29400", "--rdzv-id=job-7", "--max-restarts=0",
        "-m", "torchlab", "distributed",
    ]  # fmt: skip
    del environment["RDZV_HOST"]
    with pytest.raises(ValueError, match=r"torchrun needs RDZV_HOST in the environment\. Fix: "):
        torchrun_command(environment, ["train.py"])
    assert set(SETTINGS) == {*environment, "RDZV_HOST"}


def test_torchlab_torchrun_without_its_settings_is_one_line(monkeypatch, capsys):
    from torchlab import cli

    for name in ("NPROC_PER_NODE", "RDZV_HOST", "RDZV_PORT", "RDZV_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NNODES", "2")
    assert cli.main(["torchrun", "-m", "torchlab", "distributed"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "torchlab: torchrun needs NPROC_PER_NODE, RDZV_HOST, RDZV_PORT, RDZV_ID in the environment."
    )


def test_make_ddp_runs_a_script_of_the_labs_folder_with_its_arguments(tmp_path):
    from torchlab_host.core.errors import HostError
    from torchlab_host.core.settings import Settings
    from torchlab_host.distributed import torchrun as ddp

    labs = tmp_path / "labs"
    (labs / "runs").mkdir(parents=True)
    (labs / "runs" / "train.py").write_text("")
    (tmp_path / "elsewhere.py").write_text("")
    given = {"LABS_DIR": str(labs), "LAB_DATA_DIR": str(tmp_path / "lab-data")}
    given.update(LAB_UID=str(os.getuid()), LAB_GID=str(os.getgid()))
    settings = Settings.load(given, tmp_path / ".env")

    assert ddp.script_program(f"{labs}/runs/train.py --epochs 2 --name 'a b'", settings) == [
        "/home/lab/labs/runs/train.py",
        "--epochs",
        "2",
        "--name",
        "a b",
    ]
    with pytest.raises(HostError, match=r"is outside the work folder .* Fix: put it into"):
        ddp.script_program(str(tmp_path / "elsewhere.py"), settings)
    with pytest.raises(HostError, match="is not a file"):
        ddp.script_program(f"{labs}/runs/missing.py", settings)
