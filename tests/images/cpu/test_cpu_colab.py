"""Colab's UI on the local lab: make lab-cpu COLAB=1 lets Colab's page, and no other origin,
call the lab (Chrome's private-network preflight answered), still on loopback, still with the
token, and prints the URL Colab's "Connect to a local runtime" takes. Colab's connection is
replayed as Colab makes it: the token in the query, Colab's Origin and Referer, a session,
then the kernel's websocket. Without COLAB=1 no origin but the lab's own may."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from support import HOST_UID, TOKEN, execute_in_kernel
from tornado.httpclient import HTTPClientError

COLAB = "https://colab.research.google.com"


def preflight(lab, origin: str, path: str = "/api/kernels") -> dict[str, str]:
    """What a browser's CORS preflight from origin gets: the Access-Control-* answers."""
    asked = urllib.request.Request(
        lab.url(path),
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    try:
        with urllib.request.urlopen(asked, timeout=30) as answer:
            headers = answer.headers
    except urllib.error.HTTPError as error:
        headers = error.headers
    return {name.lower(): value for name, value in headers.items()}


def called_from(lab, origin: str) -> tuple[int, str | None]:
    """A page at origin calling the API with the token: the status, and the origin the answer
    lets read it (a browser hands the page nothing unless that is the page's own)."""
    asked = urllib.request.Request(
        lab.url("/api/kernels"), headers={"Origin": origin, "Authorization": f"token {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(asked, timeout=30) as answer:
            return answer.status, answer.headers.get("Access-Control-Allow-Origin")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Access-Control-Allow-Origin")


def from_colab_page(lab, method: str, path: str, body: dict | None = None):
    """A request as Colab's page sends it to a local runtime: to localhost, the token in the
    query, Colab's Origin and Referer. (status, Access-Control-* answers, parsed body)."""
    asked = urllib.request.Request(
        f"http://localhost:{lab.port}{path}?token={TOKEN}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Origin": COLAB, "Referer": f"{COLAB}/", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(asked, timeout=60) as answer:
            status, headers, text = answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        status, headers, text = error.code, error.headers, error.read()
    allowed = {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control")}
    return status, allowed, json.loads(text) if text else None


def test_colab_replayed_as_it_connects_runs_a_cell_that_writes_into_work(lab_cpu):
    lab_cpu.environment["COLAB"] = "1"
    started = lab_cpu.up()
    assert started.returncode == 0, started.stderr
    # Chrome's preflight of Colab's first POST, private network access asked for.
    allowed = preflight(lab_cpu, COLAB, "/api/sessions")
    assert allowed["access-control-allow-private-network"] == "true"
    assert allowed["access-control-allow-origin"] == COLAB
    status, allowed, specs = from_colab_page(lab_cpu, "GET", "/api/kernelspecs")
    assert status == 200 and allowed["access-control-allow-origin"] == COLAB
    assert "python3" in specs["kernelspecs"]
    status, allowed, session = from_colab_page(
        lab_cpu, "POST", "/api/sessions",
        {"path": "from_colab.ipynb", "name": "from_colab.ipynb", "type": "notebook",
         "kernel": {"name": "python3"}},
    )  # fmt: skip
    assert status == 201 and allowed["access-control-allow-credentials"] == "true", session
    channels = (
        f"ws://localhost:{lab_cpu.port}/api/kernels/{session['kernel']['id']}/channels"
        f"?token={TOKEN}"
    )
    printed = execute_in_kernel(
        channels,
        "from pathlib import Path\n"
        "Path('written_in_colab.txt').write_text('a cell run from Colab')\n"
        "print(Path.cwd())",
        headers={"Origin": COLAB},
    )
    assert printed.strip() == "/home/lab/labs"
    written = lab_cpu.labs / "written_in_colab.txt"
    assert written.read_text() == "a cell run from Colab"
    assert written.stat().st_uid == HOST_UID  # the user's own file, in their work folder
    # The token is the guard (jupyter_server lets a request with it through from any origin):
    # Colab's page itself, with a wrong one, cannot open the kernel's websocket.
    with pytest.raises(HTTPClientError) as refused:
        execute_in_kernel(channels.replace(TOKEN, "not-the-token"), "1", {"Origin": COLAB})
    assert refused.value.code == 403


def test_colab_mode_allows_colab_only_and_still_needs_the_token(lab_cpu):
    lab_cpu.environment["COLAB"] = "1"
    started = lab_cpu.up()
    assert started.returncode == 0, started.stderr
    lines = started.stdout.strip().splitlines()
    assert lines[-1] == (
        "torchlab: in Colab, Connect > Connect to a local runtime, and paste: "
        f"http://localhost:{lab_cpu.port}/?token={TOKEN}"
    )
    allowed = preflight(lab_cpu, COLAB)
    assert allowed["access-control-allow-origin"] == COLAB
    assert allowed["access-control-allow-credentials"] == "true"
    assert allowed["access-control-allow-private-network"] == "true"
    assert "authorization" in allowed["access-control-allow-headers"]
    assert called_from(lab_cpu, COLAB) == (200, COLAB)
    # Another public page is told no, to its preflight and to its requests.
    other = preflight(lab_cpu, "https://example.com")
    assert not any(name.startswith("access-control-allow") for name in other)
    assert called_from(lab_cpu, "https://example.com")[1] is None
    assert lab_cpu.get("/api/kernels", token=None)[0] == 403
    assert lab_cpu.get("/api/kernels")[0] == 200


def test_without_colab_mode_colab_is_refused(running_lab_cpu):
    answered = preflight(running_lab_cpu, COLAB)
    assert "access-control-allow-origin" not in answered
    assert "access-control-allow-private-network" not in answered
    # Colab's own request, the token in its query: jupyter_server answers a token's request
    # from any origin, but not with credentials, which Colab's page sends: its browser keeps
    # the answer from it.
    status, allowed, _ = from_colab_page(running_lab_cpu, "GET", "/api/kernelspecs")
    assert status == 200
    assert "access-control-allow-credentials" not in allowed
