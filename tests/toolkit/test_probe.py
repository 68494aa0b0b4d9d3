"""What the probe says about the torch release of this image's platform."""

from __future__ import annotations

import pytest

from torchlab import probe, variants


@pytest.mark.parametrize(
    ("platform", "said"),
    [
        (
            "linux/arm64",
            "linux/arm64's torch 2.10.0: PyPI's newest CPU-only aarch64 torch (from 2.11 on, its "
            "aarch64 torch is the CUDA build); linux/amd64 gets 2.13.0+cpu",
        ),
        (
            "linux/amd64",
            "linux/amd64's torch 2.13.0+cpu: the release this variant is built on; linux/arm64 "
            "gets 2.10.0",
        ),
    ],
)
def test_the_probe_says_which_torch_a_platform_gets_where_the_platforms_differ(
    monkeypatch, platform, said
):
    monkeypatch.setenv("TORCHLAB_VARIANT", "cpu")
    monkeypatch.setattr(variants, "this_platform", lambda: platform)
    assert probe._platform_release() == said


@pytest.mark.parametrize("variant", ["cuda", None])
def test_the_probe_says_nothing_of_it_where_every_platform_gets_one_release(monkeypatch, variant):
    if variant:
        monkeypatch.setenv("TORCHLAB_VARIANT", variant)
    else:
        monkeypatch.delenv("TORCHLAB_VARIANT", raising=False)
    monkeypatch.setattr(variants, "this_platform", lambda: "linux/arm64")
    assert probe._platform_release() is None


def test_the_probe_table_has_the_release_line_in_an_arm64_cpu_image(monkeypatch):
    monkeypatch.setenv("TORCHLAB_VARIANT", "cpu")
    monkeypatch.setattr(variants, "this_platform", lambda: "linux/arm64")
    table = probe.render_table(probe.collect(smoke=False))
    [line] = [line for line in table.splitlines() if line.strip().startswith("release")]
    assert "linux/arm64's torch 2.10.0: PyPI's newest CPU-only" in line
