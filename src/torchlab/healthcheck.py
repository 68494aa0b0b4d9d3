"""The image's HEALTHCHECK: ask the running Jupyter server itself, with its own token; a node
of a distributed run (torchlab torchrun), which serves no lab, is healthy while its torchrun
agent runs.

Standard library only and no torch: Docker runs this every few seconds.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def runtime_dir() -> Path:
    configured = os.environ.get("JUPYTER_RUNTIME_DIR")
    if configured:
        return Path(configured)
    data = os.environ.get("JUPYTER_DATA_DIR") or Path.home() / ".local/share/jupyter"
    return Path(data) / "runtime"


def servers() -> list[dict]:
    """The servers running here, as Jupyter itself recorded them (jpserver-<pid>.json)."""
    found = []
    for path in sorted(runtime_dir().glob("jpserver-*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{info.get('pid')}").exists():
            found.append(info)
    return found


# The server asked is this container's, or a lab on this machine's loopback: never through
# the proxy HTTP_PROXY names, which cannot reach it.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check(info: dict, timeout: float = 3.0) -> bool:
    host = info.get("hostname") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "", "*") else host
    api = f"http://{host}:{info['port']}{info.get('base_url', '/')}api"
    token = info.get("token")
    # With a token, ask the authenticated status; a password-only server has none to give.
    request = (
        urllib.request.Request(f"{api}/status", headers={"Authorization": f"token {token}"})
        if token
        else urllib.request.Request(api)
    )
    try:
        with DIRECT.open(request, timeout=timeout) as response:
            answer = json.load(response)
            return response.status == 200 and ("started" in answer or "version" in answer)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def torchrun_agents(proc: Path = Path("/proc")) -> list[int]:
    """The processes here that are a torchrun agent (its script, run by Python)."""
    found = []
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(word.endswith(b"/torchrun") or word == b"torchrun" for word in words[:2]):
            found.append(int(cmdline.parent.name))
    return found


def main() -> int:
    running = servers()
    if not running:
        if torchrun_agents():
            return 0
        print("no Jupyter server (and no torchrun agent) is running", file=sys.stderr)
        return 1
    if all(check(info) for info in running):
        return 0
    print("the Jupyter server does not answer", file=sys.stderr)
    return 1
