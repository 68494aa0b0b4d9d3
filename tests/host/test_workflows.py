"""The GitHub workflow covers every image and calls only the Make targets a person runs."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from torchlab.variants import VARIANTS

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
JOBS = {
    f"{path.name}:{name}": job
    for path in WORKFLOWS
    for name, job in yaml.safe_load(path.read_text())["jobs"].items()
}


def matrix_rows(job: dict) -> list[dict]:
    matrix = job.get("strategy", {}).get("matrix", {})
    rows = list(matrix.get("include", []))
    axes = {key: values for key, values in matrix.items() if key not in ("include", "exclude")}
    if axes:
        rows += [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    return rows or [{}]


MATRIX_VALUE = re.compile(r"\$\{\{\s*matrix\.(\w+)\s*\}\}")


def commands(job: dict) -> list[str]:
    """Every `run:` line of a job, with ${{ matrix.* }} expanded for each matrix row."""
    lines = []
    for row, step in itertools.product(matrix_rows(job), job.get("steps", [])):
        for line in step.get("run", "").splitlines():
            for key in MATRIX_VALUE.findall(line):
                line = re.sub(rf"\$\{{\{{\s*matrix\.{key}\s*\}}\}}", str(row[key]), line)
            lines.append(line.strip())
    return [line for line in lines if line]


def make_targets() -> set[str]:
    return {
        target
        for job in JOBS.values()
        for line in commands(job)
        if line.startswith("make ")
        for target in line.split()[1:]
        if "=" not in target
    }


def test_every_image_variant_is_built_and_tested_in_the_matrix():
    [images] = [job for name, job in JOBS.items() if name.endswith(":images")]
    rows = matrix_rows(images)
    assert sorted(row["variant"] for row in rows) == sorted(v.name for v in VARIANTS)
    for variant in VARIANTS:
        [row] = [row for row in rows if row["variant"] == variant.name]
        assert row["build"] == f"build-{variant.lab}"
        expected = "test-cpu" if variant.name == "cpu" else f"test-{variant.lab}-on-cpu"
        assert row["test"] == expected


def test_steps_run_make_targets_not_logic_of_their_own():
    for name, job in JOBS.items():
        for line in commands(job):
            assert line.startswith(("make ", ".github/scripts/")), f"{name}: {line}"


@pytest.mark.parametrize("target", sorted(make_targets()))
def test_the_workflow_calls_only_make_targets_that_exist(target):
    result = subprocess.run(
        ["make", "--dry-run", "--silent", target], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0 and "No rule to make target" not in result.stderr, result.stderr


def test_accelerator_jobs_run_only_where_a_runner_is_named():
    for job, variable, target in (
        ("gpu", "TORCHLAB_GPU_RUNNER", "make test-gpu"),
        ("tpu", "TORCHLAB_TPU_RUNNER", "make test-tpu"),
    ):
        [config] = [config for name, config in JOBS.items() if name.endswith(f":{job}")]
        assert f"vars.{variable}" in config["if"]
        assert f"fromJSON(vars.{variable})" in config["runs-on"]
        assert target in commands(config)


def test_disk_is_freed_before_the_large_images_are_built():
    [images] = [job for name, job in JOBS.items() if name.endswith(":images")]
    names = [step.get("run", step.get("uses", "")) for step in images["steps"]]
    free = next(i for i, name in enumerate(names) if "free-disk-space" in name)
    build = next(i for i, name in enumerate(names) if "matrix.build" in name)
    assert free < build
