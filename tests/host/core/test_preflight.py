"""The host tools' preflight: a missing engine, a port in use, an address that is not this
machine's, the lab's token: each is one line that names its fix, before anything starts.

Fake `docker` executables on PATH put the real checks in each situation."""

from __future__ import annotations

import socket
import stat
import subprocess
from pathlib import Path

import pytest

from torchlab import variants
from torchlab_host import cli as commands
from torchlab_host.core import addresses, engine, envfile
from torchlab_host.core.engine import Engine
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lab import manage as lab
from torchlab_host.lab import services

REPO = Path(__file__).resolve().parents[3]
MANIFEST = variants.load()
CPU, CUDA = MANIFEST.variant("cpu"), MANIFEST.variant("cuda")


def test_options_after_a_double_dash_go_to_the_suites_pytest_and_cpu_mode_stays(monkeypatch):
    """make test-cuda-on-cpu SUITE='-m ...' runs: test cuda --on-cpu -- -m ..."""
    asked = []
    monkeypatch.setattr(lab, "test", lambda *args: asked.append(args[:1] + args[3:]) or 0)
    assert commands.main(["test", "cuda", "--on-cpu", "--", "-m", "not slow", "-q"]) == 0
    assert commands.main(["test", "xla", "--on-cpu"]) == 0
    assert asked == [("cuda", True, ["-m", "not slow", "-q"]), ("xla", True, [])]
    with pytest.raises(SystemExit):
        commands.main(["variants", "--", "-q"])


def test_missing_docker(one_line, fake_bin):
    with pytest.raises(HostError) as raised:
        engine.require_docker()
    assert "docker is not installed" in one_line(raised.value)


def test_docker_daemon_not_reachable(one_line, fake_bin):
    fake_bin("docker", "exit 1")
    with pytest.raises(HostError) as raised:
        engine.require_docker()
    assert "daemon is not reachable" in one_line(raised.value)


def test_missing_compose_plugin(one_line, fake_bin):
    fake_bin("docker", '[ "$1" = compose ] && exit 1; exit 0')
    engine.require_docker()
    with pytest.raises(HostError) as raised:
        engine.require_compose()
    assert "Compose plugin is missing" in one_line(raised.value)


@pytest.mark.parametrize(
    ("command", "prefix"), [("make lab-cpu", "LAB"), ("make hub", "HUB")], ids=["lab", "hub"]
)
def test_a_port_in_use_is_one_line(one_line, command, prefix):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HostError) as raised:
            addresses.require_free_port("127.0.0.1", port, command, prefix=prefix)
    assert f"port {port} on 127.0.0.1 is already in use" in one_line(raised.value)
    assert f"{command} {prefix}_PORT={port + 1}" in str(raised.value)


def test_an_address_that_is_not_this_machines_is_named_as_such(one_line):
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
    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    return tmp_path / ".env"


def test_token_is_generated_once_kept_private_and_reused(env_file, monkeypatch):
    first = envfile.token(Settings.load({}, env_file))
    assert len(first) == 48 and int(first, 16)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert envfile.token(Settings.load({}, env_file)) == first  # a later start reads .env
    given = Settings.load({"JUPYTER_TOKEN": "from-the-environment"}, env_file)
    assert envfile.token(given) == "from-the-environment"


@pytest.mark.parametrize("command", [["down"], ["logs"], ["ps"]])
def test_commands_that_start_no_lab_create_no_token(env_file, fake_bin, monkeypatch, command):
    fake_bin("docker", 'echo "$JUPYTER_TOKEN"')
    rootful = Engine("Docker", "20.10.24", False, "unix:///var/run/docker.sock")
    monkeypatch.setattr(services, "current_engine", lambda: rootful)
    said = services.compose(Settings.load({}, env_file), *command, capture=True).stdout.strip()
    assert said == services.NO_LAB_TOKEN and not env_file.exists()


def test_make_reports_an_unknown_variant_in_one_line():
    result = subprocess.run(["make", "-s", "lab-foo"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        f"torchlab: unknown image variant 'foo': choose one of {', '.join(MANIFEST.names)}"
    )


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
