"""The real hub gives each GPU server a GPU of its own, on a machine without one: make hub reads
the host's GPUs where it always does (nvidia-smi, here a fake that answers as an HGX H100 server
does, with the NVIDIA Container Toolkit beside it), and the engine the hub drives is reached
through a recording proxy (engine_recorder.py), which keeps each container's create request and
takes its NVIDIA device requests out, so that the servers start here.

The GPU profile is the cuda variant under a name of the test's own (a copy of variants.toml
through TORCHLAB_MANIFEST, as each image reads its own), whose image is torchlab:cpu tagged
for it: the cuda image is neither built here nor needed, and a real torchlab:cuda is never
touched. The hub has a name of its own (HUB_NAME), so no other hub is touched either."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from engine_recorder import EngineRecorder, nvidia
from support import REPO, class_hub, docker, request, require_image, wait_until

from torchlab import variants
from torchlab_host.core.settings import Settings
from torchlab_host.hub.manage import engine_socket
from torchlab_host.image.build import ensure_image
from torchlab_host.image.context import STAGED, inputs_digest, stage
from torchlab_host.image.spec import hub_build, variant_build
from torchlab_host.image.tags import inputs_tag
from torchlab_host.measure.hub_scale import ClassHub

HUB_NAME = "torchlab-hub-gpus-test"
# The cuda variant under the test's name (lower-case letters and digits, as variants.toml wants).
PROFILE = "cudahubtest"
USERS = ["ada", "grace"]
RECORDED = REPO / "tests/host/data/nvidia-smi"
LISTING = RECORDED / "list-eight-h100.txt"
MIG_MODES = RECORDED / "mig-mode-eight-h100.txt"
GPU_LINE = re.compile(r"^GPU \d+: (?P<name>.+) \(UUID: (?P<uuid>GPU-[^)\s]+)\)$", re.MULTILINE)
LABEL = "org.torchlab.gpus"


def fake_host(folder: Path) -> Path:
    """A folder with an nvidia-smi that answers make hub as an HGX H100 server with driver 580
    does (tests/host/data/nvidia-smi/; anything else fails, so a new query is noticed), and
    the NVIDIA Container Toolkit's command, which make hub only looks for."""
    folder.mkdir()
    names = "".join(f"{gpu['name']}, 9.0\n" for gpu in GPU_LINE.finditer(LISTING.read_text()))
    (folder / "names.txt").write_text(names)
    answers = {
        "": RECORDED / "580.txt",
        "-L": LISTING,
        "--query-gpu=name,compute_cap --format=csv,noheader": folder / "names.txt",
        "--query-gpu=uuid,mig.mode.current --format=csv,noheader": MIG_MODES,
    }
    cases = "".join(f"'{asked}') cat {answer};;\n" for asked, answer in answers.items())
    unknown = 'echo "fake nvidia-smi: no recorded answer to: $*" >&2; exit 2'
    scripts = {"nvidia-smi": f'case "$*" in\n{cases}*) {unknown};;\nesac', "nvidia-ctk": "exit 0"}
    for name, script in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{script}\n")
        (folder / name).chmod(0o755)
    return folder


def fake_manifest(path: Path) -> Path:
    """variants.toml with the cuda variant renamed PROFILE: its device, lock and build promises
    (CUDA 13, the H100's sm_90 among its kernels), its image torchlab:PROFILE."""
    text = (REPO / "variants.toml").read_text()
    renamed, count = re.subn(
        r"^\[variants\.cuda([.\]])", rf"[variants.{PROFILE}\1", text, flags=re.M
    )
    assert count == 2, "variants.toml's cuda tables moved: update fake_manifest"
    path.write_text(renamed)
    assert variants.load(path).variant(PROFILE).device == "cuda"
    return path


@pytest.fixture
def gpu_profile_image(tmp_path):
    """torchlab:cpu under the names make hub looks for as PROFILE's image (the inputs tag of this
    checkout's PROFILE build, as the hub process will compute it), removed afterwards; yields
    the environment that makes make hub see it."""
    require_image("torchlab:cpu")
    environment = dict(os.environ, TORCHLAB_MANIFEST=str(fake_manifest(tmp_path / "variants.toml")))
    manifest = variants.load(Path(environment["TORCHLAB_MANIFEST"]))
    build = variant_build(manifest.variant(PROFILE), manifest, Settings.load(environment))
    assert build.image == f"torchlab:{PROFILE}" != "torchlab:cuda"
    tags = [inputs_tag(build.image, inputs_digest(build, stage(build))), build.image]
    docker("tag", "torchlab:cpu", tags[0])
    yield environment
    docker("image", "rm", *tags, check=False)  # names only: torchlab:cpu keeps the image
    shutil.rmtree(STAGED / PROFILE, ignore_errors=True)


@pytest.fixture
def engine(tmp_path):
    """The recorder, in front of the engine make hub would drive otherwise."""
    with EngineRecorder(tmp_path / "engine.sock", engine_socket()) as recorder:
        yield recorder
    assert recorder.failures == []


@pytest.fixture
def hub(tmp_path, gpu_profile_image, engine):
    """make hub with PROFILE alone, on the fake GPU host, driving the engine through the
    recorder (DOCKER_HOST: its compose commands, and the socket the hub's container mounts)."""
    # The hub's image as make hub ensures it (built only where missing, as in a fresh CI
    # job), before the engine is reached through the recorder: what goes through it is the hub.
    manifest = variants.load(Path(gpu_profile_image["TORCHLAB_MANIFEST"]))
    ensure_image(hub_build(manifest, Settings.load(gpu_profile_image)), manifest)
    with class_hub(
        HUB_NAME,
        gpu_profile_image,
        DOCKER_HOST=f"unix://{engine.path}",
        PATH=f"{fake_host(tmp_path / 'bin')}:{os.environ['PATH']}",
        HUB_PROFILES=PROFILE,
    ) as (started, printed):
        assert "8 GPUs to hand out, 1 per server" in printed, printed
        yield started


def start(hub: ClassHub, user: str) -> tuple[int, str]:
    """Add a user and start their server with the GPU profile, as the class's scripts do."""
    api = f"http://127.0.0.1:{hub.port}/hub/api/users/{user}"
    request("POST", api, hub.token, {})
    return request("POST", f"{api}/server", hub.token, {"image": PROFILE}, timeout=120)


def test_two_students_get_a_gpu_each(hub, engine):
    with concurrent.futures.ThreadPoolExecutor(len(USERS)) as pool:  # the same moment
        answers = dict(zip(USERS, pool.map(lambda user: start(hub, user), USERS), strict=True))
    assert all(status in (201, 202) for status, _ in answers.values()), answers
    ready = wait_until(
        lambda: all(hub.servers().get(user, {}).get("ready") for user in USERS), 180, 1
    )
    log = docker("logs", HUB_NAME)
    assert ready, (hub.servers(), (log.stdout + log.stderr)[-3000:])

    listed = [gpu["uuid"] for gpu in GPU_LINE.finditer(LISTING.read_text())]
    given = {}
    for user in USERS:
        container = f"{HUB_NAME}-user-{user}"
        [created] = [made.config for made in engine.created if made.name == container]
        [asked] = [wanted for wanted in created["HostConfig"]["DeviceRequests"] if nvidia(wanted)]
        assert asked["Driver"] == "nvidia" and asked["Capabilities"] == [["gpu"]], asked
        assert not asked.get("Count"), asked  # only the GPUs named, never all of them
        # NVIDIA's limits for many GPUs, from the manifest; the host's IPC namespace never.
        limits = {limit["Name"]: limit["Hard"] for limit in created["HostConfig"]["Ulimits"]}
        assert limits == {"memlock": -1, "stack": 67108864}, limits
        assert created["HostConfig"].get("IpcMode") in (None, "", "private", "shareable")
        [given[user]] = asked["DeviceIDs"]
        labels = docker("inspect", "--format", "{{json .Config.Labels}}", container)
        assert json.loads(labels.stdout)[LABEL] == given[user]
    assert given["ada"] != given["grace"] and {*given.values()} <= {*listed}, given
    said = log.stdout + log.stderr
    assert "Traceback" not in said
    assert "unhandled user_options" not in said  # the profile's image was applied, and known
