"""GPUs through CDI on a Docker with CDI on. Debian 12's Docker (20.10) has no CDI, and Podman
4.3's Docker API drops CDI devices, so a second engine runs here beside the system's: Debian 13's
docker.io 26.1, which scripts/install-cdi-docker unpacks (TORCHLAB_CDI_DOCKER names the folder),
with CDI on, on a socket of its own, the cpu image loaded into it under the cuda image's names.
Without a CDI spec make lab-cuda stops with the one line; with the spec this test writes, the GPU
lab's container, as compose.yaml and the generated compose.cdi.yaml define it, has the spec's
device node and variable.

That container runs with its memlock ulimit (unlimited) taken out, for this run alone: this VM's
hard memlock limit is 8 MiB and not even root may raise it, so no engine here can start the GPU
lab as it is (runc: error setting rlimit type 8)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import (
    CDI_SPEC,
    CDI_SPEC_TEXT,
    MANIFEST,
    one_line_failure,
    wait_until,
    write_gpu_host_tools,
)

from torchlab_host import ROOT
from torchlab_host.core.settings import Settings
from torchlab_host.image.context import inputs_digest, stage
from torchlab_host.image.spec import variant_build
from torchlab_host.image.tags import inputs_tag

# Its own bridge and containerd namespaces: "bridge": "none" deletes the main engine's docker0,
# and a shared "moby" namespace would let either engine clean up the other's containers.
BRIDGE = "torchlab-cdi0"
DAEMON_CONFIG = json.dumps({
    "features": {"cdi": True}, "bridge": BRIDGE, "iptables": False, "ip6tables": False,
    "containerd-namespace": "torchlab-cdi", "containerd-plugins-namespace": "torchlab-cdi-plugins",
})  # fmt: skip
# The GPU lab's service as compose.yaml defines it, less what this VM cannot give (above).
WITHOUT_MEMLOCK = "services:\n  lab-cuda:\n    ulimits: !reset {}\n"


@pytest.fixture(scope="module")
def cdi_docker(require, tmp_path_factory):
    """The socket of a Docker 26 with CDI on, holding the cpu image as the cuda image."""
    folder = Path(os.environ.get("TORCHLAB_CDI_DOCKER", "/nonexistent"))
    require(
        (folder / "usr/sbin/dockerd").is_file(),
        "TORCHLAB_CDI_DOCKER, a folder with a Docker that takes CDI (sudo "
        "scripts/install-cdi-docker FOLDER)",
    )
    require(os.geteuid() == 0, "root, to start a second Docker engine")
    state = tmp_path_factory.mktemp("cdi-docker")
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], capture_output=True)
    (state / "daemon.json").write_text(DAEMON_CONFIG)
    host = f"unix://{state}/docker.sock"
    path = f"{folder}/usr/sbin:{folder}/usr/bin:{os.environ['PATH']}"
    with open(state / "dockerd.log", "w") as log:
        daemon = subprocess.Popen(
            [f"{folder}/usr/sbin/dockerd", "--config-file", f"{state}/daemon.json",
             "--data-root", f"{state}/data", "--exec-root", f"{state}/exec",
             "--pidfile", f"{state}/dockerd.pid", "--host", host],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PATH=path),
        )  # fmt: skip
    engine = dict(os.environ, DOCKER_HOST=host)
    try:

        def answers() -> bool:
            info = subprocess.run(["docker", "info"], env=engine, capture_output=True)
            return info.returncode == 0

        assert wait_until(answers, timeout=60), (state / "dockerd.log").read_text()[-2000:]
        cpu, cuda = MANIFEST.variant("cpu"), MANIFEST.variant("cuda")
        saved = subprocess.Popen(["docker", "save", cpu.image], stdout=subprocess.PIPE)
        loaded = subprocess.run(["docker", "load"], stdin=saved.stdout, env=engine,
                                capture_output=True, text=True)  # fmt: skip
        assert saved.wait() == 0 and loaded.returncode == 0, loaded.stderr
        build = variant_build(cuda, MANIFEST, Settings.load(dict(os.environ), ROOT / ".env"))
        for name in (inputs_tag(cuda.image, inputs_digest(build, stage(build))), cuda.image):
            subprocess.run(["docker", "tag", cpu.image, name], env=engine, check=True)
        yield engine
    finally:
        CDI_SPEC.unlink(missing_ok=True)
        subprocess.run(["docker", "compose", "down", "--remove-orphans"], env=engine,
                       cwd=ROOT, capture_output=True)  # fmt: skip
        daemon.terminate()
        daemon.wait(timeout=60)
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def gpu_host(cdi_docker, tmp_path):
    """The engine's environment with a GPU host's tools (nvidia-smi, the toolkit) first on PATH:
    what is tested is how the engine hands the lab's container its devices, not CUDA."""
    write_gpu_host_tools(tmp_path)
    return dict(cdi_docker, PATH=f"{tmp_path}:{cdi_docker['PATH']}", LAB_UID="1000",
                LAB_GID="1000")  # fmt: skip


def test_the_engine_is_named_docker_with_gpus_through_cdi(cdi_docker):
    named = subprocess.run([sys.executable, "-m", "torchlab_host", "engine"], env=cdi_docker,
                           cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert named.returncode == 0, named.stderr
    assert named.stdout.startswith("engine: Docker 26."), named.stdout
    assert ", rootful, GPUs as CDI devices, at unix://" in named.stdout


def test_the_gpu_labs_container_gets_the_cdi_specs_device_and_variable(gpu_host, tmp_path):
    CDI_SPEC.unlink(missing_ok=True)
    refused = subprocess.run([sys.executable, "-m", "torchlab_host", "lab", "cuda"], env=gpu_host,
                             cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    line = one_line_failure(refused)
    assert "Docker takes GPUs as CDI devices, and no CDI spec in /etc/cdi or /var/run/cdi " in line
    assert line.endswith(
        "Fix: write one: sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
    )

    CDI_SPEC.parent.mkdir(exist_ok=True)
    CDI_SPEC.write_text(CDI_SPEC_TEXT)
    for folder in ("work", "lab-data/home"):  # what make lab-cuda makes before compose
        (ROOT / folder).mkdir(parents=True, exist_ok=True)
    override = tmp_path / "compose.without-memlock.yaml"
    override.write_text(WITHOUT_MEMLOCK)
    looked = subprocess.run(
        ["docker", "compose", "--file", "compose.yaml", "--file", "compose.cdi.yaml",
         "--file", str(override), "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh",
         "lab-cuda", "-c",
         'test -c /dev/torchlab-test-gpu && echo "node: yes"; echo "variable: $TORCHLAB_TEST_GPU"'],
        env=dict(gpu_host, JUPYTER_TOKEN="cdi-test"), cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert looked.returncode == 0, looked.stderr
    assert "node: yes" in looked.stdout.splitlines()
    assert "variable: given-through-cdi" in looked.stdout.splitlines()
