"""make hub's settings: every mistake is one line with its fix, before anything starts; and
what each user's server gets from them, through hub/jupyterhub_config.py."""

from __future__ import annotations

import pytest

from torchlab import variants
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.hub import manage as hub

MANIFEST = variants.load()
CONFINED = MANIFEST.containers
# The one GPU of data/nvidia-smi/list-one-h100.txt.
ONE_H100 = "GPU-993955be-5888-4f39-937c-56af8c5187c1"


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
    capabilities, no new privileges, shared memory for DataLoader workers, a process limit;
    its own volumes where a lab mounts its home, labs/ and lab-data/, and the default limits."""
    monkeypatch.delenv("HUB_NAME", raising=False)
    [(name, server)] = servers().items()
    assert name == "cpu" and server["image"] == "torchlab:cpu"
    assert server["host_config"] == {**CONFINED, "memswap_limit": "4G", "auto_remove": False}
    assert server["host_config"]["cap_drop"] == ["ALL"]
    assert server["host_config"]["security_opt"] == ["no-new-privileges:true"]
    # A fork bomb, or a DataLoader's thousand workers, stops at the limit, not the host's.
    assert server["host_config"]["pids_limit"] == CONFINED["pids_limit"] > 0
    assert server["labels"] == {} and server["create_kwargs"]["healthcheck"] == {"test": ["NONE"]}
    assert server["cmd"] == ["torchlab", "singleuser"] and server["limits"] == ("4G", 2.0)
    assert server["volumes"] == {
        "torchlab-hub-{username}-home": "/home/lab",
        "torchlab-hub-{username}-labs": "/home/lab/labs",
        "torchlab-hub-{username}-data": "/home/lab/lab-data",
    }


def test_a_users_server_gets_the_limits_make_hub_was_given(servers, monkeypatch):
    monkeypatch.setenv("HUB_MEM_LIMIT", "1G")
    monkeypatch.setenv("HUB_CPU_LIMIT", "0.5")
    [server] = servers().values()
    assert server["limits"] == ("1G", 0.5)
    # Swap included: Docker's default would let the server swap as much again.
    assert server["host_config"]["memswap_limit"] == "1G"


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
def test_a_gpu_profile_is_the_image_the_driver_supports_and_its_servers_get_a_gpu(
    host, servers, recording, chosen
):
    """By default, with a GPU that reaches containers: cpu, and the CUDA image the host's
    driver supports (as make lab chooses); a user who picks it gets that image and the host's
    GPU, named by its UUID (never Docker's "every GPU")."""
    host(recording, listing="list-one-h100.txt")
    served = servers()
    assert list(served) == ["cpu", chosen]
    assert served[chosen]["image"] == MANIFEST.variant(chosen).image
    assert served[chosen]["host_config"] == {
        **CONFINED,
        "memswap_limit": "4G",
        "auto_remove": False,
        "device_requests": [
            {"Driver": "nvidia", "Capabilities": [["gpu"]], "DeviceIDs": [ONE_H100]}
        ],
        # NVIDIA's limits for NCCL and pinned memory (no host IPC: a class shares the host).
        "ulimits": [
            {"Name": "memlock", "Soft": -1, "Hard": -1},
            {"Name": "stack", "Soft": 67108864, "Hard": 67108864},
        ],
    }
    assert served[chosen]["labels"] == {"org.torchlab.gpus": ONE_H100}
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


def test_a_user_may_pick_a_profile_and_nothing_else(hub_config):
    """The spawn form and the REST API hand the spawner user options: the profile's image is
    DockerSpawner's to apply; any other option would be applied by nothing, so it is a 400."""
    apply = hub_config().config.DockerSpawner.apply_user_options
    assert apply(None, {}) is None
    assert apply(None, {"image": "cpu"}) is None
    with pytest.raises(Exception) as refused:  # tornado's HTTPError, in the hub image
        apply(None, {"image": "cpu", "mem_limit": "64G"})
    assert refused.value.status_code == 400
    assert refused.value.log_message == "unknown server options: mem_limit"


def test_the_hosts_proxy_reaches_each_server_and_the_hub_is_asked_directly(hub_config, monkeypatch):
    monkeypatch.setenv("HUB_NAME", "torchlab-hub")
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    given = hub_config().config.DockerSpawner.environment
    assert given["HTTPS_PROXY"] == given["https_proxy"] == "http://proxy.corp:3128"
    # A server asks the hub's API by the hub's name, on their own network.
    assert given["NO_PROXY"] == given["no_proxy"] == "localhost,127.0.0.1,::1,torchlab-hub"


def test_without_a_proxy_the_servers_are_given_none(hub_config):
    assert hub_config().config.DockerSpawner.environment == {}


def test_the_hosts_local_cas_reach_each_server(hub_config, no_host_local_cas):
    """make hub hands them to the hub, which hands them to each server's entrypoint."""
    certificate = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    no_host_local_cas.mkdir()
    (no_host_local_cas / "company.crt").write_text(certificate)
    given = hub_config().config.DockerSpawner.environment
    assert given == {"TORCHLAB_CA_CERTIFICATES": certificate}
