"""make hub's settings: every mistake is one line with its fix, before anything starts."""

from __future__ import annotations

import stat

import pytest

from torchlab import variants
from torchlab_host.core import envfile
from torchlab_host.core.errors import HostError
from torchlab_host.hub import manage as hub

MANIFEST = variants.load()
CONFINED = MANIFEST.containers
HUB_SETTINGS = (
    "HUB_ADMIN", "HUB_PROFILES", "HUB_PORT", "HUB_BIND", "HUB_AUTHENTICATOR", "HUB_MEM_LIMIT",
    "HUB_CPU_LIMIT", "HUB_IDLE_TIMEOUT", "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET",
    "OAUTH_CALLBACK_URL",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_settings(tmp_path, monkeypatch):
    """No .env and none of the hub's settings, and a PATH without nvidia-smi (no GPU)."""
    monkeypatch.setattr(envfile, "ROOT", tmp_path)
    for name in HUB_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HUB_ADMIN", "teacher")


def one_line(raised: pytest.ExceptionInfo) -> str:
    message = str(raised.value)
    assert "\n" not in message and ". Fix: " in message
    return message


def test_the_defaults_serve_cpu_on_loopback_with_native_sign_up():
    settings = hub.settings(MANIFEST)
    assert (settings.bind, settings.port, settings.authenticator) == ("127.0.0.1", 8000, "native")
    assert [p["name"] for p in settings.profiles] == ["cpu"]
    assert settings.profiles[0] == {
        "name": "cpu", "image": "torchlab:cpu", "summary": "any machine", "host_config": CONFINED
    }  # fmt: skip


def test_every_users_server_is_confined_as_the_manifest_says():
    """The hub's servers get variants.toml's [containers], as compose's labs do."""
    assert CONFINED == {
        "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"], "shm_size": "2gb"
    }  # fmt: skip


def test_the_admin_may_come_from_env_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HUB_ADMIN")
    (tmp_path / ".env").write_text("HUB_ADMIN=alice\n")
    assert hub.settings(MANIFEST).admin == "alice"


def test_a_missing_admin_is_one_line(monkeypatch):
    monkeypatch.delenv("HUB_ADMIN")
    with pytest.raises(HostError) as raised:
        hub.settings(MANIFEST)
    assert one_line(raised).startswith("the hub has no admin: HUB_ADMIN is not set. Fix: make hub")


def test_an_unknown_profile_is_one_line(monkeypatch):
    monkeypatch.setenv("HUB_PROFILES", "cpu,rocm")
    with pytest.raises(HostError) as raised:
        hub.settings(MANIFEST)
    assert one_line(raised).startswith("the hub has no profile 'rocm'. Fix: choose from cpu, cuda")


def test_a_gpu_profile_without_a_gpu_is_one_line(monkeypatch):
    monkeypatch.setenv("HUB_PROFILES", "cpu cuda")
    with pytest.raises(HostError) as raised:
        hub.settings(MANIFEST)
    line = one_line(raised)
    assert "the cuda profile needs its device to reach containers, and no NVIDIA driver" in line
    assert "make hub HUB_PROFILES=cpu" in line


def test_a_gpu_profile_requests_the_gpus_where_they_reach_containers(tmp_path, monkeypatch):
    for name, script in (
        ("nvidia-smi", 'echo "GPU 0: NVIDIA H100 (UUID: GPU-1)"'),
        ("nvidia-ctk", ""),
    ):
        (tmp_path / name).write_text(f"#!/bin/sh\n{script}\n")
        (tmp_path / name).chmod(stat.S_IRWXU)
    settings = hub.settings(MANIFEST)
    assert [p["name"] for p in settings.profiles] == ["cpu", "cuda"]  # the default, with a GPU
    assert settings.profiles[1]["host_config"] == {
        **CONFINED,
        "device_requests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}],
    }


def test_a_tpu_profile_is_refused_on_a_docker_host_with_the_reason(monkeypatch):
    monkeypatch.setenv("HUB_PROFILES", "xla")
    with pytest.raises(HostError) as raised:
        hub.settings(MANIFEST)
    assert "one privileged container on the host's network" in one_line(raised)


def test_oauth_names_what_it_lacks(monkeypatch):
    monkeypatch.setenv("HUB_AUTHENTICATOR", "github")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "abc")
    with pytest.raises(HostError) as raised:
        hub.settings(MANIFEST)
    assert "needs OAUTH_CLIENT_SECRET, OAUTH_CALLBACK_URL" in one_line(raised)


@pytest.mark.parametrize(
    ("name", "value"), [("HUB_PORT", "eighty"), ("HUB_CPU_LIMIT", "2G"), ("HUB_MEM_LIMIT", "lots")]
)
def test_a_setting_that_is_no_number_is_one_line(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(HostError, match=f"{name}={value} is not a"):
        hub.settings(MANIFEST)
