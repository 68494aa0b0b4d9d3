"""make test-ddp: torchrun across containers of the cpu image, and each way a cluster fails:
a node of another image revision, a rank killed mid-run, a /dev/shm too small."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from support import docker, make_lab, require_image, wait_until

from torchlab_host.distributed.torchrun import NODE

OTHER_REVISION = "torchlab-test:other-revision"


@pytest.fixture
def ddp(labs_folder):
    require_image("torchlab:cpu")
    environment = make_lab("cpu", labs_folder).environment

    def run(*arguments: str, wait: bool = True):
        command = [sys.executable, "-m", "torchlab_host", "ddp", *arguments]
        if not wait:
            return subprocess.Popen(
                command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=900)

    yield run
    leftovers = docker("ps", "--all", "--quiet", "--filter", "name=^torchlab-ddp-node-").stdout
    if leftovers.split():
        docker("rm", "--force", *leftovers.split())


def rank_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("torchlab: rank ")]


def test_two_nodes_of_two_processes_prove_themselves(ddp):
    result = ddp("--nodes", "2", "--nproc", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "torchlab distributed proof: 4 ranks on 2 node(s), backend gloo, device cpu"
        in result.stdout
    )
    assert result.stdout.count("  ok  ") == 8
    assert "  256 MiB" in result.stdout  # the sweep went up to the largest message


def test_a_node_of_another_revision_is_refused_by_every_rank(ddp):
    built = subprocess.run(
        ["docker", "build", "--tag", OTHER_REVISION, "-"],
        input="FROM torchlab:cpu\nENV TORCHLAB_REVISION=another-revision\n",
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    try:
        result = ddp("--nodes", "2", "--nproc", "2", "--image-of", f"1={OTHER_REVISION}")
    finally:
        docker("image", "rm", OTHER_REVISION, check=False)
    assert result.returncode == 1
    lines = rank_lines(result)
    assert len(lines) == 4, result.stderr  # every rank says it, none waits
    assert "every rank runs the same software failed on rank" in lines[0]
    assert "another-revision on ranks [2, 3]" in lines[0]
    assert "Fix: run the same image, of the same revision, on every node" in lines[0]


def test_a_rank_killed_mid_run_fails_the_others_within_bounds(ddp):
    running = ddp("--nodes", "2", "--nproc", "1", "--steps", "100000", wait=False)
    node_1 = NODE.format(index=1)

    def rank_started() -> bool:  # torchrun starts the rank after the rendezvous
        return "python -u -m torchlab distributed" in docker("top", node_1, check=False).stdout

    assert wait_until(rank_started, timeout=120)
    time.sleep(5)  # the ranks are into the proof's DDP steps, which last minutes
    killed_at = time.monotonic()
    docker("kill", node_1)
    _, stderr = running.communicate(timeout=300)
    assert running.returncode == 1
    assert time.monotonic() - killed_at < 180  # bounded: a rank never waits forever
    [line] = [line for line in stderr.splitlines() if line.startswith("torchlab: rank 0 ")]
    assert "failed: another rank stopped in the middle" in line or "did not answer in time" in line
    assert ". Fix: " in line


def test_a_shm_too_small_for_the_batches_fails_with_the_fix(ddp):
    result = ddp("--nodes", "2", "--nproc", "2", "--shm-size", "64m")
    assert result.returncode == 1
    lines = rank_lines(result)
    assert len(lines) == 4
    assert "/dev/shm holds the batches failed on rank 0, 1, 2, 3" in lines[0]
    assert "Fix: give the container more: docker run --shm-size=2g" in lines[0]
