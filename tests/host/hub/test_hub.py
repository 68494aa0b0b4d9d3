"""make hub's settings: every mistake is one line with its fix, before anything starts; and
what each user's server gets from them, through hub/jupyterhub_config.py."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from traitlets.config import Config

from torchlab import variants
from torchlab_host.core import settings as settings_module
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.hub import manage as hub

MANIFEST = variants.load()
CONFINED = MANIFEST.containers
HUB_CONFIG = Path(__file__).resolve().parents[3] / "hub/jupyterhub_config.py"
GPU_REQUEST = {"device_requests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}]}
HUB_SETTINGS = (
    "HUB_ADMIN", "HUB_PROFILES", "HUB_PORT", "HUB_BIND", "HUB_AUTHENTICATOR", "HUB_MEM_LIMIT",
    "HUB_CPU_LIMIT", "HUB_IDLE_TIMEOUT", "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET",
    "OAUTH_CALLBACK_URL",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_settings(tmp_path, monkeypatch):
    """No .env and none of the hub's settings, and a PATH without nvidia-smi (no GPU)."""
    monkeypatch.setattr(settings_module, "ROOT", tmp_path)  # its .env
    for name in HUB_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HUB_ADMIN", "teacher")


@pytest.fixture
def servers(tmp_path, monkeypatch):
    """servers(): what a user who picks each profile gets, by profile name: the hub's settings
    (for_hub) handed to its container as make hub does (HubSettings.environment), and
    hub/jupyterhub_config.py run there, on a traitlets Config as JupyterHub runs it. A server is
    what DockerSpawner creates for a profile's name: the image allowed_images gives it, the
    container settings extra_host_config gives that image, the command, volumes and limits.
    DockerSpawner, the docker SDK, tornado and NativeAuthenticator are stand-ins (they are the
    hub image's, not the host's), and the hub's state volume is a folder here."""
    spawner = type("DockerSpawner", (), {})
    for name, attributes in {
        "dockerspawner": {"DockerSpawner": spawner},
        "docker": {"errors": types.SimpleNamespace(ImageNotFound=OSError, APIError=OSError)},
        "tornado": {"web": types.SimpleNamespace(HTTPError=Exception)},
        "nativeauthenticator": {"__file__": str(tmp_path / "nativeauthenticator/__init__.py")},
    }.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attributes))
    state = tmp_path / "srv-jupyterhub"
    state.mkdir()
    source = HUB_CONFIG.read_text()
    assert source.count('Path("/srv/jupyterhub")') == 1
    source = source.replace('Path("/srv/jupyterhub")', f"Path({str(state)!r})")

    def serve() -> dict[str, dict]:
        for name, value in hub.for_hub(MANIFEST, Settings.load()).environment().items():
            monkeypatch.setenv(name, value)
        config = Config()
        exec(compile(source, str(HUB_CONFIG), "exec"), {"get_config": lambda: config})
        assert issubclass(config.JupyterHub.spawner_class, spawner)
        chosen = config.DockerSpawner
        return {
            name: {
                "image": image,
                "host_config": chosen.extra_host_config(types.SimpleNamespace(image=image)),
                "cmd": chosen.cmd,
                "volumes": chosen.volumes,
                "limits": (chosen.mem_limit, chosen.cpu_limit),
            }
            for name, image in chosen.allowed_images.items()
        }

    return serve


def one_line(raised: pytest.ExceptionInfo) -> str:
    message = str(raised.value)
    assert "\n" not in message and ". Fix: " in message
    return message


def test_the_defaults_serve_cpu_on_loopback_with_native_sign_up():
    settings = hub.for_hub(MANIFEST, Settings.load())
    assert (settings.bind, settings.port, settings.authenticator) == ("127.0.0.1", 8000, "native")
    assert [p["name"] for p in settings.profiles] == ["cpu"]
    assert settings.profiles[0] == {
        "name": "cpu", "image": "torchlab:cpu", "summary": "any machine", "host_config": CONFINED
    }  # fmt: skip


def test_every_users_server_is_confined_as_the_manifest_says(servers, monkeypatch):
    """A user's server gets variants.toml's [containers], as compose's labs do: no
    capabilities, no new privileges, shared memory for DataLoader workers; its own volumes
    where a lab mounts labs/ and lab-data/, and the default limits."""
    monkeypatch.delenv("HUB_NAME", raising=False)
    [(name, server)] = servers().items()
    assert name == "cpu" and server["image"] == "torchlab:cpu"
    assert server["host_config"] == {**CONFINED, "auto_remove": False}
    assert server["host_config"]["cap_drop"] == ["ALL"]
    assert server["host_config"]["security_opt"] == ["no-new-privileges:true"]
    assert server["cmd"] == ["torchlab", "singleuser"] and server["limits"] == ("4G", 2.0)
    assert server["volumes"] == {
        "torchlab-hub-{username}-labs": "/home/lab/labs",
        "torchlab-hub-{username}-data": "/home/lab/lab-data",
    }


def test_a_users_server_gets_the_limits_make_hub_was_given(servers, monkeypatch):
    monkeypatch.setenv("HUB_MEM_LIMIT", "1G")
    monkeypatch.setenv("HUB_CPU_LIMIT", "0.5")
    assert servers()["cpu"]["limits"] == ("1G", 0.5)


def test_the_admin_may_come_from_env_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HUB_ADMIN")
    (tmp_path / ".env").write_text("HUB_ADMIN=alice\n")
    assert hub.for_hub(MANIFEST, Settings.load()).admin == "alice"


def test_a_missing_admin_is_one_line(monkeypatch):
    monkeypatch.delenv("HUB_ADMIN")
    with pytest.raises(HostError) as raised:
        hub.for_hub(MANIFEST, Settings.load())
    assert one_line(raised).startswith("the hub has no admin: HUB_ADMIN is not set. Fix: make hub")


def test_an_unknown_profile_is_one_line(monkeypatch):
    monkeypatch.setenv("HUB_PROFILES", "cpu,rocm")
    with pytest.raises(HostError) as raised:
        hub.for_hub(MANIFEST, Settings.load())
    assert one_line(raised).startswith(
        f"the hub has no profile 'rocm'. Fix: choose from {', '.join(MANIFEST.names)}: make hub"
    )


def test_a_gpu_profile_without_a_gpu_is_one_line(monkeypatch):
    monkeypatch.setenv("HUB_PROFILES", "cpu cuda")
    with pytest.raises(HostError) as raised:
        hub.for_hub(MANIFEST, Settings.load())
    line = one_line(raised)
    assert "the cuda profile needs its device to reach containers, and no NVIDIA driver" in line
    assert "make hub HUB_PROFILES=cpu" in line


@pytest.mark.parametrize(("recording", "chosen"), [("580", "cuda"), ("570", "cuda12")])
def test_a_gpu_profile_is_the_image_the_driver_supports_and_its_servers_get_the_gpus(
    host, servers, recording, chosen
):
    """By default, with a GPU that reaches containers: cpu, and the CUDA image the host's
    driver supports (as make lab chooses); a user who picks it gets that image and the GPUs."""
    host(recording)
    served = servers()
    assert list(served) == ["cpu", chosen]
    assert served[chosen]["image"] == MANIFEST.variant(chosen).image
    assert served[chosen]["host_config"] == {**CONFINED, "auto_remove": False, **GPU_REQUEST}
    assert "device_requests" not in served["cpu"]["host_config"]


def test_a_tpu_profile_is_refused_on_a_docker_host_with_the_reason(monkeypatch):
    monkeypatch.setenv("HUB_PROFILES", "xla")
    with pytest.raises(HostError) as raised:
        hub.for_hub(MANIFEST, Settings.load())
    assert "one privileged container on the host's network" in one_line(raised)


def test_oauth_names_what_it_lacks(monkeypatch):
    monkeypatch.setenv("HUB_AUTHENTICATOR", "github")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "abc")
    with pytest.raises(HostError) as raised:
        hub.for_hub(MANIFEST, Settings.load())
    assert "needs OAUTH_CLIENT_SECRET, OAUTH_CALLBACK_URL" in one_line(raised)


@pytest.mark.parametrize(
    ("name", "value"), [("HUB_PORT", "eighty"), ("HUB_CPU_LIMIT", "2G"), ("HUB_MEM_LIMIT", "lots")]
)
def test_a_setting_that_is_no_number_is_one_line(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(HostError, match=f"{name}={value} is not a"):
        hub.for_hub(MANIFEST, Settings.load())
