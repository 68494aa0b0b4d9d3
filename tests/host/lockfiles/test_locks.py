"""The locks pin every package exactly, agree with their inputs and with each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from torchlab import variants
from torchlab.locks import canonical, read_pins
from torchlab_host.lockfiles import files

REQUIREMENTS = Path(__file__).resolve().parents[3] / "requirements"
# Each image's own lock, from the manifest; the lab's shared one, and the host's (dev).
IMAGE_LOCKS = tuple(dict.fromkeys(variant.lock for variant in variants.load().variants))
LOCKS = ("lab", *IMAGE_LOCKS, "dev")
ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<rest>(?:.*\\\n)*.*)", re.M
)


def entries(lock: str) -> dict[str, tuple[str, str]]:
    text = (REQUIREMENTS / f"{lock}.txt").read_text()
    return {canonical(m["name"]): (m["version"], m["rest"]) for m in ENTRY.finditer(text)}


def pins(lock: str, machine: str = "x86_64") -> dict[str, str]:
    return read_pins(REQUIREMENTS / f"{lock}.txt", machine)


def machines(lock: str) -> list[str]:
    """The machines whose images install a lock (the host's locks: this one's)."""
    manifest = variants.load()
    return [variants.MACHINES[platform] for platform in files.lock_platforms(lock, manifest)]


def inputs(lock: str) -> list[str]:
    lines = (REQUIREMENTS / f"{lock}.in").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_line_of_a_lock_is_an_exact_pin_with_hashes(lock):
    text = (REQUIREMENTS / f"{lock}.txt").read_text()
    requirement_lines = [
        line for line in text.splitlines() if line and not line.startswith((" ", "#"))
    ]
    assert requirement_lines and all("==" in line for line in requirement_lines)
    for name, (_, rest) in entries(lock).items():
        assert "--hash=sha256:" in rest, f"{lock}: {name} has no hash"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_input_is_in_its_lock_on_every_machine_it_holds_on(lock):
    for machine in machines(lock):
        locked = pins(lock, machine)
        for line in inputs(lock):
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(
                {"platform_machine": machine}
            ):
                continue
            name = canonical(requirement.name)
            assert name in locked, f"{lock}.in asks for {name} on {machine}, {lock}.txt lacks it"
            assert requirement.specifier.contains(locked[name], prereleases=True), (
                f"{lock}.txt pins {name}=={locked[name]} on {machine}, outside {lock}.in's "
                f"{requirement}"
            )


def test_the_torch_builds_are_the_promised_ones():
    assert pins("cpu")["torch"] == "2.13.0+cpu"
    # PyPI's CPU-only aarch64 build, torchvision with it, no CUDA library.
    arm = pins("cpu", "aarch64")
    assert (arm["torch"], arm["torchvision"]) == ("2.10.0", "0.25.0")
    assert not any(name.startswith(("nvidia-", "cuda-", "triton")) for name in arm)
    assert pins("cuda")["torch"] == pins("cuda", "aarch64")["torch"] == "2.13.0"
    assert any(name.startswith("nvidia-") and name.endswith("cu13") for name in pins("cuda"))
    assert pins("xla")["torch"] == "2.9.0" and pins("xla")["torch-xla"] == "2.9.0"
    assert "libtpu" in pins("xla")


@pytest.mark.parametrize("lock", [*IMAGE_LOCKS, "dev"])
def test_shared_packages_have_the_lab_versions(lock):
    for machine in machines(lock):
        lab = pins("lab", machine)
        different = {
            name: (version, lab[name])
            for name, version in pins(lock, machine).items()
            if name in lab and lab[name] != version
        }
        assert not different, f"{lock} disagrees with lab on {machine}: {different}"


def test_the_host_environment_is_the_cpu_variant():
    assert "torch" not in pins("dev") and "torch" not in pins("lab")


TORCHVISION_CPU_SHA256 = "1dad604dfc0177ecebe0891bd9701fe2c62ec3f7819a247be541b3fb6effee99"


def test_the_cpu_lock_keeps_torchvisions_cpu_build_with_its_official_hash():
    version, rest = entries("cpu")["torchvision"]
    assert version == "0.28.0+cpu" and f"--hash=sha256:{TORCHVISION_CPU_SHA256}" in rest
    # Installed without its dependencies (like every lock), it needs these pinned beside it.
    shared = {**pins("lab"), **pins("cpu")}
    assert shared["torch"] == "2.13.0+cpu" and {"numpy", "pillow"} <= set(shared)


@pytest.mark.parametrize(
    ("lock", "domain"),
    [
        ("cuda", {"torchvision": "0.28.0"}),
        ("xla", {"torchvision": "0.24.0", "torchaudio": "2.9.0"}),
    ],
)
def test_the_domain_libraries_match_each_torch(lock, domain):
    assert {name: pins(lock)[name] for name in domain} == domain


def test_every_image_carries_the_stack():
    for name in ("pandas", "scikit-learn", "scipy", "tqdm", "requests", "tensorboard"):
        assert name in pins("lab"), name
    for lock in IMAGE_LOCKS:
        assert "torchmetrics" in pins(lock), lock
