"""Which engine the host tools drive: rootful Docker, rootless Docker, Podman through its socket,
or none. A fake `docker` answers version and info as each engine did (tests/host/data/engines)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from pathlib import Path

import pytest

from torchlab_host import cli
from torchlab_host.core import engine
from torchlab_host.core.errors import HostError

ENGINES = Path(__file__).resolve().parents[1] / "data" / "engines"
A_USER = 1001  # a rootless engine's socket belongs to its user, whoever runs the tests


@pytest.fixture(autouse=True)
def asked_afresh():
    engine.current_engine.cache_clear()
    yield
    engine.current_engine.cache_clear()


def answering(fake_bin, recording: str, context_host: str) -> None:
    """A docker CLI that answers as the recorded engine did, its context naming context_host."""
    version, info = (
        shlex.quote(str(ENGINES / f"{recording}-{what}.json")) for what in ("version", "info")
    )
    fake_bin(
        "docker",
        f'case "$1" in version) /bin/cat {version} ;; info) /bin/cat {info} ;; '
        f"context) echo {shlex.quote(context_host)} ;; *) exit 1 ;; esac",
    )


def user_socket(tmp_path: Path) -> str:
    socket = tmp_path / "podman.sock"
    socket.touch()
    if os.getuid() == 0:
        os.chown(socket, A_USER, A_USER)
    return f"unix://{socket}"


def test_rootful_docker_on_the_system_socket(fake_bin, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    answering(fake_bin, "docker-20.10", "unix:///var/run/docker.sock")
    found = engine.current_engine()
    assert (found.kind, found.version, found.rootless) == ("Docker", "20.10.24+dfsg1", False)
    assert found.describe() == "Docker 20.10.24+dfsg1, rootful, at unix:///var/run/docker.sock"


def test_rootless_docker_says_so_in_its_security_options(fake_bin, monkeypatch):
    # Its socket's owner is not looked at here: the option alone says it.
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    answering(fake_bin, "rootless-docker-24", "unix:///var/run/docker.sock")
    found = engine.current_engine()
    assert (found.kind, found.rootless, found.host) == (
        "Docker", True, "unix:///run/user/1000/docker.sock",
    )  # fmt: skip


def test_podman_through_its_socket_is_named_and_rootless_by_the_sockets_owner(
    fake_bin, monkeypatch, tmp_path
):
    """Podman 4.3 lists no rootless option: a socket that is its user's, not root's, says it."""
    host = user_socket(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", host)
    answering(fake_bin, "podman-4.3", "unix:///var/run/docker.sock")
    found = engine.current_engine()
    assert (found.kind, found.version, found.rootless, found.host) == (
        "Podman",
        "4.3.1",
        True,
        host,
    )


def test_rootful_podman_on_roots_socket_is_not_rootless(fake_bin, monkeypatch, tmp_path, require):
    require(os.getuid() == 0, "root, to make a socket root owns")  # CI runs as root
    socket = tmp_path / "podman.sock"
    socket.touch()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    answering(fake_bin, "podman-4.3", "unix:///var/run/docker.sock")
    assert engine.current_engine().rootless is False


def test_no_engine_names_podmans_socket_as_the_way_without_root(fake_bin, one_line):
    fake_bin("docker", "exit 1")
    with pytest.raises(HostError) as raised:
        engine.current_engine()
    line = one_line(raised.value)
    assert "the Docker daemon is not reachable" in line
    assert "podman system service" in line and "DOCKER_HOST=unix://" in line


def test_no_docker_cli_at_all(fake_bin, one_line):
    with pytest.raises(HostError) as raised:
        engine.current_engine()
    assert "docker is not installed" in one_line(raised.value)


def test_make_probe_names_the_engine_or_why_there_is_none(fake_bin, monkeypatch, tmp_path, capsys):
    host = user_socket(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", host)
    answering(fake_bin, "podman-4.3", host)
    assert cli.main(["engine"]) == 0
    assert (
        capsys.readouterr().out == "engine: Podman 4.3.1, rootless, GPUs as CDI devices (its "
        f"Docker API drops them before Podman 5.5), at {host}\n"
    )
    engine.current_engine.cache_clear()
    fake_bin("docker", "exit 1")
    assert cli.main(["engine"]) == 0
    assert capsys.readouterr().out.startswith("engine: none: the Docker daemon is not reachable. ")


def recorded(name: str) -> tuple[dict, dict]:
    return tuple(
        json.loads((ENGINES / f"{name}-{what}.json").read_text()) for what in ("version", "info")
    )


def test_gpus_go_through_cdi_on_podman_and_on_a_docker_with_cdi_on():
    """Podman ignores compose's device requests; Docker takes CDI where it lists spec folders
    (Docker 25 and later, CDI on), and device requests otherwise (Docker 20.10 here)."""
    host = "unix:///var/run/docker.sock"
    assert engine.engine_from(*recorded("podman-4.3"), host, 0).cdi is True
    version, info = recorded("docker-20.10")
    assert engine.engine_from(version, info, host, 0).cdi is False
    info_with_cdi = dict(info, CDISpecDirs=["/etc/cdi", "/var/run/cdi"])
    assert engine.engine_from(version, info_with_cdi, host, 0).cdi is True


def test_podman_before_5_5_drops_the_cdi_devices_compose_sends():
    """Podman's Docker API passes compose's CDI device requests on from 5.5 (containers/podman
    18e29076); Debian 12's 4.3.1 starts the container without them."""
    podman = engine.engine_from(*recorded("podman-4.3"), "unix:///run/podman/podman.sock", 0)
    assert podman.drops_cdi_devices
    for newer in ("5.5.0", "5.6.1", "6.0.0-dev"):
        assert not dataclasses.replace(podman, version=newer).drops_cdi_devices, newer
    assert dataclasses.replace(podman, version="5.4.2").drops_cdi_devices
    version, info = recorded("docker-20.10")
    docker = engine.engine_from(version, dict(info, CDISpecDirs=["/etc/cdi"]), "unix://", 0)
    assert not docker.drops_cdi_devices


def test_a_labs_files_are_its_users_on_each_engine():
    """Rootful: the host user's uid as it is; rootless Podman: that uid mapped to itself
    (keep-id); rootless Docker: the container's root, which is the host user there."""
    host = "unix:///run/user/1001/podman/podman.sock"
    rootful = engine.engine_from(*recorded("docker-20.10"), "unix:///var/run/docker.sock", 0)
    assert rootful.lab_user() == {}
    podman = engine.engine_from(*recorded("podman-4.3"), host, A_USER)
    assert podman.lab_user() == {"LAB_USERNS": "keep-id"}
    docker = engine.engine_from(*recorded("rootless-docker-24"), host, A_USER)
    assert docker.lab_user() == {"LAB_UID": "0", "LAB_GID": "0", "LAB_ALLOW_ROOT": "1"}
