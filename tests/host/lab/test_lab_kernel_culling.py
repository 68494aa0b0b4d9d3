"""A single lab's kernel culling: the setting LAB_CULL_IDLE_TIMEOUT (off by default, one person's
lab) reaches every lab's container as TORCHLAB_CULL_IDLE_TIMEOUT, which the image's Jupyter
settings read; the suites, which run no server, get none."""

from __future__ import annotations

import yaml

from torchlab import variants
from torchlab_host.core.settings import BY_NAME
from torchlab_host.lab import services as names
from torchlab_host.manifest import generate

MANIFEST = variants.load()


def test_the_setting_is_off_by_default_for_one_persons_lab():
    assert BY_NAME["LAB_CULL_IDLE_TIMEOUT"].default == "0"
    assert BY_NAME["LAB_CULL_IDLE_TIMEOUT"].topic == "lab"


def test_every_lab_hands_the_setting_to_its_jupyter_with_the_same_default():
    services = yaml.safe_load(generate.compose(MANIFEST))["services"]
    for variant in MANIFEST.variants:
        environment = services[names.lab_service(variant)]["environment"]
        assert environment["TORCHLAB_CULL_IDLE_TIMEOUT"] == "${LAB_CULL_IDLE_TIMEOUT:-0}", variant
        suite = services[names.test_service(variant)].get("environment", {})
        assert "TORCHLAB_CULL_IDLE_TIMEOUT" not in suite, variant
