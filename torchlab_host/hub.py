"""make hub: JupyterHub on this machine, DockerSpawner serving the torchlab images to a class.

The hub runs in its own container (hub/compose.yaml, hub/Dockerfile, hub/jupyterhub_config.py);
this module checks every setting first, so each mistake is one line that says how to fix it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

from torchlab.backends import get
from torchlab.variants import Manifest, Variant

from . import ROOT
from .engine import configured, quiet, require_engine, run
from .errors import HostError, fail
from .images import build_image, ensure_image, hub_build, variant_build
from .labs import EVERY_ADDRESS, require_free_port

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


def hub_name() -> str:
    """HUB_NAME: the hub's container, network and volumes, and the prefix of its users'."""
    return os.environ.get("HUB_NAME") or "torchlab-hub"


@dataclass(frozen=True)
class HubSettings:
    bind: str
    port: int
    admin: str
    authenticator: str
    profiles: list[dict[str, Any]]
    mem_limit: str
    cpu_limit: str
    idle_timeout: str

    def environment(self) -> dict[str, str]:
        """What hub/compose.yaml interpolates (the OAuth settings pass through as they are)."""
        return {
            "HUB_BIND": self.bind,
            "HUB_PORT": str(self.port),
            "HUB_ADMIN": self.admin,
            "HUB_AUTHENTICATOR": self.authenticator,
            "HUB_PROFILES": json.dumps(self.profiles),
            "HUB_MEM_LIMIT": self.mem_limit,
            "HUB_CPU_LIMIT": self.cpu_limit,
            "HUB_IDLE_TIMEOUT": self.idle_timeout,
        }


def docker_host_config(variant: Variant) -> dict[str, Any]:
    """The variant's compose device block (variants.toml) as Docker's container settings, for
    DockerSpawner: a GPU reservation becomes a device request."""
    fragment = dict(variant.compose)
    if fragment.get("network_mode") == "host":
        raise fail(
            f"the hub serves no {variant.name} profile on a Docker host: its device is handed to "
            "one privileged container on the host's network, which a shared hub cannot give "
            "each user",
            f"start one lab with make lab-{variant.name}, or serve a class with Zero to "
            "JupyterHub (README, 'A lab for a class')",
        )
    config: dict[str, Any] = {}
    reservations = fragment.pop("deploy", {}).get("resources", {}).get("reservations", {})
    for device in reservations.get("devices", []):
        count = device.get("count", "all")
        config.setdefault("device_requests", []).append(
            {
                "Driver": device["driver"],
                "Count": -1 if count == "all" else int(count),
                "Capabilities": [device["capabilities"]],
            }
        )
    if fragment.pop("privileged", False):
        config["privileged"] = True
    fragment.pop("environment", None)
    if fragment:
        raise HostError(f"variants.toml: the hub cannot give a container {sorted(fragment)}")
    return config


def profile(variant: Variant) -> dict[str, Any]:
    backend = get(variant.device)
    hint = backend.host_requirements()
    if hint:
        raise fail(
            f"the {variant.name} profile needs its device to reach containers, and {hint.problem}",
            f"{hint.fix}, or leave it out: make hub HUB_PROFILES=cpu",
        )
    return {
        "name": variant.name,
        "image": variant.image,
        "summary": variant.summary,
        "host_config": docker_host_config(variant),
    }


def default_profiles(manifest: Manifest) -> list[str]:
    """cpu, and every accelerator whose device the host can tell reaches containers."""
    return [
        variant.name
        for variant in manifest.variants
        if variant.device == "cpu"
        or (get(variant.device).checks_host and get(variant.device).host_requirements() is None)
    ]


def settings(manifest: Manifest) -> HubSettings:
    admin = configured("HUB_ADMIN")
    if not admin:
        raise fail(
            "the hub has no admin: HUB_ADMIN is not set",
            "make hub HUB_ADMIN=yourname, or put HUB_ADMIN=yourname into .env; then sign up "
            "as yourname first",
        )
    if not USERNAME.fullmatch(admin):
        raise fail(
            f"HUB_ADMIN={admin} is not a username the hub accepts",
            "use lower-case letters, digits, '.', '_' or '-': make hub HUB_ADMIN=yourname",
        )
    authenticator = configured("HUB_AUTHENTICATOR") or "native"
    if authenticator not in AUTHENTICATORS:
        raise fail(
            f"HUB_AUTHENTICATOR={authenticator} is not one the hub knows",
            f"choose one of {', '.join(AUTHENTICATORS)} (README, 'A lab for a class')",
        )
    missing = [name for name in AUTHENTICATORS[authenticator] if not configured(name)]
    if missing:
        raise fail(
            f"the {authenticator} sign-in needs {', '.join(missing)}",
            "put them into .env (README, 'A lab for a class')",
        )
    names = (configured("HUB_PROFILES") or " ".join(default_profiles(manifest))).replace(",", " ")
    profiles = []
    for name in names.split():
        try:
            variant = manifest.variant(name)
        except KeyError:
            raise fail(
                f"the hub has no profile '{name}'",
                f"choose from {', '.join(manifest.names)}: make hub HUB_PROFILES=cpu",
            ) from None
        profiles.append(profile(variant))
    port = configured("HUB_PORT") or "8000"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise fail(f"HUB_PORT={port} is not a port number", "make hub HUB_PORT=8000")
    limits = {
        "HUB_MEM_LIMIT": configured("HUB_MEM_LIMIT") or "4G",
        "HUB_CPU_LIMIT": configured("HUB_CPU_LIMIT") or "2",
        "HUB_IDLE_TIMEOUT": configured("HUB_IDLE_TIMEOUT") or "3600",
    }
    for name, value in limits.items():
        if not LIMIT.fullmatch(value) or (name != "HUB_MEM_LIMIT" and not value[-1].isdigit()):
            raise fail(f"{name}={value} is not a number", f"make hub {name}=2 (README)")
    return HubSettings(
        bind=configured("HUB_BIND") or "127.0.0.1",
        port=int(port),
        admin=admin,
        authenticator=authenticator,
        profiles=profiles,
        mem_limit=limits["HUB_MEM_LIMIT"],
        cpu_limit=limits["HUB_CPU_LIMIT"],
        idle_timeout=limits["HUB_IDLE_TIMEOUT"],
    )


# hub/compose.yaml refuses to interpolate without these, even to stop the hub.
NOT_STARTING = {"HUB_ADMIN": "not-starting-the-hub", "HUB_PROFILES": "[]"}


def hub_compose(*arguments: str, environment: dict[str, str] | None = None, capture=False):
    command = [
        "docker",
        "compose",
        "--project-directory",
        str(ROOT),
        "--file",
        str(HUB_COMPOSE),
        *arguments,
    ]
    env = dict(os.environ, **(environment or NOT_STARTING))
    return quiet(command, env=env) if capture else run(command, env=env)


def running() -> bool:
    listed = quiet(["docker", "ps", "--quiet", "--filter", f"name=^{hub_name()}$"])
    return bool(listed.stdout.strip())


def up(manifest: Manifest) -> float:
    hub = settings(manifest)
    require_engine()
    if not running():
        require_free_port(hub.bind, hub.port, "make hub", prefix="HUB")
    for name in [entry["name"] for entry in hub.profiles]:
        ensure_image(variant_build(manifest.variant(name), manifest), manifest)
    ensure_image(hub_build(manifest), manifest)
    start = time.monotonic()
    started = hub_compose(
        "up",
        "--detach",
        "--wait",
        "--wait-timeout",
        str(HEALTHY_TIMEOUT_S),
        environment=hub.environment(),
        capture=True,
    )
    if started.returncode != 0:
        raise fail(
            f"the hub did not start ({started.stderr.strip().splitlines()[-1:]})",
            f"read its log: docker logs {hub_name()}",
        )
    elapsed = time.monotonic() - start
    host = "127.0.0.1" if hub.bind in EVERY_ADDRESS else hub.bind
    profiles = ", ".join(entry["name"] for entry in hub.profiles)
    print(
        f"torchlab: the hub is ready at http://{host}:{hub.port}/ (profiles: {profiles}; "
        f"{hub.admin} signs up first and approves the others at /hub/authorize; "
        f"healthy in {elapsed:.1f} s; stop: make hub-down)"
    )
    if hub.bind in EVERY_ADDRESS:
        print(
            f"torchlab: warning: HUB_BIND={hub.bind} exposes the hub to every network this "
            "machine is on; put TLS in front of it (README, 'A lab for a class')",
            file=sys.stderr,
        )
    return elapsed


def user_servers() -> list[str]:
    listed = quiet(["docker", "ps", "--all", "--quiet", "--filter", f"name=^{hub_name()}-user-"])
    return listed.stdout.split()


def down() -> int:
    """Stop the hub, which stops every user's server; remove what a crash may have left.
    The users' volumes and the hub's state volume stay."""
    require_engine()
    stopped = hub_compose("down", "--timeout", "60", capture=True).returncode
    left = user_servers()
    if left:
        run(["docker", "rm", "--force", *left], capture_output=True)
    return stopped


def build(manifest: Manifest) -> float:
    return build_image(hub_build(manifest), manifest)
