"""What a lab needs from this host's engine, before compose: the CDI spec of the GPUs an engine
takes as CDI devices, the rootless user's own limits for the variant's ulimits, the files over
compose.yaml the engine needs, and the user mapping that keeps a lab's files its user's."""

from __future__ import annotations

import json
import resource

import pytest

from torchlab import variants
from torchlab_host.core.engine import Engine
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lab import engine_fit, services
from torchlab_host.lab.containers import cdi_devices

MANIFEST = variants.load()
CUDA, CPU = MANIFEST.variant("cuda"), MANIFEST.variant("cpu")
PODMAN = Engine("Podman", "4.3.1", True, "unix:///run/user/1001/podman/podman.sock", cdi=True)
PODMAN_5_5 = Engine("Podman", "5.5.0", True, "unix:///run/user/1001/podman/podman.sock", cdi=True)
DOCKER = Engine("Docker", "20.10.24", False, "unix:///var/run/docker.sock")
ROOTLESS_DOCKER = Engine("Docker", "24.0.7", True, "unix:///run/user/1001/docker.sock")


def test_the_manifests_gpu_reservations_are_cdis_devices():
    assert cdi_devices(CUDA) == ["nvidia.com/gpu=all"]
    assert cdi_devices(CPU) == []


def test_a_spec_names_its_kind_in_yaml_or_json(tmp_path):
    (tmp_path / "nvidia.yaml").write_text('cdiVersion: "0.5.0"\nkind: nvidia.com/gpu\n')
    (tmp_path / "other.json").write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "x.com/fpga"}))
    (tmp_path / "notes.txt").write_text("kind: not.a/spec\n")
    assert engine_fit.spec_kinds([tmp_path, tmp_path / "missing"]) == {
        "nvidia.com/gpu",
        "x.com/fpga",
    }


def test_a_cdi_engine_without_a_gpu_spec_is_one_line_with_the_command_that_writes_it(
    tmp_path, one_line
):
    with pytest.raises(HostError) as raised:
        engine_fit.require_cdi_spec(CUDA, PODMAN, [tmp_path])
    line = one_line(raised.value)
    assert f"Podman takes GPUs as CDI devices, and no CDI spec in {tmp_path} names" in line
    assert line.endswith(
        "Fix: write one: sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
    )
    (tmp_path / "nvidia.yaml").write_text("kind: nvidia.com/gpu\n")
    engine_fit.require_cdi_spec(CUDA, PODMAN, [tmp_path])


def test_a_gpu_lab_is_refused_where_the_engine_would_drop_its_devices(one_line):
    with pytest.raises(HostError) as raised:
        engine_fit.require_engine_fits(CUDA, PODMAN)
    line = one_line(raised.value)
    assert line.startswith("Podman 4.3.1's Docker API drops the CDI devices compose asks for")
    assert f"so {CUDA.image} would start without its GPUs" in line
    assert "Fix: upgrade Podman to 5.5 or later, or use Docker" in line
    engine_fit.require_cdi_passed_on(CPU, PODMAN)
    engine_fit.require_cdi_passed_on(CUDA, DOCKER)
    engine_fit.require_cdi_passed_on(CUDA, PODMAN_5_5)


def test_no_spec_is_asked_of_device_requests_or_of_a_cpu_lab(tmp_path):
    engine_fit.require_cdi_spec(CUDA, DOCKER, [tmp_path])  # Docker 20.10: device requests
    engine_fit.require_cdi_spec(CPU, PODMAN, [tmp_path])


def test_a_rootless_engine_cannot_raise_the_users_hard_limits(monkeypatch, one_line):
    """The cuda images ask for memlock unlimited: a rootless engine can give only the user's own."""
    assert CUDA.compose["ulimits"]["memlock"] == -1
    monkeypatch.setattr(resource, "getrlimit", lambda which: (8388608, 8388608))
    with pytest.raises(HostError) as raised:
        engine_fit.require_rootless_limits(CUDA, PODMAN)
    line = one_line(raised.value)
    assert "ask for memlock unlimited, and a rootless Podman cannot raise it above your own" in line
    assert "hard limit (8.0 MiB)" in line and "/etc/security/limits.conf" in line
    engine_fit.require_rootless_limits(CUDA, DOCKER)  # rootful: the engine raises them
    unlimited = resource.RLIM_INFINITY
    monkeypatch.setattr(resource, "getrlimit", lambda which: (unlimited, unlimited))
    engine_fit.require_rootless_limits(CUDA, PODMAN)


def test_the_files_over_compose_yaml_follow_the_engine_and_selinux():
    assert services.engine_overrides(DOCKER, selinux_enforcing=False) == []
    assert services.engine_overrides(PODMAN, selinux_enforcing=False) == [services.CDI_COMPOSE]
    assert services.engine_overrides(DOCKER, selinux_enforcing=True) == [services.SELINUX_COMPOSE]


def test_lab_commands_run_compose_with_the_engines_files(monkeypatch):
    monkeypatch.setattr(services, "current_engine", lambda: PODMAN)
    command = services.in_service("test-cuda", settings=Settings.load({}))
    assert f"--file={services.LAB_COMPOSE}" in command
    assert f"--file={services.CDI_COMPOSE}" in command
    assert command.index(f"--file={services.CDI_COMPOSE}") < command.index("run")


@pytest.mark.parametrize(
    ("engine", "handed"),
    [
        (DOCKER, {"LAB_UID": "4242", "LAB_GID": "4343"}),
        (PODMAN, {"LAB_UID": "4242", "LAB_GID": "4343", "LAB_USERNS": "keep-id"}),
        (ROOTLESS_DOCKER, {"LAB_UID": "0", "LAB_GID": "0", "LAB_ALLOW_ROOT": "1"}),
    ],
    ids=["rootful", "rootless-podman", "rootless-docker"],
)
def test_a_labs_user_reaches_compose_as_the_engine_maps_it(monkeypatch, engine, handed):
    monkeypatch.setattr(services, "current_engine", lambda: engine)
    given = {"LAB_UID": "4242", "LAB_GID": "4343"}
    env = services.compose_environment(Settings.load({}), given)
    assert {name: env.get(name) for name in handed} == handed
    if engine is DOCKER:
        assert "LAB_USERNS" not in env and "LAB_ALLOW_ROOT" not in env


def test_commands_without_a_lab_user_do_not_ask_the_engine(monkeypatch):
    def no_engine():
        raise AssertionError("asked the engine")

    monkeypatch.setattr(services, "current_engine", no_engine)
    services.compose_environment(Settings.load({}), {"TORCHLAB_DDP_NODE": "n0"})
