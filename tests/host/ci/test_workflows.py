"""The GitHub workflow covers every image and calls only the Make targets a person runs."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from torchlab import variants
from torchlab_host.ci import plan
from torchlab_host.core.settings import Settings

REPO = Path(__file__).resolve().parents[3]
MANIFEST = variants.load()
WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
JOBS = {
    f"{path.name}:{name}": job
    for path in WORKFLOWS
    for name, job in yaml.safe_load(path.read_text())["jobs"].items()
}


def manifest_matrix() -> dict:
    """What `make ci-matrix` hands the workflow."""
    lines = subprocess.run(
        ["make", "-s", "ci-matrix"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return json.loads(lines[0].removeprefix("matrix="))


def matrix_rows(job: dict) -> list[dict]:
    matrix = job.get("strategy", {}).get("matrix", {})
    if isinstance(matrix, str) and "needs.variants.outputs.matrix" in matrix:
        matrix = manifest_matrix()
    rows = list(matrix.get("include", []))
    axes = {key: values for key, values in matrix.items() if key not in ("include", "exclude")}
    if axes:
        rows += [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    return rows or [{}]


MATRIX_VALUE = re.compile(r"\$\{\{\s*matrix\.(\w+)\s*\}\}")


def commands(job: dict, rows: list[dict] | None = None) -> list[str]:
    """Every `run:` line of a job, with ${{ matrix.* }} expanded for each matrix row."""
    lines = []
    for row, step in itertools.product(rows or matrix_rows(job), job.get("steps", [])):
        for line in step.get("run", "").splitlines():
            for key in MATRIX_VALUE.findall(line):
                line = re.sub(rf"\$\{{\{{\s*matrix\.{key}\s*\}}\}}", str(row[key]), line)
            lines.append(line.strip())
    return [line for line in lines if line]


def make_targets() -> set[str]:
    targets = set()
    for job in JOBS.values():
        for line in commands(job):
            words = line.split(">")[0].split()
            if "make" in words:
                targets.update(w for w in words[words.index("make") + 1 :] if "=" not in w)
    return targets


@pytest.mark.parametrize("workflow", [path.name for path in WORKFLOWS])
def test_the_image_matrix_is_the_manifests_list_of_variants(workflow):
    [variants] = [job for name, job in JOBS.items() if name == f"{workflow}:variants"]
    assert 'make ci-matrix >> "$GITHUB_OUTPUT"' in commands(variants)


def test_ci_builds_every_variant():
    [images] = [job for name, job in JOBS.items() if name.endswith(":images")]
    assert images["needs"] == "variants"
    assert images["strategy"]["matrix"] == "${{ fromJSON(needs.variants.outputs.matrix) }}"


def test_each_image_is_built_natively_tested_as_cis_plan_says_and_its_slow_tier_run():
    [images] = [job for name, job in JOBS.items() if name.endswith(":images")]
    assert images["runs-on"] == "${{ matrix.runner }}"
    runs = [step.get("run", "") for step in images["steps"]]
    for expected in (
        "make build-${{ matrix.variant }} PLATFORM=${{ matrix.platform }}",
        "make ci-suite-${{ matrix.variant }}",
        "sudo --preserve-env=CI,CHROMIUM,PATH make test-images-${{ matrix.variant }}",
    ):
        assert expected in runs, expected


def test_each_image_job_runs_the_suite_cis_plan_gives_its_variant_on_its_platform():
    """The workflow's image jobs and .ci/run run one plan (src/torchlab_host/ci/plan.py)."""
    [images] = [job for name, job in JOBS.items() if name.endswith(":images")]
    settings = Settings.load({}, REPO / "no.env")
    for row in matrix_rows(images):
        [suite] = [
            suite
            for suite in plan.suites(MANIFEST, settings, row["platform"])
            if suite.variant.name == row["variant"]
        ]
        assert shlex.join(suite.command) in commands(images, [row]), row


def test_steps_run_make_targets_not_logic_of_their_own():
    for name, job in JOBS.items():
        for line in commands(job):
            assert line.startswith(
                ("make ", "sudo --preserve-env=CI,CHROMIUM,PATH make ", ".github/scripts/")
            ), f"{name}: {line}"


@pytest.mark.parametrize("target", sorted(make_targets()))
def test_the_workflow_calls_only_make_targets_that_exist(target):
    result = subprocess.run(
        ["make", "--dry-run", "--silent", target], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0 and "No rule to make target" not in result.stderr, result.stderr


def test_accelerator_jobs_run_only_where_a_runner_is_named():
    for job, variable, target in (
        ("gpu", "TORCHLAB_GPU_RUNNER", "make test-cuda"),
        ("tpu", "TORCHLAB_TPU_RUNNER", "make test-xla"),
    ):
        [config] = [config for name, config in JOBS.items() if name.endswith(f":{job}")]
        assert f"vars.{variable}" in config["if"]
        assert f"fromJSON(vars.{variable})" in config["runs-on"]
        assert target in commands(config)


def test_disk_is_freed_before_the_large_images_are_built():
    [images] = [job for name, job in JOBS.items() if name.endswith(":images")]
    names = [step.get("run", step.get("uses", "")) for step in images["steps"]]
    free = next(i for i, name in enumerate(names) if "free-disk-space" in name)
    build = next(i for i, name in enumerate(names) if "make build-" in name)
    assert free < build


def test_published_images_are_built_natively_tested_pushed_then_named_signed_and_attested():
    [publish] = [job for name, job in JOBS.items() if name == "publish.yml:publish"]
    [names] = [job for name, job in JOBS.items() if name == "publish.yml:names"]
    assert publish["strategy"]["matrix"] == "${{ fromJSON(needs.variants.outputs.matrix) }}"
    assert publish["runs-on"] == "${{ matrix.runner }}"  # arm64 on an arm64 runner
    assert names["needs"] == ["variants", "publish"]  # the names wait for every platform
    assert names["strategy"]["matrix"]["variant"] == (
        "${{ fromJSON(needs.variants.outputs.variants) }}"
    )
    for job in (publish, names):
        assert job["permissions"]["id-token"] == "write"  # cosign keyless, attestations
        assert job["permissions"]["packages"] == "write"
    steps = [step.get("run", step.get("uses", "")) for step in publish["steps"]]
    order = [
        next(i for i, step in enumerate(steps) if step == expected)
        for expected in (
            "make build-${{ matrix.variant }} PLATFORM=${{ matrix.platform }}",
            "make test-${{ matrix.variant }}-on-cpu",
            "make publish VARIANT=${{ matrix.variant }} PLATFORM=${{ matrix.platform }}",
        )
    ]
    assert order == sorted(order)
    named = [step.get("run", step.get("uses", "")) for step in names["steps"]]
    assert "make publish VARIANT=${{ matrix.variant }}" in named
    assert any(step.startswith("sigstore/cosign-installer") for step in named)
    attested = {
        step["uses"].split("@")[0]: step
        for job in (publish, names)
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/attest")
    }
    assert set(attested) == {"actions/attest-sbom", "actions/attest-build-provenance"}
    for step in attested.values():
        assert step["with"]["subject-digest"] == "${{ steps.publish.outputs.digest }}"
    triggers = yaml.safe_load((REPO / ".github/workflows/publish.yml").read_text())[True]
    assert triggers["push"] == {"branches": ["main"], "tags": ["v*"]}
