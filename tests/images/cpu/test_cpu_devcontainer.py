"""The lab in an editor: the Dev Containers CLI, as VS Code runs it, opens .devcontainer/cpu on
a copy of the checkout, the device is proven inside as the lab's user, and it is removed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support import MANIFEST, REPO, docker, require_image

from torchlab_host.core.checkout import copy_tracked

CLI_FOLDER = REPO / "tools/devcontainer"
CLI = CLI_FOLDER / "node_modules/.bin/devcontainer"
CONFIG = ".devcontainer/cpu/devcontainer.json"
IMAGE_UID = 1000  # the images' own user (docker/Dockerfile)


@pytest.fixture(scope="module")
def cli() -> Path:
    if not CLI.exists():
        installed = subprocess.run(
            ["npm", "ci", "--silent", "--no-audit", "--no-fund", "--prefix", str(CLI_FOLDER)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert installed.returncode == 0, f"npm ci in {CLI_FOLDER}: {installed.stderr[-1000:]}"
    return CLI


@pytest.fixture
def workspace(tmp_path, require) -> Path:
    """A copy of the checkout (no git), as a person's checkout without work/."""
    require(os.getuid() == 0, "root, to create files owned by another uid")
    copy_tracked(tmp_path)
    return tmp_path


def test_the_cpu_dev_container_starts_proves_its_device_and_is_removed(cli, workspace):
    require_image("torchlab:cpu")
    label = f"torchlab-test-devcontainer={os.getpid()}"
    # Run by root, the CLI leaves the lab user at the image's uid (it gives no one uid 0):
    # make prepare makes work/ theirs, as it makes it yours when you run the editor.
    environment = dict(os.environ, LAB_UID=str(IMAGE_UID), LAB_GID=str(IMAGE_UID))
    common = ["--workspace-folder", str(workspace), "--config", str(workspace / CONFIG),
              "--id-label", label]  # fmt: skip
    try:
        up = subprocess.run(
            [str(cli), "up", *common], capture_output=True, text=True, env=environment,
            timeout=600,
        )  # fmt: skip
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        result = json.loads(up.stdout.strip().splitlines()[-1])
        assert result["outcome"] == "success" and result["remoteUser"] == "lab", result
        proven = subprocess.run(
            [str(cli), "exec", *common, "torchlab", "probe", "--expect", "cpu"],
            capture_output=True, text=True, env=environment, timeout=300,
        )  # fmt: skip
        assert proven.returncode == 0, (proven.stdout + proven.stderr)[-3000:]
        # Confined as variants.toml says every lab container is (the file is generated).
        (started,) = docker("ps", "--quiet", "--filter", f"label={label}").stdout.split()
        host = json.loads(docker("inspect", "--format", "{{json .HostConfig}}", started).stdout)
        assert [cap.upper() for cap in host["CapDrop"]] == MANIFEST.containers["cap_drop"]
        assert host["SecurityOpt"] == MANIFEST.containers["security_opt"]
        where = subprocess.run(
            [str(cli), "exec", *common, "bash", "-c", "id -un; pwd; ls"],
            capture_output=True, text=True, env=environment, timeout=120,
        ).stdout.split()  # fmt: skip
        assert where[:2] == ["lab", "/home/lab/labs"]
        # work/ was made from labs/ (no git to tell your files from the course's), and the
        # start brought the course into it; labs/ itself is as it was.
        assert sorted(where[2:]) == sorted(p.name for p in (workspace / "labs").iterdir())
        assert (workspace / "work" / ".torchlab-course.json").stat().st_uid == IMAGE_UID
        assert "torchlab: your work now lives in work/" in up.stdout + up.stderr
    finally:
        started = docker("ps", "--all", "--quiet", "--filter", f"label={label}").stdout.split()
        if started:
            docker("rm", "--force", "--volumes", *started)
        # The CLI derives an image (vsc-<workspace>-...-uid) to give the lab user your uid.
        derived = docker(
            "image", "ls", "--quiet", "--filter", f"reference=vsc-{workspace.name}-*"
        ).stdout.split()
        if derived:
            docker("image", "rm", "--force", *set(derived))
    assert not docker("ps", "--all", "--quiet", "--filter", f"label={label}").stdout.strip()
