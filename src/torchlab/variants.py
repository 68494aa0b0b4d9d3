"""The image variants, as the manifest (variants.toml) lists them.

Standard library only: the host tools read it with the host's python3, and each image reads
its own copy ($TORCHLAB_MANIFEST) when `torchlab check-build` asserts what the image promises.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TORCH_SOURCES = ("pypi", "pytorch-cpu")
# The platforms an image can ship for, by Docker's name, and the machine each one's wheels
# and Python report (platform.machine(), a wheel's manylinux_2_28_<machine> tag).
MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
_FIELDS = {
    "device": str,
    "aliases": list,
    "summary": str,
    "lock": str,
    "platforms": dict,
    "size_ceiling_gb": (int, float),
    "build": dict,
    "debian_packages": list,
}
_OPTIONAL: tuple[str, ...] = ("debian_packages",)
# What a variant ships on one platform ([variants.<name>.platforms."linux/arm64"]).
_PLATFORM_FIELDS = {"source": str, "torch": str, "build": dict, "why": str, "omittable": list}
_PLATFORM_OPTIONAL = ("build", "why", "omittable")
# What every variant of one device kind shares: how a container reaches the device, and how
# its suite runs without it. All optional (the cpu needs none).
_DEVICE_FIELDS = {"cpu_mode": dict, "compose": dict, "kubernetes": dict}
# Every lab container's settings, wherever it starts (compose, the hub, the dev containers).
_CONTAINER_FIELDS = {"cap_drop": list, "security_opt": list, "shm_size": str, "pids_limit": int}
_NAME = re.compile(r"[a-z][a-z0-9]*")
# A Debian package's name (Debian Policy 5.6.7): also what keeps a build argument of them to
# words apt reads as names.
_DEBIAN_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")


class ManifestError(ValueError):
    """The manifest is missing or says something it may not; the message is one line."""


class UnknownVariant(ManifestError):
    """A variant asked for by a name or alias the manifest does not give."""


@dataclass(frozen=True)
class Platform:
    """What a variant ships on one platform."""

    source: str  # where pip finds its torch there: one of TORCH_SOURCES
    torch: str  # the torch release its lock pins there (2.13.0+cpu)
    # What check-build asserts differently there: its keys replace the variant's build.
    build: dict[str, Any] = field(default_factory=dict)
    # Why its torch is not the other platforms' (the probe and the README say it).
    why: str = ""
    # Packages a build there may leave out when told to (TORCHLAB_WITHOUT), where no index
    # that machine reaches may have them.
    omittable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Variant:
    name: str  # the image (torchlab:<name>), its lock, its make targets and compose services
    device: str  # the device kind it proves: a backend's name, `torchlab probe --expect`
    aliases: tuple[str, ...]
    summary: str
    lock: str
    platforms: dict[str, Platform]  # each platform it ships for -> what it ships there
    size_ceiling_gb: float
    build: dict[str, Any]  # what `torchlab check-build` asserts
    debian_packages: tuple[str, ...]  # what its image adds to every image's Debian packages
    # From its device kind's [devices.<kind>] table: the environment of its suite on a machine
    # without the device, what its compose services carry to reach it, and what a Kubernetes
    # pod needs to reach it (KubeSpawner's profile overrides).
    cpu_mode: dict[str, str]
    compose: dict[str, Any]
    kubernetes: dict[str, Any]

    @property
    def image(self) -> str:
        return f"torchlab:{self.name}"

    @property
    def torch_sources(self) -> set[str]:
        return {shipped.source for shipped in self.platforms.values()}

    def build_for(self, platform_name: str) -> dict[str, Any]:
        """What `torchlab check-build` asserts in this variant's image for one platform."""
        return {**self.build, **self.platforms[platform_name].build}

    def omittable_on(self, platform_name: str) -> tuple[str, ...]:
        """What a build for a platform may leave out when told to (TORCHLAB_WITHOUT)."""
        shipped = self.platforms.get(platform_name)
        return shipped.omittable if shipped else ()

    @property
    def torch_differs(self) -> bool:
        """Whether its platforms ship different torch releases (the probe says which and why)."""
        return len({shipped.torch for shipped in self.platforms.values()}) > 1

    def build_here(self) -> dict[str, Any]:
        """What its image promises on this machine's platform."""
        return self.build_for(this_platform())

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
    debian_packages: tuple[str, ...]  # what every lab image installs from Debian
    containers: dict[str, Any]  # every lab container's confinement and shared memory

    @property
    def names(self) -> list[str]:
        return [variant.name for variant in self.variants]

    def variant(self, name: str) -> Variant:
        """A variant by its name or one of its aliases."""
        for variant in self.variants:
            if name == variant.name or name in variant.aliases:
                return variant
        raise UnknownVariant(
            f"unknown image variant '{name}': choose one of {', '.join(self.names)}"
        )

    def images_for(self, device: str) -> list[str]:
        """The images that carry a device kind, for hints that say which one to use."""
        return [variant.image for variant in self.variants if variant.device == device]


def this_platform() -> str:
    """The platform of this machine (or this container), by Docker's name."""
    machine = platform.machine()
    for name, known in MACHINES.items():
        if machine == known:
            return name
    raise ManifestError(f"torchlab has no images for this machine ({machine})")


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
    platforms = _platforms(name, table["platforms"], where)
    return Variant(
        name=name,
        device=table["device"],
        aliases=tuple(table["aliases"]),
        summary=table["summary"],
        lock=table["lock"],
        platforms=platforms,
        size_ceiling_gb=float(table["size_ceiling_gb"]),
        cpu_mode={key: str(value) for key, value in device.get("cpu_mode", {}).items()},
        build=dict(table["build"]),
        debian_packages=_debian_packages(
            table.get("debian_packages", []), f"variants.{name}", where
        ),
        compose=dict(device.get("compose", {})),
        kubernetes=dict(device.get("kubernetes", {})),
    )


def _platforms(name: str, tables: dict[str, Any], where: str) -> dict[str, Platform]:
    unknown_platforms = sorted(set(tables) - set(MACHINES))
    if not tables or unknown_platforms:
        raise ManifestError(
            f"{where}: variants.{name}.platforms must name platforms among "
            f"{', '.join(MACHINES)}" + (f", not {unknown_platforms[0]}" if tables else "")
        )
    platforms = {}
    for platform_name, table in tables.items():
        key = f'variants.{name}.platforms."{platform_name}"'
        if not isinstance(table, dict):
            raise ManifestError(f"{where}: {key} must be a table: {{ source = ..., torch = ... }}")
        missing = [k for k in _PLATFORM_FIELDS if k not in table and k not in _PLATFORM_OPTIONAL]
        unknown = [k for k in table if k not in _PLATFORM_FIELDS]
        if missing or unknown:
            said = [f"lacks {', '.join(missing)}"] if missing else []
            said += [f"has unknown keys {', '.join(unknown)}"] if unknown else []
            raise ManifestError(f"{where}: {key} {' and '.join(said)}")
        wrong = [
            k for k, kind in _PLATFORM_FIELDS.items() if not isinstance(table.get(k, kind()), kind)
        ]
        if wrong:
            raise ManifestError(f"{where}: {key}.{wrong[0]} has the wrong type")
        if table["source"] not in TORCH_SOURCES:
            raise ManifestError(f"{where}: {key}.source must be one of {', '.join(TORCH_SOURCES)}")
        platforms[platform_name] = Platform(
            table["source"],
            table["torch"],
            dict(table.get("build", {})),
            table.get("why", ""),
            tuple(table.get("omittable", ())),
        )
    # The first platform's torch is the variant's; another one's must say why it differs.
    first = next(iter(platforms.values()))
    unexplained = [
        platform_name
        for platform_name, shipped in platforms.items()
        if shipped.torch != first.torch and not shipped.why
    ]
    if unexplained:
        raise ManifestError(
            f'{where}: variants.{name}.platforms."{unexplained[0]}" ships another torch '
            f"than {next(iter(platforms))} and must say why (why = ...)"
        )
    return platforms


def _debian_packages(names: list[Any], key: str, where: str) -> tuple[str, ...]:
    wrong = [
        name for name in names if not isinstance(name, str) or not _DEBIAN_PACKAGE.fullmatch(name)
    ]
    if wrong:
        raise ManifestError(
            f"{where}: {key}.debian_packages: {wrong[0]!r} is not a Debian package name "
            "(lowercase letters, digits, + - .)"
        )
    return tuple(names)


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
    images = data.get("images", {})
    base_image = images.get("base")
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
        _debian_packages(images.get("debian_packages", []), "images", str(path)),
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
