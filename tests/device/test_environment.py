"""The environment is exactly its locks, its torch is the promised build, the device is real."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from torchlab import probe, variants
from torchlab.backends import get
from torchlab.devices import expected
from torchlab.locks import canonical, read_pins


def locked_environment() -> dict[str, str]:
    """Every pin of the locks this environment was built from ($TORCHLAB_LOCKS)."""
    pins: dict[str, str] = {}
    for path in os.environ["TORCHLAB_LOCKS"].split():
        for name, version in read_pins(Path(path)).items():
            assert pins.setdefault(name, version) == version, f"{name} pinned twice"
    return pins


@pytest.mark.skipif("TORCHLAB_LOCKS" not in os.environ, reason="not built from locks")
def test_installed_packages_equal_the_locks_exactly():
    locked = locked_environment()
    installed = {
        canonical(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if canonical(dist.metadata["Name"]) != "torchlab"
    }
    missing = sorted(set(locked) - set(installed))
    unlocked = sorted(set(installed) - set(locked))
    different = sorted(
        f"{name} {installed[name]} (lock: {locked[name]})"
        for name in set(locked) & set(installed)
        if installed[name] != locked[name]
    )
    assert not (missing or unlocked or different), (
        f"missing: {missing}; not in the locks: {unlocked}; other versions: {different}"
    )


def test_pip_check_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif("TORCHLAB_VARIANT" not in os.environ, reason="no image variant named")
def test_torch_is_the_build_the_manifest_promises_the_variant():
    variant = variants.load().variant(os.environ["TORCHLAB_VARIANT"])
    assert get(variant.device).check_build(variant.build) == []


def test_expected_device_is_usable_and_computes_right():
    if not expected():
        pytest.skip("no device kind expected (set TORCHLAB_EXPECT)")
    failure = probe.expectation_failure(probe.collect(), expected())
    assert failure is None, failure


def test_torch_compile_has_a_cxx_compiler():
    assert get("cpu").describe()["cxx_compiler"], str(
        get("cpu").explain("No working C++ compiler found")
    )
