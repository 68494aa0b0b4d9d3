"""The compose file, the Dockerfiles and the Makefile keep the promises users rely on.

compose.yaml is read through `docker compose config` (every profile), so merges and defaults
are the ones Compose itself applies.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torchlab import variants
from torchlab_host.manifest import check

REPO = Path(__file__).resolve().parents[3]
MANIFEST = variants.load()
COMPOSE_BINARY = Path(sys.executable).parent / "docker-compose"
LABS = "/home/lab/labs"


def compose_config(**environment: str) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LAB")}
    env.update(JUPYTER_TOKEN="a-token", **environment)
    result = subprocess.run(
        [
            str(COMPOSE_BINARY),
            "--project-directory",
            str(REPO),
            "-f",
            str(REPO / "compose.yaml"),
            "--profile",
            "*",
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(result.stdout)["services"]


@pytest.fixture(scope="module")
def services() -> dict:
    return compose_config()


def labs_of(services):
    return {name: service for name, service in services.items() if name.startswith("lab-")}


def test_the_hosts_proxy_reaches_every_lab_and_no_offline_container(current):
    handed = current(HTTP_PROXY="http://proxy.corp:3128").proxies
    services = compose_config(**handed)
    for name, service in labs_of(services).items():
        environment = service["environment"]
        assert environment["HTTP_PROXY"] == environment["http_proxy"] == "http://proxy.corp:3128"
        assert environment["no_proxy"] == "localhost,127.0.0.1,::1", name
    offline = [service for service in services.values() if service.get("network_mode") == "none"]
    assert offline and not any("HTTP_PROXY" in s.get("environment", {}) for s in offline)


def test_the_ca_certificates_handed_on_reach_every_lab_and_no_offline_container():
    """make lab hands them on as PEM text (core/certificates.py); each container's entrypoint
    trusts them. The suites run offline, where no certificate is needed."""
    certificate = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    services = compose_config(TORCHLAB_CA_CERTIFICATES=certificate)
    for name, service in labs_of(services).items():
        assert service["environment"]["TORCHLAB_CA_CERTIFICATES"] == certificate, name
    offline = [service for service in services.values() if service.get("network_mode") == "none"]
    assert offline
    assert not any("TORCHLAB_CA_CERTIFICATES" in s.get("environment", {}) for s in offline)


def test_every_lab_mounts_its_home_from_the_data_folder_around_the_work_and_data_folders():
    """The home is kept (lab-data/home, or the LAB_HOME_DIR make lab passes); the work folder
    and the data folder are mounted inside it, where the lab has them."""
    services = compose_config(LAB_DATA_DIR="/data", LAB_HOME_DIR="/data/home")
    for name, service in labs_of(services).items():
        mounts = {volume["target"]: volume["source"] for volume in service["volumes"]}
        assert mounts["/home/lab"] == "/data/home", name
        assert mounts["/home/lab/lab-data"] == "/data", name
        assert mounts[LABS] == str(REPO / "work"), name


def test_the_files_written_from_the_manifest_are_up_to_date():
    assert check.problems(MANIFEST) == []


def test_every_variant_has_its_lab_and_test_services(services):
    for variant in MANIFEST.variants:
        wanted = {f"lab-{variant.name}", f"test-{variant.name}"}
        if variant.device != "cpu":
            wanted.add(f"test-{variant.name}-on-cpu")
        assert wanted <= set(services), variant.name
        for name in wanted:
            assert services[name]["image"] == variant.image, name
        on_cpu = services.get(f"test-{variant.name}-on-cpu", {})
        assert variant.cpu_mode.items() <= on_cpu.get("environment", {}).items(), variant.name
        assert services[f"lab-{variant.name}"]["environment"]["TORCHLAB_EXPECT"] == variant.device


def test_every_lab_mounts_the_same_work_folder_and_none_the_courses_source(services):
    for name, service in labs_of(services).items():
        [mount] = [volume for volume in service["volumes"] if volume["target"] == LABS]
        assert mount["type"] == "bind" and mount["source"] == str(REPO / "work"), name
        # make lab creates work/; a LABS_DIR that is missing is an error, not a new folder.
        assert mount["bind"]["create_host_path"] is False, name


def test_published_ports_are_on_loopback_by_default(services):
    for name, service in labs_of(services).items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", name
        if service.get("network_mode") == "host":
            assert service["environment"]["TORCHLAB_LISTEN"] == "127.0.0.1", name
    assert any(service.get("ports") for service in labs_of(services).values())


def test_the_port_and_the_address_are_configurable():
    services = compose_config(LAB_PORT="9999", LAB_BIND="10.0.0.5")
    [port] = services["lab-cpu"]["ports"]
    assert (port["host_ip"], port["published"]) == ("10.0.0.5", "9999")
    assert services["lab-xla"]["environment"]["TORCHLAB_PORT"] == "9999"


def test_the_lab_runs_as_the_host_user():
    services = compose_config(LAB_UID="4242", LAB_GID="4343")
    for name, service in labs_of(services).items():
        assert service["user"] == "4242:4343", name


def test_labs_are_confined_unless_their_device_needs_privileges(services):
    for variant in MANIFEST.variants:
        if variant.compose.get("privileged"):
            continue
        service = services[f"lab-{variant.name}"]
        name = variant.name
        assert not service.get("privileged") and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert not service["user"].startswith("0:"), name


def test_shared_memory_is_enough_for_dataloader_workers(services):
    for name, service in services.items():
        assert int(service["shm_size"]) >= 2**30, name


def test_every_container_has_the_manifests_process_limit(services):
    """Labs, test runs and distributed nodes alike, privileged or not: a fork bomb or a
    DataLoader's thousand workers stops at the limit, not at the host's process table."""
    assert "lab-xla" in services and "ddp-node" in services
    for name, service in services.items():
        assert service["pids_limit"] == MANIFEST.containers["pids_limit"], name


def test_no_service_disables_the_image_healthcheck(services):
    assert "ddp-node" in services  # every profile is read
    for name, service in services.items():
        assert not service.get("healthcheck", {}).get("disable"), name


def test_the_token_may_not_be_empty():
    result = subprocess.run(
        [str(COMPOSE_BINARY), "-f", str(REPO / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "JUPYTER_TOKEN": ""},
    )
    assert result.returncode != 0 and "JUPYTER_TOKEN is empty" in result.stderr


DOCKERFILE = (REPO / "docker/Dockerfile").read_text()


def test_the_base_image_is_pinned_by_digest_in_one_place():
    assert re.fullmatch(r"debian:bookworm-slim@sha256:[0-9a-f]{64}", MANIFEST.base_image)
    for dockerfile in ("docker/Dockerfile", "hub/Dockerfile"):
        text = (REPO / dockerfile).read_text()
        assert re.search(r"^ARG BASE_IMAGE\nFROM \$\{BASE_IMAGE\}$", text, re.M), dockerfile
        assert "sha256:" not in text, dockerfile


def test_dockerfile_builds_with_the_classic_builder():
    assert "RUN --mount" not in DOCKERFILE and "<<" not in DOCKERFILE
    assert not re.search(r"^# syntax=", DOCKERFILE, re.M)
    assert len(re.findall(r"^FROM ", DOCKERFILE, re.M)) == 1  # no sibling stages to build


def make(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *arguments], cwd=REPO, capture_output=True, text=True)


def test_make_help_lists_every_target_with_one_line():
    listed = dict(
        re.match(r"\s+make (\S+)\s+(.+)", line).groups()
        for line in make("help").stdout.splitlines()
    )
    targets = re.findall(r"^([a-z%-]+):", (REPO / "Makefile").read_text(), re.M)
    assert set(targets) - {"help"} <= set(listed), "a target has no ## description"
    for wanted in (
        "lab",
        "lab-%",
        "build-%",
        "test-%",
        "test-%-on-cpu",
        "shell-%",
        "logs",
        "down",
        "clean",
        "lock",
        "wheels",
        "lint",
        "test",
        "probe",
        "check",
        "ci-matrix",
        "test-images-%",
    ):
        assert wanted in listed, wanted


@pytest.mark.parametrize(
    ("alias", "variant"),
    [("lab-gpu", "cuda"), ("lab-tpu", "xla"), ("build-gpu", "cuda"), ("test-tpu", "xla")],
)
def test_the_old_target_names_are_aliases(alias, variant):
    """make lab-gpu and friends stay: users know them, and old docs promise them."""
    dry = make("--dry-run", alias).stdout
    assert "torchlab_host" in dry and dry.split()[-1] == alias.split("-")[1]
    assert MANIFEST.variant(alias.split("-")[1]).name == variant


def test_no_toolkit_text_names_a_make_target():
    """What runs in an image talks of images and docker flags; make belongs to the host."""
    for path in (REPO / "src/torchlab").rglob("*.py"):
        found = re.findall(r"\bmake (?:lab|test|build|shell|down)\S*", path.read_text())
        assert not found, f"{path.relative_to(REPO)} names {found}"
