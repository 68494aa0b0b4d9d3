"""Each image on its own: labels, size, user, and a loud failure when its device is missing."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from support import REPO, docker, require_image

from torchlab.variants import VARIANTS

# The ceilings for the uncompressed image (the benchmark sets tighter goals).
SIZE_LIMIT_GB = {"cpu": 1.8, "cuda": 6.0}


def inspect(image: str) -> dict:
    require_image(image)
    return json.loads(docker("image", "inspect", image).stdout)[0]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda variant: variant.name)
def test_labels_name_the_variant_torch_and_lock(variant):
    labels = inspect(variant.image)["Config"]["Labels"]
    lock_text = "".join(
        (REPO / "requirements" / f"{name}.txt").read_text() for name in ("lab", variant.name)
    )
    torch_pin = re.search(r"^torch==(\S+)", lock_text, re.M)[1]
    assert labels["org.torchlab.variant"] == variant.name
    assert labels["org.torchlab.torch"] == torch_pin
    assert labels["org.torchlab.lock.sha256"] == hashlib.sha256(lock_text.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels["org.opencontainers.image.revision"])
    for lock in labels["org.torchlab.lock"].split():
        assert docker("run", "--rm", variant.image, "test", "-s", lock, check=False).returncode == 0


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_image_size_is_within_its_ceiling(variant):
    size_gb = inspect(f"torchlab:{variant}")["Size"] / 1e9
    assert size_gb <= SIZE_LIMIT_GB[variant], f"torchlab:{variant} is {size_gb:.2f} GB"


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda variant: variant.name)
def test_runs_as_a_non_root_user_with_a_healthcheck(variant):
    config = inspect(variant.image)["Config"]
    assert config["User"] == "1000:1000"
    assert config["Healthcheck"]["Test"] == ["CMD", "torchlab", "healthcheck"]
    uid = docker("run", "--rm", variant.image, "id", "-u").stdout.strip()
    assert uid == "1000"


def test_the_cpu_image_probes_without_a_checkout(container):
    code, output = container.run_to_end("torchlab:cpu", "torchlab", "probe", "--json")
    assert code == 0, output
    report = json.loads(output[output.index("{") :])
    assert report["backends"]["cpu"]["usable"] and report["container"]["in_container"]
    assert report["container"]["environment"]["TORCHLAB_EXPECT"] == "cpu"


def test_the_cuda_image_without_gpu_access_fails_loudly(container):
    code, output = container.run_to_end("torchlab:cuda", "torchlab", "probe", "--no-smoke")
    assert code == 1
    last = output.strip().splitlines()[-1]
    assert last.startswith("torchlab: expected cuda, but no NVIDIA driver is visible")
    assert "NVIDIA Container Toolkit" in last


def test_the_xla_image_without_a_tpu_fails_loudly_instead_of_hanging(container):
    code, output = container.run_to_end(
        "torchlab:xla",
        "torchlab",
        "probe",
        "--no-smoke",
        options=("--env", "PJRT_DEVICE=TPU"),
        timeout=120,
    )
    assert code == 1
    assert (
        output.strip()
        .splitlines()[-1]
        .startswith("torchlab: expected xla, but no TPU found on this machine (PJRT_DEVICE=TPU)")
    )


def test_the_xla_image_refuses_to_guess_a_device(container):
    code, output = container.run_to_end("torchlab:xla", "torchlab", "probe", "--no-smoke")
    assert code == 1 and "PJRT_DEVICE is not set" in output


def test_a_small_shm_is_reported_by_the_probe(container):
    code, output = container.run_to_end(
        "torchlab:cpu", "torchlab", "probe", "--no-smoke", options=("--shm-size", "64m")
    )
    assert code == 0
    assert "/dev/shm is 64.0 MiB: DataLoader workers crash below 1.0 GiB" in output
