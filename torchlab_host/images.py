"""Building the images: online from the package indexes, or offline from a wheelhouse."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from torchlab.variants import Manifest, Variant

from . import ROOT, locks
from .engine import image_exists, quiet, require_docker, run, streamed
from .errors import HostError, fail

# Build arguments a user may set in the environment, by the name the Dockerfile knows them.
# The image's own user is IMAGE_UID/IMAGE_GID: LAB_UID/LAB_GID choose who runs a lab, at start.
PASSED_BUILD_ARGS = {
    "BASE_IMAGE": "BASE_IMAGE",
    "IMAGE_UID": "LAB_UID",
    "IMAGE_GID": "LAB_GID",
}
# The online build's index. An offline build does not pass it: it would only change its
# layers' cache keys.
ONLINE_BUILD_ARGS = ("PIP_INDEX_URL",)
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


# What the Dockerfile copies. The build context holds these and nothing else: a small context
# keeps rebuilds fast, and no other file of the checkout can reach an image.
CONTEXT = (
    "docker",
    "variants.toml",
    "requirements",
    "pyproject.toml",
    "LICENSE",
    "src",
    "tests/device",
    "labs",
)
NOT_IN_CONTEXT = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


def locks_of(variant: Variant, manifest: Manifest) -> list[str]:
    return [manifest.shared_lock, variant.lock]


def lock_digest(variant: Variant, manifest: Manifest) -> str:
    """sha256 of the variant's locks, as the image's label records it."""
    digest = hashlib.sha256()
    for name in locks_of(variant, manifest):
        digest.update(locks.lock_file(name).read_bytes())
    return digest.hexdigest()


def revision() -> str:
    head = quiet(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    if head.returncode != 0:
        return "unknown"
    dirty = quiet(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def source_date_epoch() -> int:
    """The time every file of the build context carries: $SOURCE_DATE_EPOCH, else the commit's."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    committed = quiet(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"])
    return int(committed.stdout.strip() or 0)


@contextlib.contextmanager
def staged_context(variant: Variant, manifest: Manifest) -> Iterator[Path]:
    """The build context: the files the Dockerfile copies, the variant's locks as the image
    installs them (less what TORCHLAB_WITHOUT leaves out), the constraints a lab's pip obeys,
    and one mtime for all, so the same commit gives the same layers."""
    with tempfile.TemporaryDirectory(prefix="torchlab-context-") as folder:
        context = Path(folder)
        for name in CONTEXT:
            source, target = ROOT / name, context / name
            if source.is_dir():
                shutil.copytree(source, target, ignore=NOT_IN_CONTEXT)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        for name in locks_of(variant, manifest):
            (context / "requirements" / f"{name}.txt").write_text(
                locks.installed_text(name, manifest)
            )
        (context / "requirements/constraints.txt").write_text(
            locks.constraints_text(locks_of(variant, manifest))
        )
        epoch = source_date_epoch()
        for path in [context, *context.rglob("*")]:
            os.utime(path, (epoch, epoch), follow_symlinks=False)
        yield context


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def served_wheelhouse(wheelhouse: Path, needed: list[str]) -> Iterator[str]:
    """Serve a wheelhouse on 127.0.0.1 for the build's pip; yield its URL.

    A fixed port keeps the URL, and so Docker's layer cache, the same from build to build.
    """
    for lock in needed:
        if not any((wheelhouse / lock).glob("*.whl")):
            raise fail(
                f"the wheelhouse {wheelhouse} has no {lock} wheels",
                f"fill it first: make wheels WHEELHOUSE_DIR={wheelhouse}",
            )
    port = int(os.environ.get("WHEELHOUSE_PORT") or 8799)
    handler = functools.partial(_QuietHandler, directory=str(wheelhouse))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        raise fail(
            f"port {port} for serving the wheelhouse is in use",
            f"set another one: WHEELHOUSE_PORT={port + 1}",
        ) from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def build_command(
    variant: Variant, manifest: Manifest, context: Path, wheelhouse_url: str | None = None
) -> list[str]:
    """docker build of a staged context for a variant: online, or from a wheelhouse served at
    wheelhouse_url."""
    shared, own = locks_of(variant, manifest)
    build_args = {
        "VARIANT": variant.name,
        "DEVICE": variant.device,
        "SHARED_LOCK": shared,
        "LOCK": own,
        "WITHOUT": " ".join(sorted(locks.omitted(variant))),
        "PIP_SOURCES_SHARED": " ".join(locks.sources(shared, manifest, wheelhouse_url)),
        "PIP_SOURCES_VARIANT": " ".join(locks.sources(own, manifest, wheelhouse_url)),
        "REVISION": revision(),
        "TORCH_VERSION": locks.torch_version(locks_of(variant, manifest)),
        "LOCK_SHA256": lock_digest(variant, manifest),
    }
    passed = dict(PASSED_BUILD_ARGS)
    if not wheelhouse_url:
        passed.update({name: name for name in ONLINE_BUILD_ARGS})
    build_args.update(
        {arg: os.environ[name] for name, arg in passed.items() if os.environ.get(name)}
    )
    command = [
        "docker",
        "build",
        "--file",
        str(context / "docker/Dockerfile"),
        "--tag",
        variant.image,
        *shlex.split(os.environ.get("DOCKER_BUILD_FLAGS", "")),
    ]
    if wheelhouse_url:
        # The build's pip reaches the wheelhouse server on the host's loopback.
        command += ["--network", "host"]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    return [*command, str(context)]


def explain_build_failure(variant: Variant, output: list[str]) -> HostError:
    """The one line for a failed build: its real cause where the output shows it."""
    text = "\n".join(output)
    declared = re.search(r"^Step \d+/\d+ : ARG BASE_IMAGE=(\S+?)(?:@sha256:\S+)?$", text, re.M)
    base = os.environ.get("BASE_IMAGE") or (declared[1] if declared else "the base image")
    steps = [line for line in output if STEP.match(line)]
    pulling_base = bool(steps) and STEP.match(steps[-1])[1].startswith("FROM ")
    if pulling_base and REGISTRY_UNREACHABLE.search(text):
        return fail(
            f"the base image {base} cannot be pulled: no container registry answers here",
            f"make a local one (make base-image, as root), then "
            f"make build-{variant.name} BASE_IMAGE=torchlab/debian:bookworm",
        )
    if INDEX_UNREACHABLE.search(text) and not os.environ.get("WHEELHOUSE"):
        return fail(
            f"pip inside the build of {variant.image} could not get its packages from the index",
            "on a machine that reaches it, make wheels; then build from that wheelhouse: "
            f"make build-{variant.name} WHEELHOUSE=wheelhouse",
        )
    return fail(
        f"building {variant.image} failed (the build's output is above)",
        f"fix what it names, then make build-{variant.name}",
    )


def build(variant: Variant, manifest: Manifest) -> float:
    locks.require_locks(locks_of(variant, manifest))
    locks.require_omittable(manifest)
    require_docker()
    wheelhouse = os.environ.get("WHEELHOUSE")
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        url = (
            stack.enter_context(
                served_wheelhouse(Path(wheelhouse).resolve(), locks_of(variant, manifest))
            )
            if wheelhouse
            else None
        )
        context = stack.enter_context(staged_context(variant, manifest))
        code, output = streamed(build_command(variant, manifest, context, url))
        if code != 0:
            raise explain_build_failure(variant, output)
    elapsed = time.monotonic() - start
    source = f"wheelhouse {wheelhouse}" if wheelhouse else "the package indexes"
    left_out = locks.omitted(variant)
    without = f", without {', '.join(sorted(left_out))} (TORCHLAB_WITHOUT)" if left_out else ""
    print(f"torchlab: built {variant.image} from {source}{without} in {elapsed:.1f} s", flush=True)
    return elapsed


def ensure_image(variant: Variant, manifest: Manifest) -> None:
    if not image_exists(variant.image):
        print(
            f"torchlab: {variant.image} is not built yet, building it (make build-{variant.name})",
            flush=True,
        )
        build(variant, manifest)


def prune_replaced_images() -> int:
    """Remove the torchlab images that newer builds replaced, and no one else's."""
    return run(
        ["docker", "image", "prune", "--force", "--filter", "label=org.torchlab.variant"],
        stdout=subprocess.DEVNULL,
    ).returncode
