"""The lab without root or Docker: a user who is neither root nor in the docker group, with
rootless Podman started as that user, drives make image-load, make lab-cpu, make test-cpu and
make down through Podman's Docker-compatible socket (DOCKER_HOST), as Podman's docs tell Docker
users; the files the lab saves are that user's. And GPUs through CDI: Podman 4.3's Docker API
drops them, so make lab-cuda refuses in one line, with the spec this test writes (a harmless
device node and an environment variable as nvidia.com/gpu=all) or without.

The user, its subordinate ids, its runtime folder and what this VM needs before rootless Podman
works (docs/podman.md) are made here and undone afterwards, whatever the outcome."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from support import (
    CDI_SPEC,
    CDI_SPEC_TEXT,
    MANIFEST,
    REPO,
    TOKEN,
    Lab,
    free_port,
    one_line_failure,
    save_notebook,
    wait_until,
    write_gpu_host_tools,
)

USER = "torchlab-rootless"
# Subordinate ids for the user's namespace: 65536 of them, as useradd gives a new user.
SUBORDINATE = "3000000-3065535"
# This VM's hard limits (Podman's default would ask for more), crun 1.8.1's refusal of the
# hybrid cgroup layout here, and overlay instead of the vfs driver (a copy per layer): the
# user's own configuration, as docs/podman.md says.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""
STORAGE_CONF = '[storage]\ndriver = "overlay"\n'


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def must(*command: str, **kwargs) -> str:
    done = run(*command, **kwargs)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


class RootlessUser:
    """The user, its copy of the checkout, and running commands as it with rootless Podman."""

    def __init__(self) -> None:
        entry = pwd.getpwnam(USER)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)
        self.runtime = Path(f"/run/user/{self.uid}")
        self.socket = self.runtime / "podman" / "podman.sock"
        self.checkout = self.home / "torchlab"
        self.tools = self.home / "tools"

    def environment(self, **more: str) -> dict[str, str]:
        passed = {
            name: os.environ[name]
            for name in ("BASE_IMAGE", "TORCHLAB_WITHOUT", "LANG")
            if name in os.environ
        }
        return {
            "HOME": str(self.home),
            "USER": USER,
            "PATH": f"{self.tools}:/usr/local/bin:/usr/bin:/bin",
            "XDG_RUNTIME_DIR": str(self.runtime),
            "DOCKER_HOST": f"unix://{self.socket}",
            **passed,
            **more,
        }

    def command(self, *command: str, **environment: str) -> list[str]:
        variables = [f"{name}={value}" for name, value in self.environment(**environment).items()]
        return ["runuser", "-u", USER, "--", "env", "-i", *variables, *command]

    def run(self, *command: str, timeout: float = 600, **environment: str):
        return subprocess.run(
            self.command(*command, **environment),
            cwd=self.checkout, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def make(self, *arguments: str, **environment: str) -> subprocess.CompletedProcess:
        return self.run("make", *arguments, **environment)


def add_user() -> None:
    must("useradd", "--create-home", "--shell", "/bin/bash", USER)
    must("usermod", "--add-subuids", SUBORDINATE, "--add-subgids", SUBORDINATE, USER)


def remove_user(user: RootlessUser | None) -> None:
    run("pkill", "--uid", USER)
    if user is not None:
        time.sleep(1)
        run("pkill", "--signal", "KILL", "--uid", USER)
        # Podman's storage holds files of the subordinate ids, which userdel -r cannot remove.
        shutil.rmtree(user.home, ignore_errors=True)
        shutil.rmtree(user.runtime, ignore_errors=True)
    run("userdel", "--remove", USER)
    for listing in ("/etc/subuid", "/etc/subgid"):
        lines = Path(listing).read_text().splitlines(keepends=True)
        Path(listing).write_text("".join(line for line in lines if not line.startswith(f"{USER}:")))


def copy_checkout(target: Path) -> None:
    """The checkout as the user would clone it: its files (tracked, and new ones not ignored)."""
    listed = must("git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                  "--exclude-standard")  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def host_prerequisites(require):
    """What rootless Podman needs of this VM, as it was found, put back afterwards: the tun
    device for slirp4netns, and / as a shared mount (Podman's rootless network namespace)."""
    for tool in ("podman", "newuidmap", "slirp4netns", "runuser"):
        require(
            shutil.which(tool) is not None, f"{tool} (apt-get install podman uidmap slirp4netns)"
        )
    require(os.getuid() == 0, "root, to create a user and its subordinate ids")
    tun = Path("/dev/net/tun")
    mode = stat.S_IMODE(tun.stat().st_mode)
    propagation = must("findmnt", "--noheadings", "--output", "PROPAGATION", "/").strip()
    tun.chmod(0o666)
    must("mount", "--make-rshared", "/")
    yield
    tun.chmod(mode)
    if propagation == "private":
        must("mount", "--make-rprivate", "/")


@pytest.fixture(scope="module")
def rootless(host_prerequisites):
    """The user, with rootless Podman's service listening on its socket and the cpu image
    saved by root (make image-save) and loaded by the user (make image-load)."""
    remove_user(None)  # a run that was killed may have left it
    add_user()
    user = None
    service = None
    try:
        user = RootlessUser()
        (user.runtime / "podman").mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (user.runtime, user.runtime / "podman"):
            folder.chmod(0o700)
            os.chown(folder, user.uid, user.gid)
        config = user.home / ".config" / "containers"
        config.mkdir(parents=True)
        (config / "containers.conf").write_text(CONTAINERS_CONF)
        (config / "storage.conf").write_text(STORAGE_CONF)
        user.tools.mkdir()
        copy_checkout(user.checkout)
        must("chown", "--recursive", f"{user.uid}:{user.gid}", str(user.home))
        service = subprocess.Popen(
            user.command("podman", "system", "service", "--time=0", f"unix://{user.socket}"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert wait_until(user.socket.exists, timeout=60), service.stderr.read()
        archive = user.home / "torchlab-cpu.tar.gz"  # made elsewhere, and handed over
        must("make", "image-save", "VARIANT=cpu", f"FILE={archive}", cwd=REPO)
        for path in (archive, archive.with_name(archive.name + ".sha256")):
            os.chown(path, user.uid, user.gid)
        loaded = user.make("image-load", f"FILE={archive}")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        archive.unlink()
        yield user
    finally:
        if user is not None:
            user.make("down")
        if service is not None:
            service.terminate()
            service.wait(timeout=30)
        remove_user(user)


def test_the_engine_is_named_rootless_podman(rootless):
    named = rootless.run("python3", "-m", "torchlab_host", "engine", PYTHONPATH="src")
    assert named.returncode == 0, named.stderr
    assert named.stdout.startswith("engine: Podman 4."), named.stdout
    assert ", rootless, GPUs as CDI devices (its Docker API drops them before Podman 5.5)" in (
        named.stdout
    )


def test_a_lab_under_rootless_podman_saves_the_users_own_files(rootless):
    port = free_port()
    lab = Lab("cpu", rootless.checkout / "work", port, {}, rootless.checkout)
    env_file = rootless.checkout / ".env"  # the user's own, its token the one make lab reads
    env_file.write_text(f"JUPYTER_TOKEN={TOKEN}\n")
    env_file.chmod(0o600)
    os.chown(env_file, rootless.uid, rootless.gid)
    started = rootless.make("lab-cpu", LAB_PORT=str(port))
    assert started.returncode == 0, started.stdout + started.stderr
    assert "building" not in started.stdout  # the loaded image's inputs tag was found
    assert f"is ready at http://127.0.0.1:{port}/lab?token={TOKEN}" in started.stdout
    assert lab.get("/api/status")[0] == 200
    assert lab.get("/api/contents", token=None)[0] == 403
    save_notebook(lab, "saved-rootless.ipynb", "saved by a lab under rootless Podman")
    saved = rootless.checkout / "work" / "saved-rootless.ipynb"
    assert (saved.stat().st_uid, saved.stat().st_gid) == (rootless.uid, rootless.gid)
    for kept in ("lab-data", "lab-data/home", ".env"):
        assert (rootless.checkout / kept).stat().st_uid == rootless.uid, kept
    assert stat.S_IMODE((rootless.checkout / ".env").stat().st_mode) == 0o600
    stopped = rootless.make("down")
    assert stopped.returncode == 0, stopped.stderr
    listed = rootless.run("docker", "ps", "--all", "--quiet")
    assert listed.returncode == 0 and listed.stdout.strip() == ""


def test_the_cpu_suite_passes_in_podman(rootless):
    tested = rootless.make("test-cpu", "SUITE=-ktest_tensors")
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr
    assert " passed" in tested.stdout


@pytest.fixture
def gpu_host(rootless):
    """A GPU host to make lab-cuda's host check (nvidia-smi, the toolkit), and the cpu image
    under the cuda image's name in the user's Podman: what is tested here is how the engine
    hands the lab's container its devices, not CUDA."""
    write_gpu_host_tools(rootless.tools)
    cuda = MANIFEST.variant("cuda").image
    tagged = rootless.run("docker", "tag", MANIFEST.variant("cpu").image, cuda)
    assert tagged.returncode == 0, tagged.stderr
    yield cuda
    CDI_SPEC.unlink(missing_ok=True)
    rootless.run("docker", "image", "rm", cuda)


def start_gpu_lab(user: RootlessUser) -> subprocess.CompletedProcess:
    """make lab-cuda's command, without make's own line after a failure."""
    return user.run("python3", "-m", "torchlab_host", "lab", "cuda", PYTHONPATH="src",
                    LAB_PORT=str(free_port()), JUPYTER_TOKEN=TOKEN)  # fmt: skip


def test_a_gpu_lab_is_refused_where_podman_would_drop_its_cdi_devices(rootless, gpu_host):
    """Podman 4.3 through its Docker-compatible socket starts a container without the CDI
    devices compose asks for (a lab-cuda started here had neither the spec's device node nor
    its variable; Podman passes them on from 5.5): make lab-cuda says so in one line, with a
    spec or without, and starts nothing."""
    refusals = [one_line_failure(start_gpu_lab(rootless))]
    CDI_SPEC.parent.mkdir(exist_ok=True)
    CDI_SPEC.write_text(CDI_SPEC_TEXT)
    refusals.append(one_line_failure(start_gpu_lab(rootless)))
    for line in refusals:
        assert "Podman 4.3.1's Docker API drops the CDI devices compose asks for" in line
        assert "would start without its GPUs. Fix: upgrade Podman to 5.5 or later" in line
    listed = rootless.run("docker", "ps", "--all", "--quiet")
    assert listed.returncode == 0 and listed.stdout.strip() == ""
    # What compose sends a CDI engine is the CDI device, not device requests:
    merged = rootless.run(
        "docker", "compose", "--file", "compose.yaml", "--file", "compose.cdi.yaml",
        "config", "--format", "json", JUPYTER_TOKEN=TOKEN,
    )  # fmt: skip
    config = json.loads(merged.stdout)
    assert "deploy" not in config["services"]["lab-cuda"]
    assert config["services"]["lab-cuda"]["devices"][0]["source"] == "nvidia.com/gpu=all"
