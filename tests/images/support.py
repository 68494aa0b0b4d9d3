"""Helpers of the slow tier: docker, tracked containers, labs started like a person does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from torchlab.variants import by_name

REPO = Path(__file__).resolve().parents[2]
# A uid that is neither root nor the image's own 1000: files must still land as the host user.
HOST_UID = 4242
HOST_GID = 4343
TOKEN = "test-token-0123456789abcdef"
COMPOSE_PROJECT = "torchlab-tests"


def docker(
    *arguments: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *arguments], capture_output=True, text=True, check=check, timeout=timeout
    )


def require_image(image: str) -> None:
    if docker("image", "inspect", image, check=False).returncode != 0:
        lab = by_name(image.removeprefix("torchlab:")).lab
        pytest.fail(f"{image} is not built: make build-{lab}", pytrace=False)


@dataclass
class TrackedContainer:
    """Runs containers of an image and removes every one of them at teardown."""

    started: list[str] = field(default_factory=list)

    def run(self, image: str, *command: str, options: tuple[str, ...] = ()) -> str:
        require_image(image)
        result = docker("run", "--detach", *options, image, *command)
        self.started.append(result.stdout.strip())
        return self.started[-1]

    def run_to_end(
        self, image: str, *command: str, options: tuple[str, ...] = (), timeout: float = 600
    ) -> tuple[int, str]:
        """(exit code, output) of a container run to its end."""
        container = self.run(image, *command, options=options)
        code = int(docker("wait", container, timeout=timeout).stdout.strip())
        output = docker("logs", container)
        return code, output.stdout + output.stderr

    def remove_all(self) -> None:
        if self.started:
            docker("rm", "--force", *self.started, check=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Lab:
    """A lab started with the same command a person types: python3 -m torchlab.host up."""

    lab: str
    labs: Path
    port: int
    environment: dict[str, str]

    def host(self, *arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "torchlab.host", *arguments],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=self.environment,
            timeout=600,
        )

    def up(self) -> subprocess.CompletedProcess:
        return self.host("up", self.lab)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, token: str | None = TOKEN, **kwargs) -> tuple[int, str]:
        return request("GET", self.url(path), token, **kwargs)

    @property
    def container(self) -> str:
        listed = subprocess.run(
            [
                "docker",
                "ps",
                "--all",
                "--quiet",
                "--filter",
                f"label=com.docker.compose.project={COMPOSE_PROJECT}",
                "--filter",
                f"label=com.docker.compose.service={by_name(self.lab).service}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return listed.stdout.split()[0]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def request(
    method: str,
    url: str,
    token: str | None,
    body: dict | None = None,
    follow_redirects: bool = True,
) -> tuple[int, str]:
    headers = {"Authorization": f"token {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    opener = (
        urllib.request.build_opener()
        if follow_redirects
        else urllib.request.build_opener(_NoRedirect)
    )
    try:
        with opener.open(
            urllib.request.Request(url, data, headers, method=method), timeout=30
        ) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def make_lab(lab: str, labs: Path) -> Lab:
    port = free_port()
    environment = dict(
        os.environ,
        PYTHONPATH=str(REPO / "src"),
        COMPOSE_PROJECT_NAME=COMPOSE_PROJECT,
        LABS_DIR=str(labs),
        LAB_PORT=str(port),
        LAB_UID=str(HOST_UID),
        LAB_GID=str(HOST_GID),
        JUPYTER_TOKEN=TOKEN,
    )
    return Lab(lab, labs, port, environment)


def wait_until(condition, timeout: float = 60, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False
