"""Docker and Docker Compose, as the host tools drive them."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

from . import ROOT
from .errors import HostError, fail

DOCKER_URL = "https://docs.docker.com/engine/install/"
COMPOSE_URL = "https://docs.docker.com/compose/install/linux/"
# docker-stacks' rule, for container logs and the in-image suites: no warning and no error
# line, in any form the lab's programs write one (Python logging, Jupyter's [W ...], glog's W1124).
PROBLEM_LINE = re.compile(r"\b(?:WARNING|ERROR|CRITICAL)\b|^\[[WEC] |^[WEF]\d{4} ")
# compose.yaml refuses to interpolate without a token, even for commands that start no lab
# (down, logs, test runs): they get this placeholder, so only starting a lab creates a token.
NO_LAB_TOKEN = "no-lab-is-started-by-this-command"


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


def require_docker() -> None:
    if not shutil.which("docker"):
        raise fail("docker is not installed", f"install Docker Engine: {DOCKER_URL}")
    if quiet(["docker", "info"]).returncode != 0:
        raise fail(
            "the Docker daemon is not reachable",
            "start it (sudo systemctl start docker), or let your user use it: "
            "sudo usermod -aG docker $USER, then log in again",
        )


def require_compose() -> None:
    if quiet(["docker", "compose", "version"]).returncode != 0:
        raise fail(
            "the Docker Compose plugin is missing",
            f"install it (apt-get install docker-compose-plugin): {COMPOSE_URL}",
        )


def require_engine() -> None:
    """Docker and its Compose plugin, which every lab command drives."""
    require_docker()
    require_compose()


def image_exists(image: str) -> bool:
    return quiet(["docker", "image", "inspect", image]).returncode == 0


def image_tags(image: str) -> list[str]:
    """Every name of the image that image names (its own, its inputs tag), or none."""
    listed = quiet(["docker", "image", "inspect", "--format", "{{json .RepoTags}}", image])
    return sorted(json.loads(listed.stdout)) if listed.returncode == 0 else []


def compose_command(*arguments: str) -> list[str]:
    return [
        "docker",
        "compose",
        "--project-directory",
        str(ROOT),
        "--file",
        str(ROOT / "compose.yaml"),
        *arguments,
    ]


def compose_environment(environment: dict[str, str] | None = None) -> dict[str, str]:
    """What compose.yaml interpolates: this process's environment, the given settings and,
    when no token is configured, the placeholder."""
    env = dict(os.environ, **(environment or {}))
    if not env.get("JUPYTER_TOKEN") and not configured("JUPYTER_TOKEN"):
        env["JUPYTER_TOKEN"] = NO_LAB_TOKEN
    return env


def compose(
    *arguments: str, environment: dict[str, str] | None = None, capture: bool = False
) -> subprocess.CompletedProcess:
    """docker compose on compose.yaml, with the environment it interpolates."""
    env = compose_environment(environment)
    command = compose_command(*arguments)
    return quiet(command, env=env) if capture else run(command, env=env)


def configured(name: str) -> str | None:
    """A setting from the environment, else from .env (where compose also reads it)."""
    if os.environ.get(name):
        return os.environ[name]
    env_file = ROOT / ".env"
    if env_file.exists():
        match = re.search(rf"^{name}=(\S+)$", env_file.read_text(), re.MULTILINE)
        if match:
            return match[1]
    return None


def compose_services() -> dict[str, dict[str, Any]]:
    """Every service of compose.yaml (all profiles), as Compose itself resolves them."""
    result = compose("--profile", "*", "config", "--format", "json", capture=True)
    if result.returncode != 0:
        raise HostError(f"compose.yaml does not resolve: {result.stderr.strip()}")
    return json.loads(result.stdout)["services"]
