"""Colab's UI on the local lab: make lab-cpu COLAB=1 lets Colab's page, and no other origin,
call the lab (Chrome's private-network preflight answered), still on loopback, still with the
token, and prints the URL Colab's "Connect to a local runtime" takes. Without COLAB=1 no
origin but the lab's own may."""

from __future__ import annotations

import urllib.error
import urllib.request

from support import TOKEN

COLAB = "https://colab.research.google.com"


def preflight(lab, origin: str) -> dict[str, str]:
    """What a browser's CORS preflight from origin gets: the Access-Control-* answers."""
    asked = urllib.request.Request(
        lab.url("/api/kernels"),
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
