"""What a GPU container is started with for many GPUs (NVIDIA's --ipc=host, unlimited memlock,
a 64 MB stack) comes from the manifest's [devices.cuda.compose], and every place that starts
one carries it: compose's labs and suites, the hub's servers (the limits, not the host's IPC),
the dev containers. And the Debian packages a build installs are the manifest's."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from torchlab import variants
from torchlab_host.core.settings import Settings
from torchlab_host.image.spec import variant_build
from torchlab_host.lab.containers import host_config, run_flags
from torchlab_host.manifest import generate

MANIFEST = variants.load()
CUDA = MANIFEST.variant("cuda")


def test_the_cuda_device_block_asks_for_host_ipc_unlimited_memlock_and_a_64_mb_stack():
    assert CUDA.compose["ipc"] == "host"
    assert CUDA.compose["ulimits"] == {"memlock": -1, "stack": 64 * 2**20}


def test_compose_gives_the_gpu_labs_and_suites_the_manifests_settings_and_the_cpu_twins_none():
    services = yaml.safe_load(generate.compose(MANIFEST))["services"]
    for variant in MANIFEST.variants:
        if variant.device != "cuda":
            continue
        for name in (f"lab-{variant.name}", f"test-{variant.name}"):
            assert services[name]["ipc"] == variant.compose["ipc"], name
            assert services[name]["ulimits"] == variant.compose["ulimits"], name
        # In CPU mode (CI) nothing needs them, and a host whose memlock is capped refuses -1.
        assert "ulimits" not in services[f"test-{variant.name}-on-cpu"]
    assert "ulimits" not in services["lab-cpu"] and "ipc" not in services["lab-cpu"]


def test_a_hub_server_gets_the_limits_as_dockers_but_keeps_its_own_ipc_namespace():
    config = host_config(CUDA, MANIFEST)
    assert config["ulimits"] == [
        {"Name": "memlock", "Soft": -1, "Hard": -1},
        {"Name": "stack", "Soft": 67108864, "Hard": 67108864},
    ]
    assert "ipc_mode" not in config and "ipc" not in config
    assert config["shm_size"] == MANIFEST.containers["shm_size"]
    assert "ulimits" not in host_config(MANIFEST.variant("cpu"), MANIFEST)


def test_a_dev_container_runs_with_the_device_blocks_ipc_and_ulimits():
    flags = run_flags(MANIFEST, CUDA)
    assert {"--ipc=host", "--ulimit=memlock=-1", "--ulimit=stack=67108864"} <= set(flags)
    assert not any(
        flag.startswith(("--ipc", "--ulimit"))
        for flag in run_flags(MANIFEST, MANIFEST.variant("cpu"))
    )


def test_changed_limits_in_the_manifest_reach_every_consumer():
    changed = dataclasses.replace(CUDA, compose={**CUDA.compose, "ulimits": {"stack": 1 << 27}})
    assert host_config(changed, MANIFEST)["ulimits"] == [
        {"Name": "stack", "Soft": 1 << 27, "Hard": 1 << 27}
    ]
    assert "--ulimit=stack=134217728" in run_flags(MANIFEST, changed)


def test_a_build_installs_the_manifests_debian_packages_every_images_and_its_own(tmp_path):
    text = (
        (MANIFEST.path)
        .read_text()
        .replace("[variants.cpu]\n", '[variants.cpu]\ndebian_packages = ["ffmpeg", "graphviz"]\n')
    )
    manifest = variants.parse(text, MANIFEST.path)
    settings = Settings.load({}, tmp_path / ".env")
    arguments = variant_build(manifest.variant("cpu"), manifest, settings).args
    assert arguments["DEBIAN_PACKAGES"].split() == list(MANIFEST.debian_packages)
    assert {"python3", "g++", "tini"} <= set(MANIFEST.debian_packages)
    assert arguments["VARIANT_DEBIAN_PACKAGES"] == "ffmpeg graphviz"
    assert variant_build(CUDA, manifest, settings).args["VARIANT_DEBIAN_PACKAGES"] == ""


@pytest.mark.parametrize("name", ["FFmpeg", "ffmpeg; rm -rf /", "-o", ""])
def test_a_debian_package_name_that_cannot_be_one_is_refused_in_one_line(name):
    text = MANIFEST.path.read_text().replace(
        "[variants.cpu]\n", f"[variants.cpu]\ndebian_packages = [{name!r}]\n".replace("'", '"')
    )
    with pytest.raises(variants.ManifestError) as raised:
        variants.parse(text, MANIFEST.path)
    assert str(raised.value).endswith(
        f"variants.cpu.debian_packages: {name!r} is not a Debian package name "
        "(lowercase letters, digits, + - .)"
    )
