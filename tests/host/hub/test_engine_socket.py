"""The hub's container starts its users' servers on the Docker engine make hub itself drives:
the unix socket DOCKER_HOST names (rootless Docker's, $XDG_RUNTIME_DIR/docker.sock), else the
system engine's. hub/compose.yaml is read through `docker compose config`, so the mount is the
one Compose makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchlab import variants
from torchlab_host.core.settings import Settings
from torchlab_host.hub import manage as hub

MANIFEST = variants.load()
COMPOSE_BINARY = Path(sys.executable).parent / "docker-compose"


def mounted_engine(handed: dict[str, str]) -> str:
    """Where hub/compose.yaml mounts the hub container's /var/run/docker.sock from, given what
    make hub hands it."""
    rendered = subprocess.run(
        [str(COMPOSE_BINARY), "--project-directory", str(hub.ROOT), "--file",
         str(hub.HUB_COMPOSE), "config", "--format", "json"],
        env=handed, capture_output=True, text=True, check=True,
    )  # fmt: skip
    volumes = json.loads(rendered.stdout)["services"]["hub"]["volumes"]
    [engine] = [volume for volume in volumes if volume["target"] == "/var/run/docker.sock"]
    return engine["source"]


@pytest.mark.parametrize(
    ("docker_host", "mounted"),
    [
        (None, "/var/run/docker.sock"),
        ("unix:///run/user/1000/docker.sock", "/run/user/1000/docker.sock"),  # rootless Docker
        # An engine on another machine: its own socket, there.
        ("ssh://teacher@gpu-server", "/var/run/docker.sock"),
        ("tcp://10.0.0.5:2376", "/var/run/docker.sock"),
    ],
)
def test_the_hub_mounts_the_socket_of_the_engine_make_hub_drives(monkeypatch, docker_host, mounted):
    if docker_host:
        monkeypatch.setenv("DOCKER_HOST", docker_host)
    else:
        monkeypatch.delenv("DOCKER_HOST", raising=False)
    handed = hub.for_hub(MANIFEST, Settings.load()).environment()
    assert handed["HUB_ENGINE_SOCKET"] == mounted
    assert mounted_engine(handed) == mounted


def test_make_hub_down_hands_compose_the_same_socket(fake_bin, monkeypatch):
    """hub/compose.yaml needs the socket for every command, down too (which starts nothing)."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    fake_bin("docker", 'echo "$HUB_ENGINE_SOCKET"')
    assert hub.hub_compose("torchlab-hub", "down").stdout == "/run/user/1000/docker.sock\n"
