"""Docker and Docker Compose, as the host tools drive them."""

from __future__ import annotations

import collections
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchlab_host import ROOT
from torchlab_host.core.errors import HostError

DOCKER_URL = "https://docs.docker.com/engine/install/"
COMPOSE_URL = "https://docs.docker.com/compose/install/linux/"
# docker-stacks' rule, for container logs and the in-image suites: no warning and no error
# line, in any form the lab's programs write one (Python logging, Jupyter's [W ...], glog's W1124).
PROBLEM_LINE = re.compile(r"\b(?:WARNING|ERROR|CRITICAL)\b|^\[[WEC] |^[WEF]\d{4} ")


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=False, **kwargs)


def quiet(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return run(command, capture_output=True, text=True, **kwargs)


def docker_must(*arguments: str) -> str:
    """A docker command that cannot fail unless the engine does: its output, else HostError."""
    done = quiet(["docker", *arguments])
    if done.returncode != 0:
        raise HostError(f"docker {' '.join(arguments)} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def problem_lines(output: str | list[str]) -> list[str]:
    lines = output.splitlines() if isinstance(output, str) else output
    return [line for line in lines if PROBLEM_LINE.search(line)]


def streamed(
    command: list[str], env: dict[str, str] | None = None, keep: int = 2000
) -> tuple[int, list[str]]:
    """Run a command with its output going to the terminal; return its code and last lines."""
    tail: collections.deque[str] = collections.deque(maxlen=keep)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip("\n"))
        sys.stdout.flush()
    return process.returncode, list(tail)


def require_docker(*info_arguments: str) -> str:
    """The engine answers `docker info` (with these arguments): its output, else one line."""
    if not shutil.which("docker"):
        raise HostError("docker is not installed", f"install Docker Engine: {DOCKER_URL}")
    info = quiet(["docker", "info", *info_arguments])
    if info.returncode != 0:
        raise HostError(
            "the Docker daemon is not reachable",
            "start it (sudo systemctl start docker), or let your user use it: "
            "sudo usermod -aG docker $USER, then log in again; without root: Podman's socket "
            "(podman system service --time=0 &, then "
            "export DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/podman.sock)",
        )
    return info.stdout


def require_compose() -> None:
    if quiet(["docker", "compose", "version"]).returncode != 0:
        raise HostError(
            "the Docker Compose plugin is missing",
            f"install it (apt-get install docker-compose-plugin): {COMPOSE_URL}",
        )


def require_engine() -> None:
    """Docker and its Compose plugin, which every lab command drives."""
    require_docker()
    require_compose()


def compose_command(file: Path, *arguments: str, overrides: Sequence[Path] = ()) -> list[str]:
    """docker compose on one of the checkout's compose files (compose.yaml, hub/compose.yaml),
    and the files over it."""
    files = [f"--file={path}" for path in (file, *overrides)]
    return ["docker", "compose", "--project-directory", str(ROOT), *files, *arguments]


def container_ids(*names: str, stopped: bool = True) -> list[str]:
    """The containers of exactly these names (the running ones, unless stopped is True)."""
    filters = [f"--filter=name=^{name}$" for name in names]
    listed = quiet(["docker", "ps", "--quiet", *(["--all"] if stopped else []), *filters])
    return listed.stdout.split()


def remove_containers(*names: str) -> None:
    found = container_ids(*names)
    if found:
        quiet(["docker", "rm", "--force", *found])


PODMAN_PASSING_CDI = (5, 5)
PODMAN_PASSING_CDI_TEXT = ".".join(map(str, PODMAN_PASSING_CDI))


def version_tuple(version: str) -> tuple[int, ...]:
    """A release's leading numbers (4.3.1 -> (4, 3, 1)); none for a version it cannot read,
    which then compares as the newest."""
    numbers = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(map(int, numbers.group().split("."))) if numbers else (999,)


@dataclass(frozen=True)
class Engine:
    """The engine the docker CLI drives here: Docker or Podman (through its Docker-compatible
    socket), rootful or rootless, and the address the CLI reaches it at."""

    kind: str  # "Docker" or "Podman"
    version: str
    rootless: bool
    host: str  # the CLI's endpoint: DOCKER_HOST, else its context's (unix:///var/run/docker.sock)
    # GPUs go to containers as CDI devices (nvidia.com/gpu=all), not as device requests:
    # Podman ignores compose's deploy.resources, and Docker takes CDI where it lists spec dirs.
    cdi: bool = False

    @property
    def drops_cdi_devices(self) -> bool:
        """Whether its Docker-compatible API drops the CDI devices compose asks for: Podman
        passes them on from 5.5 (containers/podman 18e29076); 4.3 (Debian 12's) starts the
        container without them, and without a word."""
        return self.kind == "Podman" and version_tuple(self.version) < PODMAN_PASSING_CDI

    def describe(self) -> str:
        mode = "rootless" if self.rootless else "rootful"
        gpus = ""
        if self.cdi:
            gpus = ", GPUs as CDI devices"
            if self.drops_cdi_devices:
                gpus += f" (its Docker API drops them before Podman {PODMAN_PASSING_CDI_TEXT})"
        return f"{self.kind} {self.version}, {mode}{gpus}, at {self.host}"

    def lab_user(self) -> dict[str, str]:
        """What compose.yaml interpolates so the files a lab saves on the host are its user's.
        A rootful engine runs the lab as the host user's uid (LAB_UID, as the host tools find
        it); rootless Podman maps that uid to itself (its keep-id user namespace); rootless
        Docker maps the container's root to the host user, so there the lab runs as root."""
        if not self.rootless:
            return {}
        if self.kind == "Podman":
            return {"LAB_USERNS": "keep-id"}
        return {"LAB_UID": "0", "LAB_GID": "0", "LAB_ALLOW_ROOT": "1"}


def socket_owner(host: str) -> int | None:
    """The uid owning a local engine's socket (unix://...), None for any other endpoint."""
    if not host.startswith("unix://"):
        return None
    try:
        return os.stat(host.removeprefix("unix://")).st_uid
    except OSError:
        return None


def engine_from(
    version: dict[str, Any], info: dict[str, Any], host: str, owner: int | None
) -> Engine:
    """Which engine answers, from `docker version` and `docker info` (as JSON). Podman names
    itself among the server's components; rootless Docker (and Podman 5) list the security
    option name=rootless, and Podman 4 does not, but a rootless engine's socket is its user's
    own, never root's. Podman always takes CDI devices; Docker (25 and later) when CDI is on,
    which its info shows as the folders it reads specs from."""
    server = version.get("Server") or {}
    components = [component.get("Name", "") for component in server.get("Components") or []]
    kind = "Podman" if any(name.startswith("Podman") for name in components) else "Docker"
    options = info.get("SecurityOptions") or []
    rootless = "name=rootless" in options or (owner is not None and owner != 0)
    cdi = kind == "Podman" or bool(info.get("CDISpecDirs"))
    return Engine(kind, server.get("Version", "unknown"), rootless, host, cdi)


@functools.cache
def current_engine() -> Engine:
    """The engine every lab, hub and build command here drives, asked once per command."""
    info = json.loads(require_docker("--format", "{{json .}}") or "{}")
    version = json.loads(quiet(["docker", "version", "--format", "{{json .}}"]).stdout or "{}")
    host = quiet(["docker", "context", "inspect", "--format", "{{.Endpoints.docker.Host}}"])
    endpoint = os.environ.get("DOCKER_HOST") or host.stdout.strip() or "unix:///var/run/docker.sock"
    return engine_from(version, info, endpoint, socket_owner(endpoint))
