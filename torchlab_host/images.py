"""Building the images: online from the package indexes, or offline from a wheelhouse."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from torchlab.variants import Manifest, Variant

from . import ROOT, locks
from .engine import docker_must, image_exists, problem_lines, quiet, require_docker, run, streamed
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


NOT_IN_CONTEXT = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
# A lab image's build context: each checkout file by where it goes in the context. The
# Dockerfile COPYs each tree (a first folder: scripts/, toolkit/, ...) to /, so what follows
# the tree's name is the file's path in the image (see docker/Dockerfile, "Every COPY").
# Nothing else reaches the build: a small context keeps rebuilds fast.
LAB_CONTEXT = {
    "Dockerfile": "docker/Dockerfile",
    "scripts/opt/torchlab/scripts/install-lock": "docker/install-lock",
    "scripts/opt/torchlab/scripts/slim-venv": "docker/slim-venv",
    "scripts/opt/torchlab/scripts/reproducible-run": "docker/reproducible-run",
    "toolkit/etc/jupyter/jupyter_server_config.py": "docker/jupyter_server_config.py",
    "toolkit/opt/venv/share/jupyter/lab/settings/overrides.json": "docker/overrides.json",
    "toolkit/opt/torchlab/src/pyproject.toml": "pyproject.toml",
    "toolkit/opt/torchlab/src/LICENSE": "LICENSE",
    "toolkit/opt/torchlab/src/src": "src",
    "toolkit/opt/torchlab/variants.toml": "variants.toml",
    "course/opt/torchlab/tests": "tests/device",
    "course/opt/torchlab/labs": "labs",
}
REQUIREMENTS_IN_IMAGE = "opt/torchlab/requirements"
HUB_IMAGE = "torchlab-hub"
# Where make lab pulls the published images from, before it builds (TORCHLAB_REGISTRY).
DEFAULT_REGISTRY = "ghcr.io/torchlab"
REGISTRY_TIMEOUT_S = 5
# Every image this project builds carries it (lab images and the hub).
SOURCE_LABEL = "org.opencontainers.image.source=https://github.com/torchlab/torchlab"
HUB_FILES = ("docker/install-lock", "requirements", "hub/Dockerfile", "hub/jupyterhub_config.py")
HUB_CONTEXT = {path: path for path in HUB_FILES}


@dataclass(frozen=True)
class Build:
    """One image to build: its tag, its Dockerfile, the checkout files of its context, the
    locks it installs (by the build argument that says where pip finds each) and the rest of
    its build arguments. The lab images and the hub image are built the same way."""

    image: str
    dockerfile: str  # relative to the context
    context: dict[str, str]  # path in the context -> path in the checkout
    locks: dict[str, str]  # PIP_SOURCES_* build argument -> lock
    args: dict[str, str]
    passed: dict[str, str]  # environment variables a user may set -> build arguments
    target: str  # the make target that builds it, for messages
    generated: Callable[[Path], None] = lambda context: None  # writes generated context files


def variant_build(variant: Variant, manifest: Manifest) -> Build:
    shared, own = manifest.shared_lock, variant.lock

    def generated(context: Path) -> None:
        # The locks as installed: less what TORCHLAB_WITHOUT leaves out.
        for tree, name in (("shared-lock", shared), ("variant-lock", own)):
            written = context / tree / REQUIREMENTS_IN_IMAGE / f"{name}.txt"
            written.parent.mkdir(parents=True)
            written.write_text(locks.installed_text(name, manifest))
        constraints = context / "toolkit" / REQUIREMENTS_IN_IMAGE / "constraints.txt"
        constraints.parent.mkdir(parents=True)
        constraints.write_text(locks.constraints_text([shared, own]))

    return Build(
        image=variant.image,
        dockerfile="Dockerfile",
        context=LAB_CONTEXT,
        locks={"PIP_SOURCES_SHARED": shared, "PIP_SOURCES_VARIANT": own},
        args={
            "VARIANT": variant.name,
            "DEVICE": variant.device,
            "SHARED_LOCK": shared,
            "LOCK": own,
            "WITHOUT": " ".join(sorted(locks.omitted(variant))),
            "TORCH_VERSION": locks.torch_version([shared, own]),
        },
        passed=PASSED_BUILD_ARGS,
        target=f"make build-{variant.name}",
        generated=generated,
    )


def hub_build(manifest: Manifest) -> Build:
    def generated(context: Path) -> None:
        (context / "hub/proxy.tar.gz").write_bytes(locks.packed_proxy())

    return Build(
        image=HUB_IMAGE,
        dockerfile="hub/Dockerfile",
        context=HUB_CONTEXT,
        locks={"PIP_SOURCES": manifest.hub_lock},
        args={"LOCK": manifest.hub_lock},
        passed={"BASE_IMAGE": "BASE_IMAGE"},
        target="make hub-build",
        generated=generated,
    )


def lock_digest(names: list[str]) -> str:
    """sha256 of a build's locks, as the image's label records it."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(locks.lock_file(name).read_bytes())
    return digest.hexdigest()


def inputs_digest(build: Build, context: Path) -> str:
    """What an image is made of, as 12 hex digits: its staged context (paths, modes, contents),
    its build arguments and the base image, less what only says how it was made (the commit,
    where pip found the wheels). The same inputs give the same digest on any machine."""
    digest = hashlib.sha256()
    for path in sorted(context.rglob("*")):
        digest.update(f"{path.relative_to(context)}\0{path.stat().st_mode:o}\0".encode())
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    passed = {arg: os.environ.get(name, "") for name, arg in build.passed.items()}
    arguments = {**build.args, **passed}
    digest.update(json.dumps(arguments, sort_keys=True).encode())
    return digest.hexdigest()[:12]


def inputs_tag(image: str, digest: str) -> str:
    """torchlab:cpu -> torchlab:cpu-inputs-<digest>; torchlab-hub -> torchlab-hub:inputs-<digest>"""
    repository, _, tag = image.partition(":")
    return f"{repository}:{tag + '-' if tag else ''}inputs-{digest}"


INPUTS_TAG = re.compile(r"[:-]inputs-[0-9a-f]{12}$")


def inputs_tag_among(tags: list[str]) -> str | None:
    """Which of an image's names is its inputs tag (see inputs_tag), if any is."""
    return next((tag for tag in tags if INPUTS_TAG.search(tag)), None)


def revision() -> str:
    head = quiet(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    if head.returncode != 0:
        return "unknown"
    dirty = quiet(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def source_date_epoch(files: list[Path]) -> int:
    """The time every file of the build context carries: $SOURCE_DATE_EPOCH, else the commit's,
    else (a tree that is no checkout) the newest of the files'."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    committed = quiet(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"])
    if committed.returncode == 0 and committed.stdout.strip():
        return int(committed.stdout)
    return int(max(path.stat().st_mtime for path in files))


@contextlib.contextmanager
def staged_context(build: Build) -> Iterator[Path]:
    """The build context: the checkout files the Dockerfile copies and the generated ones (the
    locks as installed, the constraints, the packed proxy), with one date and the modes a
    checkout under any umask would give (0755 for folders and programs, else 0644), so the same
    commit gives the same layers."""
    with tempfile.TemporaryDirectory(prefix="torchlab-context-") as folder:
        context = Path(folder)
        for name, checkout_path in build.context.items():
            source, target = ROOT / checkout_path, context / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=NOT_IN_CONTEXT)
            else:
                shutil.copy2(source, target)
        epoch = source_date_epoch([path for path in context.rglob("*") if path.is_file()])
        build.generated(context)
        for path in [context, *context.rglob("*")]:
            if not path.is_symlink():
                program = path.is_dir() or path.stat().st_mode & 0o100
                path.chmod(0o755 if program else 0o644)
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
    build: Build, manifest: Manifest, context: Path, wheelhouse_url: str | None = None
) -> list[str]:
    """docker build of a staged context, tagged with its name and its inputs tag: online, or
    from a wheelhouse served at wheelhouse_url."""
    build_args = {
        **build.args,
        **{
            arg: " ".join(locks.sources(lock, manifest, wheelhouse_url))
            for arg, lock in build.locks.items()
        },
        "REVISION": revision(),
        "LOCK_SHA256": lock_digest(list(build.locks.values())),
    }
    passed = dict(build.passed)
    if not wheelhouse_url:
        passed.update({name: name for name in ONLINE_BUILD_ARGS})
    build_args.update(
        {arg: os.environ[name] for name, arg in passed.items() if os.environ.get(name)}
    )
    command = [
        "docker",
        "build",
        "--file",
        str(context / build.dockerfile),
        "--tag",
        build.image,
        "--tag",
        inputs_tag(build.image, inputs_digest(build, context)),
        *shlex.split(os.environ.get("DOCKER_BUILD_FLAGS", "")),
    ]
    if wheelhouse_url:
        # The build's pip reaches the wheelhouse server on the host's loopback.
        command += ["--network", "host"]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    return [*command, str(context)]


def explain_build_failure(build: Build, output: list[str]) -> HostError:
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
            f"{build.target} BASE_IMAGE=torchlab/debian:bookworm",
        )
    if INDEX_UNREACHABLE.search(text) and not os.environ.get("WHEELHOUSE"):
        return fail(
            f"pip inside the build of {build.image} could not get its packages from the index",
            "on a machine that reaches it, make wheels; then build from that wheelhouse: "
            f"{build.target} WHEELHOUSE=wheelhouse",
        )
    return fail(
        f"building {build.image} failed (the build's output is above)",
        f"fix what it names, then {build.target}",
    )


def build_image(build: Build, manifest: Manifest) -> float:
    locks.require_locks(list(build.locks.values()))
    locks.require_omittable(manifest)
    require_docker()
    wheelhouse = os.environ.get("WHEELHOUSE")
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        url = (
            stack.enter_context(
                served_wheelhouse(Path(wheelhouse).resolve(), list(build.locks.values()))
            )
            if wheelhouse
            else None
        )
        context = stack.enter_context(staged_context(build))
        code, output = streamed(build_command(build, manifest, context, url))
        if code != 0:
            raise explain_build_failure(build, output)
    elapsed = time.monotonic() - start
    source = f"wheelhouse {wheelhouse}" if wheelhouse else "the package indexes"
    left_out = build.args.get("WITHOUT")
    without = f", without {left_out} (TORCHLAB_WITHOUT)" if left_out else ""
    print(f"torchlab: built {build.image} from {source}{without} in {elapsed:.1f} s", flush=True)
    return elapsed


def build(variant: Variant, manifest: Manifest, tag: str | None = None) -> float:
    locks.require_locks([manifest.shared_lock, variant.lock])
    build = variant_build(variant, manifest)
    return build_image(dataclasses.replace(build, image=tag) if tag else build, manifest)


def ensure_image(build: Build, manifest: Manifest) -> None:
    """The image of this checkout's inputs: the local one, else the published one, else built."""
    with staged_context(build) as context:
        own = inputs_tag(build.image, inputs_digest(build, context))
    if image_exists(own) or pulled(own):
        docker_must("tag", own, build.image)
        return
    print(f"torchlab: building {build.image} here ({build.target})", flush=True)
    build_image(build, manifest)


def registry_problem(registry: str) -> str | None:
    """Why the registry does not answer (a refused, unresolved or silent host), else None. Any
    HTTP answer counts: an anonymous /v2/ request is answered 401 by a working registry."""
    host = registry.split("/")[0]
    try:
        urllib.request.urlopen(f"https://{host}/v2/", timeout=REGISTRY_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"no registry answers at {host} ({reason})"
    return None


def pulled(tag: str) -> bool:
    """Pull the published image of these inputs from $TORCHLAB_REGISTRY; say in one line why
    not where it cannot be had. An empty TORCHLAB_REGISTRY means: always build."""
    registry = os.environ.get("TORCHLAB_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    if not registry:
        return False
    published = f"{registry}/{tag}"
    problem = registry_problem(registry)
    if problem:
        print(f"torchlab: cannot pull {published}: {problem}", flush=True)
        return False
    print(f"torchlab: pulling {published}", flush=True)
    code, output = streamed(["docker", "pull", published])
    if code != 0:
        said = (problem_lines(output) or output or ["docker pull failed"])[-1]
        print(f"torchlab: cannot pull {published}: {said.strip()}", flush=True)
        return False
    docker_must("tag", published, tag)
    return True


def prune_replaced_images() -> int:
    """Remove the torchlab images that newer builds replaced, and no one else's: an inputs tag
    whose image is no longer the one its variant's name points to, and untagged images."""
    listed = quiet(
        ["docker", "image", "ls", "--filter", f"label={SOURCE_LABEL}", "--format",
         "{{.Repository}}:{{.Tag}} {{.ID}}"]
    ).stdout  # fmt: skip
    image_of = dict(line.split() for line in listed.splitlines())
    replaced = []
    for tag, image_id in image_of.items():
        repository, _, name = tag.partition(":")
        if "inputs-" in name:
            named = name.split("inputs-")[0].rstrip("-") or "latest"
            if image_of.get(f"{repository}:{named}") != image_id:
                replaced.append(tag)
    if replaced:
        quiet(["docker", "image", "rm", *replaced])
    return run(
        ["docker", "image", "prune", "--force", "--filter", f"label={SOURCE_LABEL}"],
        stdout=subprocess.DEVNULL,
    ).returncode
