"""CI's plan (make ci-plan, src/torchlab_host/ci/): the order of the images, what each image's
suite runs and leaves to another, every command a real Make target, and .ci/run running it all.

The variants come from the manifest (variants.toml, or a manifest of the test's own with locks
of its own), never from a list written here.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from torchlab import variants
from torchlab.variants import MACHINES, this_platform
from torchlab_host import cli
from torchlab_host.ci import images, plan
from torchlab_host.core import settings as settings_module
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lab import manage as lab
from torchlab_host.lockfiles import files

REPO = Path(__file__).resolve().parents[3]
MANIFEST = variants.load()
REAL = (REPO / "variants.toml").read_text()
# The real manifest's shared tables ([images], [containers], [locks]), for a test's manifests.
SHARED_TABLES = REAL[: REAL.index("\n[variants.") + 1]
CI_WITHOUT = {"TORCHLAB_WITHOUT": "torchvision"}  # as .ci/run sets it


def settings(tmp_path: Path, **values: str) -> Settings:
    return Settings.load(values, tmp_path / "no.env")


def table(name: str, device: str, torch: str = "2.13.0", omittable: tuple[str, ...] = ()) -> str:
    platforms = (
        f'"linux/amd64" = {{ source = "pypi", torch = "{torch}", omittable = {list(omittable)!r} }}'
    )
    return (
        f'[variants.{name}]\ndevice = "{device}"\naliases = []\nsummary = "{name}"\n'
        f'lock = "{name}"\nsize_ceiling_gb = 1\nbuild = {{}}\n'
        f"platforms = {{ {platforms} }}\n\n"
    )


# Two device kinds: one whose CPU mode falls back to the plain CPU (as cuda's does), one whose
# CPU mode still runs the device (as xla's does).
DEVICES = {
    "fallback": '[devices.fallback]\ncpu_mode = { TORCHLAB_EXPECT = "cpu" }\n',
    "ondevice": '[devices.ondevice]\ncpu_mode = { ONDEVICE = "CPU" }\n',
}
CPU = next(variant for variant in MANIFEST.variants if variant.device == "cpu")


@pytest.fixture
def own_manifest(tmp_path, monkeypatch):
    """own_manifest(name=(device, torch, omittable), ...): a manifest of these variants in this
    order, each shipping that torch on linux/amd64 and with a lock of its own pinning it (the
    shared lock pins none)."""
    monkeypatch.setattr(files, "REQUIREMENTS", tmp_path)
    (tmp_path / "lab.txt").write_text("numpy==2.3.0 \\\n    --hash=sha256:00\n")

    def made(**tables: tuple[str, str, tuple[str, ...]]) -> variants.Manifest:
        text = SHARED_TABLES
        for name, (device, torch, omittable) in tables.items():
            text += table(name, device, torch, omittable)
            pin = f"torch=={torch} \\\n    --hash=sha256:00\n"
            (tmp_path / f"{name}.txt").write_text(pin + "six==1.17.0 \\\n    --hash=sha256:00\n")
        used = {device for device, _, _ in tables.values()}
        text += "\n".join(block for kind, block in DEVICES.items() if kind in used)
        return variants.parse(text, tmp_path / "variants.toml")

    return made


def names(variants_or_suites) -> list[str]:
    return [getattr(item, "variant", item).name for item in variants_or_suites]


def selection(suite: plan.Suite) -> str | None:
    """The -m expression a suite runs with, or None for the whole suite."""
    return suite.options[1] if suite.options else None


# The order ---------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", list(MACHINES))
def test_every_variant_of_a_platform_is_in_the_order_once_the_cpu_image_first(platform):
    shipped = [variant.name for variant in MANIFEST.variants if platform in variant.platforms]
    ordered = names(plan.order(MANIFEST, platform))
    assert sorted(ordered) == sorted(shipped)
    if CPU.name in shipped:
        assert ordered[0] == CPU.name


@pytest.mark.parametrize("platform", list(MACHINES))
def test_on_the_manifest_the_releases_the_cpu_suite_runs_come_after_the_others(platform):
    ordered = plan.order(MANIFEST, platform)
    first = [CPU] if platform in CPU.platforms else []
    covered = {plan.torch_release(variant, platform) for variant in first}
    rest = ordered[len(first) :]
    keys = [
        (plan.torch_release(v, platform) in covered, not plan.own_device_in_cpu_mode(v))
        for v in rest
    ]
    assert keys == sorted(keys), names(rest)


def test_releases_the_cpu_suite_runs_go_last_and_a_cpu_mode_on_the_device_first(own_manifest):
    manifest = own_manifest(
        cpu=("cpu", "2.13.0+cpu", ()),
        same=("fallback", "2.13.0", ()),
        older=("fallback", "2.9.0", ()),
        older2=("fallback", "2.9.0", ()),
        olderxla=("ondevice", "2.9.0", ()),
    )
    assert names(plan.order(manifest, "linux/amd64")) == [
        "cpu",
        "olderxla",
        "older",
        "older2",
        "same",
    ]


def test_the_cpu_image_is_first_wherever_the_manifest_lists_it(own_manifest):
    manifest = own_manifest(
        other=("fallback", "2.9.0", ()),
        cpu=("cpu", "2.13.0+cpu", ()),
        same=("fallback", "2.13.0", ()),
    )
    assert names(plan.order(manifest, "linux/amd64")) == ["cpu", "other", "same"]


def test_the_torch_release_is_the_platforms_in_the_manifest_less_its_local_build():
    assert plan.torch_release(CPU, "linux/amd64") == "2.13.0"
    assert plan.torch_release(CPU, "linux/arm64") == "2.10.0"


# What each suite runs ------------------------------------------------------------------------


def test_a_variant_sharing_a_release_runs_only_the_notebooks_the_earlier_image_lacked(
    own_manifest, tmp_path
):
    manifest = own_manifest(
        cpu=("cpu", "2.13.0+cpu", ("torchvision",)),
        same=("fallback", "2.13.0", ()),
        again=("fallback", "2.13.0", ()),
        older=("fallback", "2.9.0", ()),
        olderxla=("ondevice", "2.9.0", ()),
    )
    ran = plan.suites(manifest, settings(tmp_path, **CI_WITHOUT), "linux/amd64")
    assert {suite.variant.name: selection(suite) for suite in ran} == {
        "cpu": None,  # the whole suite: the first on 2.13.0, without torchvision
        "olderxla": None,  # the first on 2.9.0, and on its device
        "older": "not notebook",
        "same": "not notebook or needs(package='torchvision')",
        "again": "not notebook",  # same ran torchvision's notebooks on 2.13.0
    }
    why = {suite.variant.name: suite.why for suite in ran}
    assert "without torchvision (TORCHLAB_WITHOUT)" in why["cpu"]
    assert "cpu's suite runs on torch 2.13.0" in why["same"] and "torchvision" in why["same"]
    assert "olderxla's suite runs on torch 2.9.0" in why["older"]
    assert "ONDEVICE=CPU" in why["olderxla"] and "TORCHLAB_EXPECT=cpu" in why["older"]
    # Nothing left out: the later image of the cpu suite's release runs no notebook.
    whole = plan.suites(manifest, settings(tmp_path), "linux/amd64")
    assert {suite.variant.name: selection(suite) for suite in whole}["same"] == "not notebook"


def test_a_package_both_images_leave_out_is_not_asked_for_again(own_manifest, tmp_path):
    manifest = own_manifest(
        cpu=("cpu", "2.13.0+cpu", ("torchvision",)), same=("fallback", "2.13.0", ("torchvision",))
    )
    ran = plan.suites(manifest, settings(tmp_path, **CI_WITHOUT), "linux/amd64")
    assert [selection(suite) for suite in ran] == [None, "not notebook"]


@pytest.mark.parametrize("platform", list(MACHINES))
def test_each_release_of_a_platform_runs_its_notebooks_in_its_first_suite(
    platform, tmp_path, monkeypatch
):
    """On the real manifest, on a machine of that platform: the first suite of each torch
    release runs the whole suite, every later one leaves the notebooks out (but those that
    need what an earlier image lacked)."""
    monkeypatch.setattr(plan, "this_platform", lambda: platform)
    seen = set()
    for suite in plan.suites(MANIFEST, settings(tmp_path, **CI_WITHOUT), platform):
        release = plan.torch_release(suite.variant, platform)
        if release in seen:
            assert selection(suite).startswith(f"not {plan.NOTEBOOK}"), suite.variant.name
        else:
            assert suite.options == (), suite.variant.name
        seen.add(release)


def test_the_selection_picks_what_the_plan_says(own_manifest, tmp_path):
    """pytest's own reading of the expression: every test that is not a notebook, and only the
    notebooks that need the package the earlier image lacked."""
    manifest = own_manifest(
        cpu=("cpu", "2.13.0+cpu", ("torchvision",)), same=("fallback", "2.13.0", ())
    )
    [_, same] = plan.suites(manifest, settings(tmp_path, **CI_WITHOUT), "linux/amd64")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(
        "def pytest_configure(config):\n"
        f"    config.addinivalue_line('markers', '{plan.NOTEBOOK}: a notebook')\n"
        "    config.addinivalue_line('markers', 'needs(package): it needs a package')\n"
    )
    (suite / "test_marked.py").write_text(
        "import pytest\n"
        "def test_plain(): pass\n"
        f"@pytest.mark.{plan.NOTEBOOK}\ndef test_notebook(): pass\n"
        f"@pytest.mark.{plan.NOTEBOOK}\n@pytest.mark.needs(package='torchvision')\n"
        "def test_vision(): pass\n"
        f"@pytest.mark.{plan.NOTEBOOK}\n@pytest.mark.needs(package='other')\n"
        "def test_other(): pass\n"
    )
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "--strict-markers", *same.options, str(suite)],
        cwd=suite, capture_output=True, text=True,
    )  # fmt: skip
    picked = {line.rpartition("::")[2] for line in collected.stdout.splitlines() if "::" in line}
    assert picked == {"test_plain", "test_vision"}, collected.stdout + collected.stderr


def test_the_device_suite_marks_its_notebooks_as_the_plan_selects_them():
    notebooks = (REPO / "tests/device/test_notebooks.py").read_text()
    assert f"pytestmark = pytest.mark.{plan.NOTEBOOK}" in notebooks
    assert "pytest.mark.needs(package=" in notebooks
    assert f'"markers", "{plan.NOTEBOOK}:' in (REPO / "tests/device/conftest.py").read_text()


# The steps -----------------------------------------------------------------------------------


@pytest.fixture
def ci_steps(tmp_path) -> list[plan.Step]:
    return plan.steps(MANIFEST, settings(tmp_path, **CI_WITHOUT))


def test_a_variant_added_to_the_manifest_is_built_tested_and_removed_by_the_plan(tmp_path):
    extra = table("rocm", "rocm") + "\n"
    manifest = variants.parse(REAL + "\n" + extra, REPO / "variants.toml")
    found = plan.steps(manifest, settings(tmp_path, **CI_WITHOUT))
    lines = [step.command_line for step in found]
    for variant in manifest.variants:
        name = variant.name
        assert any(line.endswith(f"make build-{name}") for line in lines), name
        assert f"make ci-suite-{name}" in lines, name
        assert f"make test-images-{name}" in lines, name
    assert "make image-remove VARIANT=rocm" in lines
    assert any(step.name == "rocm image suite on the CPU" for step in found)


def test_ci_keeps_its_phases_in_their_order(ci_steps):
    ordered = names(plan.order(MANIFEST, this_platform()))
    cpu, others = ordered[0], ordered[1:]
    lines = [step.command_line for step in ci_steps]
    hows = [step.how for step in ci_steps]
    others_own = {MANIFEST.variant(name).lock for name in others}
    other_locks = [lock for lock in files.all_locks(MANIFEST) if lock in others_own]
    cpu_locks = [lock for lock in files.all_locks(MANIFEST) if lock not in others_own]
    # The cpu phases wait for their own locks' wheels; the other images', and the emulated
    # platform's, download beside them.
    for_cpu = f"make check-locks && make wheels 'LOCKS={' '.join(cpu_locks)}' && make base-image"
    for_others = f"make wheels 'LOCKS={' '.join(other_locks)}' && make qemu && " + " && ".join(
        f"make {target} PLATFORM={platform}"
        for target in ("wheels", "base-image")
        for platform in CPU.platforms
        if platform != this_platform()
    )
    expected = [
        for_cpu,  # in the background
        for_others,  # in the background, after it
        "make lint",
        "make test",  # the README's test command
        for_cpu,  # waited for
        f"env DOCKER_BUILD_FLAGS=--no-cache make build-{cpu}",
        "make hub-build",
        "make image-sizes",
        f"make image-round-trip VARIANT={cpu}",
        f"make ci-suite-{cpu}",
        "make rebuild-check",
        f"make test-images-{cpu}",
        "make test-slurm",
        for_others,  # waited for
    ]
    for name in others:
        expected += [
            f"make build-{name}",
            "make image-sizes",
            f"make ci-suite-{name}",
            f"make test-images-{name}",
            f"make image-remove VARIANT={name}",
        ]
    expected.append(f"make verify-reproducible VARIANT={cpu} AGAINST=torchlab:{cpu}")
    # The cpu image's other platforms, last: Docker keeps one platform of a name.
    for platform in (p for p in CPU.platforms if p != this_platform()):
        expected += [
            f"make build-{cpu} PLATFORM={platform}",
            f"make ci-suite-{cpu} PLATFORM={platform}",
        ]
    expected.append(f"make test-platforms-{cpu}")
    assert lines == expected
    waits = [lines.index(for_cpu, 2), lines.index(for_others, 2)]
    assert hows[:2] == [plan.BACKGROUND] * 2 and [hows[i] for i in waits] == [plan.WAIT] * 2
    assert {hows[i] for i in range(2, len(hows)) if i not in waits} == {plan.RUN}


def test_every_line_has_its_four_fields_and_a_phase_name_of_its_own(ci_steps):
    for step in ci_steps:
        fields = step.line.split("\t")
        assert len(fields) == 4 and all("\n" not in field for field in fields), step
        # .ci/run reads the fields split at tabs: an empty one before why would shift the rest.
        assert all(fields[:3]), step
        assert fields[0] in plan.HOW
    assert len({step.name for step in ci_steps}) == len(ci_steps)
    suites = [step for step in ci_steps if "ci-suite-" in step.command_line]
    assert all(step.why for step in suites), "a suite's step says what it runs and why"


def test_a_platform_the_cpu_image_does_not_ship_for_has_no_plan(tmp_path):
    arm64 = REAL.index('[variants.cpu.platforms."linux/arm64"]')
    amd64_only = REAL[:arm64] + REAL[REAL.index("[variants.cuda]") :]
    manifest = variants.parse(amd64_only, REPO / "variants.toml")
    assert list(manifest.variant("cpu").platforms) == ["linux/amd64"]
    with pytest.raises(HostError, match="CI's plan starts from a cpu image"):
        plan.steps(manifest, settings(tmp_path, PLATFORM="linux/arm64"))


def test_another_platforms_suite_is_the_named_subset_under_emulation(tmp_path):
    """On this machine, the cpu image's arm64 suite selects the environment, tensor and autograd
    tests and one course lab of the real device suite, and nothing else (pytest's own reading)."""
    elsewhere = next(p for p in MACHINES if p != this_platform())
    suite = plan.suite_of(CPU, MANIFEST, settings(tmp_path, PLATFORM=elsewhere))
    assert suite.options == ("-k", " or ".join(plan.EMULATED_SUBSET))
    assert f"{elsewhere} under emulation (QEMU)" in suite.why
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         *suite.options, str(REPO / "tests/device")],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    picked = [line for line in collected.stdout.splitlines() if "::" in line]
    files = {line.split("::")[0].rpartition("/")[2] for line in picked}
    assert files == {"test_environment.py", "test_tensors.py", "test_autograd.py",
                     "test_notebooks.py"}, collected.stdout  # fmt: skip
    notebooks = [line for line in picked if line.startswith("tests/device/test_notebooks.py")]
    assert notebooks == [
        "tests/device/test_notebooks.py::test_notebook_runs_and_checks_itself[02_tensors]"
    ]


def make_dry(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--dry-run", "--silent", *arguments], cwd=REPO, capture_output=True, text=True
    )


def test_every_command_of_the_plan_is_a_make_target_that_runs_a_host_command(ci_steps):
    commands = {command for step in ci_steps for command in step.commands}
    host_commands = {command.name for command in cli.COMMANDS}
    for command in commands:
        words = list(command)
        if words[0] == "env":  # env NAME=value ... make ...
            words = words[next(i for i, w in enumerate(words) if w == "make") :]
        assert words[0] == "make", command
        dry = make_dry(words[1:])
        assert dry.returncode == 0 and "No rule to make target" not in dry.stderr, dry.stderr
        called = [
            line.split("-m torchlab_host ", 1)[1].split()[0]
            for line in dry.stdout.splitlines()
            if "-m torchlab_host " in line
        ]
        assert called, f"{shlex.join(command)} runs no host command"
        assert set(called) <= host_commands, command


def test_make_ci_plan_prints_the_plan_one_step_a_line(ci_steps):
    printed = subprocess.run(
        ["make", "-s", "ci-plan"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PLATFORM": "", **CI_WITHOUT},
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == [step.line for step in ci_steps]


def test_ci_run_starts_the_downloads_then_runs_every_phase_of_the_plan_in_order(ci_steps):
    """.ci/run's own loop over the plan, with its phase and download functions recording."""
    script = (REPO / ".ci/run").read_text()
    run_plan = script[
        script.index("run_plan() {") : script.index("\n}\n", script.index("run_plan() {")) + 3
    ]
    driver = (
        'phase() { printf "phase|%s|%s\\n" "$1" "${*:2}"; }\n'
        'start_background() { printf "background|%s\\n" "$@"; }\n'
        f"{run_plan}\n"
        'plan=$PLAN\nrun_plan background\necho "host environment"\nrun_plan phases\n'
    )
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", driver],
        capture_output=True,
        text=True,
        env={**os.environ, "PLAN": "\n".join(step.line for step in ci_steps)},
    )
    assert ran.returncode == 0, ran.stderr
    background = [step for step in ci_steps if step.how == plan.BACKGROUND]
    expected = [f"background|{step.command_line}" for step in background] + ["host environment"]
    waits = [step for step in ci_steps if step.how == plan.WAIT]
    # Each wait is for the background step of its name, in the same order.
    assert [step.name for step in waits] == [f"{step.name}: the rest" for step in background]
    assert [step.command_line for step in waits] == [step.command_line for step in background]
    for step in ci_steps:
        if step.how == plan.WAIT:
            expected.append(f"phase|{step.name}|wait_for_background")
        elif step.how == plan.RUN:
            expected.append(f"phase|{step.name}|eval {step.command_line}")
    assert ran.stdout.splitlines() == expected
    # What it evals is the plan's command line, words as the plan quoted them.
    for step in ci_steps:
        assert shlex.split(step.command_line) == [w for c in step.commands for w in (*c, "&&")][:-1]


# make ci-suite-<variant>: what the workflow's image jobs and .ci/run run ----------------------


def test_ci_suite_runs_the_plans_selection_in_cpu_mode(monkeypatch, tmp_path):
    monkeypatch.setattr(settings_module, "ROOT", tmp_path)  # no .env of the checkout's
    monkeypatch.setenv("TORCHLAB_WITHOUT", "torchvision")
    monkeypatch.delenv("PLATFORM", raising=False)
    asked = []
    monkeypatch.setattr(lab, "test", lambda *args: asked.append(args) or 0)
    here = plan.suites(MANIFEST, Settings.load(), this_platform())
    for suite in here:
        assert cli.main(["ci-suite", suite.variant.name]) == 0
    assert [(args[0], args[3], args[4]) for args in asked] == [
        (suite.variant.name, True, list(suite.options)) for suite in here
    ]


def test_ci_suite_refuses_a_variant_that_does_not_ship_for_the_platform(monkeypatch, capsys):
    unshipped = [
        (variant, platform)
        for variant in MANIFEST.variants
        for platform in MACHINES
        if platform not in variant.platforms
    ]
    if not unshipped:
        pytest.skip("every variant ships for every platform")
    variant, platform = unshipped[0]
    monkeypatch.setenv("PLATFORM", platform)
    monkeypatch.setattr(lab, "test", pytest.fail)
    assert cli.main(["ci-suite", variant.name]) == 1
    assert f"not {platform}" in capsys.readouterr().err


# The image steps, against a fake docker -------------------------------------------------------


@pytest.fixture
def docker(fake_bin, tmp_path):
    """A fake docker with one image, the cpu variant's, under two names; it logs every call."""
    log, gone = tmp_path / "docker.log", tmp_path / "gone"
    tags = f'["{CPU.image}","{CPU.image}-inputs-0123456789ab"]'
    fake_bin(
        "docker",
        f'echo "$*" >> {log}\n'
        'case "$*" in\n'
        f"  'info --format {{{{.DockerRootDir}}}}') echo {tmp_path};;\n"
        "  info) ;;\n"
        f"  'image inspect --format {{{{json .RepoTags}}}} {CPU.image}') [ -e {gone} ] && exit 1; "
        f"echo '{tags}';;\n"
        f"  'image inspect {CPU.image}') [ -e {gone} ] && exit 1; echo '[]';;\n"
        f"  'image ls'*) printf '{CPU.image} 1.2GB\\nsomeone/else:1 5MB\\n';;\n"
        "  save*) echo layers;;\n"
        f"  'image rm'*) : > {gone};;\n"
        f"  load*) /bin/rm -f {gone}; echo 'Loaded image: {CPU.image}';;\n"
        '  *) echo "fake docker: no answer to $*" >&2; exit 2;;\n'
        "esac",
    )
    return lambda: [line for line in log.read_text().splitlines() if line != "info"]


def test_image_remove_removes_every_name_of_the_image(docker):
    images.remove(CPU)
    assert docker()[-1] == f"image rm {CPU.image} {CPU.image}-inputs-0123456789ab"
    with pytest.raises(HostError, match=f"{CPU.image} is not here to remove"):
        images.remove(CPU)


def test_the_round_trip_saves_removes_keeping_the_layers_and_loads(docker, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    images.round_trip(CPU)
    archive = tmp_path / f"torchlab-ci-{CPU.name}.tar.gz"
    calls = [call.split()[:3] for call in docker()]
    assert [call[:2] for call in calls if call[0] in ("save", "load")] == [
        ["save", CPU.image],
        ["load"],  # from its standard input: the archive, decompressed
    ]
    assert ["image", "rm", "--no-prune"] in calls  # the layers beneath stay: the rebuild's cache
    saved, removed, loaded = (
        next(i for i, call in enumerate(calls) if call[:2] == first)
        for first in (["save", CPU.image], ["image", "rm"], ["load"])
    )
    assert saved < removed < loaded
    assert not archive.exists() and not Path(f"{archive}.sha256").exists()


def test_image_sizes_lists_the_torchlab_images_against_their_ceilings_and_the_disk_left(
    docker, tmp_path, capsys
):
    images.sizes(MANIFEST)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{CPU.image} 1.2GB (ceiling {CPU.size_ceiling_gb:g} GB)"
    assert not any("someone" in line for line in out)
    assert out[-1].endswith(f"GB left in {tmp_path} for the next build")
