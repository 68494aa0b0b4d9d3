"""The image variants, as the manifest (variants.toml) lists them.

Standard library only: the host tools read it with the host's python3, and each image reads
its own copy ($TORCHLAB_MANIFEST) when `torchlab check-build` asserts what the image promises.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TORCH_SOURCES = ("pypi", "pytorch-cpu")
_FIELDS = {
    "device": str,
    "aliases": list,
    "summary": str,
    "lock": str,
    "torch_from": str,
    "size_ceiling_gb": (int, float),
    "build": dict,
    "omittable": list,
}
_OPTIONAL = ("omittable",)
# What every variant of one device kind shares: how a container reaches the device, and how
# its suite runs without it. All optional (the cpu needs none).
_DEVICE_FIELDS = {"cpu_mode": dict, "compose": dict, "kubernetes": dict}
# Every lab container's settings, wherever it starts (compose, the hub, the dev containers).
_CONTAINER_FIELDS = {"cap_drop": list, "security_opt": list, "shm_size": str}
_NAME = re.compile(r"[a-z][a-z0-9]*")


class ManifestError(ValueError):
    """The manifest is missing or says something it may not; the message is one line."""


@dataclass(frozen=True)
class Variant:
    name: str  # the image (torchlab:<name>), its lock, its make targets and compose services
    device: str  # the device kind it proves: a backend's name, `torchlab probe --expect`
    aliases: tuple[str, ...]
    summary: str
    lock: str
    torch_from: str
    size_ceiling_gb: float
    build: dict[str, Any]  # what `torchlab check-build` asserts
    # From its device kind's [devices.<kind>] table: the environment of its suite on a machine
    # without the device, what its compose services carry to reach it, and what a Kubernetes
    # pod needs to reach it (KubeSpawner's profile overrides).
    cpu_mode: dict[str, str]
    compose: dict[str, Any]
    kubernetes: dict[str, Any]
    # Packages a build may leave out when told to (TORCHLAB_WITHOUT), where no index has them.
    omittable: tuple[str, ...] = ()

    @property
    def image(self) -> str:
        return f"torchlab:{self.name}"

    @property
    def per_user(self) -> bool:
        """Whether one machine can give its device to one container per user (a hub's
        servers, a dev container): not when the device goes only to a privileged container
        on the host's network (Cloud TPU VMs)."""
        return self.compose.get("network_mode") != "host"


@dataclass(frozen=True)
class Manifest:
    path: Path
    variants: tuple[Variant, ...]
    shared_lock: str
    host_locks: tuple[str, ...]
    hub_lock: str
    base_image: str  # what every Dockerfile starts FROM, pinned by digest
    containers: dict[str, Any]  # every lab container's confinement and shared memory

    @property
    def names(self) -> list[str]:
        return [variant.name for variant in self.variants]

    def variant(self, name: str) -> Variant:
        """A variant by its name or one of its aliases."""
        for variant in self.variants:
            if name == variant.name or name in variant.aliases:
                return variant
        raise KeyError(f"unknown image variant '{name}': choose one of {', '.join(self.names)}")

    def images_for(self, device: str) -> list[str]:
        """The images that carry a device kind, for hints that say which one to use."""
        return [variant.image for variant in self.variants if variant.device == device]


def manifest_path() -> Path:
    """$TORCHLAB_MANIFEST (each image sets it), else the checkout's variants.toml."""
    configured = os.environ.get("TORCHLAB_MANIFEST")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "variants.toml"


def _devices(data: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    devices = data.get("devices", {})
    for kind, table in devices.items():
        unknown = [key for key in table if key not in _DEVICE_FIELDS]
        if unknown:
            raise ManifestError(f"{where}: devices.{kind} has unknown keys {', '.join(unknown)}")
        wrong = [
            key
            for key, kind_of in _DEVICE_FIELDS.items()
            if not isinstance(table.get(key, {}), kind_of)
        ]
        if wrong:
            raise ManifestError(f"{where}: devices.{kind}.{wrong[0]} has the wrong type")
    return devices


def _variant(name: str, table: dict[str, Any], device: dict[str, Any], where: str) -> Variant:
    if not _NAME.fullmatch(name):
        raise ManifestError(f"{where}: variant name '{name}' must be lowercase letters and digits")
    missing = [key for key in _FIELDS if key not in table and key not in _OPTIONAL]
    unknown = [key for key in table if key not in _FIELDS]
    if missing or unknown:
        said = [f"lacks {', '.join(missing)}"] if missing else []
        said += [f"has unknown keys {', '.join(unknown)}"] if unknown else []
        raise ManifestError(f"{where}: variants.{name} {' and '.join(said)}")
    for key, kind in _FIELDS.items():
        if key in table and not isinstance(table[key], kind):
            raise ManifestError(f"{where}: variants.{name}.{key} has the wrong type")
    if table["torch_from"] not in TORCH_SOURCES:
        raise ManifestError(
            f"{where}: variants.{name}.torch_from must be one of {', '.join(TORCH_SOURCES)}"
        )
    return Variant(
        name=name,
        device=table["device"],
        aliases=tuple(table["aliases"]),
        summary=table["summary"],
        lock=table["lock"],
        torch_from=table["torch_from"],
        size_ceiling_gb=float(table["size_ceiling_gb"]),
        cpu_mode={key: str(value) for key, value in device.get("cpu_mode", {}).items()},
        build=dict(table["build"]),
        compose=dict(device.get("compose", {})),
        kubernetes=dict(device.get("kubernetes", {})),
        omittable=tuple(table.get("omittable", ())),
    )


def parse(text: str, path: Path) -> Manifest:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ManifestError(f"{path}: not valid TOML ({error})") from None
    devices = _devices(data, str(path))
    variants = tuple(
        _variant(name, table, devices.get(table.get("device"), {}), str(path))
        for name, table in data.get("variants", {}).items()
    )
    if not variants:
        raise ManifestError(f"{path}: lists no [variants.<name>] table")
    unserved = sorted(set(devices) - {variant.device for variant in variants})
    if unserved:
        raise ManifestError(f"{path}: devices.{unserved[0]} is the device of no variant")
    names = [name for variant in variants for name in (variant.name, *variant.aliases)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ManifestError(f"{path}: {', '.join(repeated)} names more than one variant")
    locks = data.get("locks", {})
    base_image = data.get("images", {}).get("base")
    if not isinstance(base_image, str) or "@sha256:" not in base_image:
        raise ManifestError(f"{path}: images.base must name the base image by its digest")
    containers = data.get("containers", {})
    wrong = [
        key for key, kind in _CONTAINER_FIELDS.items() if not isinstance(containers.get(key), kind)
    ]
    if wrong or set(containers) - set(_CONTAINER_FIELDS):
        raise ManifestError(f"{path}: containers must give exactly {', '.join(_CONTAINER_FIELDS)}")
    return Manifest(
        path,
        variants,
        locks.get("shared", "lab"),
        tuple(locks.get("host", ())),
        locks.get("hub", "hub"),
        base_image,
        dict(containers),
    )


@functools.cache
def load(path: Path | None = None) -> Manifest:
    path = path or manifest_path()
    try:
        text = path.read_text()
    except OSError:
        raise ManifestError(f"the variant manifest {path} is missing") from None
    return parse(text, path)


def images_for(device: str) -> str:
    """The images that carry a device kind, in words ("torchlab:cuda"), for hints."""
    try:
        images = load().images_for(device)
    except ManifestError:
        images = []
    return " or ".join(images) if images else f"an image built for {device}"
