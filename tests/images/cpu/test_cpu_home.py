"""What a person makes their lab theirs with lives in the lab's home, and the home is kept: a
JupyterLab setting and a workspace (through the server's REST API, as JupyterLab saves them), a
kernel they add and their git identity are there again after make down and make lab-cpu, and
after a hub user's server stops and starts. The image's own kernel and Jupyter settings are not
in the home, so a kept home never hides a newer image's."""

from __future__ import annotations

import json
import os

import pytest
from support import (
    HOST_GID,
    HOST_UID,
    TOKEN,
    class_hub,
    docker,
    request,
    require_image,
    run_in_kernel,
    server_token,
)

THEME = "/lab/api/settings/@jupyterlab/apputils-extension:themes"
WORKSPACE = "/lab/api/workspaces/mine"
# What a person does in a notebook to make the lab theirs: a kernel of their own (ipykernel's
# own command, into the user's Jupyter folder in the home) and their git identity.
MAKE_IT_MINE = (
    "import subprocess\n"
    "for command in (['python', '-m', 'ipykernel', 'install', '--user', '--name', 'mine',\n"
    "                 '--display-name', 'My kernel'],\n"
    "                ['git', 'config', '--global', 'user.name', 'Ada Lovelace']):\n"
    "    subprocess.run(command, check=True, capture_output=True)\n"
    "print('done')\n"
)
GIT_NAME = (
    "import subprocess\n"
    "print(subprocess.run(['git', 'config', '--global', 'user.name'], capture_output=True,\n"
    "                     text=True).stdout.strip())\n"
)


def make_it_mine(base: str, token: str) -> None:
    """Dark theme, a workspace with a file open, a kernel and a git name: as a person would."""
    status, body = request("PUT", base + THEME, token, {"raw": '{"theme": "JupyterLab Dark"}'})
    assert status == 204, body
    workspace = {"data": {"layout-restorer:data": {"main": {"current": "editor:notes.md"}}},
                 "metadata": {"id": "mine"}}  # fmt: skip
    status, body = request("PUT", base + WORKSPACE, token, workspace)
    assert status == 204, body
    assert run_in_kernel(base, token, MAKE_IT_MINE).strip() == "done"


def assert_it_is_mine(base: str, token: str) -> None:
    status, body = request("GET", base + THEME, token)
    assert status == 200, body
    assert json.loads(body)["settings"]["theme"] == "JupyterLab Dark"
    status, body = request("GET", base + WORKSPACE, token)
    assert status == 200, body
    assert json.loads(body)["data"]["layout-restorer:data"]["main"]["current"] == "editor:notes.md"
    status, body = request("GET", base + "/api/kernelspecs", token)
    kernels = json.loads(body)
    assert kernels["kernelspecs"]["mine"]["spec"]["display_name"] == "My kernel", kernels
    # The image's own kernel is still the default, and still the image's locked environment.
    assert kernels["default"] == "python3"
    assert run_in_kernel(base, token, "import sys\nprint(sys.prefix)\n").strip() == "/opt/venv"
    assert run_in_kernel(base, token, GIT_NAME).strip() == "Ada Lovelace"


def test_a_labs_settings_workspace_kernel_and_git_identity_outlive_make_down(lab_cpu):
    started = lab_cpu.up()
    assert started.returncode == 0, started.stderr
    base = lab_cpu.url("").rstrip("/")
    status, body = request("GET", base + THEME, TOKEN)
    assert status == 200 and json.loads(body)["settings"] == {}, body
    make_it_mine(base, TOKEN)
    assert lab_cpu.host("down").returncode == 0
    started = lab_cpu.up()
    assert started.returncode == 0, started.stderr
    assert_it_is_mine(base, TOKEN)
    # In the home on the host (lab-data/home), the lab user's, as every file the lab writes.
    home = lab_cpu.labs.parent / "lab-data/home"
    settings = ".jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    for kept in (".gitconfig", ".local/share/jupyter/kernels/mine/kernel.json",
                 f"{settings}/themes.jupyterlab-settings"):  # fmt: skip
        status = (home / kept).stat()
        assert (status.st_uid, status.st_gid) == (HOST_UID, HOST_GID), kept
    # A new home got the shell's start files, as a new user does.
    assert (home / ".bashrc").is_file()


HUB_NAME = "torchlab-hub-home-test"
ADA = "ada"


@pytest.fixture
def hub(require):
    require(os.getuid() == 0, "root, for the hub's engine")
    require_image("torchlab:cpu")
    with class_hub(HUB_NAME) as (started, _):
        yield started


def test_a_hub_users_settings_workspace_kernel_and_git_identity_outlive_their_server(hub):
    _, failed = hub.start_at_once([ADA], timeout=300)
    assert failed == {}, failed
    base = f"http://127.0.0.1:{hub.port}/user/{ADA}"
    make_it_mine(base, server_token(f"{HUB_NAME}-user-{ADA}"))
    hub.stop([ADA])
    _, failed = hub.start_at_once([ADA], timeout=300)
    assert failed == {}, failed
    assert_it_is_mine(base, server_token(f"{HUB_NAME}-user-{ADA}"))
    volumes = docker("volume", "ls", "--quiet", "--filter", f"name=^{HUB_NAME}-{ADA}-").stdout
    assert f"{HUB_NAME}-{ADA}-home" in volumes.split()
