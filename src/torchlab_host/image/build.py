"""Building an image: stage its context (build/<name>/), run the one `docker build` command
that `make context` prints, and turn a failure into the line that says why."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import time
from pathlib import Path

from torchlab.variants import Manifest, Variant, this_platform
from torchlab_host import ROOT
from torchlab_host.core.engine import docker_must, require_docker, run, streamed
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.image import emulation, registry, wheelhouse
from torchlab_host.image.context import inputs_digest, stage
from torchlab_host.image.spec import (
    LOCAL_BASE_IMAGE,
    Build,
    build_arguments,
    local_base,
    variant_build,
)
from torchlab_host.image.tags import image_exists, inputs_tag
from torchlab_host.lockfiles.files import require_locks, require_omittable

# What a failed build printed, and what it means: the line the user gets instead of the log.
REGISTRY_UNREACHABLE = re.compile(
    r"(?:dial tcp|lookup \S+|TLS handshake timeout|i/o timeout|connection refused"
    r"|no such host|server misbehaving|network is unreachable)"
)
STEP = re.compile(r"^Step \d+/\d+ : (.*)")
INDEX_UNREACHABLE = re.compile(
    r"Could not find a version that satisfies|No matching distribution found"
    r"|Failed to establish a new connection|SSLError|CERTIFICATE_VERIFY_FAILED"
)
# The one line a script of docker/ fails with: what is wrong, and what fixes it.
# (The classic builder colours a RUN's stderr lines: their escapes may come first.)
OWN_FAILURE = re.compile(r"^(?:\x1b\[\d+m)*torchlab: (.+)\. Fix: (.+?)(?:\x1b\[\d+m|\s)*$", re.M)


def build_command(
    build: Build, manifest: Manifest, context: Path, wheelhouse_url: str | None = None
) -> list[str]:
    """docker build of a staged context, tagged with its name and its inputs tag: online, or
    from a wheelhouse served at wheelhouse_url."""
    command = [
        "docker",
        "build",
        "--file",
        str(context / build.dockerfile),
        "--tag",
        build.image,
        "--tag",
        inputs_tag(build.image, inputs_digest(build, context)),
        *shlex.split(build.settings["DOCKER_BUILD_FLAGS"]),
    ]
    if build.platform != this_platform():  # built under emulation (QEMU's binfmt_misc)
        command += ["--platform", build.platform]
        for name, value in emulation.emulated_environment(build.platform).items():
            command += ["--build-arg", f"{name}={value}"]
    if wheelhouse_url:
        # The build's pip reaches the wheelhouse server on the host's loopback.
        command += ["--network", "host"]
    for name, value in build_arguments(build, manifest, wheelhouse_url).items():
        command += ["--build-arg", f"{name}={value}"]
    # The host's proxy, for apt and pip: Docker's own build arguments, which stay out of the
    # image and its history.
    for name, value in build.settings.proxies.items():
        command += ["--build-arg", f"{name}={value}"]
    return [*command, str(context)]


def explain_build_failure(build: Build, output: list[str]) -> HostError:
    """The one line for a failed build: its real cause where the output shows it."""
    text = "\n".join(output)
    said = OWN_FAILURE.search(text)  # a build script's own one line (docker/apt-install)
    if said:
        return HostError(said[1], f"{said[2]}, then {build.target}")
    base = build.settings["BASE_IMAGE"] or build.args["BASE_IMAGE"].split("@")[0]
    steps = [line for line in output if STEP.match(line)]
    pulling_base = bool(steps) and STEP.match(steps[-1])[1].startswith("FROM ")
    if pulling_base and REGISTRY_UNREACHABLE.search(text):
        return HostError(
            f"the base image {base} cannot be pulled: no container registry answers here",
            f"make a local one (make base-image, as root), then "
            f"{build.target} BASE_IMAGE={LOCAL_BASE_IMAGE}",
        )
    if build.platform != this_platform() and "exec format error" in text:
        # A handler registered without the F flag: containers cannot open its emulator.
        return HostError(
            f"the build's {build.platform} programs did not run under emulation",
            f"{emulation.FIX}, then {build.target} PLATFORM={build.platform}",
        )
    if INDEX_UNREACHABLE.search(text) and not build.settings.wheelhouse:
        return HostError(
            f"pip inside the build of {build.image} could not get its packages from the index",
            "on a machine that reaches it, make wheels; then build from that wheelhouse: "
            f"{build.target} WHEELHOUSE=wheelhouse",
        )
    return HostError(
        f"building {build.image} failed (the build's output is above)",
        f"fix what it names, then {build.target}",
    )


def preflight(build: Build, manifest: Manifest) -> None:
    """What a build needs before docker sees it: its locks, and a TORCHLAB_WITHOUT that the
    manifest allows."""
    require_locks(list(build.locks.values()))
    require_omittable(build.settings, manifest)


def build_image(build: Build, manifest: Manifest, context: Path | None = None) -> float:
    """Build a staged context (staged here unless given) with the command make context
    prints; its seconds."""
    start = time.monotonic()
    if context is None:
        preflight(build, manifest)
        context = stage(build)
    require_docker()
    if build.platform != this_platform():
        emulation.require_emulation(build.platform)
    wheelhouse_dir = build.settings.wheelhouse
    with contextlib.ExitStack() as stack:
        url = None
        if wheelhouse_dir:
            needed = list(build.locks.values())
            port = int(build.settings["WHEELHOUSE_PORT"])
            url = stack.enter_context(wheelhouse.served(wheelhouse_dir.resolve(), needed, port))
        code, output = streamed(build_command(build, manifest, context, url))
        if code != 0:
            raise explain_build_failure(build, output)
    elapsed = time.monotonic() - start
    source = f"wheelhouse {wheelhouse_dir}" if wheelhouse_dir else "the package indexes"
    left_out = build.args.get("WITHOUT")
    without = f", without {left_out} (TORCHLAB_WITHOUT)" if left_out else ""
    print(
        f"torchlab: built {build.image} for {build.platform} from {source}{without} "
        f"in {elapsed:.1f} s",
        flush=True,
    )
    return elapsed


def build_variant(
    variant: Variant, manifest: Manifest, settings: Settings, tag: str | None = None
) -> float:
    """make build-<variant>; tag names it otherwise (make verify-reproducible builds twice)."""
    build = variant_build(variant, manifest, settings)
    return build_image(dataclasses.replace(build, image=tag) if tag else build, manifest)


def print_context(build: Build, manifest: Manifest) -> Path:
    """make context: stage the context into build/<name>/ and print the docker build command
    that builds it (make build-<name> runs exactly that command)."""
    preflight(build, manifest)
    context = stage(build)
    wheelhouse_dir = build.settings.wheelhouse
    port = int(build.settings["WHEELHOUSE_PORT"])
    url = wheelhouse.url(port) if wheelhouse_dir else None
    print(f"torchlab: the build context of {build.image} is in {context.relative_to(ROOT)}/")
    if wheelhouse_dir:
        print(
            f"# serve the wheelhouse while it builds: python3 -m http.server {port} "
            f"--bind 127.0.0.1 --directory {shlex.quote(str(wheelhouse_dir))} &"
        )
    print(shlex.join(build_command(build, manifest, context, url)))
    return context


def ensure_image(build: Build, manifest: Manifest) -> str:
    """The image of this checkout's inputs: the local one, else the published one, else built;
    its inputs tag."""
    preflight(build, manifest)
    context = stage(build)
    own = inputs_tag(build.image, inputs_digest(build, context))
    if image_exists(own) or registry.pulled(own, registry.configured(build.settings)):
        docker_must("tag", own, build.image)
        return own
    print(f"torchlab: building {build.image} here ({build.target})", flush=True)
    build_image(build, manifest, context)
    return own


def make_base_image(settings: Settings) -> None:
    """make base-image: the Debian base of the images, made here (debootstrap) for PLATFORM or
    this machine's platform, for machines that reach no registry."""
    platform = settings.platform
    if platform != this_platform():  # debootstrap's second stage runs the platform's programs
        emulation.require_emulation(platform)
    architecture = platform.rpartition("/")[2]  # amd64, arm64: Debian's names too
    script = ROOT / "scripts" / "make-base-image"
    mirrors = {name: settings[name] for name in ("DEBIAN_MIRROR", "DEBIAN_SECURITY_MIRROR")}
    made = run(
        [str(script), local_base(LOCAL_BASE_IMAGE, platform), architecture],
        env=dict(os.environ, **mirrors),
    )
    if made.returncode:
        raise HostError("making the base image failed (its output is above)")
