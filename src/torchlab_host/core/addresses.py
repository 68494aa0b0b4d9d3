"""Where a lab or the hub listens: the port and address settings (LAB_PORT and LAB_BIND,
HUB_PORT and HUB_BIND), checked before anything starts, and the warning when they face every
network this machine is on."""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys

from torchlab_host.core.errors import HostError

EVERY_ADDRESS = ("0.0.0.0", "::")
LOOPBACK = "127.0.0.1"


def port_number(value: str, prefix: str, command: str, example: int) -> int:
    """A port setting's value as a number, or the line that says it is none."""
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise HostError(
            f"{prefix}_PORT={value} is not a port number", f"{command} {prefix}_PORT={example}"
        )
    return int(value)


def require_free_port(bind: str, port: int, command: str, prefix: str = "LAB") -> None:
    """The address is this machine's and the port on it is free, or the line that says not.
    command and prefix name how to try again: make lab-cpu and LAB_, make hub and HUB_."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    except ValueError:
        raise HostError(
            f"{prefix}_BIND={bind} is not an IP address",
            f"{prefix}_BIND={LOOPBACK} (the default) or one of this machine's addresses: "
            f"ip -brief address, then {command} {prefix}_BIND=ADDRESS",
        ) from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                raise HostError(
                    f"{prefix}_BIND={bind} is not an address of this machine",
                    f"bind to {LOOPBACK} (the default) or to one of the addresses "
                    f"ip -brief address lists: {command} {prefix}_BIND=ADDRESS",
                ) from None
            raise HostError(
                f"port {port} on {bind} is already in use",
                f"stop what uses it (ss -ltnp 'sport = :{port}') or pick another: "
                f"{command} {prefix}_PORT={port + 1}",
            ) from None


def free_loopback_port() -> int:
    """A loopback port nothing listens on now, for a server the host tools or tests start."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def browser_url(bind: str, port: int, path: str = "/") -> str:
    """The URL a browser on this machine opens: loopback where every address listens."""
    host = LOOPBACK if bind in EVERY_ADDRESS else bind
    return f"http://{host}:{port}{path}"


def warn_if_exposed(bind: str, prefix: str, what: str, guard: str) -> None:
    """Say it loudly when a server listens on every network this machine is on."""
    if bind in EVERY_ADDRESS:
        print(
            f"torchlab: warning: {prefix}_BIND={bind} exposes {what} to every network this "
            f"machine is on; {guard}",
            file=sys.stderr,
        )
