"""Building an image: the one docker build command (online or from a wheelhouse, for this
platform or another), its staged context, and every failure as one line that names its fix."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from torchlab import variants
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.image import build as building
from torchlab_host.image import context, wheelhouse
from torchlab_host.image import spec as buildspec
from torchlab_host.lockfiles import files

REPO = Path(__file__).resolve().parents[3]
MANIFEST = variants.load()
CPU, CUDA = MANIFEST.variant("cpu"), MANIFEST.variant("cuda")
CONTEXT = Path("/tmp/staged-context")
CPU_BUILD = buildspec.variant_build(CPU, MANIFEST, Settings.load({}, Path("/dev/null/.env")))


def test_wheelhouse_is_served_to_the_build(tmp_path, monkeypatch):
    for lock in ("lab", "cpu"):
        (tmp_path / lock).mkdir()
        (tmp_path / lock / f"{lock}_pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    with wheelhouse.served(tmp_path, ["lab", "cpu"], 0) as url:
        assert url.startswith("http://127.0.0.1:")
        listing = urllib.request.urlopen(f"{url}/cpu/").read()
        assert b"cpu_pkg-1.0-py3-none-any.whl" in listing


def test_a_wheelhouse_without_the_variant_is_refused(tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "lab_pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    with (
        pytest.raises(HostError, match=r"has no cuda wheels\. Fix: fill it first: make wheels"),
        wheelhouse.served(tmp_path, ["lab", "cuda"], 0),
    ):
        pass


def build_args(command: list[str]) -> dict[str, str]:
    pairs = [command[i + 1] for i, word in enumerate(command) if word == "--build-arg"]
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.fixture
def clean_build_environment(monkeypatch):
    for name in ("WHEELHOUSE", "DOCKER_BUILD_FLAGS", "TORCH_CPU_WHEELS", "PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    for name in ("BASE_IMAGE", *buildspec.USER_BUILD_ARGS, *buildspec.ONLINE_BUILD_ARGS):
        monkeypatch.delenv(name, raising=False)


def test_online_and_offline_builds_differ_only_in_where_pip_looks(current, clean_build_environment):
    online = building.build_command(
        buildspec.variant_build(CPU, MANIFEST, current()), MANIFEST, CONTEXT
    )
    offline = building.build_command(
        buildspec.variant_build(CPU, MANIFEST, current()),
        MANIFEST,
        CONTEXT,
        "http://127.0.0.1:8799",
    )
    differing = {
        name: value
        for name, value in build_args(offline).items()
        if build_args(online)[name] != value
    }
    assert differing == {
        "PIP_SOURCES_SHARED": "--no-index --find-links http://127.0.0.1:8799/lab/",
        "PIP_SOURCES_VARIANT": "--no-index --find-links http://127.0.0.1:8799/cpu/",
    }
    assert [w for w in offline if w not in online] == [
        "--network",
        "host",
        *(f"{name}={value}" for name, value in differing.items()),
    ]
    assert build_args(online)["PIP_SOURCES_VARIANT"] == (
        "--find-links https://download.pytorch.org/whl/cpu/torch/ "
        "--find-links https://download.pytorch.org/whl/cpu/torchvision/"
    )
    assert build_args(online)["TORCH_VERSION"] == "2.13.0+cpu"


def test_the_manifest_names_the_device_and_the_locks_of_the_build(current, clean_build_environment):
    args = build_args(
        building.build_command(
            buildspec.variant_build(MANIFEST.variant("xla"), MANIFEST, current()), MANIFEST, CONTEXT
        )
    )
    assert (args["VARIANT"], args["DEVICE"], args["SHARED_LOCK"], args["LOCK"]) == (
        "xla",
        "xla",
        "lab",
        "xla",
    )
    assert args["PIP_SOURCES_VARIANT"] == ""  # PyPI's torch: pip's own configuration


def test_the_lab_user_is_chosen_at_start_and_the_image_user_at_build(
    current, clean_build_environment, monkeypatch
):
    monkeypatch.setenv("LAB_UID", "4242")
    assert "LAB_UID" not in build_args(
        building.build_command(buildspec.variant_build(CPU, MANIFEST, current()), MANIFEST, CONTEXT)
    )
    monkeypatch.setenv("IMAGE_UID", "1234")
    assert (
        build_args(
            building.build_command(
                buildspec.variant_build(CPU, MANIFEST, current()), MANIFEST, CONTEXT
            )
        )["LAB_UID"]
        == "1234"
    )


def test_online_settings_do_not_touch_the_offline_build(
    current, clean_build_environment, monkeypatch
):
    monkeypatch.setenv("TORCH_CPU_WHEELS", "/some/folder")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    online = build_args(
        building.build_command(buildspec.variant_build(CPU, MANIFEST, current()), MANIFEST, CONTEXT)
    )
    offline = build_args(
        building.build_command(
            buildspec.variant_build(CPU, MANIFEST, current()),
            MANIFEST,
            CONTEXT,
            "http://127.0.0.1:8799",
        )
    )
    assert online["PIP_SOURCES_VARIANT"] == "--find-links /some/folder"
    assert online["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert "/some/folder" not in offline["PIP_SOURCES_VARIANT"] and "PIP_INDEX_URL" not in offline


def test_another_platform_is_built_under_emulation_from_its_own_base(
    current, clean_build_environment, monkeypatch
):
    cuda = MANIFEST.variant("cuda")
    monkeypatch.setenv("BASE_IMAGE", "torchlab/debian:bookworm")
    here = buildspec.variant_build(cuda, MANIFEST, current())
    monkeypatch.setenv("PLATFORM", "linux/arm64")
    arm = buildspec.variant_build(cuda, MANIFEST, current())
    command = building.build_command(arm, MANIFEST, CONTEXT)
    assert command[command.index("--platform") + 1] == "linux/arm64"
    assert build_args(command)["BASE_IMAGE"] == "torchlab/debian:bookworm-arm64"
    # One name for both platforms (docker keeps one of them under it), and apart by their
    # inputs tag, so make lab never takes the other platform's image for this one's.
    assert arm.image == here.image == "torchlab:cuda"
    assert context.inputs_digest(arm, REPO / "docker") != context.inputs_digest(
        here, REPO / "docker"
    )
    assert "--platform" not in building.build_command(here, MANIFEST, CONTEXT)


def test_a_platform_the_manifest_does_not_ship_a_variant_for_is_one_line(
    current, one_line, clean_build_environment, monkeypatch
):
    monkeypatch.setenv("PLATFORM", "linux/arm64")
    with pytest.raises(HostError) as raised:
        buildspec.variant_build(MANIFEST.variant("xla"), MANIFEST, current())
    assert one_line(raised.value) == (
        "variants.toml ships torchlab:xla for linux/amd64 only, not linux/arm64. "
        "Fix: choose one of those: make build-xla PLATFORM=linux/amd64"
    )


def test_a_foreign_build_without_emulation_names_qemu(
    current, one_line, clean_build_environment, monkeypatch
):
    monkeypatch.setenv("PLATFORM", "linux/arm64")
    arm = buildspec.variant_build(MANIFEST.variant("cuda"), MANIFEST, current())
    said = ["Step 6/37 : RUN apt-get update", "exec /bin/sh: exec format error"]
    line = one_line(building.explain_build_failure(arm, said))
    assert line.startswith("the build's linux/arm64 programs did not run under emulation")
    assert "Fix: make qemu (as root" in line and "PLATFORM=linux/arm64" in line


# What `docker build` printed in the two failures a new user meets first (engine 20.10, the
# classic builder): no registry, and no package index.
NO_REGISTRY = [
    "Sending build context to Docker daemon  1.2MB",
    "Step 1/40 : ARG BASE_IMAGE=debian:bookworm-slim@sha256:4b50eb66f977b4062683ff434ef18ac1",
    "Step 2/40 : FROM ${BASE_IMAGE}",
    'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on '
    "10.0.0.2:53: no such host",
]
NO_INDEX = [
    "Step 9/40 : RUN /opt/torchlab/scripts/install-lock /opt/venv /opt/torchlab/requirements/lab",
    "install-lock: installing /opt/torchlab/requirements/lab.txt into /opt/venv",
    "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after "
    "connection broken by 'NewConnectionError': Failed to establish a new connection: [Errno -3] "
    "Temporary failure in name resolution",
    "ERROR: Could not find a version that satisfies the requirement anyio==4.16.0",
    "ERROR: No matching distribution found for anyio==4.16.0",
]


def test_a_build_without_a_registry_names_the_base_image_and_make_base_image(
    one_line,
    clean_build_environment,
):
    line = one_line(building.explain_build_failure(CPU_BUILD, NO_REGISTRY))
    assert line.startswith("the base image debian:bookworm-slim cannot be pulled: no container")
    assert "make base-image" in line and "BASE_IMAGE=torchlab/debian:bookworm" in line


def test_a_build_without_the_index_names_the_wheelhouse(one_line, clean_build_environment):
    line = one_line(building.explain_build_failure(CPU_BUILD, NO_INDEX))
    assert "could not get its packages from the index" in line
    assert "make wheels" in line and "WHEELHOUSE=wheelhouse" in line


def test_other_build_failures_point_at_the_output(one_line, clean_build_environment):
    output = ["Step 30/40 : RUN torchlab check-build cpu", "torchlab: the cpu image is wrong"]
    assert "the build's output is above" in one_line(
        building.explain_build_failure(CPU_BUILD, output)
    )


def test_the_build_context_holds_what_the_image_copies_with_one_date_and_fixed_modes(
    current, monkeypatch, tmp_path
):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setenv("TORCHLAB_WITHOUT", "torchvision")
    staged = context.stage(buildspec.variant_build(CPU, MANIFEST, current()), tmp_path / "cpu")
    # The Dockerfile, and one tree per COPY, rooted at / in the image.
    trees = {path.name for path in staged.iterdir()}
    assert trees == {
        "Dockerfile",
        "scripts",
        "shared-lock",
        "variant-lock",
        "toolkit",
        "course",
    }
    dockerfile = (staged / "Dockerfile").read_text()
    copied = {
        line.split()[1].rstrip("/") for line in dockerfile.splitlines() if line.startswith("COPY")
    }
    assert copied == trees - {"Dockerfile"}
    assert (staged / "toolkit/opt/torchlab/src/src/torchlab/cli.py").is_file()
    assert not (staged / "toolkit/opt/torchlab/src/src/torchlab_host").exists()  # host only
    assert not list(staged.rglob("__pycache__"))
    assert {path.stat().st_mtime for path in staged.rglob("*")} == {1700000000}
    modes = {
        path.relative_to(staged).as_posix(): path.stat().st_mode & 0o7777
        for path in staged.rglob("*")
    }
    assert modes["scripts/opt/torchlab/scripts/reproducible-run"] == 0o755
    assert modes["scripts/opt"] == 0o755 and modes["toolkit/etc/jupyter"] == 0o755
    assert modes["toolkit/opt/torchlab/variants.toml"] == 0o644
    installed = (staged / "variant-lock/opt/torchlab/requirements/cpu.txt").read_text()
    assert "torch==2.13.0+cpu" in installed and "torchvision==" not in installed
    constraints = (staged / "toolkit/opt/torchlab/requirements/constraints.txt").read_text()
    # One file for every platform: each machine's pins with their markers (pip reads them).
    assert "torch==2.13.0+cpu ; platform_machine == 'x86_64'\n" in constraints
    assert "torchvision==0.28.0+cpu ; platform_machine == 'x86_64'\n" in constraints
    assert "torch==2.10.0 ; platform_machine == 'aarch64'\n" in constraints
    assert "jupyterlab==" in constraints  # the shared lock too


def test_leaving_out_what_no_variant_may_leave_out_is_one_line(current, one_line, monkeypatch):
    monkeypatch.setenv("TORCHLAB_WITHOUT", "torch")
    with pytest.raises(HostError) as raised:
        files.require_omittable(current(), MANIFEST)
    assert "TORCHLAB_WITHOUT names torch, which no variant may leave out" in one_line(raised.value)


def test_only_the_variants_that_allow_it_leave_a_package_out(current, monkeypatch):
    monkeypatch.setenv("TORCHLAB_WITHOUT", "torchvision")
    assert files.omitted(CPU, current(), "linux/amd64") == {"torchvision"}
    # PyPI has arm64's torchvision: a build for it leaves nothing out.
    assert files.omitted(CPU, current(), "linux/arm64") == set()
    assert files.omitted(CUDA, current(), "linux/amd64") == set()
    assert "torchvision==0.28.0 " in files.installed_text(
        "cuda", MANIFEST, current(), "linux/amd64"
    )


def test_the_hosts_proxy_reaches_the_build_and_stays_out_of_the_image(
    current, clean_build_environment
):
    settings = current(HTTPS_PROXY="http://proxy.corp:3128")
    offline = building.build_command(
        buildspec.variant_build(CPU, MANIFEST, settings), MANIFEST, CONTEXT, "http://127.0.0.1:8799"
    )
    args = build_args(offline)
    assert args["HTTPS_PROXY"] == args["https_proxy"] == "http://proxy.corp:3128"
    assert "127.0.0.1" in args["no_proxy"].split(",")  # the wheelhouse, served on loopback
    # Docker's predefined proxy arguments: a Dockerfile that declared one would keep it.
    for dockerfile in ("docker/Dockerfile", "hub/Dockerfile"):
        declared = re.findall(r"^ARG\s+(\S+)", (REPO / dockerfile).read_text(), re.MULTILINE)
        assert not [name for name in declared if name.upper().endswith("_PROXY")], dockerfile
    without = build_args(building.build_command(
        buildspec.variant_build(CPU, MANIFEST, current()), MANIFEST, CONTEXT
    ))  # fmt: skip
    assert not any(name.upper().endswith("_PROXY") for name in without)
