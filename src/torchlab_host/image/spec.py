"""What each image is built from: its Dockerfile, the checkout files of its build context,
the locks it installs and its build arguments. The lab images and the hub image are built the
same way (context.py stages them, building.py builds them)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torchlab.variants import Manifest, Variant, this_platform
from torchlab_host.core.checkout import revision
from torchlab_host.core.settings import Settings
from torchlab_host.hub import proxy
from torchlab_host.lockfiles import files as lockfiles
from torchlab_host.lockfiles.sources import sources

# A lab image's build context: each checkout file by where it goes in the context. The
# Dockerfile COPYs each tree (a first folder: scripts/, toolkit/, ...) to /, so what follows
# the tree's name is the file's path in the image (see docker/Dockerfile, "Every COPY").
# Nothing else reaches the build (the host tools never do): a small context rebuilds fast.
LAB_CONTEXT = {
    "Dockerfile": "docker/Dockerfile",
    "scripts/opt/torchlab/scripts/install-lock": "docker/install-lock",
    "scripts/opt/torchlab/scripts/slim-venv": "docker/slim-venv",
    "scripts/opt/torchlab/scripts/reproducible-run": "docker/reproducible-run",
    "scripts/opt/torchlab/scripts/apt-install": "docker/apt-install",
    "scripts/opt/torchlab/scripts/cuda-home": "docker/cuda-home",
    "toolkit/opt/torchlab/scripts/entrypoint": "docker/entrypoint",
    "toolkit/etc/jupyter/jupyter_server_config.py": "docker/jupyter_server_config.py",
    "toolkit/opt/venv/share/jupyter/lab/settings/overrides.json": "docker/overrides.json",
    "toolkit/opt/venv/etc/ipython/ipython_kernel_config.py": "docker/ipython_kernel_config.py",
    "toolkit/opt/venv/bin/pip": "docker/pip",
    "toolkit/opt/venv/bin/pip3": "docker/pip",
    "toolkit/opt/venv/bin/pip3.11": "docker/pip",
    "toolkit/opt/torchlab/src/pyproject.toml": "pyproject.toml",
    "toolkit/opt/torchlab/src/LICENSE": "LICENSE",
    "toolkit/opt/torchlab/src/src/torchlab": "src/torchlab",
    "toolkit/opt/torchlab/variants.toml": "variants.toml",
    "course/opt/torchlab/tests": "tests/device",
    "course/opt/torchlab/labs": "labs",
}
REQUIREMENTS_IN_IMAGE = "opt/torchlab/requirements"
HUB_IMAGE = "torchlab-hub"
# What make base-image makes, for machines that reach no registry (BASE_IMAGE=...).
LOCAL_BASE_IMAGE = "torchlab/debian:bookworm"
HUB_FILES = (
    "docker/install-lock",
    "hub/Dockerfile",
    "hub/jupyterhub_config.py",
    "hub/gpus.py",
)
# Build arguments a user may set in the environment, by the name the Dockerfile knows them.
# The image's own user is IMAGE_UID/IMAGE_GID: LAB_UID/LAB_GID choose who runs a lab, at start.
USER_BUILD_ARGS = {"IMAGE_UID": "LAB_UID", "IMAGE_GID": "LAB_GID"}
# The online build's index: an offline build does not pass it, as it would only change its
# layers' cache keys.
ONLINE_BUILD_ARGS = ("PIP_INDEX_URL",)


@dataclass(frozen=True)
class Build:
    """One image to build. name: its folder under build/ (the variant, or hub)."""

    name: str
    image: str
    dockerfile: str  # relative to the context
    context: dict[str, str]  # path in the context -> path in the checkout
    locks: dict[str, str]  # PIP_SOURCES_* build argument -> lock
    args: dict[str, str]
    user_args: dict[str, str]  # environment variables a user may set -> build arguments
    target: str  # the make target that builds it, for messages
    generated: Callable[[Path], None]  # writes the generated files into a staged context
    settings: Settings  # what the person set: the base image, the wheelhouse, build flags
    platform: str = field(default_factory=this_platform)  # linux/amd64, linux/arm64


def local_base(base: str, platform: str) -> str:
    """A local base image (make base-image) of another platform than this machine's carries its
    architecture in its tag: torchlab/debian:bookworm-arm64. Docker keeps one platform per name."""
    if platform == this_platform():
        return base
    return f"{base}-{platform.rpartition('/')[2]}"


def variant_build(
    variant: Variant, manifest: Manifest, settings: Settings, platform: str | None = None
) -> Build:
    """A variant's image for a platform (default: PLATFORM, else this machine's)."""
    shared, own = manifest.shared_lock, variant.lock
    platform = platform or settings.platform_of(variant, f"make build-{variant.name}")

    def generated(context: Path) -> None:
        # The locks as installed (less what TORCHLAB_WITHOUT leaves out), and the constraints
        # a lab user's own pip installs obey.
        for tree, name in (("shared-lock", shared), ("variant-lock", own)):
            written = context / tree / REQUIREMENTS_IN_IMAGE / f"{name}.txt"
            written.parent.mkdir(parents=True)
            written.write_text(lockfiles.installed_text(name, manifest, settings, platform))
        constraints = context / "toolkit" / REQUIREMENTS_IN_IMAGE / "constraints.txt"
        constraints.parent.mkdir(parents=True)
        constraints.write_text(lockfiles.constraints_text([shared, own]))

    return Build(
        name=variant.name,
        image=variant.image,
        dockerfile="Dockerfile",
        context=LAB_CONTEXT,
        locks={"PIP_SOURCES_SHARED": shared, "PIP_SOURCES_VARIANT": own},
        args={
            "BASE_IMAGE": manifest.base_image,
            "VARIANT": variant.name,
            "DEVICE": variant.device,
            "SHARED_LOCK": shared,
            "LOCK": own,
            "WITHOUT": " ".join(sorted(lockfiles.omitted(variant, settings, platform))),
            "TORCH_VERSION": variant.platforms[platform].torch,
            "DEBIAN_PACKAGES": " ".join(manifest.debian_packages),
            "VARIANT_DEBIAN_PACKAGES": " ".join(variant.debian_packages),
        },
        user_args=USER_BUILD_ARGS,
        target=f"make build-{variant.name}",
        generated=generated,
        settings=settings,
        platform=platform,
    )


def hub_build(manifest: Manifest, settings: Settings) -> Build:
    lock = manifest.hub_lock

    def generated(context: Path) -> None:
        (context / "hub/proxy.tar.gz").write_bytes(proxy.packed(settings.wheelhouse))

    return Build(
        name="hub",
        image=HUB_IMAGE,
        dockerfile="hub/Dockerfile",
        context={path: path for path in (*HUB_FILES, f"requirements/{lock}.txt")},
        locks={"PIP_SOURCES": lock},
        args={"BASE_IMAGE": manifest.base_image, "LOCK": lock},
        user_args={},
        target="make hub-build",
        generated=generated,
        settings=settings,
    )


def input_arguments(build: Build) -> dict[str, str]:
    """The build arguments that make the image what it is (the base image may be replaced by
    BASE_IMAGE, the image's user by IMAGE_UID and IMAGE_GID)."""
    arguments = dict(build.args)
    if build.settings["BASE_IMAGE"]:
        arguments["BASE_IMAGE"] = local_base(build.settings["BASE_IMAGE"], build.platform)
    for name, argument in build.user_args.items():
        if build.settings[name]:
            arguments[argument] = build.settings[name]
    return arguments


def lock_digest(names: list[str]) -> str:
    """sha256 of a build's locks, as the image's label records it."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(lockfiles.lock_file(name).read_bytes())
    return digest.hexdigest()


def build_arguments(build: Build, manifest: Manifest, wheelhouse_url: str | None) -> dict[str, str]:
    """Every build argument: the inputs, where pip finds each lock's wheels (the index, or a
    wheelhouse served at wheelhouse_url), and what only says how it was made (the commit)."""
    arguments = input_arguments(build)
    for argument, lock in build.locks.items():
        arguments[argument] = " ".join(sources(lock, manifest, build.settings, wheelhouse_url))
    arguments["REVISION"] = revision()
    arguments["LOCK_SHA256"] = lock_digest(list(build.locks.values()))
    if not wheelhouse_url:
        arguments.update(
            {name: build.settings[name] for name in ONLINE_BUILD_ARGS if build.settings[name]}
        )
    return arguments
