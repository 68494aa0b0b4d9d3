"""The cpu image without a checkout: `docker run torchlab:cpu torchlab probe` just works."""

from __future__ import annotations

import json


def test_the_cpu_image_probes_without_a_checkout(container):
    code, output = container.run_to_end("torchlab:cpu", "torchlab", "probe", "--json")
    assert code == 0, output
    report = json.loads(output[output.index("{") :])
    assert report["backends"]["cpu"]["usable"] and report["container"]["in_container"]
    assert report["container"]["environment"]["TORCHLAB_EXPECT"] == "cpu"


def test_a_small_shm_is_reported_by_the_probe(container):
    code, output = container.run_to_end(
        "torchlab:cpu", "torchlab", "probe", "--no-smoke", options=("--shm-size", "64m")
    )
    assert code == 0
    assert "/dev/shm is 64.0 MiB: DataLoader workers crash below 1.0 GiB" in output
