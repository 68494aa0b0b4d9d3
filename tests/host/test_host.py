"""Host-side preflight: every missing piece gives one line that names its fix.

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

from torchlab import host
from torchlab.backends import cuda, get
from torchlab.variants import by_name

REPO = Path(__file__).resolve().parents[2]


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


def one_line(error: host.HostError) -> str:
    message = str(error)
    assert "\n" not in message and ". Fix: " in message
    return message


def test_missing_docker(fake_bin):
    with pytest.raises(host.HostError) as raised:
        host.require_docker()
    assert "docker is not installed" in one_line(raised.value)


def test_docker_daemon_not_reachable(fake_bin):
    fake_bin("docker", "exit 1")
    with pytest.raises(host.HostError) as raised:
        host.require_docker()
    assert "daemon is not reachable" in one_line(raised.value)


def test_missing_compose_plugin(fake_bin):
    fake_bin("docker", '[ "$1" = compose ] && exit 1; exit 0')
    host.require_docker()
    with pytest.raises(host.HostError) as raised:
        host.require_compose()
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
    assert host.pick().lab == "cpu"


def test_make_lab_picks_gpu_when_driver_and_toolkit_are_there(fake_bin):
    fake_bin("nvidia-smi", 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"')
    fake_bin("nvidia-ctk", "exit 0")
    assert get("cuda").host_requirements() is None
    assert host.pick().lab == "gpu"


def test_unknown_lab():
    with pytest.raises(KeyError, match="unknown lab 'foo': choose one of cpu, gpu, tpu"):
        by_name("foo")


def test_missing_labs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_DIR", str(tmp_path / "gone"))
    with pytest.raises(host.HostError) as raised:
        host.settings()
    assert "is missing" in one_line(raised.value) and "git checkout -- labs" in str(raised.value)


def test_labs_folder_not_writable_by_the_lab_user(tmp_path, monkeypatch):
    labs = tmp_path / "labs"
    labs.mkdir(mode=0o755)
    monkeypatch.setenv("LABS_DIR", str(labs))
    monkeypatch.setenv("LAB_UID", "4242")
    monkeypatch.setenv("LAB_GID", "4242")
    with pytest.raises(host.HostError) as raised:
        host.settings()
    assert "not writable by uid 4242" in one_line(raised.value)
    assert f"chown -R 4242:4242 {labs}" in str(raised.value)


def test_the_lab_runs_as_the_owner_of_labs_when_started_by_root(tmp_path, monkeypatch):
    if os.getuid() != 0:
        pytest.skip("needs root to give a folder away")
    labs = tmp_path / "labs"
    labs.mkdir()
    os.chown(labs, 4242, 4343)
    monkeypatch.delenv("LAB_UID", raising=False)
    monkeypatch.delenv("SUDO_UID", raising=False)
    assert host.lab_user(labs) == (4242, 4343)
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "1235")
    assert host.lab_user(labs) == (1234, 1235)
    monkeypatch.delenv("SUDO_UID")
    os.chown(labs, 0, 0)
    with pytest.raises(host.HostError, match="never runs as root"):
        host.lab_user(labs)


def test_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(host.HostError) as raised:
            host.require_free_port("cpu", "127.0.0.1", port)
    assert f"port {port} on 127.0.0.1 is already in use" in one_line(raised.value)
    assert f"make lab-cpu LAB_PORT={port + 1}" in str(raised.value)


def test_token_is_generated_once_kept_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "ENV_FILE", tmp_path / ".env")
    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    first = host.token()
    assert len(first) == 48 and int(first, 16)
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert host.token() == first
    monkeypatch.setenv("JUPYTER_TOKEN", "from-the-environment")
    assert host.token() == "from-the-environment"


def test_wheelhouse_is_served_to_the_build(tmp_path, monkeypatch):
    for lock in ("lab", "cpu"):
        (tmp_path / lock).mkdir()
        (tmp_path / lock / f"{lock}_pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    monkeypatch.setenv("WHEELHOUSE_PORT", "0")
    with host.served_wheelhouse(tmp_path, by_name("cpu")) as url:
        assert url.startswith("http://127.0.0.1:")
        listing = urllib.request.urlopen(f"{url}/cpu/").read()
        assert b"cpu_pkg-1.0-py3-none-any.whl" in listing


def test_a_wheelhouse_without_the_variant_is_refused(tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "lab_pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    with (
        pytest.raises(
            host.HostError, match=r"has no cuda wheels\. Fix: fill it first: make wheels"
        ),
        host.served_wheelhouse(tmp_path, by_name("gpu")),
    ):
        pass


def test_make_reports_an_unknown_lab_in_one_line():
    result = subprocess.run(["make", "-s", "lab-foo"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "torchlab: unknown lab 'foo': choose one of cpu, gpu, tpu (make help lists them)"
    )


def build_args(command: list[str]) -> dict[str, str]:
    pairs = [command[i + 1] for i, word in enumerate(command) if word == "--build-arg"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_online_and_offline_builds_differ_only_in_where_pip_looks(monkeypatch):
    for name in ("WHEELHOUSE", "DOCKER_BUILD_FLAGS", *host.PASSED_BUILD_ARGS):
        monkeypatch.delenv(name, raising=False)
    for name in host.ONLINE_BUILD_ARGS:
        monkeypatch.delenv(name, raising=False)
    online = host.build_command(by_name("cpu"))
    offline = host.build_command(by_name("cpu"), "http://127.0.0.1:8799")
    assert build_args(offline) == {**build_args(online), "WHEELHOUSE": "http://127.0.0.1:8799"}
    assert [w for w in offline if w not in online] == [
        "--network",
        "host",
        "WHEELHOUSE=http://127.0.0.1:8799",
    ]
    assert build_args(online)["TORCH_VERSION"] == "2.13.0+cpu"


def test_the_lab_user_is_chosen_at_start_and_the_image_user_at_build(monkeypatch):
    monkeypatch.setenv("LAB_UID", "4242")
    assert "LAB_UID" not in build_args(host.build_command(by_name("cpu")))
    monkeypatch.setenv("IMAGE_UID", "1234")
    assert build_args(host.build_command(by_name("cpu")))["LAB_UID"] == "1234"


def test_online_settings_do_not_touch_the_offline_build(monkeypatch):
    monkeypatch.setenv("TORCH_CPU_WHEELS", "/some/folder")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    online = build_args(host.build_command(by_name("cpu")))
    offline = build_args(host.build_command(by_name("cpu"), "http://127.0.0.1:8799"))
    assert online["TORCH_CPU_WHEELS"] == "/some/folder"
    assert "TORCH_CPU_WHEELS" not in offline and "PIP_INDEX_URL" not in offline


@pytest.mark.parametrize("target", ["test-gpu", "lab-gpu", "shell-gpu"])
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
