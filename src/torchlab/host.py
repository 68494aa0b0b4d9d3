"""Host-side commands behind the Makefile: build the images, start, test and stop the labs.

Standard library only: it runs with the host's python3, before any environment exists.
    PYTHONPATH=src python3 -m torchlab.host up cpu
Every problem a user can hit ends in one line, `torchlab: <what is wrong>. Fix: <command>`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.server
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .backends import Hint, get
from .locks import pins
from .variants import VARIANTS, Variant, by_name

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = ROOT / ".env"
ARTIFACTS = ROOT / "artifacts"
DOCKER_URL = "https://docs.docker.com/engine/install/"
COMPOSE_URL = "https://docs.docker.com/compose/install/linux/"
# Build arguments a user may set in the environment, by the name the Dockerfile knows them.
# The image's own user is IMAGE_UID/IMAGE_GID: LAB_UID/LAB_GID choose who runs a lab, at start.
PASSED_BUILD_ARGS = {
    "BASE_IMAGE": "BASE_IMAGE",
    "IMAGE_UID": "LAB_UID",
    "IMAGE_GID": "LAB_GID",
}
# Where the online build's pip looks. An offline build ignores them, so they are not passed:
# they would only change its layers' cache keys.
ONLINE_BUILD_ARGS = ("PIP_INDEX_URL", "TORCH_CPU_WHEELS")
HEALTHY_TIMEOUT_S = 180


class HostError(Exception):
    """A problem the user can fix; its message is the one line that says how."""


def fail(problem: str, fix: str) -> HostError:
    return HostError(str(Hint(problem, fix)))


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=False, **kwargs)


def quiet(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return run(command, capture_output=True, text=True, **kwargs)


def compose(
    *arguments: str, lab: LabSettings | None = None, capture: bool = False
) -> subprocess.CompletedProcess:
    """docker compose on compose.yaml. Every call passes the token: compose interpolates
    the whole file, and the file refuses an empty one."""
    environment = dict(os.environ, JUPYTER_TOKEN=token())
    if lab:
        environment.update(
            LAB_UID=str(lab.uid),
            LAB_GID=str(lab.gid),
            LAB_PORT=str(lab.port),
            LAB_BIND=lab.bind,
            LABS_DIR=str(lab.labs),
        )
    command = [
        "docker",
        "compose",
        "--project-directory",
        str(ROOT),
        "--file",
        str(ROOT / "compose.yaml"),
        *arguments,
    ]
    if capture:
        return quiet(command, env=environment)
    return run(command, env=environment)


# Preflight: each check raises the one line that fixes it.


def require_docker() -> None:
    if not shutil.which("docker"):
        raise fail("docker is not installed", f"install Docker Engine: {DOCKER_URL}")
    if quiet(["docker", "info"]).returncode != 0:
        raise fail(
            "the Docker daemon is not reachable",
            "start it (sudo systemctl start docker), or let your user use it: "
            "sudo usermod -aG docker $USER, then log in again",
        )


def require_compose() -> None:
    if quiet(["docker", "compose", "version"]).returncode != 0:
        raise fail(
            "the Docker Compose plugin is missing",
            f"install it (apt-get install docker-compose-plugin): {COMPOSE_URL}",
        )


def require_engine() -> None:
    """Docker and its Compose plugin, which every lab command drives."""
    require_docker()
    require_compose()


def require_host_device(variant: Variant) -> None:
    hint = get(variant.name).host_requirements()
    if hint:
        raise HostError(str(hint))


@dataclass(frozen=True)
class LabSettings:
    uid: int
    gid: int
    port: int
    bind: str
    labs: Path


def lab_user(labs: Path) -> tuple[int, int]:
    """The uid:gid the lab runs as, so files saved in labs/ belong to the host user."""
    if os.environ.get("LAB_UID"):
        uid = int(os.environ["LAB_UID"])
        return uid, int(os.environ.get("LAB_GID") or uid)
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    if os.environ.get("SUDO_UID"):
        return int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", os.environ["SUDO_UID"]))
    if labs.is_dir() and labs.stat().st_uid != 0:
        return labs.stat().st_uid, labs.stat().st_gid
    raise fail(
        f"the lab never runs as root, and {labs} belongs to root",
        f"give the notebooks to a user (sudo chown -R USER: {labs}) or set LAB_UID and LAB_GID",
    )


def writable_by(path: Path, uid: int, gid: int) -> bool:
    status = path.stat()
    if status.st_uid == uid:
        return status.st_mode & 0o300 == 0o300
    if status.st_gid == gid:
        return status.st_mode & 0o030 == 0o030
    return status.st_mode & 0o003 == 0o003


def settings() -> LabSettings:
    labs = Path(os.environ.get("LABS_DIR") or ROOT / "labs").resolve()
    if not labs.is_dir():
        raise fail(
            f"the labs folder {labs} is missing",
            "restore it (git checkout -- labs) or point LABS_DIR at your notebooks",
        )
    uid, gid = lab_user(labs)
    if not writable_by(labs, uid, gid):
        raise fail(
            f"the labs folder {labs} is not writable by uid {uid}",
            f"sudo chown -R {uid}:{gid} {labs}",
        )
    port = os.environ.get("LAB_PORT") or "8888"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise fail(f"LAB_PORT={port} is not a port number", "make lab-cpu LAB_PORT=8888")
    return LabSettings(uid, gid, int(port), os.environ.get("LAB_BIND") or "127.0.0.1", labs)


def require_free_port(lab: str, bind: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError:
            raise fail(
                f"port {port} on {bind} is already in use",
                f"stop what uses it (ss -ltnp 'sport = :{port}') or pick another: "
                f"make lab-{lab} LAB_PORT={port + 1}",
            ) from None


def configured(name: str) -> str | None:
    """A setting from the environment, else from .env (where compose also reads it)."""
    if os.environ.get(name):
        return os.environ[name]
    if ENV_FILE.exists():
        match = re.search(rf"^{name}=(\S+)$", ENV_FILE.read_text(), re.MULTILINE)
        if match:
            return match[1]
    return None


def token() -> str:
    """JUPYTER_TOKEN from the environment or .env; a new random one is written to .env."""
    existing = configured("JUPYTER_TOKEN")
    if existing:
        return existing
    new = secrets.token_hex(24)
    descriptor = os.open(ENV_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a") as env_file:
        env_file.write(f"JUPYTER_TOKEN={new}\n")
    return new


# Images


def lock_pins(variant: Variant) -> tuple[str, str]:
    """(torch version, sha256 of the two locks) of a variant."""
    digest = hashlib.sha256()
    torch_version = "unknown"
    for name in ("lab", variant.name):
        text = (ROOT / "requirements" / f"{name}.txt").read_text()
        digest.update(text.encode())
        torch_version = pins(text).get("torch", torch_version)
    return torch_version, digest.hexdigest()


def revision() -> str:
    head = quiet(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    if head.returncode != 0:
        return "unknown"
    dirty = quiet(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def served_wheelhouse(wheelhouse: Path, variant: Variant) -> Iterator[str]:
    """Serve a wheelhouse on 127.0.0.1 for the build's pip; yield its URL.

    A fixed port keeps the URL, and so Docker's layer cache, the same from build to build.
    """
    for needed in ("lab", variant.name):
        if not any((wheelhouse / needed).glob("*.whl")):
            raise fail(
                f"the wheelhouse {wheelhouse} has no {needed} wheels",
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


def build_command(variant: Variant, wheelhouse_url: str | None = None) -> list[str]:
    """docker build for a variant: online, or from a wheelhouse served at wheelhouse_url."""
    torch_version, lock_digest = lock_pins(variant)
    build_args = {
        "VARIANT": variant.name,
        "REVISION": revision(),
        "TORCH_VERSION": torch_version,
        "LOCK_SHA256": lock_digest,
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
        str(ROOT / "docker/Dockerfile"),
        "--tag",
        variant.image,
        *shlex.split(os.environ.get("DOCKER_BUILD_FLAGS", "")),
    ]
    if wheelhouse_url:
        # The build's pip reaches the wheelhouse server on the host's loopback.
        command += ["--network", "host"]
        build_args["WHEELHOUSE"] = wheelhouse_url
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    return [*command, str(ROOT)]


def build(variant: Variant) -> float:
    require_docker()
    wheelhouse = os.environ.get("WHEELHOUSE")
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        url = (
            stack.enter_context(served_wheelhouse(Path(wheelhouse).resolve(), variant))
            if wheelhouse
            else None
        )
        if run(build_command(variant, url)).returncode != 0:
            raise fail(
                f"building {variant.image} failed (the build's output is above)",
                f"fix what it names, then make build-{variant.lab}",
            )
    elapsed = time.monotonic() - start
    source = f"wheelhouse {wheelhouse}" if wheelhouse else "the package indexes"
    print(f"torchlab: built {variant.image} from {source} in {elapsed:.1f} s")
    return elapsed


def ensure_image(variant: Variant) -> None:
    if quiet(["docker", "image", "inspect", variant.image]).returncode != 0:
        print(f"torchlab: {variant.image} is not built yet, building it (make build-{variant.lab})")
        build(variant)


# Labs


def running(service: str) -> bool:
    listed = compose("ps", "--quiet", "--status", "running", service, capture=True)
    return bool(listed.stdout.strip())


def failure_reason(service: str) -> str:
    """The container's own one-line reason (torchlab serve prints it), else where to look."""
    logs = compose("logs", "--no-log-prefix", service, capture=True).stdout.splitlines()
    reasons = [line for line in logs if line.startswith("torchlab: ")]
    if reasons:
        return reasons[-1].removeprefix("torchlab: ")
    return str(Hint(f"{service} did not become healthy", "read its log: make logs"))


def pick() -> Variant:
    """The best lab this host can run: gpu when its GPU reaches containers, else cpu."""
    return by_name("gpu") if get("cuda").host_requirements() is None else by_name("cpu")


def up(lab: str) -> float:
    variant = pick() if lab == "auto" else by_name(lab)
    require_host_device(variant)
    require_engine()
    lab_settings = settings()
    if not running(variant.service):
        require_free_port(variant.lab, lab_settings.bind, lab_settings.port)
    ensure_image(variant)
    start = time.monotonic()
    started = compose(
        "up",
        "--detach",
        "--wait",
        "--wait-timeout",
        str(HEALTHY_TIMEOUT_S),
        variant.service,
        lab=lab_settings,
        capture=True,
    )
    if started.returncode != 0:
        raise HostError(failure_reason(variant.service))
    elapsed = time.monotonic() - start
    host = "127.0.0.1" if lab_settings.bind in ("0.0.0.0", "::") else lab_settings.bind
    url = f"http://{host}:{lab_settings.port}/lab"
    login = " (log in with your password)" if configured("TORCHLAB_PASSWORD_HASH") else ""
    if not login:
        url += f"?token={token()}"
    print(
        f"torchlab: {variant.service} is ready at {url}{login} "
        f"(healthy in {elapsed:.1f} s; stop: make down)"
    )
    if lab_settings.bind in ("0.0.0.0", "::"):
        print(
            f"torchlab: warning: LAB_BIND={lab_settings.bind} exposes the lab to every network "
            "this machine is on; the token or password is all that guards it",
            file=sys.stderr,
        )
    return elapsed


def test(lab: str, on_cpu: bool) -> int:
    variant = by_name(lab)
    if not on_cpu:
        require_host_device(variant)
    require_engine()
    ensure_image(variant)
    service = f"test-{variant.lab}" + ("-on-cpu" if on_cpu and variant.name != "cpu" else "")
    # Keep this run's probe report (CI uploads it), then run the probe and the suite.
    report = compose(
        "--profile", "test", "run", "--rm", service, "torchlab", "probe", "--json", capture=True
    )
    if report.stdout.strip().startswith("{"):
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"probe-{service}.json").write_text(report.stdout)
    return compose("--profile", "test", "run", "--rm", service).returncode


def shell(lab: str) -> int:
    variant = by_name(lab)
    require_host_device(variant)
    require_engine()
    ensure_image(variant)
    return compose("run", "--rm", variant.service, "bash", lab=settings()).returncode


def down() -> int:
    require_engine()
    return compose("--profile", "test", "down", "--remove-orphans").returncode


def logs() -> int:
    require_engine()
    return compose("logs", "--tail", "200").returncode


def clean() -> int:
    """Remove the containers, the torchlab images and the dangling layers they left."""
    down()
    images = [variant.image for variant in VARIANTS]
    present = [
        image for image in images if quiet(["docker", "image", "inspect", image]).returncode == 0
    ]
    if present:
        run(["docker", "image", "rm", *present], stdout=subprocess.DEVNULL)
    return prune_replaced_images()


def prune_replaced_images() -> int:
    """Remove the torchlab images that newer builds replaced, and no one else's."""
    return run(
        ["docker", "image", "prune", "--force", "--filter", "label=org.torchlab.variant"],
        stdout=subprocess.DEVNULL,
    ).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m torchlab.host", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build").add_argument("lab")
    commands.add_parser("up").add_argument("lab", help="cpu, gpu, tpu or auto")
    test_parser = commands.add_parser("test")
    test_parser.add_argument("lab")
    test_parser.add_argument(
        "--on-cpu",
        action="store_true",
        help="run the image's suite on the CPU (for machines without it)",
    )
    commands.add_parser("shell").add_argument("lab")
    for name in ("down", "logs", "clean", "pick"):
        commands.add_parser(name)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(by_name(args.lab))
        elif args.command == "up":
            up(args.lab)
        elif args.command == "test":
            return test(args.lab, args.on_cpu)
        elif args.command == "shell":
            return shell(args.lab)
        elif args.command == "pick":
            print(pick().lab)
        else:
            return {"down": down, "logs": logs, "clean": clean}[args.command]()
    except (HostError, KeyError) as error:
        print(f"torchlab: {error.args[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
