"""The host tools' preflight: every missing piece gives one line that names its fix.

Fake `docker` and `nvidia-smi` executables on PATH put the real checks in each situation.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from torchlab import variants
from torchlab.backends import cuda, get
from torchlab_host import cli as commands
from torchlab_host.core import addresses, engine, envfile
from torchlab_host.core.errors import HostError
from torchlab_host.image import build as building
from torchlab_host.image import context, wheelhouse
from torchlab_host.image import spec as buildspec
from torchlab_host.lab import config as lab_settings
from torchlab_host.lab import manage as lab
from torchlab_host.lab import services
from torchlab_host.lockfiles import files

REPO = Path(__file__).resolve().parents[2]
MANIFEST = variants.load()
CPU, CUDA = MANIFEST.variant("cpu"), MANIFEST.variant("cuda")
CONTEXT = Path("/tmp/staged-context")
CPU_BUILD = buildspec.variant_build(CPU, MANIFEST)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """An empty PATH folder; add(name, script) puts a fake command in it."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))

    def add(name: str, script: str) -> None:
        path = folder / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)

    return add


def one_line(error: HostError) -> str:
    message = str(error)
    assert "\n" not in message and ". Fix: " in message
    return message


def test_options_after_a_double_dash_go_to_the_suites_pytest_and_cpu_mode_stays(monkeypatch):
    """make test-cuda-on-cpu SUITE='-m ...' runs: test cuda --on-cpu -- -m ..."""
    asked = []
    monkeypatch.setattr(lab, "test", lambda *args: asked.append(args[:1] + args[2:]) or 0)
    assert commands.main(["test", "cuda", "--on-cpu", "--", "-m", "not slow", "-q"]) == 0
    assert commands.main(["test", "xla", "--on-cpu"]) == 0
    assert asked == [("cuda", True, ["-m", "not slow", "-q"]), ("xla", True, [])]
    with pytest.raises(SystemExit):
        commands.main(["variants", "--", "-q"])


def test_missing_docker(fake_bin):
    with pytest.raises(HostError) as raised:
        engine.require_docker()
    assert "docker is not installed" in one_line(raised.value)


def test_docker_daemon_not_reachable(fake_bin):
    fake_bin("docker", "exit 1")
    with pytest.raises(HostError) as raised:
        engine.require_docker()
    assert "daemon is not reachable" in one_line(raised.value)


def test_missing_compose_plugin(fake_bin):
    fake_bin("docker", '[ "$1" = compose ] && exit 1; exit 0')
    engine.require_docker()
    with pytest.raises(HostError) as raised:
        engine.require_compose()
    assert "Compose plugin is missing" in one_line(raised.value)


def test_gpu_lab_without_a_driver_names_the_driver(fake_bin):
    hint = get("cuda").host_requirements()
    assert "no NVIDIA driver on this host" in hint.problem and cuda.DRIVER_URL in hint.fix


def test_gpu_lab_with_a_broken_driver_relays_nvml(fake_bin):
    fake_bin("nvidia-smi", 'echo "Failed to initialize NVML: Unknown Error"; exit 255')
    hint = get("cuda").host_requirements()
    assert "lost access to the GPU" in hint.problem


def test_gpu_lab_without_the_container_toolkit_names_it(fake_bin):
    fake_bin("nvidia-smi", 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"')
    hint = get("cuda").host_requirements()
    assert "NVIDIA Container Toolkit is not installed" in hint.problem
    assert cuda.TOOLKIT_URL in hint.fix and "nvidia-ctk runtime configure" in hint.fix
    assert lab.auto_variant(MANIFEST).name == "cpu"


def test_make_lab_picks_cuda_when_driver_and_toolkit_are_there(fake_bin):
    fake_bin("nvidia-smi", 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"')
    fake_bin("nvidia-ctk", "exit 0")
    assert get("cuda").host_requirements() is None
    assert lab.auto_variant(MANIFEST).name == "cuda"


def test_a_gpu_lab_without_a_driver_also_names_the_cpu_lab(fake_bin):
    with pytest.raises(HostError) as raised:
        lab.require_host_device(CUDA, MANIFEST)
    line = one_line(raised.value)
    assert "no NVIDIA driver on this host" in line and "(without one: make lab-cpu)" in line


def test_aliases_name_the_same_variant():
    assert MANIFEST.variant("gpu") == MANIFEST.variant("cuda") == CUDA
    assert MANIFEST.variant("tpu").name == "xla"


def test_unknown_variant():
    with pytest.raises(
        KeyError, match="unknown image variant 'foo': choose one of cpu, cuda, cuda12, xla"
    ):
        MANIFEST.variant("foo")


def test_missing_work_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_DIR", str(tmp_path / "gone"))
    with pytest.raises(HostError) as raised:
        lab_settings.settings()
    assert one_line(raised.value) == (
        f"the work folder LABS_DIR={tmp_path / 'gone'} is missing. "
        "Fix: create it, or unset LABS_DIR to work in work/"
    )


def test_no_lab_writes_into_the_courses_source(monkeypatch):
    monkeypatch.setenv("LABS_DIR", str(lab_settings.COURSE_SOURCE))
    with pytest.raises(HostError, match="the course's source, which no lab writes into"):
        lab_settings.settings()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A checkout from before work/ existed: the course committed in labs/, no work/."""
    root = tmp_path / "checkout"
    (root / "labs" / "data").mkdir(parents=True)
    (root / "labs" / "01.ipynb").write_text("course 1")
    (root / "labs" / "02.ipynb").write_text("course 2")
    (root / "labs" / "data" / "x.csv").write_text("1,2")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "course"], check=True)
    monkeypatch.setattr(lab_settings, "ROOT", root)
    monkeypatch.setattr(lab_settings, "COURSE_SOURCE", root / "labs")
    monkeypatch.setattr(lab_settings, "DEFAULT_WORK", root / "work")
    monkeypatch.delenv("LABS_DIR", raising=False)
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "lab-data"))
    monkeypatch.setenv("LAB_UID", str(os.getuid()))
    monkeypatch.setenv("LAB_GID", str(os.getgid()))
    return root


def test_an_upgrade_copies_your_labs_files_into_work_and_changes_nothing_in_labs(checkout, capsys):
    (checkout / "labs" / "02.ipynb").write_text("my edit")
    (checkout / "labs" / "mine").mkdir()
    (checkout / "labs" / "mine" / "train.py").write_text("print('mine')")
    before = {path: path.read_bytes() for path in (checkout / "labs").rglob("*") if path.is_file()}

    assert lab_settings.settings().labs == checkout / "work"

    work = checkout / "work"
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) == [
        "02.ipynb",
        "mine/train.py",
    ]
    assert (work / "02.ipynb").read_text() == "my edit"
    assert {path: path.read_bytes() for path in before} == before
    assert capsys.readouterr().out.strip() == (
        "torchlab: your work now lives in work/, and 2 files you had in labs/ are copied "
        "there; labs/ is the course's source and stays as it was"
    )
    # Only the first start does it.
    lab_settings.settings()
    assert capsys.readouterr().out == ""


def test_a_fresh_checkout_starts_an_empty_work_folder(checkout, capsys):
    assert lab_settings.settings().labs == checkout / "work"
    assert list((checkout / "work").iterdir()) == []
    assert capsys.readouterr().out.strip() == (
        "torchlab: your work now lives in work/; labs/ is the course's source and stays as it was"
    )


def test_without_git_all_of_labs_is_carried_over(checkout, capsys):
    (checkout / ".git").rename(checkout / "not-git")
    lab_settings.settings()
    assert len(list((checkout / "work").rglob("*.*"))) == 3
    assert "3 files you had in labs/ are copied there" in capsys.readouterr().out


def test_labs_folder_not_writable_by_the_lab_user(tmp_path, monkeypatch):
    folder = tmp_path / "labs"
    folder.mkdir(mode=0o755)
    monkeypatch.setenv("LABS_DIR", str(folder))
    monkeypatch.setenv("LAB_UID", "4242")
    monkeypatch.setenv("LAB_GID", "4242")
    with pytest.raises(HostError) as raised:
        lab_settings.settings()
    assert "not writable by uid 4242" in one_line(raised.value)
    assert f"chown -R 4242:4242 {folder}" in str(raised.value)


def test_the_lab_runs_as_the_owner_of_labs_when_started_by_root(tmp_path, monkeypatch, require):
    require(os.getuid() == 0, "root, to give a folder away")
    folder = tmp_path / "labs"
    folder.mkdir()
    os.chown(folder, 4242, 4343)
    monkeypatch.delenv("LAB_UID", raising=False)
    monkeypatch.delenv("SUDO_UID", raising=False)
    assert lab_settings.lab_user(folder) == (4242, 4343)
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "1235")
    assert lab_settings.lab_user(folder) == (1234, 1235)
    monkeypatch.delenv("SUDO_UID")
    os.chown(folder, 0, 0)
    with pytest.raises(HostError, match="never runs as root"):
        lab_settings.lab_user(folder)


@pytest.mark.parametrize(
    ("command", "prefix"), [("make lab-cpu", "LAB"), ("make hub", "HUB")], ids=["lab", "hub"]
)
def test_a_port_in_use_is_one_line(command, prefix):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HostError) as raised:
            addresses.require_free_port("127.0.0.1", port, command, prefix=prefix)
    assert f"port {port} on 127.0.0.1 is already in use" in one_line(raised.value)
    assert f"{command} {prefix}_PORT={port + 1}" in str(raised.value)


def test_an_address_that_is_not_this_machines_is_named_as_such():
    with pytest.raises(HostError) as raised:
        addresses.require_free_port(
            "192.0.2.55", 8888, "make lab-cpu"
        )  # TEST-NET-1: never a local address
    line = one_line(raised.value)
    assert line.startswith("LAB_BIND=192.0.2.55 is not an address of this machine. Fix: ")
    assert "already in use" not in line and "ip -brief address" in line


def test_a_bind_that_is_no_address_at_all():
    with pytest.raises(HostError, match="LAB_BIND=localhost:8888 is not an IP address"):
        addresses.require_free_port("localhost:8888", 8888, "make lab-cpu")


@pytest.fixture
def env_file(tmp_path, monkeypatch):
    monkeypatch.setattr(envfile, "ROOT", tmp_path)
    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    return tmp_path / ".env"


def test_token_is_generated_once_kept_private_and_reused(env_file, monkeypatch):
    first = envfile.token()
    assert len(first) == 48 and int(first, 16)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert envfile.token() == first
    monkeypatch.setenv("JUPYTER_TOKEN", "from-the-environment")
    assert envfile.token() == "from-the-environment"


@pytest.mark.parametrize("command", [["down"], ["logs"], ["ps"]])
def test_commands_that_start_no_lab_create_no_token(env_file, fake_bin, command):
    fake_bin("docker", 'echo "$JUPYTER_TOKEN"')
    said = services.compose(*command, capture=True).stdout.strip()
    assert said == services.NO_LAB_TOKEN and not env_file.exists()


def test_wheelhouse_is_served_to_the_build(tmp_path, monkeypatch):
    for lock in ("lab", "cpu"):
        (tmp_path / lock).mkdir()
        (tmp_path / lock / f"{lock}_pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    monkeypatch.setenv("WHEELHOUSE_PORT", "0")
    with wheelhouse.served(tmp_path, ["lab", "cpu"]) as url:
        assert url.startswith("http://127.0.0.1:")
        listing = urllib.request.urlopen(f"{url}/cpu/").read()
        assert b"cpu_pkg-1.0-py3-none-any.whl" in listing


def test_a_wheelhouse_without_the_variant_is_refused(tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "lab_pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    with (
        pytest.raises(HostError, match=r"has no cuda wheels\. Fix: fill it first: make wheels"),
        wheelhouse.served(tmp_path, ["lab", "cuda"]),
    ):
        pass


def test_make_reports_an_unknown_variant_in_one_line():
    result = subprocess.run(["make", "-s", "lab-foo"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "torchlab: unknown image variant 'foo': choose one of cpu, cuda, cuda12, xla"
    )


def build_args(command: list[str]) -> dict[str, str]:
    pairs = [command[i + 1] for i, word in enumerate(command) if word == "--build-arg"]
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.fixture
def clean_build_environment(monkeypatch):
    for name in ("WHEELHOUSE", "DOCKER_BUILD_FLAGS", "TORCH_CPU_WHEELS", "PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    for name in ("BASE_IMAGE", *buildspec.USER_BUILD_ARGS, *buildspec.ONLINE_BUILD_ARGS):
        monkeypatch.delenv(name, raising=False)


def test_online_and_offline_builds_differ_only_in_where_pip_looks(clean_build_environment):
    online = building.build_command(buildspec.variant_build(CPU, MANIFEST), MANIFEST, CONTEXT)
    offline = building.build_command(
        buildspec.variant_build(CPU, MANIFEST), MANIFEST, CONTEXT, "http://127.0.0.1:8799"
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


def test_the_manifest_names_the_device_and_the_locks_of_the_build(clean_build_environment):
    args = build_args(
        building.build_command(
            buildspec.variant_build(MANIFEST.variant("xla"), MANIFEST), MANIFEST, CONTEXT
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
    clean_build_environment, monkeypatch
):
    monkeypatch.setenv("LAB_UID", "4242")
    assert "LAB_UID" not in build_args(
        building.build_command(buildspec.variant_build(CPU, MANIFEST), MANIFEST, CONTEXT)
    )
    monkeypatch.setenv("IMAGE_UID", "1234")
    assert (
        build_args(
            building.build_command(buildspec.variant_build(CPU, MANIFEST), MANIFEST, CONTEXT)
        )["LAB_UID"]
        == "1234"
    )


def test_online_settings_do_not_touch_the_offline_build(clean_build_environment, monkeypatch):
    monkeypatch.setenv("TORCH_CPU_WHEELS", "/some/folder")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    online = build_args(
        building.build_command(buildspec.variant_build(CPU, MANIFEST), MANIFEST, CONTEXT)
    )
    offline = build_args(
        building.build_command(
            buildspec.variant_build(CPU, MANIFEST), MANIFEST, CONTEXT, "http://127.0.0.1:8799"
        )
    )
    assert online["PIP_SOURCES_VARIANT"] == "--find-links /some/folder"
    assert online["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert "/some/folder" not in offline["PIP_SOURCES_VARIANT"] and "PIP_INDEX_URL" not in offline


def test_another_platform_is_built_under_emulation_from_its_own_base(
    clean_build_environment, monkeypatch
):
    cuda = MANIFEST.variant("cuda")
    monkeypatch.setenv("BASE_IMAGE", "torchlab/debian:bookworm")
    here = buildspec.variant_build(cuda, MANIFEST)
    monkeypatch.setenv("PLATFORM", "linux/arm64")
    arm = buildspec.variant_build(cuda, MANIFEST)
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
    clean_build_environment, monkeypatch
):
    monkeypatch.setenv("PLATFORM", "linux/arm64")
    with pytest.raises(HostError) as raised:
        buildspec.variant_build(MANIFEST.variant("xla"), MANIFEST)
    assert one_line(raised.value) == (
        "variants.toml ships torchlab:xla for linux/amd64 only, not linux/arm64. "
        "Fix: build one of those: make build-xla PLATFORM=linux/amd64"
    )


def test_a_foreign_build_without_emulation_names_qemu(clean_build_environment, monkeypatch):
    monkeypatch.setenv("PLATFORM", "linux/arm64")
    arm = buildspec.variant_build(MANIFEST.variant("cuda"), MANIFEST)
    said = ["Step 6/37 : RUN apt-get update", "exec /bin/sh: exec format error"]
    line = one_line(building.explain_build_failure(arm, said))
    assert line.startswith("this machine cannot run linux/arm64 programs")
    assert "apt-get install qemu-user-static binfmt-support" in line


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
    clean_build_environment,
):
    line = one_line(building.explain_build_failure(CPU_BUILD, NO_REGISTRY))
    assert line.startswith("the base image debian:bookworm-slim cannot be pulled: no container")
    assert "make base-image" in line and "BASE_IMAGE=torchlab/debian:bookworm" in line


def test_a_build_without_the_index_names_the_wheelhouse(clean_build_environment):
    line = one_line(building.explain_build_failure(CPU_BUILD, NO_INDEX))
    assert "could not get its packages from the index" in line
    assert "make wheels" in line and "WHEELHOUSE=wheelhouse" in line


def test_other_build_failures_point_at_the_output(clean_build_environment):
    output = ["Step 30/40 : RUN torchlab check-build cpu", "torchlab: the cpu image is wrong"]
    assert "the build's output is above" in one_line(
        building.explain_build_failure(CPU_BUILD, output)
    )


@pytest.mark.parametrize("target", ["test-cuda", "lab-cuda", "shell-cuda", "lab-gpu"])
def test_gpu_targets_without_a_gpu_name_what_to_install(fake_bin, target):
    environment = dict(os.environ, PATH=f"{os.environ['PATH']}:/usr/bin:/bin")
    if any(Path(folder, "nvidia-smi").exists() for folder in ("/usr/bin", "/bin")):
        pytest.skip("this machine has an NVIDIA driver")
    result = subprocess.run(
        ["make", "-s", target], cwd=REPO, capture_output=True, text=True, env=environment
    )
    assert result.returncode != 0
    [line] = result.stderr.splitlines()[:1]
    assert line.startswith("torchlab: no NVIDIA driver on this host") and cuda.DRIVER_URL in line


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[IPKernelApp] WARNING | Kernel is running over TCP without encryption.", True),
        ("[W 2026-11-24 08:32:25.090 ServerApp] No session ID specified", True),
        ("[E 2026-11-24 08:32:25.090 ServerApp] Uncaught exception", True),
        ("W1124 08:32:25.090000 123 torch/distributed/run.py:792] Setting OMP_NUM_THREADS", True),
        ("ERROR: No matching distribution found for anyio==4.16.0", True),
        ("[I 2026-11-24 08:26:44.077 ServerApp] Jupyter Server 2.21.1 is running at:", False),
        ("======================= 84 passed, 43 skipped in 44.83s ========================", False),
        ("Warnings", False),
        ("test_errors_are_reported PASSED", False),
    ],
)
def test_warning_and_error_lines_are_recognised_in_every_form(line, problem):
    assert bool(engine.problem_lines([line])) == problem


def test_the_build_context_holds_what_the_image_copies_with_one_date_and_fixed_modes(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setenv("TORCHLAB_WITHOUT", "torchvision")
    staged = context.stage(buildspec.variant_build(CPU, MANIFEST), tmp_path / "cpu")
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
    assert "torchvision==0.28.0+cpu\n" in constraints and "torch==2.13.0+cpu\n" in constraints
    assert "jupyterlab==" in constraints  # the shared lock too


def test_leaving_out_what_no_variant_may_leave_out_is_one_line(monkeypatch):
    monkeypatch.setenv("TORCHLAB_WITHOUT", "torch")
    with pytest.raises(HostError) as raised:
        files.require_omittable(MANIFEST)
    assert "TORCHLAB_WITHOUT names torch, which no variant may leave out" in one_line(raised.value)


def test_only_the_variants_that_allow_it_leave_a_package_out(monkeypatch):
    monkeypatch.setenv("TORCHLAB_WITHOUT", "torchvision")
    assert files.omitted(CPU) == {"torchvision"} and files.omitted(CUDA) == set()
    assert "torchvision==0.28.0 " in files.installed_text("cuda", MANIFEST)


def test_clean_cache_and_clean_packages_remove_their_part_of_the_lab_data_only(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    for part in ("cache/torch/hub", "datasets/digits", "packages/cpu/lib"):
        (tmp_path / part).mkdir(parents=True)
        (tmp_path / part / "kept").write_text("data")
    assert lab.clean_data("cache") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packages"]
    assert lab.clean_data("packages") == 0
    assert list(tmp_path.iterdir()) == []
