"""variants.toml is the one place that says what a variant is: its readers and its checks.

The last test adds a variant to a copy of the checkout and watches every consumer either pick
it up or name, in one line, what else has to change.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from torchlab import variants
from torchlab_host import check

REPO = Path(__file__).resolve().parents[2]
MANIFEST = variants.load()
NEW_VARIANT = """
[variants.cu12]
device = "cuda"
aliases = []
summary = "NVIDIA GPUs whose drivers stop at CUDA 12"
lock = "cu12"
torch_from = "pypi"
size_ceiling_gb = 5.6
cpu_mode = { TORCHLAB_EXPECT = "cpu" }
build = { cuda_major = 12, archs = ["sm_80"] }

[variants.cu12.compose.deploy.resources.reservations]
devices = [{ driver = "nvidia", count = "all", capabilities = ["gpu"] }]
"""
NEW_SERVICES = """
  lab-cu12:
    <<: *lab
    image: torchlab:cu12
    deploy: *cuda-device
    environment:
      <<: *token
      TORCHLAB_EXPECT: cuda

  test-cu12:
    <<: [*test, *confined]
    image: torchlab:cu12
    deploy: *cuda-device

  test-cu12-on-cpu:
    <<: [*test, *confined]
    image: torchlab:cu12
    environment:
      TORCHLAB_EXPECT: cpu
"""


def add_services(compose: Path, services: str) -> None:
    """Add services at the end of compose's services block, as a contributor would."""
    head, rest = compose.read_text().split("\nservices:\n", 1)
    next_top_level = re.search(r"^\S", rest, re.MULTILINE)
    end = next_top_level.start() if next_top_level else len(rest)
    compose.write_text(f"{head}\nservices:\n{rest[:end]}{services}\n{rest[end:]}")


def test_the_manifest_lists_the_three_images_with_their_devices():
    assert [(v.name, v.device, v.image) for v in MANIFEST.variants] == [
        ("cpu", "cpu", "torchlab:cpu"),
        ("cuda", "cuda", "torchlab:cuda"),
        ("xla", "xla", "torchlab:xla"),
    ]
    assert MANIFEST.images_for("cuda") == ["torchlab:cuda"]


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('[variants.rocm]\ndevice = "rocm"\n', "variants.rocm lacks aliases, summary, lock"),
        (NEW_VARIANT.replace("lock =", "lokc ="), "lacks lock and has unknown keys lokc"),
        (NEW_VARIANT.replace('"pypi"', '"conda"'), "torch_from must be one of pypi, pytorch-cpu"),
        (NEW_VARIANT.replace("aliases = []", 'aliases = ["gpu"]'), "gpu names more than one"),
        (NEW_VARIANT.replace("cu12]", "CU-12]"), "must be lowercase letters and digits"),
    ],
)
def test_a_wrong_manifest_is_one_line_that_names_the_key(table, complaint):
    text = (REPO / "variants.toml").read_text() + table
    with pytest.raises(variants.ManifestError, match=complaint) as raised:
        variants.parse(text, Path("variants.toml"))
    assert "\n" not in str(raised.value)


@pytest.fixture(scope="module")
def services() -> dict:
    from torchlab_host.engine import compose_services

    return compose_services()


def test_check_names_a_service_that_lost_its_device_block(services):
    broken = {name: dict(config) for name, config in services.items()}
    del broken["lab-cuda"]["deploy"]
    [line] = check.problems(MANIFEST, broken)
    assert line.startswith("compose.yaml: lab-cuda for variant cuda lacks the device block")
    assert '"driver": "nvidia"' in line


def test_check_names_a_cpu_mode_run_that_reaches_for_the_device(services):
    broken = {name: dict(config) for name, config in services.items()}
    broken["test-xla-on-cpu"]["privileged"] = True
    [line] = check.problems(MANIFEST, broken)
    assert "test-xla-on-cpu for variant xla reaches for the device" in line


def test_check_names_a_service_no_variant_owns(services):
    extra = dict(services, **{"lab-rocm": services["lab-cpu"]})
    [line] = check.problems(MANIFEST, extra)
    assert line.startswith("compose.yaml has lab-rocm, which no variant of variants.toml names")


def test_the_ci_matrix_is_the_manifest():
    result = subprocess.run(["make", "-s", "ci-matrix"], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == 'matrix={"variant": ["cpu", "cuda", "xla"]}'


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the tracked files, where a variant can be added."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
    return tmp_path


def make(folder: Path, *target: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", *target],
        cwd=folder,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable, **environment),
    )


def test_a_new_variant_is_picked_up_or_each_place_to_change_is_named(checkout, tmp_path):
    with open(checkout / "variants.toml", "a") as manifest:
        manifest.write(NEW_VARIANT)

    # Picked up: the CI matrix, the bench's plan, the Makefile's pattern targets.
    assert '"cu12"' in make(checkout, "ci-matrix").stdout
    plan = subprocess.run(
        [sys.executable, "-m", "torchlab_host.bench", "--plan"],
        cwd=checkout,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(checkout / "src")),
    )
    assert "torchlab:cu12: size (ceiling 5.6 GB)" in plan.stdout
    assert "suite and probe in CPU mode (TORCHLAB_EXPECT=cpu)" in plan.stdout
    assert make(checkout, "--dry-run", "build-cu12").stdout.split()[-1] == "cu12"

    # Named: the lock it lacks, for a build (before any docker), and compose's services.
    docker = tmp_path / "bin/docker"
    docker.parent.mkdir()
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    built = make(checkout, "build-cu12", PATH=f"{docker.parent}:{os.environ['PATH']}")
    assert built.returncode != 0
    assert built.stderr.splitlines()[0] == (
        "torchlab: the lock requirements/cu12.txt is missing. Fix: write requirements/cu12.in "
        "(what only this image adds), then make lock"
    )
    checked = make(checkout, "check")
    assert checked.returncode != 0
    lines = [line for line in checked.stderr.splitlines() if not line.startswith("make")]
    assert lines[0].startswith("torchlab: requirements/cu12.in for variant cu12 is missing.")
    for service in ("lab-cu12", "test-cu12", "test-cu12-on-cpu"):
        assert any(
            line.startswith(f"torchlab: compose.yaml has no service {service} for variant cu12")
            for line in lines
        ), service
    assert len(lines) == 4, lines

    # With its lock and the services the check asked for, everything agrees.
    requirements = checkout / "requirements"
    shutil.copy(requirements / "cuda.in", requirements / "cu12.in")
    shutil.copy(requirements / "cuda.txt", requirements / "cu12.txt")
    add_services(checkout / "compose.yaml", NEW_SERVICES)
    checked = make(checkout, "check")
    assert checked.returncode == 0, checked.stderr
