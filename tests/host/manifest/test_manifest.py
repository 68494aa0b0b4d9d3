"""variants.toml is the one place that says what a variant is: its readers and its checks.

The last test adds a variant to a copy of the checkout and watches every consumer either pick
it up or name, in one line, what else has to change.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchlab import variants
from torchlab.backends import get
from torchlab_host.core.checkout import copy_tracked, run_host_tools
from torchlab_host.hub import manage as hub
from torchlab_host.manifest import check

REPO = Path(__file__).resolve().parents[3]
MANIFEST = variants.load()
# A CUDA variant inherits how a container reaches the GPU from [devices.cuda]: its table
# says only what the image is.
NEW_VARIANT = """
[variants.cudanext]
device = "cuda"
aliases = []
summary = "NVIDIA GPUs, the next torch release"
lock = "cudanext"
size_ceiling_gb = 5.6
build = { cuda_major = 13, archs = ["sm_80"] }

[variants.cudanext.platforms]
"linux/amd64" = { source = "pypi", torch = "2.13.0" }
"linux/arm64" = { source = "pypi", torch = "2.13.0" }
"""


def test_every_variant_is_the_image_of_its_name_for_a_device_a_backend_serves():
    for variant in MANIFEST.variants:
        assert variant.image == f"torchlab:{variant.name}"
        assert get(variant.device).name == variant.device
    # Two CUDA images, cuda first: make lab and make hub try them in the manifest's order.
    cuda_images = MANIFEST.images_for("cuda")
    assert cuda_images == [v.image for v in MANIFEST.variants if v.device == "cuda"]
    assert cuda_images.index("torchlab:cuda") < cuda_images.index("torchlab:cuda12")
    # Both CUDA images reach the GPU as [devices.cuda] says, written once.
    assert MANIFEST.variant("cuda12").compose == MANIFEST.variant("cuda").compose != {}
    assert MANIFEST.variant("cuda12").cpu_mode == {"TORCHLAB_EXPECT": "cpu"}


def test_each_platform_has_its_own_promises_where_the_manifest_says_so():
    cuda = MANIFEST.variant("cuda")
    assert list(cuda.platforms) == ["linux/amd64", "linux/arm64"]
    # The Arm build has Grace Hopper's kernels and not the T4's; the rest of build holds there.
    arm = cuda.build_for("linux/arm64")
    assert "sm_90" in arm["archs"] and "sm_75" not in arm["archs"]
    assert arm["cuda_major"] == cuda.build_for("linux/amd64")["cuda_major"] == 13
    assert "sm_75" in cuda.build_for("linux/amd64")["archs"]
    # torch_xla has no aarch64 wheels.
    assert list(MANIFEST.variant("xla").platforms) == ["linux/amd64"]


def test_each_platform_says_which_torch_it_ships_and_why_it_differs():
    cpu = MANIFEST.variant("cpu")
    amd64, arm64 = cpu.platforms["linux/amd64"], cpu.platforms["linux/arm64"]
    assert (amd64.source, amd64.torch) == ("pytorch-cpu", "2.13.0+cpu")
    # A Mac's image: PyPI's CPU-only aarch64 torch, with torchvision, and the reason said.
    assert (arm64.source, arm64.torch) == ("pypi", "2.10.0") and "CPU-only" in arm64.why
    assert cpu.build_for("linux/arm64") == {"cpu_only": True, "includes": ["torchvision"]}
    assert cpu.build_for("linux/amd64") == {"cpu_only": True}
    assert cpu.torch_differs and not MANIFEST.variant("cuda").torch_differs
    # The lock pins each platform's torch for its machine, and make check holds them together.
    assert check.torch_disagreements(cpu) == []


def test_a_platform_whose_torch_its_lock_does_not_pin_is_one_line_in_make_check():
    text = (REPO / "variants.toml").read_text().replace('torch = "2.10.0"', 'torch = "2.11.0"')
    cpu = variants.parse(text, REPO / "variants.toml").variant("cpu")
    assert check.torch_disagreements(cpu) == [
        "variants.toml ships torch 2.11.0 in cpu on linux/arm64, and requirements/cpu.txt pins "
        "2.10.0 for aarch64. Fix: make the two agree (requirements/cpu.in, then make lock)"
    ]


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('[variants.rocm]\ndevice = "rocm"\n', "variants.rocm lacks aliases, summary, lock"),
        (NEW_VARIANT.replace("lock =", "lokc ="), "lacks lock and has unknown keys lokc"),
        (
            NEW_VARIANT.replace('"pypi", torch', '"conda", torch'),
            'platforms."linux/amd64".source must be one of pypi',
        ),
        (
            NEW_VARIANT.replace(
                '"pypi", torch = "2.13.0" }\n"linux/arm64"', '"pypi" }\n"linux/arm64"'
            ),
            'variants.cudanext.platforms."linux/amd64" lacks torch',
        ),
        (
            NEW_VARIANT.replace(
                'arm64" = { source = "pypi", torch = "2.13.0"',
                'arm64" = { source = "pypi", torch = "2.10.0"',
            ),
            'platforms."linux/arm64" ships another torch than linux/amd64 and must say why',
        ),
        (
            NEW_VARIANT.replace("linux/arm64", "linux/riscv64"),
            "platforms must name .* not linux/riscv64",
        ),
        (
            NEW_VARIANT.replace('arm64" = {', 'arm64" = { arches = [],'),
            'platforms."linux/arm64" has unknown keys arches',
        ),
        (NEW_VARIANT.replace("aliases = []", 'aliases = ["gpu"]'), "gpu names more than one"),
        (NEW_VARIANT.replace("cudanext]", "cuda-next]"), "must be lowercase letters and digits"),
        ("[devices.cdua]\ncpu_mode = {}\n", "devices.cdua is the device of no variant"),
        ("[devices.rocm]\nports = 1\n", "devices.rocm has unknown keys ports"),
    ],
)
def test_a_wrong_manifest_is_one_line_that_names_the_key(table, complaint):
    text = (REPO / "variants.toml").read_text() + table
    with pytest.raises(variants.ManifestError, match=complaint) as raised:
        variants.parse(text, Path("variants.toml"))
    assert "\n" not in str(raised.value)


def test_the_ci_matrix_is_the_manifests_variants_on_each_of_their_platforms():
    result = subprocess.run(["make", "-s", "ci-matrix"], cwd=REPO, capture_output=True, text=True)
    matrix, names = result.stdout.strip().splitlines()
    assert json.loads(names.removeprefix("variants=")) == MANIFEST.names
    rows = json.loads(matrix.removeprefix("matrix="))["include"]
    assert [(row["variant"], row["platform"]) for row in rows] == [
        (variant.name, platform) for variant in MANIFEST.variants for platform in variant.platforms
    ]
    assert ("cuda", "linux/arm64") in [(row["variant"], row["platform"]) for row in rows]
    # Each platform builds on a runner of its own kind: never under emulation.
    assert {row["platform"]: row["runner"] for row in rows} == {
        "linux/amd64": "ubuntu-24.04",
        "linux/arm64": "ubuntu-24.04-arm",
    }


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the tracked files, where a variant can be added."""
    return copy_tracked(tmp_path / "checkout")


def make(folder: Path, *target: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", *target],
        cwd=folder,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable, **environment),
    )


def problems(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.startswith("make")]


def test_a_generated_file_edited_by_hand_is_named_and_make_generate_restores_it(checkout):
    compose = checkout / "compose.yaml"
    written = compose.read_text()
    compose.write_text(written.replace("cap_drop: [ALL]", "cap_drop: []"))
    checked = make(checkout, "check")
    assert checked.returncode != 0
    assert problems(checked) == [
        "torchlab: compose.yaml is out of date with variants.toml. Fix: make generate"
    ]
    assert make(checkout, "generate").returncode == 0
    assert compose.read_text() == written and make(checkout, "check").returncode == 0


def test_a_new_variant_is_its_table_and_its_lock(checkout, tmp_path, host):
    """Everything that serves a variant picks it up from the manifest: no hand edit beyond
    its table and its lock, then make generate."""
    with open(checkout / "variants.toml", "a") as manifest:
        manifest.write(NEW_VARIANT)

    # Before its lock: one line for a build (before any docker), and make check names the
    # lock and every generated file the variant changes.
    docker = tmp_path / "bin/docker"
    docker.parent.mkdir()
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    built = make(checkout, "build-cudanext", PATH=f"{docker.parent}:{os.environ['PATH']}")
    assert built.returncode != 0
    assert built.stderr.splitlines()[0] == (
        "torchlab: the lock requirements/cudanext.txt is missing. Fix: write "
        "requirements/cudanext.in (what only this image adds), then make lock"
    )
    stale = problems(make(checkout, "check"))
    assert stale[0].startswith(
        "torchlab: requirements/cudanext.in for variant cudanext is missing."
    )
    assert {line.split()[1] for line in stale[1:]} == {
        "compose.yaml", "deploy/kubernetes/jupyterhub/profiles.yaml",
        ".devcontainer/cudanext/devcontainer.json",
        # its GPUs as CDI devices, and its lab's bind mounts labelled for SELinux
        "compose.cdi.yaml", "compose.selinux.yaml",
        # the docs' tables: the images, and the variants make's pattern targets take
        "README.md", "docs/index.md", "docs/reference/commands.md",
    }  # fmt: skip

    # Its lock, then make generate: everything agrees, and every consumer serves it.
    requirements = checkout / "requirements"
    shutil.copy(requirements / "cuda.in", requirements / "cudanext.in")
    shutil.copy(requirements / "cuda.txt", requirements / "cudanext.txt")
    assert make(checkout, "generate").returncode == 0
    checked = make(checkout, "check")
    assert checked.returncode == 0, checked.stderr
    assert '"cudanext"' in make(checkout, "ci-matrix").stdout
    plan = run_host_tools("bench", "--plan", root=checkout)
    assert "torchlab:cudanext: size (ceiling 5.6 GB)" in plan.stdout, plan.stderr
    assert "suite and probe in CPU mode (TORCHLAB_EXPECT=cpu)" in plan.stdout
    assert make(checkout, "--dry-run", "build-cudanext").stdout.split()[-1] == "cudanext"

    services = compose_services_of(checkout)
    assert services["lab-cudanext"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ] == ["gpu"]
    assert services["lab-cudanext"]["cap_drop"] == ["ALL"]
    assert services["test-cudanext-on-cpu"]["environment"] == {"TORCHLAB_EXPECT": "cpu"}
    assert "deploy" not in services["test-cudanext-on-cpu"]

    editor = json.loads(
        "".join(
            line
            for line in (checkout / ".devcontainer/cudanext/devcontainer.json").open()
            if not line.startswith("//")
        )
    )
    assert editor["image"] == "torchlab:cudanext" and editor["hostRequirements"] == {"gpu": True}
    cluster = yaml.safe_load((checkout / "deploy/kubernetes/jupyterhub/profiles.yaml").read_text())
    [profile] = [p for p in cluster["singleuser"]["profileList"] if p["slug"] == "cudanext"]
    whole = profile["profile_options"]["gpu"]["choices"]["whole"]
    assert whole["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/gpu": "1"}

    new = variants.load(checkout / "variants.toml")
    host("580", gpu="NVIDIA A100-SXM4-80GB, 8.0")  # a CUDA 13 driver, and a GPU of its sm_80
    assert hub.profile(new.variant("cudanext"), new)["host_config"]["device_requests"] == [
        {"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}
    ]


def compose_services_of(folder: Path) -> dict:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "docker-compose"), "--project-directory", str(folder),
         "-f", str(folder / "compose.yaml"), "--profile", "*", "config", "--format", "json"],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, JUPYTER_TOKEN="a-token"),
    )  # fmt: skip
    return json.loads(result.stdout)["services"]
