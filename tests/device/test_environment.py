"""The environment is exactly its locks, its torch is the promised build, the device is real."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from torchlab import packages, probe, variants
from torchlab.backends import get
from torchlab.devices import expected
from torchlab.locks import read_pins


def test_the_locks_agree_on_every_package_they_share():
    pins: dict[str, str] = {}
    for path in packages.lock_files():
        for name, version in read_pins(path).items():
            assert pins.setdefault(name, version) == version, f"{name} pinned twice in {path}"


@pytest.mark.skipif(not packages.lock_files(), reason="not built from locks")
def test_installed_packages_equal_the_locks_exactly():
    """The environment's own packages; what a lab user added lives apart (torchlab packages),
    and what a build was told to leave out (TORCHLAB_WITHOUT) may be missing."""
    locked = packages.locked()
    installed = {
        name: version for name, version in packages.locked_installed().items() if name != "torchlab"
    }
    missing = sorted(set(locked) - set(installed) - set(packages.left_out()))
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
    assert get(variant.device).check_build(variant.build_here()) == []


def test_expected_device_is_usable_and_computes_right():
    if not expected():
        pytest.skip("no device kind expected (set TORCHLAB_EXPECT)")
    failure = probe.expectation_failure(probe.collect(), expected())
    assert failure is None, failure


def test_torch_compile_has_a_cxx_compiler():
    assert get("cpu").describe()["cxx_compiler"], str(
        get("cpu").explain("No working C++ compiler found")
    )
