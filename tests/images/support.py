"""Helpers of the slow tier: docker, tracked containers, labs started like a person does."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from torchlab import variants
from torchlab_host.core.addresses import free_loopback_port as free_port
from torchlab_host.core.engine import problem_lines
from torchlab_host.measure.hub_scale import ClassHub

REPO = Path(__file__).resolve().parents[2]
MANIFEST = variants.load()
# A uid that is neither root nor the image's own 1000: files must still land as the host user.
HOST_UID = 4242
HOST_GID = 4343
TOKEN = "test-token-0123456789abcdef"
COMPOSE_PROJECT = "torchlab-tests"
CHROMIUM = Path(os.environ.get("CHROMIUM") or "/usr/bin/chromium")
# Headless on a machine with no network beyond the lab: no sandbox (root), no background calls.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def docker(
    *arguments: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *arguments], capture_output=True, text=True, check=check, timeout=timeout
    )


def require_image(image: str) -> None:
    if docker("image", "inspect", image, check=False).returncode != 0:
        name = image.removeprefix("torchlab:")
        pytest.fail(f"{image} is not built: make build-{name}", pytrace=False)


@dataclass
class TrackedContainer:
    """Runs containers of an image, fails on warnings and errors in their logs, and removes
    every one of them at teardown."""

    started: list[str] = field(default_factory=list)

    def run(self, image: str, *command: str, options: tuple[str, ...] = ()) -> str:
        require_image(image)
        result = docker("run", "--detach", *options, image, *command)
        self.started.append(result.stdout.strip())
        return self.started[-1]

    def run_to_end(
        self,
        image: str,
        *command: str,
        options: tuple[str, ...] = (),
        timeout: float = 600,
        clean_log: bool = True,
    ) -> tuple[int, str]:
        """(exit code, output) of a container run to its end; with clean_log, its output may
        hold no warning or error line."""
        container = self.run(image, *command, options=options)
        code = int(docker("wait", container, timeout=timeout).stdout.strip())
        logs = docker("logs", container)
        output = logs.stdout + logs.stderr
        if clean_log:
            assert problem_lines(output) == [], output[-3000:]
        return code, output

    def remove_all(self) -> None:
        if self.started:
            docker("rm", "--force", *self.started, check=False)


@dataclass
class Lab:
    """A lab started with the command a person types (make lab-<variant> runs the same)."""

    variant: str
    labs: Path
    port: int
    environment: dict[str, str]
    # The checkout whose host tools start it (another's: a fresh clone).
    checkout: Path = REPO

    def host(self, *arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "torchlab_host", *arguments],
            cwd=self.checkout,
            capture_output=True,
            text=True,
            env=self.environment,
            timeout=600,
        )

    def up(self) -> subprocess.CompletedProcess:
        return self.host("lab", self.variant)

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
                f"label=com.docker.compose.service=lab-{MANIFEST.variant(self.variant).name}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return listed.stdout.split()[0]

    def log(self) -> str:
        logs = docker("logs", self.container)
        return logs.stdout + logs.stderr


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def request(
    method: str,
    url: str,
    token: str | None,
    body: dict | None = None,
    follow_redirects: bool = True,
    timeout: float = 30,
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
            urllib.request.Request(url, data, headers, method=method), timeout=timeout
        ) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def run_in_kernel(
    base_url: str, token: str, code: str, timeout: float = 120, kernel_name: str = "python3"
) -> str:
    """Start a kernel (the image's own, unless named) through a Jupyter server's API, run code
    in it over the kernel's websocket as JupyterLab does, shut it down, and return what it
    printed."""
    status, body = request("POST", f"{base_url}/api/kernels", token, {"name": kernel_name})
    assert status == 201, body
    kernel = json.loads(body)["id"]
    ws_url = base_url.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels?token={token}"
    try:
        # The token in a header as well: JupyterHub's servers take it only there.
        return execute_in_kernel(ws_url, code, {"Authorization": f"token {token}"}, timeout)
    finally:
        request("DELETE", f"{base_url}/api/kernels/{kernel}", token)


def in_lab_terminal(
    base_url: str, token: str, command: str, timeout: float = 300
) -> tuple[int, str]:
    """A shell command as a lab's terminal runs it (in the lab's container, as its user, with
    the server's environment): its exit status, and what it printed."""
    code = (
        "import subprocess\n"
        f"done = subprocess.run({command!r}, shell=True, capture_output=True, text=True)\n"
        "print(done.returncode)\n"
        "print(done.stdout + done.stderr)\n"
    )
    status, _, printed = run_in_kernel(base_url, token, code, timeout=timeout).partition("\n")
    return int(status), printed


def execute_in_kernel(
    ws_url: str, code: str, headers: dict[str, str] | None = None, timeout: float = 120
) -> str:
    """Open a kernel's websocket (ws_url: .../api/kernels/<id>/channels?token=...) with these
    request headers, run code in it as a notebook's cell runs, and return what it printed;
    an error in the cell fails."""
    import asyncio
    import uuid

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    session = uuid.uuid4().hex

    async def execute() -> str:
        connection = await websocket_connect(
            HTTPRequest(f"{ws_url}&session_id={session}", headers=headers or {})
        )
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": session,
            "username": "test",
            "version": "5.3",
            "date": "",
        }
        connection.write_message(
            json.dumps(
                {
                    "header": header,
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                    },
                }
            )
        )
        printed = []
        while True:
            message = json.loads(await connection.read_message())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                raise AssertionError(message["content"]["evalue"])
            elif (
                message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
            ):
                connection.close()
                return "".join(printed)

    return asyncio.run(asyncio.wait_for(execute(), timeout))


@contextlib.contextmanager
def class_hub(name: str, environment: dict[str, str] | None = None, **settings: str):
    """make hub under a name of its own (no other hub is touched), with the cpu profile and an
    API token for the class's scripts; yields the hub and what make hub printed, and leaves
    nothing behind (make hub-down, then every container and volume of that name)."""
    remove_hub(name)
    port, token = free_port(), secrets.token_hex(24)
    hub_environment = {
        **(environment or os.environ),
        "HUB_NAME": name,
        "HUB_ADMIN": "teacher",
        "HUB_PORT": str(port),
        "HUB_PROFILES": "cpu",
        "HUB_API_TOKEN": token,
        "HUB_MEM_LIMIT": "2G",
        "HUB_CPU_LIMIT": "1",
        "HUB_IDLE_TIMEOUT": "3600",
        **settings,
    }

    def host(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "torchlab_host", *arguments],
            cwd=REPO, capture_output=True, text=True, env=hub_environment, timeout=900,
        )  # fmt: skip

    try:
        started = host("hub")
        assert started.returncode == 0, started.stdout + started.stderr
        yield ClassHub(name, port, token), started.stdout
    finally:
        host("hub-down")
        remove_hub(name)


def remove_hub(name: str) -> None:
    """Everything a hub named `name` left: its container, its users' containers, all volumes."""
    found = docker("ps", "--all", "--quiet", "--filter", f"name=^{name}").stdout.split()
    if found:
        docker("rm", "--force", *found, check=False)
    volumes = docker("volume", "ls", "--quiet", "--filter", f"name=^{name}").stdout.split()
    if volumes:
        docker("volume", "rm", "--force", *volumes, check=False)


def server_token(container: str) -> str:
    """The token the hub gave a user's server (its container): it opens that server, and only
    it."""
    listed = docker("inspect", "--format", "{{json .Config.Env}}", container)
    [token] = [value.split("=", 1)[1] for value in json.loads(listed.stdout)
               if value.startswith("JUPYTERHUB_API_TOKEN=")]  # fmt: skip
    return token


def save_notebook(lab: Lab, name: str, text: str) -> None:
    """Save a notebook through Jupyter's contents API, as JupyterLab's Save does."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    status, body = request(
        "PUT",
        lab.url(f"/api/contents/{name}"),
        TOKEN,
        body={
            "type": "notebook",
            "content": json.loads(nbformat.writes(notebook)),
        },
    )
    assert status in (200, 201), body


def make_lab(variant: str, labs: Path) -> Lab:
    port = free_port()
    environment = dict(
        os.environ,
        COMPOSE_PROJECT_NAME=COMPOSE_PROJECT,
        LABS_DIR=str(labs),
        LAB_DATA_DIR=str(labs.parent / "lab-data"),
        LAB_PORT=str(port),
        LAB_UID=str(HOST_UID),
        LAB_GID=str(HOST_GID),
        JUPYTER_TOKEN=TOKEN,
    )
    return Lab(variant, labs, port, environment)


def build_wheel(folder: Path, name: str, version: str = "1.0") -> Path:
    """A small pure-Python wheel, built here: what a lab user might pip install (the labs'
    containers reach no index here, so tests install wheel files)."""
    source = folder / f"{name}-source"
    (source / name).mkdir(parents=True)
    (source / name / "__init__.py").write_text(
        f'"""A package a lab user adds."""\n\n__version__ = "{version}"\n'
    )
    (source / "pyproject.toml").write_text(
        "[build-system]\nrequires = ['flit_core>=3,<5']\nbuild-backend = 'flit_core.buildapi'\n"
        f"[project]\nname = '{name}'\nversion = '{version}'\ndescription = 'test'\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(folder),
            str(source),
        ],
        check=True,
    )
    [wheel] = folder.glob(f"{name}-{version}-*.whl")
    return wheel


def wait_until(condition, timeout: float = 60, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def one_line_failure(result: subprocess.CompletedProcess) -> str:
    """The one line a host command fails with: what is wrong, and the fix."""
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("torchlab: ") and ". Fix: " in line
    return line


# GPUs through CDI, for the engines' tests: a spec under nvidia.com/gpu=all whose device node is
# /dev/null's (harmless) and whose variable says it came through CDI.
CDI_SPEC = Path("/etc/cdi/torchlab-test-gpu.yaml")
CDI_SPEC_TEXT = """cdiVersion: "0.5.0"
kind: nvidia.com/gpu
devices:
  - name: all
    containerEdits:
      deviceNodes:
        - path: /dev/torchlab-test-gpu
          hostPath: /dev/null
      env:
        - TORCHLAB_TEST_GPU=given-through-cdi
"""
# A host with a GPU and its driver, for make lab-cuda's host check, which comes before its
# engine's: nvidia-smi answering as one L4 on driver 580 does, and the toolkit's nvidia-ctk.
NVIDIA_SMI = """#!/bin/sh
case "$*" in
  -L) echo "GPU 0: NVIDIA L4 (UUID: GPU-00000000-0000-0000-0000-000000000000)" ;;
  *driver_version*) echo "580.65.06" ;;
  *compute_cap*) echo "NVIDIA L4, 8.9" ;;
  *) echo "NVIDIA L4, 8.9, 580.65.06" ;;
esac
"""


def write_gpu_host_tools(folder: Path) -> None:
    """nvidia-smi (as NVIDIA_SMI answers) and the toolkit's nvidia-ctk, in folder, for PATH."""
    for name, text in {"nvidia-smi": NVIDIA_SMI, "nvidia-ctk": "#!/bin/sh\n"}.items():
        tool = folder / name
        tool.write_text(text)
        tool.chmod(0o755)
