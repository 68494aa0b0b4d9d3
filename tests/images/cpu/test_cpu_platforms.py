"""One name, two platforms, in a real registry: make publish pushes the cpu image of each
platform it ships for (another platform's built here under emulation) and one manifest list
over them to Debian's docker-registry on 127.0.0.1; with the local images gone, the name pulled
here is this machine's platform, and the same name run with --platform linux/arm64 imports
torch under QEMU. Run by make test-platforms-cpu, after make build-cpu for every platform."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from support import MANIFEST, REPO, docker

from torchlab.variants import MACHINES, this_platform
from torchlab_host.core.settings import Settings
from torchlab_host.image import emulation, publish

pytestmark = pytest.mark.platforms
CPU = MANIFEST.variant("cpu")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def local_registry(tmp_path, require):
    """Debian's docker-registry on 127.0.0.1 (no systemd starts it here), storing in tmp_path;
    its address."""
    binary = shutil.which("docker-registry")
    require(binary is not None, "Debian's docker-registry (apt-get install docker-registry)")
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
        f"http:\n  addr: {address}\n"
    )
    with subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as server:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=2).close()
                break
            except (urllib.error.URLError, OSError):
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "docker-registry did not answer in 30 s"
                time.sleep(0.5)
        yield address
        server.terminate()


def architecture(image: str) -> str:
    return docker("image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", image).stdout.strip()


def test_one_name_gives_each_platform_its_own_cpu_image(local_registry, require, tmp_path):
    settings = Settings.load()
    local = publish.platform_images(CPU, MANIFEST, settings)  # platform -> its inputs tag
    built = {platform: docker("image", "inspect", tag, check=False).returncode == 0
             for platform, tag in local.items()}  # fmt: skip
    require(all(built.values()), f"the cpu image for every platform ({built}): make build-cpu "
            f"PLATFORM=... for {', '.join(p for p, b in built.items() if not b)}")  # fmt: skip
    ids = {platform: docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
           for platform, tag in local.items()}  # fmt: skip

    # make publish VARIANT=cpu, its SBOM written here rather than into the checkout.
    published = subprocess.run(
        [sys.executable, "-m", "torchlab_host", "publish", "cpu",
         "--sbom", str(tmp_path / "sbom.cdx.json")],
        cwd=REPO, env=dict(os.environ, TORCHLAB_REGISTRY=local_registry),
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert published.returncode == 0, published.stdout[-2000:] + published.stderr[-2000:]
    name = f"{local_registry}/torchlab:cpu"
    listed = docker("manifest", "inspect", "--insecure", name).stdout
    for platform in local:
        assert f'"architecture": "{platform.split("/")[1]}"' in listed, listed

    # Without a local copy of either, each platform comes from the registry alone: every name
    # of each image goes (torchlab:cpu is the last platform built), so nothing is left to reuse.
    pushed = [f"{local_registry}/{tag}" for tag in local.values()]
    docker("image", "rm", *pushed)
    docker("image", "rm", "--force", *ids.values())
    for platform, image_id in ids.items():
        assert docker("image", "inspect", image_id, check=False).returncode != 0, platform
    try:
        docker("pull", name, timeout=1200)
        assert architecture(name) == this_platform()
        for platform in (p for p in local if p != this_platform()):
            docker("pull", "--platform", platform, name, timeout=1200)
            assert architecture(name) == platform
            ran = docker(
                "run", "--rm", "--platform", platform,
                *(f"--env={k}={v}" for k, v in emulation.emulated_environment(platform).items()),
                name, "python", "-c",
                "import platform, torch, torchvision; print(platform.machine(), torch.__version__)",
                timeout=1200,
            )  # fmt: skip
            said = ran.stdout.strip().splitlines()[-1]
            release = CPU.platforms[platform].torch
            assert said.startswith(f"{MACHINES[platform]} {release}"), ran.stdout + ran.stderr
    finally:
        # Back as they were: each platform's image under its inputs tag (the pulls brought the
        # same images back, by content).
        for platform, tag in local.items():
            docker("pull", "--platform", platform, name, timeout=1200)
            docker("tag", name, tag)
            assert (
                docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
                == (ids[platform])
            )
        docker("tag", local[this_platform()], CPU.image)
        # The registry's references go with it (its name, and the digests pulls recorded).
        listed = docker("image", "ls", "--digests", "--format", "{{.Repository}}@{{.Digest}}")
        ours = [ref for ref in listed.stdout.split() if ref.startswith(f"{local_registry}/")]
        docker("image", "rm", name, *ours, check=False)
