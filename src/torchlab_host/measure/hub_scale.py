"""make bench's hub part: a class that starts at once, a hub restarted while servers start,
how fast one user's lab starts, what an idle one costs, and how many idle users this machine
holds.

A hub of its own (HUB_NAME=torchlab-hub-bench) is driven through its REST API with a
class-admin token (HUB_API_TOKEN): 30 users start their servers at the same moment; the hub is
restarted while a third of them start again; then users start one after another until the
user cap, the time budget or the memory floor is reached. Then it is stopped and its volumes
removed. The slow tier drives a hub of its own the same way (tests/images/cpu).
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from torchlab import system
from torchlab_host.core.addresses import free_loopback_port
from torchlab_host.core.checkout import run_host_tools
from torchlab_host.core.engine import quiet
from torchlab_host.core.errors import HostError

HUB_NAME = "torchlab-hub-bench"
ADMIN = "bench-admin"
# A file each user writes before the restart, in the volume their work lives in.
KEPT = "/home/lab/labs/before-the-restart.txt"


@dataclass(frozen=True)
class ClassHub:
    """A running hub (make hub with HUB_NAME=name), driven as a class's scripts drive it."""

    name: str
    port: int
    token: str

    def call(self, method: str, path: str, timeout: float = 30) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/hub/api{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"{}" if method == "POST" else None,
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read()
        return json.loads(body) if body else {}

    def servers(self) -> dict[str, dict[str, Any]]:
        """Each user's default server as the hub reports it ({} for a user without one)."""
        return {
            user["name"]: user.get("servers", {}).get("", {}) for user in self.call("GET", "/users")
        }

    def answers(self) -> bool:
        try:
            self.call("GET", "/users", timeout=5)
        except (urllib.error.URLError, OSError):
            return False
        return True

    def ask_to_start(self, user: str) -> str | None:
        """Ask for a user's server (adding the user first); the hub's refusal, if any."""
        try:
            try:
                self.call("POST", f"/users/{user}")
            except urllib.error.HTTPError as error:
                if error.code != 409:  # 409: the user exists
                    raise
            self.call("POST", f"/users/{user}/server", timeout=120)
        except (urllib.error.URLError, OSError) as error:
            return str(error)
        return None

    def start_at_once(
        self, users: list[str], timeout: float = 600
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Start every user's server at the same moment, as a class clicking Start together
        does: each ready user's seconds from that moment, and why each other user has none."""
        start = time.monotonic()
        ready: dict[str, float] = {}
        failed: dict[str, str] = {}
        if not users:
            return ready, failed
        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            asked = {user: pool.submit(self.ask_to_start, user) for user in users}
            while len(ready) + len(failed) < len(users) and time.monotonic() - start < timeout:
                # Whose request had its answer before this look at the servers.
                answered = {user for user, request in asked.items() if request.done()}
                reported = self.servers()
                for user in set(users) - set(ready) - set(failed):
                    server = reported.get(user, {})
                    if server.get("ready"):
                        ready[user] = round(time.monotonic() - start, 2)
                    elif user in answered and asked[user].result():
                        failed[user] = f"refused: {asked[user].result()}"
                    elif user in answered and not server.get("pending"):
                        failed[user] = "its server stopped while starting (the hub log says why)"
                time.sleep(1)
        for user in set(users) - set(ready) - set(failed):
            failed[user] = f"not ready in {timeout:.0f} s"
        return ready, failed

    def stop(self, users: list[str], timeout: float = 120) -> None:
        for user in users:
            self.call("DELETE", f"/users/{user}/server", timeout=timeout)
        self.wait_until(lambda servers: not any(servers.get(user) for user in users), timeout)

    def wait_until(self, settled, timeout: float) -> None:
        start = time.monotonic()
        while not settled(self.servers()):
            if time.monotonic() - start > timeout:
                raise HostError(f"the hub {self.name} did not settle in {timeout:.0f} s")
            time.sleep(1)

    def in_server(self, user: str, command: str) -> subprocess.CompletedProcess:
        return quiet(["docker", "exec", f"{self.name}-user-{user}", "sh", "-c", command])

    def restart_while_starting(
        self, users: list[str], starting: int, timeout: float = 300
    ) -> dict[str, Any]:
        """Every user's server runs and holds a file; the last `starting` of them stop and
        start again, and the hub's container restarts while they start. Then every user must
        have a running server or be able to start one, and find their file."""
        for user in users:
            self.in_server(user, f"echo {user} > {KEPT}")
        restarting = users[-starting:]
        self.stop(restarting)
        with concurrent.futures.ThreadPoolExecutor(len(restarting)) as pool:
            for user in restarting:
                pool.submit(self.ask_to_start, user)
            time.sleep(2)  # the spawns are under way
            restart = time.monotonic()
            quiet(["docker", "restart", "--time", "10", self.name])
        while not self.answers():
            if time.monotonic() - restart > timeout:
                raise HostError(f"the hub {self.name} did not come back in {timeout:.0f} s")
            time.sleep(0.5)
        back_s = round(time.monotonic() - restart, 1)
        # Servers caught starting settle (ready, or gone); a user without one starts it again.
        self.wait_until(lambda now: not any(now.get(u, {}).get("pending") for u in users), timeout)
        running = [user for user, server in self.servers().items() if server.get("ready")]
        again, failed = self.start_at_once([user for user in users if user not in running])
        lost = [
            user for user in users
            if user not in failed and self.in_server(user, f"cat {KEPT}").stdout.strip() != user
        ]  # fmt: skip
        return {
            "users": len(users),
            "starting_at_the_restart": starting,
            "hub_back_s": back_s,
            "running_after_the_restart": len([user for user in users if user in running]),
            "started_again": len(again),
            "failed": failed,
            "files_lost": lost,
        }

    def start_to_ready(self, user: str, timeout: float = 300) -> float:
        """Seconds from asking for a user's server to the hub reporting it ready."""
        ready, failed = self.start_at_once([user], timeout)
        if failed:
            raise HostError(f"{user}'s server did not start: {failed[user]}")
        return ready[user]

    def idle_memory_mib(self, user: str) -> float:
        """What an idle user's container uses, as Docker counts it (cgroup memory)."""
        stats = quiet(
            ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}",
             f"{self.name}-user-{user}"]
        )  # fmt: skip
        used = stats.stdout.split("/")[0].strip()  # "153.2MiB / 2GiB"
        scale = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
        return round(float(used[:-3]) * scale[used[-3:]], 1)


def hub_command(*arguments: str, **settings: str) -> subprocess.CompletedProcess:
    return run_host_tools(*arguments, settings={"HUB_NAME": HUB_NAME, **settings})


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def class_at_once(hub: ClassHub, size: int) -> tuple[list[str], dict[str, Any]]:
    users = [f"class{number}" for number in range(1, size + 1)]
    ready, failed = hub.start_at_once(users)
    times = list(ready.values()) or [0.0]
    return users, {
        "users": size,
        "ready": len(ready),
        "failed": failed,
        "ready_s": {
            "p50": percentile(times, 0.5),
            "p95": percentile(times, 0.95),
            "max": max(times),
        },
    }


def one_after_another(
    hub: ClassHub, max_users: int, budget_s: float, floor_gb: float
) -> dict[str, Any]:
    ready, memory, stopped_by = [], [], "the user cap"
    start = time.monotonic()
    while len(ready) < max_users:
        if time.monotonic() - start > budget_s:
            stopped_by = "the time budget"
            break
        if (system.machine()["ram_available_bytes"] or 0) < floor_gb * 2**30:
            stopped_by = f"the memory floor ({floor_gb:g} GiB left)"
            break
        user = f"student{len(ready) + 1}"
        ready.append(hub.start_to_ready(user))
        time.sleep(2)  # let the server settle into idleness
        memory.append(hub.idle_memory_mib(user))
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


def measure(class_size: int = 30, max_users: int = 40, budget_s: float = 600,
            floor_gb: float = 3.0) -> dict[str, Any]:  # fmt: skip
    token = secrets.token_hex(24)
    port = free_loopback_port()
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
    hub = ClassHub(HUB_NAME, port, token)
    try:
        users, at_once = class_at_once(hub, class_size)
        restarted = hub.restart_while_starting(users, starting=class_size // 3)
        hub.stop(users)
        results = one_after_another(hub, max_users, budget_s, floor_gb)
    except (urllib.error.URLError, OSError) as error:
        raise HostError(f"the bench's hub stopped answering: {error}") from None
    finally:
        hub_command("hub-down")
        volumes = quiet(["docker", "volume", "ls", "--quiet", "--filter", f"name=^{HUB_NAME}"])
        if volumes.stdout.split():
            quiet(["docker", "volume", "rm", "--force", *volumes.stdout.split()])
    return {"class_at_once": at_once, "restart_while_starting": restarted, **results}
