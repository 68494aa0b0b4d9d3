"""The hub as its container runs it, without Docker: make hub's settings (for_hub) handed to
hub/jupyterhub_config.py as hub/compose.yaml hands them, the config run on a traitlets Config as
JupyterHub runs it, and its spawner starting servers on a stand-in Docker engine.

DockerSpawner, the docker SDK, tornado and NativeAuthenticator are stand-ins (they are the hub
image's, not the host's); the stand-in DockerSpawner does what LabSpawner relies on, in
DockerSpawner 14's order: start takes the image the user picked, removes the server's old
container (remove=True), makes the new one (create_object, evaluating extra_create_kwargs and
extra_host_config with the spawner) and starts it; docker("containers", ...) lists the running
containers carrying a label, as the engine's API answers. The hub's state volume is a folder.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from torchlab import variants
from torchlab_host.core import settings as settings_module
from torchlab_host.core.settings import Settings
from torchlab_host.hub import manage as hub

MANIFEST = variants.load()
HUB = Path(__file__).resolve().parents[3] / "hub"
HUB_CONFIG = HUB / "jupyterhub_config.py"
HUB_SETTINGS = (
    "HUB_ADMIN", "HUB_PROFILES", "HUB_PORT", "HUB_BIND", "HUB_AUTHENTICATOR", "HUB_MEM_LIMIT",
    "HUB_CPU_LIMIT", "HUB_IDLE_TIMEOUT", "HUB_GPUS_PER_USER", "HUB_SERVERS_PER_GPU",
    "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_CALLBACK_URL",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_settings(tmp_path, monkeypatch):
    """No .env and none of the hub's settings, and a PATH without nvidia-smi (no GPU)."""
    monkeypatch.setattr(settings_module, "ROOT", tmp_path)  # its .env
    for name in HUB_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HUB_ADMIN", "teacher")


class SpawnRefused(Exception):
    """tornado's HTTPError (a status, and the message the hub logs), as the hub's SpawnFailed
    derives from it."""

    def __init__(self, status_code: int, log_message: str | None = None):
        super().__init__(status_code, log_message)
        self.status_code, self.log_message = status_code, log_message


@dataclass
class Container:
    image: str
    host_config: dict[str, Any]
    labels: dict[str, str]
    create_kwargs: dict[str, Any]
    running: bool = False


@dataclass
class Engine:
    """The Docker engine the hub's spawners start containers on, by container name."""

    containers: dict[str, Container] = field(default_factory=dict)


@dataclass
class Hub:
    """One run of the hub's config: its Config, and start(user, profile) to start a server."""

    config: Config
    engine: Engine
    spawner_class: type
    spawners: dict[str, Any] = field(default_factory=dict)

    def spawner(self, user: str, profile: str):
        """The user's spawner (JupyterHub keeps one per user's server, across its starts),
        given the profile the user picks."""
        spawner = self.spawners.setdefault(user, self.spawner_class(user))
        spawner.user_options = {"image": profile}
        return spawner

    def start(self, user: str, profile: str) -> Container:
        spawner = self.spawner(user, profile)
        asyncio.run(spawner.start())
        return self.engine.containers[spawner.container_name]

    def start_at_once(self, users: list[str], profile: str) -> list[Container | Exception]:
        """Servers started together, as a class does at the start of a lesson: each start
        waits on the engine, and the others run meanwhile."""
        spawners = [self.spawner(user, profile) for user in users]

        async def all_of_them():
            return await asyncio.gather(*(s.start() for s in spawners), return_exceptions=True)

        results = asyncio.run(all_of_them())
        return [
            result if isinstance(result, Exception) else self.engine.containers[s.container_name]
            for s, result in zip(spawners, results, strict=True)
        ]

    def stop(self, user: str) -> None:
        """A server stopped: its container removed (remove=True)."""
        del self.engine.containers[self.config.DockerSpawner.name_template.format(username=user)]


@pytest.fixture
def hub_config(tmp_path, monkeypatch):
    """hub_config(engine=None): the hub's config run on a new engine (make hub: what it hands
    the hub's container now), or anew on the same engine with the same environment (the hub's
    container restarted, its users' servers still running)."""
    source = HUB_CONFIG.read_text()
    assert source.count('Path("/srv/jupyterhub")') == 1
    state = tmp_path / "srv-jupyterhub"
    state.mkdir()
    source = source.replace('Path("/srv/jupyterhub")', f"Path({str(state)!r})")
    monkeypatch.syspath_prepend(str(HUB))  # as the hub image's PYTHONPATH

    handed: dict[str, str] = {}  # the hub container's environment

    def run(engine: Engine | None = None) -> Hub:
        config = Config()

        class DockerSpawner:
            def __init__(self, user: str):
                self.user = types.SimpleNamespace(name=user)
                self.user_options: dict[str, str] = {}
                self.image = config.DockerSpawner.image
                self.container_name = config.DockerSpawner.name_template.format(username=user)
                self.log = logging.getLogger("hub")

            async def docker(self, method: str, **arguments):
                await asyncio.sleep(0)  # the engine answers later: other starts run meanwhile
                assert method == "containers" and list(arguments) == ["filters"]
                [(kind, label)] = arguments["filters"].items()
                assert kind == "label"
                return [
                    {"Names": [f"/{name}"], "Labels": container.labels}
                    for name, container in engine.containers.items()
                    if container.running and label in container.labels
                ]

            async def create_object(self):
                chosen = config.DockerSpawner
                create_kwargs = chosen.extra_create_kwargs(self)
                engine.containers[self.container_name] = Container(
                    image=self.image,
                    host_config=chosen.extra_host_config(self),
                    labels=create_kwargs.get("labels", {}),
                    create_kwargs=create_kwargs,
                )
                return {"Id": self.container_name}

            async def start(self):
                self.image = config.DockerSpawner.allowed_images[self.user_options["image"]]
                engine.containers.pop(self.container_name, None)
                await self.create_object()
                await asyncio.sleep(0)
                engine.containers[self.container_name].running = True
                return ("127.0.0.1", 8888)

        for name, attributes in {
            "dockerspawner": {"DockerSpawner": DockerSpawner},
            "docker": {"errors": types.SimpleNamespace(ImageNotFound=OSError, APIError=OSError)},
            "tornado": {"web": types.SimpleNamespace(HTTPError=SpawnRefused)},
            "nativeauthenticator": {"__file__": str(tmp_path / "nativeauthenticator/__init__.py")},
        }.items():
            monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attributes))
        if engine is None:
            engine = Engine()
            handed.update(hub.for_hub(MANIFEST, Settings.load()).environment())
        for name, value in handed.items():
            monkeypatch.setenv(name, value)
        exec(compile(source, str(HUB_CONFIG), "exec"), {"get_config": lambda: config})
        assert issubclass(config.JupyterHub.spawner_class, DockerSpawner)
        return Hub(config, engine, config.JupyterHub.spawner_class)

    return run


@pytest.fixture
def servers(hub_config):
    """servers(): what a user who picks each profile gets, by profile name: the container the
    spawner creates for it (image, container settings, create arguments), and the command,
    volumes and limits every server gets."""

    def serve() -> dict[str, dict]:
        started = hub_config()
        chosen = started.config.DockerSpawner
        served = {}
        for name in chosen.allowed_images:
            container = started.start(f"user-of-{name}", name)
            served[name] = {
                "image": container.image,
                "host_config": container.host_config,
                "labels": container.labels,
                "create_kwargs": container.create_kwargs,
                "cmd": chosen.cmd,
                "volumes": chosen.volumes,
                "limits": (chosen.mem_limit, chosen.cpu_limit),
            }
        return served

    return serve
