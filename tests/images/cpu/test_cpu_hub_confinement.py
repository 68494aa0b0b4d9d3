"""No student can take the class down: on the real hub, one student's server runs a fork bomb
and then a memory hog (each stopped by a time limit), and meanwhile another student's server
runs a kernel's code and the hub's API answers; afterwards both students start servers again.

The bomb is a real one (every process forks again), so the test first checks that the server
has its process limit: without it, it would fill this machine's process table."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support import MANIFEST, class_hub, docker, require_image, run_in_kernel, server_token

HUB_NAME = "torchlab-hub-confinement-test"
MALLORY, ALICE = "mallory", "alice"
MEMORY_LIMIT_GIB = 1
BOMB_S = 15
HOG_S = 30

# Every process forks again until the time is up; a refused fork is counted and retried.
FORK_BOMB = f"""
import os, time
stop = time.monotonic() + {BOMB_S}
first, refused = os.getpid(), 0
while time.monotonic() < stop:
    try:
        os.fork()
    except OSError:
        refused += 1
        time.sleep(0.05)
if os.getpid() != first:
    os._exit(0)
print(refused)
"""
# Memory, written (so it is really used), 64 MiB at a time until the time is up.
MEMORY_HOG = f"""
import time
stop, held = time.monotonic() + {HOG_S}, []
while time.monotonic() < stop:
    held.append(b"x" * (64 << 20))
print(len(held))
"""


@pytest.fixture(scope="module")
def hub():
    require_image("torchlab:cpu")
    with class_hub(HUB_NAME, HUB_MEM_LIMIT=f"{MEMORY_LIMIT_GIB}G") as (started, _):
        assert started.start_at_once([MALLORY, ALICE], timeout=300)[1] == {}
        yield started


def server(user: str) -> str:
    return f"{HUB_NAME}-user-{user}"


def host_tasks() -> int:
    """Processes and threads on this machine: what a fork bomb fills."""
    return sum(len(list(task.iterdir())) for task in Path("/proc").glob("[0-9]*/task")
               if task.exists())  # fmt: skip


def most_host_tasks(while_running: threading.Thread) -> list[int]:
    """Filled in with the machine's task counts, every 0.5 s while the thread runs."""
    counts: list[int] = []

    def count() -> None:
        while while_running.is_alive():
            counts.append(host_tasks())
            time.sleep(0.5)

    threading.Thread(target=count, daemon=True).start()
    return counts


def in_server(user: str, program: str, timeout: float) -> subprocess.CompletedProcess:
    """A student's Python in their server, as a terminal of their lab runs it."""
    return subprocess.run(
        ["docker", "exec", server(user), "python", "-c", program],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def the_others_still_work(hub, alice_token: str, during: threading.Thread) -> list[str]:
    """While `during` runs: Alice's server runs code in a new kernel and the hub's API answers,
    again and again; what failed, if anything."""
    failures = []
    base = f"http://127.0.0.1:{hub.port}/user/{ALICE}"
    while during.is_alive():
        try:
            printed = run_in_kernel(base, alice_token, "print(6 * 7)", timeout=60)
            if printed.strip() != "42":
                failures.append(f"Alice's kernel printed {printed!r}")
        except Exception as error:  # every failure is the finding
            failures.append(f"Alice's kernel: {error!r}")
        if not hub.answers():
            failures.append("the hub's API did not answer")
        time.sleep(1)
    return failures


def test_a_fork_bomb_and_a_memory_hog_stop_in_their_own_server(hub):
    limit = MANIFEST.containers["pids_limit"]
    confined = docker("inspect", "--format", "{{.HostConfig.PidsLimit}}", server(MALLORY))
    assert int(confined.stdout) == limit, "no process limit: the fork bomb would hit the host"
    alice_token = server_token(server(ALICE))

    before = host_tasks()
    outcome: dict[str, subprocess.CompletedProcess] = {}
    bomb = threading.Thread(
        target=lambda: outcome.update(bomb=in_server(MALLORY, FORK_BOMB, BOMB_S + 60))
    )
    bomb.start()
    counted = most_host_tasks(bomb)
    failures = the_others_still_work(hub, alice_token, bomb)
    # The bomb's forks were refused at the server's limit, so the host's table barely grew.
    assert outcome["bomb"].returncode == 0, outcome["bomb"].stderr[-2000:]
    assert int(outcome["bomb"].stdout) > 0, "no fork was refused: the bomb never met the limit"
    assert limit / 2 < max(counted) - before < limit + 200, (before, max(counted))
    assert failures == []

    limits = json.loads(
        docker("inspect", "--format", "{{json .HostConfig}}", server(MALLORY)).stdout
    )
    assert limits["Memory"] == MEMORY_LIMIT_GIB << 30, "no memory limit: the hog fills the host"
    assert limits["MemorySwap"] == limits["Memory"], "the hog could swap as much again"
    hog = threading.Thread(
        target=lambda: outcome.update(hog=in_server(MALLORY, MEMORY_HOG, HOG_S + 60))
    )
    hog.start()
    failures = the_others_still_work(hub, alice_token, hog)
    # The server's memory limit stopped the hog (the OOM killer: 137) long before its time,
    # and took only the hog: Mallory's server itself runs on.
    assert outcome["hog"].returncode == 137, (outcome["hog"].returncode, outcome["hog"].stdout)
    assert failures == []
    running = docker("inspect", "--format", "{{.State.Running}}", server(MALLORY))
    assert running.stdout.strip() == "true", "Mallory's own server went down with the hog"
    assert hub.servers()[MALLORY].get("ready"), hub.servers()

    # Both start again, from the hub, as after any stop.
    hub.stop([MALLORY, ALICE])
    ready, failed = hub.start_at_once([MALLORY, ALICE], timeout=300)
    assert failed == {} and sorted(ready) == [ALICE, MALLORY]
    log = docker("logs", HUB_NAME)
    assert "Traceback" not in log.stdout + log.stderr


def test_a_neighbour_reaches_another_server_only_to_be_sent_to_log_in(hub):
    """Servers share the hub's network (its proxy must reach them), so Mallory's server reaches
    Alice's port; without Alice's token or cookie her server gives nothing but a redirect to
    the hub's login."""
    asked = in_server(MALLORY, (
        "import http.client\n"
        f"c = http.client.HTTPConnection('{server(ALICE)}', 8888, timeout=10)\n"
        f"c.request('GET', '/user/{ALICE}/api/contents')\n"
        "r = c.getresponse()\n"
        "print(r.status, r.getheader('Location') or '', len(r.read()))"
    ), timeout=60)  # fmt: skip
    assert asked.returncode == 0, asked.stderr[-2000:]
    status, *rest = asked.stdout.split()
    assert status in {"302", "403"}, asked.stdout
    if status == "302":
        assert "/hub/api/oauth2/authorize" in rest[0] or "/hub/login" in rest[0], rest
