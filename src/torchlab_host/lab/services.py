"""compose.yaml's services (generated from the manifest: make generate) and running in them:
lab-<variant> is a variant's lab, test-<variant> its suite, test-<variant>-on-cpu its suite in
the CPU mode of variants.toml."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from torchlab import system
from torchlab.variants import Variant, this_platform
from torchlab_host import ROOT
from torchlab_host.core.engine import Engine, compose_command, current_engine, quiet, run
from torchlab_host.core.settings import Settings
from torchlab_host.image import emulation

LAB_COMPOSE = ROOT / "compose.yaml"
# Generated beside it, each added where this host needs it (engine_overrides).
CDI_COMPOSE = ROOT / "compose.cdi.yaml"
SELINUX_COMPOSE = ROOT / "compose.selinux.yaml"
# compose.yaml refuses to interpolate without a token, even for commands that start no lab
# (down, logs, test runs): they get this placeholder, so only starting a lab creates a token.
NO_LAB_TOKEN = "no-lab-is-started-by-this-command"


def lab_service(variant: Variant) -> str:
    return f"lab-{variant.name}"


# What every test service runs: the probe, then the device suite (more arguments go to pytest).
SELFTEST = ["torchlab", "selftest"]


def test_service(variant: Variant, on_cpu: bool = False) -> str:
    """The service of a variant's suite; on the CPU, its cpu_mode twin."""
    if on_cpu and variant.device != "cpu":
        return f"test-{variant.name}-on-cpu"
    return f"test-{variant.name}"


def compose_environment(
    settings: Settings, environment: dict[str, str] | None = None
) -> dict[str, str]:
    """What compose.yaml interpolates: this process's environment, the given settings (with a
    lab's user, what the engine needs so the lab's files are that user's) and, when no token is
    configured, the placeholder."""
    env = dict(os.environ, **(environment or {}))
    if "LAB_UID" in (environment or {}):  # a lab's own user, as this engine maps it
        env.update(current_engine().lab_user())
    if not env.get("JUPYTER_TOKEN") and not settings.given("JUPYTER_TOKEN"):
        env["JUPYTER_TOKEN"] = NO_LAB_TOKEN
    if settings.platform != this_platform():  # PLATFORM=...: its image, under emulation
        env["DOCKER_DEFAULT_PLATFORM"] = settings.platform
    return env


def engine_overrides(engine: Engine, selinux_enforcing: bool) -> list[Path]:
    """The generated files over compose.yaml this host needs: GPUs as CDI devices where the
    engine takes them only that way, and the bind mounts labelled where SELinux enforces."""
    return [
        *([CDI_COMPOSE] if engine.cdi else []),
        *([SELINUX_COMPOSE] if selinux_enforcing else []),
    ]


def lab_compose_command(*arguments: str) -> list[str]:
    """docker compose on compose.yaml and the overrides this host's engine needs."""
    overrides = engine_overrides(current_engine(), system.selinux_enforcing())
    return compose_command(LAB_COMPOSE, *arguments, overrides=overrides)


def compose(
    settings: Settings,
    *arguments: str,
    environment: dict[str, str] | None = None,
    capture: bool = False,
) -> subprocess.CompletedProcess:
    """docker compose on compose.yaml, with the environment it interpolates."""
    env = compose_environment(settings, environment)
    command = lab_compose_command(*arguments)
    return quiet(command, env=env) if capture else run(command, env=env)


def in_service(service: str, *command: str, settings: Settings, profile: str = "test") -> list[str]:
    """The compose command that runs a command in a fresh container of a service; for another
    platform (PLATFORM=...), with what its emulator reads from the container's environment."""
    emulated = emulation.emulated_environment(settings.platform)
    passed = [f"--env={name}={value}" for name, value in emulated.items()]
    return lab_compose_command("--profile", profile, "run", "--rm", *passed, service, *command)


def run_in_service(
    settings: Settings, service: str, *command: str, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A command in a fresh container of a service, its output captured."""
    return quiet(
        in_service(service, *command, settings=settings),
        env=compose_environment(settings, environment),
    )
