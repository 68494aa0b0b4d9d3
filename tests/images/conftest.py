"""Slow tier: the built images, labs started through compose, and a real browser.

`make test-images` runs every variant's tests (the images must be built); `make test-images-cpu`
only the cpu image's: the shared tests here for it, and those in tests/images/cpu/.
Containers and labs started here are removed afterwards, whatever the outcome.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support import HOST_GID, HOST_UID, MANIFEST, REPO, TrackedContainer, make_lab, require_image

HERE = Path(__file__).parent


def selected(config: pytest.Config) -> list[str]:
    """The variants under test: --variant, else every variant of the manifest."""
    chosen = config.getoption("variant") or MANIFEST.names
    return [MANIFEST.variant(name).name for name in chosen]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/images/<device>/ runs only when a variant of that device kind is under test."""
    if collection_path.parent == HERE and collection_path.is_dir():
        devices = {variant.device for variant in MANIFEST.variants}
        chosen = {MANIFEST.variant(name).device for name in selected(config)}
        return collection_path.name in devices and collection_path.name not in chosen
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`variant`: each variant under test; `device_variant`: each of those whose device kind
    is the test's folder (tests/images/cuda/ runs for cuda and cuda12)."""
    chosen = [MANIFEST.variant(name) for name in selected(metafunc.config)]
    if "variant" in metafunc.fixturenames:
        metafunc.parametrize("variant", chosen, ids=lambda variant: variant.name)
    if "device_variant" in metafunc.fixturenames:
        device = metafunc.definition.path.parent.name
        metafunc.parametrize(
            "device_variant",
            [variant for variant in chosen if variant.device == device],
            ids=lambda variant: variant.name,
        )


def pytest_collection_modifyitems(items):
    # Hooks in a conftest see every collected test: mark only this folder's.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.docker)


@pytest.fixture
def container():
    tracked = TrackedContainer()
    yield tracked
    tracked.remove_all()


@pytest.fixture
def labs_folder(tmp_path, require) -> Path:
    """A copy of the course owned by the test's host user (uid 4242)."""
    require(os.getuid() == 0, "root, to create files owned by another uid")
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
