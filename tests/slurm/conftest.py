"""make test-slurm: the Slurm scripts of deploy/slurm on a real Slurm cluster brought up on
this machine (cluster.py), with podman on its compute nodes and the cpu image.

The cluster comes up once for the session and goes down after it; what it leaves behind (a
daemon, a process in its namespaces, a namespace, a container, a mount) fails the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cluster import TOOLS, Cluster

HERE = Path(__file__).parent
CONVERT = "make slurm-image VARIANT=cpu TORCHLAB_RUNTIME=podman"
IMAGE = "torchlab:cpu"  # in podman's storage, where make slurm-image puts it


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def cluster(require):
    require(os.getuid() == 0, "root, for the cluster's namespaces and daemons")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    require(not missing, f"{', '.join(missing)} (Debian's slurmctld, slurmd, munge, podman)")
    present = subprocess.run(["podman", "image", "exists", IMAGE]).returncode == 0
    require(present, f"{IMAGE} in podman: {CONVERT}")
    running = Cluster()
    try:
        running.up()
        yield running
    finally:
        left = running.down()
    assert not left, f"the cluster left behind: {'; '.join(left)}"


@pytest.fixture
def submission(tmp_path) -> Path:
    """The folder a user submits from (sbatch's working folder), and the lab's home beside it."""
    folder = tmp_path / "project"
    folder.mkdir()
    tmp_path.chmod(0o755)
    return folder
