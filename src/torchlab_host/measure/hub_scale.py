"""make bench's hub part: how fast a user's lab starts in the hub, what an idle one costs, and
how many idle users this machine holds.

A hub of its own (HUB_NAME=torchlab-hub-bench) adds users through the hub's REST API (with a
class-admin token, HUB_API_TOKEN) and starts their servers one after another until the user
cap, the time budget or the memory floor is reached; then it is stopped and its volumes removed.
"""

from __future__ import annotations

import json
import secrets
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from torchlab import system

from ..checkout import run_host_tools
from ..engine import quiet
from ..errors import HostError

HUB_NAME = "torchlab-hub-bench"
ADMIN = "bench-admin"


def hub_command(*arguments: str, **settings: str) -> subprocess.CompletedProcess:
    return run_host_tools(*arguments, settings={"HUB_NAME": HUB_NAME, **settings})


def call(port: int, token: str, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hub/api{path}",
        method=method,
        headers={"Authorization": f"token {token}"},
        data=b"{}" if method == "POST" else None,
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = answer.read()
    return json.loads(body) if body else {}


def start_to_ready(port: int, token: str, user: str, timeout: float = 300) -> float:
    """Seconds from asking for a user's server to the hub reporting it ready."""
    call(port, token, "POST", f"/users/{user}")
    start = time.monotonic()
    call(port, token, "POST", f"/users/{user}/server")
    while time.monotonic() - start < timeout:
        server = call(port, token, "GET", f"/users/{user}").get("servers", {}).get("", {})
        if server.get("ready"):
            return time.monotonic() - start
        time.sleep(0.25)
    raise HostError(f"{user}'s server did not become ready in {timeout:.0f} s")


def idle_memory_mib(user: str) -> float:
    """What an idle user's container uses, as Docker counts it (cgroup memory)."""
    stats = quiet(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", f"{HUB_NAME}-user-{user}"]
    )
    used = stats.stdout.split("/")[0].strip()  # "153.2MiB / 2GiB"
    scale = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
    return round(float(used[:-3]) * scale[used[-3:]], 1)


def measure(max_users: int = 40, budget_s: float = 600, floor_gb: float = 3.0) -> dict[str, Any]:
    token = secrets.token_hex(24)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = hub_command(
        "hub",
        HUB_ADMIN=ADMIN,
        HUB_PORT=str(port),
        HUB_PROFILES="cpu",
        HUB_API_TOKEN=token,
        HUB_IDLE_TIMEOUT="86400",
    )
    if started.returncode != 0:
        raise HostError(f"the bench's hub did not start: {started.stderr.strip()}")
    ready, memory, stopped_by = [], [], "the user cap"
    start = time.monotonic()
    try:
        while len(ready) < max_users:
            if time.monotonic() - start > budget_s:
                stopped_by = "the time budget"
                break
            if (system.machine()["ram_available_bytes"] or 0) < floor_gb * 2**30:
                stopped_by = f"the memory floor ({floor_gb:g} GiB left)"
                break
            user = f"student{len(ready) + 1}"
            ready.append(round(start_to_ready(port, token, user), 2))
            time.sleep(2)  # let the server settle into idleness
            memory.append(idle_memory_mib(user))
    except (urllib.error.URLError, OSError) as error:
        raise HostError(f"the bench's hub stopped answering: {error}") from None
    finally:
        hub_command("hub-down")
        volumes = quiet(["docker", "volume", "ls", "--quiet", "--filter", f"name=^{HUB_NAME}"])
        if volumes.stdout.split():
            quiet(["docker", "volume", "rm", "--force", *volumes.stdout.split()])
    available_gb = (system.machine()["ram_available_bytes"] or 0) / 2**30
    per_user = statistics.median(memory)
    return {
        "start_to_ready_s": {
            "first": ready[0],
            "median": round(statistics.median(ready), 2),
            "slowest": max(ready),
        },
        "idle_server_mib": per_user,
        "idle_users_started": len(ready),
        "stopped_by": stopped_by,
        "idle_users_by_memory": int(available_gb * 1024 / per_user),
    }
