"""make hub: JupyterHub on this machine, DockerSpawner serving the torchlab images to a class.

The hub runs in its own container (hub/compose.yaml, hub/Dockerfile, hub/jupyterhub_config.py);
this module decides every setting (the defaults are here alone) and checks it first, so each
mistake is one line that says how to fix it, and hands the result to the hub's container.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchlab.backends import get
from torchlab.backends.cuda.driver import UnusableGpu, host_devices
from torchlab.variants import Manifest, UnknownVariant, Variant
from torchlab_host import ROOT
from torchlab_host.core import certificates
from torchlab_host.core.addresses import (
    LOOPBACK,
    browser_url,
    port_number,
    require_free_port,
    warn_if_exposed,
)
from torchlab_host.core.engine import compose_command, container_ids, quiet, require_engine, run
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import PROXY_VARIABLES, Settings
from torchlab_host.image.build import build_image, ensure_image
from torchlab_host.image.spec import hub_build, variant_build
from torchlab_host.lab.containers import host_config, refuse_unless_per_user, wants_gpu

HUB_COMPOSE = ROOT / "hub/compose.yaml"
HEALTHY_TIMEOUT_S = 120
# NativeAuthenticator keeps names lower case; Docker names each user's volumes after them.
USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
OAUTH_SETTINGS = ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_CALLBACK_URL")
AUTHENTICATORS = {
    "native": (),
    "github": OAUTH_SETTINGS,
    "generic": (*OAUTH_SETTINGS, "OAUTH_AUTHORIZE_URL", "OAUTH_TOKEN_URL", "OAUTH_USERDATA_URL"),
}
LIMIT = re.compile(r"\d+(?:\.\d+)?[KMGkmg]?")
# Beyond 8 servers on one GPU each gets less than an eighth of its time and memory: less than
# the smallest MIG instance of an A100 or H100 (a seventh), which isolates them besides.
MOST_SERVERS_PER_GPU = 8
# The engine socket the hub's container mounts, to start its users' containers on: that of the
# engine make hub itself drives. Where DOCKER_HOST names a unix socket (rootless Docker's is
# $XDG_RUNTIME_DIR/docker.sock), that one; else the system engine's, on the engine's machine.
SYSTEM_ENGINE_SOCKET = "/var/run/docker.sock"
# Passed to the hub's container as they are (hub/compose.yaml lists them).
PASSED_THROUGH = (
    "HUB_API_TOKEN", "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_CALLBACK_URL",
    "OAUTH_ALLOWED_USERS", "OAUTH_ALLOWED_ORGS", "OAUTH_AUTHORIZE_URL", "OAUTH_TOKEN_URL",
    "OAUTH_USERDATA_URL", "OAUTH_USERNAME_CLAIM",
)  # fmt: skip


@dataclass(frozen=True)
class HubSettings:
    bind: str
    port: int
    admin: str
    authenticator: str
    profiles: list[dict[str, Any]]
    limits: dict[str, str]  # HUB_MEM_LIMIT, HUB_CPU_LIMIT, HUB_IDLE_TIMEOUT
    gpus: dict[str, str]  # HUB_GPUS (the devices to hand out), HUB_GPUS_PER_USER, ..._PER_GPU

    name: str  # HUB_NAME: the hub's container, network and volumes, and its users' prefix
    passed: dict[str, str]  # PASSED_THROUGH, as set
    engine_socket: str  # HUB_ENGINE_SOCKET: engine_socket()
    proxies: dict[str, str]  # the host's proxy, for the servers: Settings.proxies
    ca_certificates: str  # PEM text the servers trust beside the image's CAs (LAB_CA_CERTS)

    def environment(self) -> dict[str, str]:
        """What hub/compose.yaml hands the hub's container."""
        return {
            **self.passed,
            "HUB_NAME": self.name,
            "HUB_BIND": self.bind,
            "HUB_PORT": str(self.port),
            "HUB_ADMIN": self.admin,
            "HUB_AUTHENTICATOR": self.authenticator,
            "HUB_PROFILES": json.dumps(self.profiles),
            **self.limits,
            **self.gpus,
            "HUB_ENGINE_SOCKET": self.engine_socket,
            # Each listed in hub/compose.yaml, so each is given: empty where there is none.
            **{name: self.proxies.get(name, "") for name in PROXY_VARIABLES},
            certificates.VARIABLE: self.ca_certificates,
        }


def engine_socket(environ: Mapping[str, str] = os.environ) -> str:
    """The unix socket of the engine the docker command drives (DOCKER_HOST is Docker's own
    variable, not a setting of the host tools): the hub's container mounts it."""
    docker_host = environ.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        return docker_host.removeprefix("unix://")
    return SYSTEM_ENGINE_SOCKET


def profile(variant: Variant, manifest: Manifest) -> dict[str, Any]:
    """A variant as a profile of the hub: its image, and how its server container runs."""
    refuse_unless_per_user(
        variant, "the hub", "serve a class with Zero to JupyterHub (docs/class/index.md)"
    )
    hint = get(variant.device).host_requirements(variant.build_here())
    if hint:
        raise HostError(
            f"the {variant.name} profile needs its device to reach containers, and {hint.problem}",
            f"{hint.fix}, or leave it out: make hub HUB_PROFILES=cpu",
        )
    return {
        "name": variant.name,
        "image": variant.image,
        "summary": variant.summary,
        "host_config": host_config(variant, manifest),
    }


def default_profiles(manifest: Manifest) -> list[str]:
    """cpu, and for each per-user accelerator whose device the host can tell reaches
    containers, the first of its variants that the host's driver and GPUs suit (as make lab
    chooses: cuda on a CUDA 13 driver, cuda12 before it)."""
    chosen: dict[str, str] = {}
    for variant in manifest.variants:
        backend = get(variant.device)
        if variant.device in chosen:
            continue
        if variant.device == "cpu" or (
            variant.per_user
            and backend.checks_host
            and backend.host_requirements(variant.build_here()) is None
        ):
            chosen[variant.device] = variant.name
    return list(chosen.values())


def sign_in(settings: Settings) -> tuple[str, str]:
    """The admin and the authenticator, checked."""
    admin = settings["HUB_ADMIN"]
    if not admin:
        raise HostError(
            "the hub has no admin: HUB_ADMIN is not set",
            "make hub HUB_ADMIN=yourname, or put HUB_ADMIN=yourname into .env; then sign up "
            "as yourname first",
        )
    if not USERNAME.fullmatch(admin):
        raise HostError(
            f"HUB_ADMIN={admin} is not a username the hub accepts",
            "use lower-case letters, digits, '.', '_' or '-': make hub HUB_ADMIN=yourname",
        )
    authenticator = settings["HUB_AUTHENTICATOR"]
    if authenticator not in AUTHENTICATORS:
        raise HostError(
            f"HUB_AUTHENTICATOR={authenticator} is not one the hub knows",
            f"choose one of {', '.join(AUTHENTICATORS)} (docs/class/index.md)",
        )
    missing = [name for name in AUTHENTICATORS[authenticator] if not settings[name]]
    if missing:
        raise HostError(
            f"the {authenticator} sign-in needs {', '.join(missing)}",
            "put them into .env (docs/class/index.md)",
        )
    return admin, authenticator


def profiles(manifest: Manifest, settings: Settings) -> list[dict[str, Any]]:
    names = settings.words("HUB_PROFILES") or default_profiles(manifest)
    chosen = []
    for name in names:
        try:
            variant = manifest.variant(name)
        except UnknownVariant:
            raise HostError(
                f"the hub has no profile '{name}'",
                f"choose from {', '.join(manifest.names)}: make hub HUB_PROFILES=cpu",
            ) from None
        chosen.append(profile(variant, manifest))
    return chosen


def limits(settings: Settings) -> dict[str, str]:
    found = {
        name: settings[name] for name in ("HUB_MEM_LIMIT", "HUB_CPU_LIMIT", "HUB_IDLE_TIMEOUT")
    }
    for name, value in found.items():
        if not LIMIT.fullmatch(value) or (name != "HUB_MEM_LIMIT" and not value[-1].isdigit()):
            raise HostError(
                f"{name}={value} is not a number", f"make hub {name}=2 (docs/reference/settings.md)"
            )
    return found


def count(settings: Settings, name: str, most: int | None, why: str) -> int:
    """A count setting, 1 or more, and at most `most` (why: said when it is more)."""
    value = settings[name]
    if not value.isdigit() or int(value) < 1:
        raise HostError(f"{name}={value} is not a count", f"make hub {name}=1")
    if most is not None and int(value) > most:
        raise HostError(f"{name}={value} is more than {most}: {why}", f"make hub {name}={most}")
    return int(value)


def gpus(manifest: Manifest, served: list[dict[str, Any]], settings: Settings) -> dict[str, str]:
    """What the hub needs to give each GPU server devices of its own: the GPUs and MIG
    instances the host lists (none where no profile wants a GPU), how many each server gets,
    and how many servers may share one."""
    wanted = any(wants_gpu(manifest.variant(entry["name"])) for entry in served)
    try:
        devices = host_devices() if wanted else []
    except UnusableGpu as unusable:
        raise HostError(unusable.hint.problem, unusable.hint.fix) from None
    if wanted and not devices:
        raise HostError(
            "nvidia-smi -L names no GPU by its UUID, so the hub cannot give each server its own",
            "check that nvidia-smi -L lists the GPUs, or leave the GPU profiles out: make hub "
            "HUB_PROFILES=cpu",
        )
    per_user = count(
        settings, "HUB_GPUS_PER_USER", len(devices) if wanted else None,
        f"this host has {len(devices)} to hand out (nvidia-smi -L's GPUs or MIG instances)",
    )  # fmt: skip
    per_gpu = count(
        settings, "HUB_SERVERS_PER_GPU", MOST_SERVERS_PER_GPU,
        "more leaves each server too little of a GPU's time and memory",
    )  # fmt: skip
    return {
        "HUB_GPUS": json.dumps([device._asdict() for device in devices]),
        "HUB_GPUS_PER_USER": str(per_user),
        "HUB_SERVERS_PER_GPU": str(per_gpu),
    }


def for_hub(manifest: Manifest, settings: Settings) -> HubSettings:
    """The hub's settings, each checked."""
    admin, authenticator = sign_in(settings)
    served = profiles(manifest, settings)
    return HubSettings(
        bind=settings["HUB_BIND"],
        port=port_number(settings["HUB_PORT"], "HUB", "make hub", 8000),
        admin=admin,
        authenticator=authenticator,
        profiles=served,
        limits=limits(settings),
        gpus=gpus(manifest, served, settings),
        name=settings["HUB_NAME"],
        passed={name: settings[name] for name in PASSED_THROUGH},
        engine_socket=engine_socket(),
        proxies=dict(settings.proxies),
        ca_certificates=certificates.ca_certificates(settings),
    )


def hub_compose(
    name: str, *arguments: str, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """docker compose on hub/compose.yaml for the hub of that HUB_NAME. Commands that start no
    hub (down) interpolate it with placeholders: it refuses to without a port and an address."""
    env = dict(
        os.environ,
        HUB_NAME=name,
        HUB_BIND=LOOPBACK,
        HUB_PORT="0",
        HUB_ENGINE_SOCKET=engine_socket(),
    )
    env.update(environment or {})
    return quiet(compose_command(HUB_COMPOSE, *arguments), env=env)


def up(manifest: Manifest, settings: Settings) -> float:
    hub = for_hub(manifest, settings)
    require_engine()
    if not container_ids(hub.name, stopped=False):
        require_free_port(hub.bind, hub.port, "make hub", prefix="HUB")
    for name in [entry["name"] for entry in hub.profiles]:
        ensure_image(variant_build(manifest.variant(name), manifest, settings), manifest)
    ensure_image(hub_build(manifest, settings), manifest)
    start = time.monotonic()
    started = hub_compose(
        hub.name, "up", "--detach", "--wait", "--wait-timeout", str(HEALTHY_TIMEOUT_S),
        environment=hub.environment(),
    )  # fmt: skip
    if started.returncode != 0:
        raise HostError(
            f"the hub did not start ({started.stderr.strip().splitlines()[-1:]})",
            f"read its log: docker logs {hub.name}",
        )
    elapsed = time.monotonic() - start
    names = ", ".join(entry["name"] for entry in hub.profiles)
    handed = len(json.loads(hub.gpus["HUB_GPUS"]))
    if handed:
        names += f"; {handed} GPUs to hand out, {hub.gpus['HUB_GPUS_PER_USER']} per server"
    print(
        f"torchlab: the hub is ready at {browser_url(hub.bind, hub.port)} (profiles: {names}; "
        f"{hub.admin} signs up first and approves the others at /hub/authorize; "
        f"healthy in {elapsed:.1f} s; stop: make hub-down)"
    )
    warn_if_exposed(hub.bind, "HUB", "the hub", "put TLS in front of it (docs/class/index.md)")
    return elapsed


def down(settings: Settings) -> int:
    """Stop the hub, then every user's server (which outlive a restarted hub), then the hub's
    network, which the servers held while the hub went. The users' volumes and the hub's state
    volume stay."""
    require_engine()
    name = settings["HUB_NAME"]
    stopped = hub_compose(name, "down", "--timeout", "60").returncode
    servers = quiet(["docker", "ps", "--all", "--quiet", "--filter", f"name=^{name}-user-"])
    if servers.stdout.split():
        run(["docker", "stop", "--time", "30", *servers.stdout.split()], capture_output=True)
        run(["docker", "rm", "--force", *servers.stdout.split()], capture_output=True)
        stopped = hub_compose(name, "down").returncode
    return stopped


def build(manifest: Manifest, settings: Settings) -> float:
    return build_image(hub_build(manifest, settings), manifest)
