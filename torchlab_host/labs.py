"""The labs: start one (make lab-cpu), run an image's suite (make test-cpu), stop them."""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from torchlab.backends import get
from torchlab.variants import Manifest, Variant

from . import ARTIFACTS, ROOT
from .engine import (
    compose,
    compose_command,
    compose_environment,
    configured,
    image_exists,
    problem_lines,
    require_engine,
    run,
    streamed,
)
from .errors import HostError, fail
from .images import ensure_image, prune_replaced_images, variant_build

ENV_FILE = ROOT / ".env"
HEALTHY_TIMEOUT_S = 180
EVERY_ADDRESS = ("0.0.0.0", "::")


def lab_service(variant: Variant) -> str:
    return f"lab-{variant.name}"


def test_service(variant: Variant, on_cpu: bool = False) -> str:
    """The compose service of a variant's suite; on the CPU, its cpu_mode twin."""
    if on_cpu and variant.device != "cpu":
        return f"test-{variant.name}-on-cpu"
    return f"test-{variant.name}"


def require_host_device(variant: Variant) -> None:
    hint = get(variant.device).host_requirements()
    if hint:
        raise fail(hint.problem, f"{hint.fix} (without one: make lab-cpu)")


def auto_variant(manifest: Manifest) -> Variant:
    """`make lab`: the variant of the best device that reaches containers here, else cpu."""
    by_priority = sorted(manifest.variants, key=lambda v: -get(v.device).priority)
    for variant in by_priority:
        backend = get(variant.device)
        if backend.checks_host and backend.host_requirements() is None:
            return variant
    return next(variant for variant in by_priority if variant.device == "cpu")


@dataclass(frozen=True)
class LabSettings:
    uid: int
    gid: int
    port: int
    bind: str
    labs: Path
    data: Path

    def environment(self) -> dict[str, str]:
        """What compose.yaml interpolates for a lab."""
        return {
            "LAB_UID": str(self.uid),
            "LAB_GID": str(self.gid),
            "LAB_PORT": str(self.port),
            "LAB_BIND": self.bind,
            "LABS_DIR": str(self.labs),
            "LAB_DATA_DIR": str(self.data),
        }


def data_dir() -> Path:
    """The lab's data folder on the host: the packages you add and the caches (LAB_DATA_DIR)."""
    return Path(os.environ.get("LAB_DATA_DIR") or ROOT / "lab-data").resolve()


def prepare_data_dir(folder: Path, uid: int, gid: int) -> None:
    """Create the data folder for the lab user; refuse one they could not write to."""
    if not folder.exists():
        folder.mkdir(parents=True)
        if os.getuid() == 0:
            os.chown(folder, uid, gid)
    if not writable_by(folder, uid, gid):
        raise fail(
            f"the lab's data folder {folder} is not writable by uid {uid}",
            f"sudo chown -R {uid}:{gid} {folder}, or point LAB_DATA_DIR at a folder of yours",
        )


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
    data = data_dir()
    prepare_data_dir(data, uid, gid)
    bind = os.environ.get("LAB_BIND") or "127.0.0.1"
    return LabSettings(uid, gid, int(port), bind, labs, data)


def require_free_port(bind: str, port: int, command: str, prefix: str = "LAB") -> None:
    """The address is this machine's and the port on it is free, or the line that says not.
    command and prefix name how to try again: make lab-cpu and LAB_PORT, make hub and HUB_."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    except ValueError:
        raise fail(
            f"{prefix}_BIND={bind} is not an IP address",
            f"{prefix}_BIND=127.0.0.1 (the default) or one of this machine's addresses: "
            f"ip -brief address, then {command} {prefix}_BIND=ADDRESS",
        ) from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                raise fail(
                    f"{prefix}_BIND={bind} is not an address of this machine",
                    "bind to 127.0.0.1 (the default) or to one of the addresses "
                    f"ip -brief address lists: {command} {prefix}_BIND=ADDRESS",
                ) from None
            raise fail(
                f"port {port} on {bind} is already in use",
                f"stop what uses it (ss -ltnp 'sport = :{port}') or pick another: "
                f"{command} {prefix}_PORT={port + 1}",
            ) from None


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


def running(service: str) -> bool:
    listed = compose("ps", "--quiet", "--status", "running", service, capture=True)
    return bool(listed.stdout.strip())


def failure_reason(service: str, said: str) -> str:
    """The container's own one-line reason (torchlab serve prints it), else where to look."""
    if f"no such service: {service}" in said:
        return str(
            fail(
                f"compose.yaml has no service {service}",
                "add it (make check lists what every variant needs there)",
            )
        )
    logs = compose("logs", "--no-log-prefix", service, capture=True).stdout.splitlines()
    reasons = [line for line in logs if line.startswith("torchlab: ")]
    if reasons:
        return reasons[-1].removeprefix("torchlab: ")
    return str(fail(f"{service} did not become healthy", "read its log: make logs"))


def prepare(name: str, manifest: Manifest) -> None:
    """What an editor's dev container (.devcontainer/<variant>) needs before it starts: the
    image of this checkout, and the labs and data folders, writable by the lab's user."""
    variant = manifest.variant(name)
    require_engine()
    lab = settings()
    ensure_image(variant_build(variant, manifest), manifest)
    print(f"torchlab: {variant.image} and {lab.labs}, {lab.data} are ready for the editor")


def up(name: str, manifest: Manifest) -> float:
    variant = auto_variant(manifest) if name == "auto" else manifest.variant(name)
    require_host_device(variant)
    require_engine()
    lab = settings()
    service = lab_service(variant)
    if not running(service):
        require_free_port(lab.bind, lab.port, f"make lab-{variant.name}")
    ensure_image(variant_build(variant, manifest), manifest)
    environment = dict(lab.environment(), JUPYTER_TOKEN=token())
    start = time.monotonic()
    started = compose(
        "up",
        "--detach",
        "--wait",
        "--wait-timeout",
        str(HEALTHY_TIMEOUT_S),
        service,
        environment=environment,
        capture=True,
    )
    if started.returncode != 0:
        raise HostError(failure_reason(service, started.stderr))
    elapsed = time.monotonic() - start
    host = "127.0.0.1" if lab.bind in EVERY_ADDRESS else lab.bind
    url = f"http://{host}:{lab.port}/lab"
    login = " (log in with your password)" if configured("TORCHLAB_PASSWORD_HASH") else ""
    if not login:
        url += f"?token={environment['JUPYTER_TOKEN']}"
    print(
        f"torchlab: {service} is ready at {url}{login} "
        f"(healthy in {elapsed:.1f} s; stop: make down)"
    )
    if lab.bind in EVERY_ADDRESS:
        print(
            f"torchlab: warning: LAB_BIND={lab.bind} exposes the lab to every network "
            "this machine is on; the token or password is all that guards it",
            file=sys.stderr,
        )
    return elapsed


def test(name: str, manifest: Manifest, on_cpu: bool) -> int:
    variant = manifest.variant(name)
    if not on_cpu:
        require_host_device(variant)
    require_engine()
    ensure_image(variant_build(variant, manifest), manifest)
    service = test_service(variant, on_cpu)
    # Keep this run's probe report (CI uploads it), then run the probe and the suite.
    report = compose(
        "--profile", "test", "run", "--rm", service, "torchlab", "probe", "--json", capture=True
    )
    if report.stdout.strip().startswith("{"):
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"probe-{service}.json").write_text(report.stdout)
    code, output = streamed(
        compose_command("--profile", "test", "run", "--rm", service), compose_environment()
    )
    problems = problem_lines(output)
    if code == 0 and problems:
        print(
            f"torchlab: {service} passed, but its output has {len(problems)} warning or error "
            f"line(s), the first: {problems[0]!r}. Fix: remove their cause",
            file=sys.stderr,
        )
        return 1
    return code


def shell(name: str, manifest: Manifest) -> int:
    variant = manifest.variant(name)
    require_host_device(variant)
    require_engine()
    ensure_image(variant_build(variant, manifest), manifest)
    return compose(
        "run", "--rm", lab_service(variant), "bash", environment=settings().environment()
    ).returncode


def down() -> int:
    require_engine()
    return compose("--profile", "*", "down", "--remove-orphans").returncode


def logs() -> int:
    require_engine()
    return compose("logs", "--tail", "200").returncode


def clean_data(part: str) -> int:
    """Remove one part of the lab's data folder: the caches, or the packages you added."""
    parts = {"cache": ("cache", "datasets"), "packages": ("packages",)}
    for name in parts[part]:
        folder = data_dir() / name
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue
        except PermissionError:
            raise fail(
                f"{folder} holds files you may not remove", f"sudo rm -rf {folder}"
            ) from None
        print(f"torchlab: removed {folder}")
    return 0


def clean(manifest: Manifest) -> int:
    """Remove the containers, the torchlab images and the dangling layers they left."""
    down()
    present = [v.image for v in manifest.variants if image_exists(v.image)]
    if present:
        run(["docker", "image", "rm", *present], capture_output=True)
    return prune_replaced_images()
