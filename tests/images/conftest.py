"""Slow tier: the built images, labs started through compose, and a real browser.

Run with `make test-images` after `make build-cpu` (and build-gpu, build-tpu for their tests).
Containers and labs started here are removed afterwards, whatever the outcome.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support import HOST_GID, HOST_UID, REPO, TrackedContainer, make_lab, require_image


def pytest_collection_modifyitems(items):
    # Hooks in a conftest see every collected test: mark only this folder's.
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def container():
    tracked = TrackedContainer()
    yield tracked
    tracked.remove_all()


@pytest.fixture
def labs_folder(tmp_path) -> Path:
    """A copy of the course owned by the test's host user (uid 4242)."""
    if os.getuid() != 0:
        pytest.skip("needs root to create files owned by another uid")
    labs = tmp_path / "labs"
    shutil.copytree(REPO / "labs", labs)
    for path in [labs, *labs.rglob("*")]:
        os.chown(path, HOST_UID, HOST_GID)
    tmp_path.chmod(0o755)
    return labs


@pytest.fixture
def lab_cpu(labs_folder):
    require_image("torchlab:cpu")
    lab = make_lab("cpu", labs_folder)
    yield lab
    lab.host("down")


@pytest.fixture
def running_lab_cpu(lab_cpu):
    started = lab_cpu.up()
    assert started.returncode == 0, started.stderr
    return lab_cpu
