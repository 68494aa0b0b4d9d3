"""make lab prints its URL once the lab's server answers there, asked as the image's healthcheck
asks it, and not at Docker's next health check; a container that stops while it starts gives
its own reason. A small HTTP server stands in for the lab's, and a fake docker for compose."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from torchlab_host.core.addresses import browser_url
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lab import manage

TOKEN = "a-lab-token"


@pytest.fixture
def lab_server():
    """A server that refuses its first `refusals` status requests (as a lab still starting
    does), then answers as Jupyter Server does; it records each request's Authorization."""
    asked: list[str | None] = []
    refusals = {"left": 3}

    class Lab(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.headers.get("Authorization"))
            if refusals["left"]:
                refusals["left"] -= 1
                self.send_error(503)
                return
            if self.headers.get("Authorization") not in (f"token {TOKEN}", None):
                self.send_error(403)
                return
            body = json.dumps({"started": "2026-12-04T00:00:00Z"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Lab)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.asked = asked
    yield server
    server.shutdown()


def test_make_lab_waits_until_the_server_answers_with_the_token(lab_server, monkeypatch):
    monkeypatch.setattr(manage, "ASK_EVERY_S", 0.01)
    monkeypatch.setattr(manage, "running", lambda service, settings: True)
    root = browser_url("127.0.0.1", lab_server.server_port)
    manage.wait_until_serving("lab-cpu", root, TOKEN, Settings.load())
    assert lab_server.asked == [f"token {TOKEN}"] * 4  # three refused, then the answer


def test_behind_a_proxy_the_lab_is_still_asked_directly(lab_server, monkeypatch):
    """A host whose HTTP_PROXY names a company proxy, and whose NO_PROXY leaves loopback out:
    the proxy could never reach the lab, so the lab is asked without it."""
    monkeypatch.setattr(manage, "ASK_EVERY_S", 0.01)
    monkeypatch.setattr(manage, "running", lambda service, settings: True)
    monkeypatch.setattr(manage, "READY_TIMEOUT_S", 10)  # asked through the proxy: never
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    root = browser_url("127.0.0.1", lab_server.server_port)
    manage.wait_until_serving("lab-cpu", root, TOKEN, Settings.load())
    assert lab_server.asked[-1] == f"token {TOKEN}"


def test_a_lab_with_a_password_is_asked_without_a_token(lab_server, monkeypatch):
    monkeypatch.setattr(manage, "ASK_EVERY_S", 0.01)
    monkeypatch.setattr(manage, "running", lambda service, settings: True)
    root = browser_url("127.0.0.1", lab_server.server_port)
    manage.wait_until_serving("lab-cpu", root, None, Settings.load())
    assert lab_server.asked[-1] is None


def test_a_lab_that_stops_while_it_starts_says_why_in_one_line(fake_bin, monkeypatch, one_line):
    """torchlab serve's own reason, from the container's log, as when compose's wait failed."""
    monkeypatch.setattr(manage, "LOOK_EVERY_S", 0.0)
    fake_bin(
        "docker",
        'case "$*" in\n'
        "*' ps '*) ;;\n"  # no running container
        "*' logs '*) echo 'torchlab: the work folder is not writable by uid 1000. Fix: "
        "sudo chown -R 1000 work';;\nesac",
    )
    with pytest.raises(HostError) as raised:
        manage.wait_until_serving("lab-cpu", "http://127.0.0.1:9/", TOKEN, Settings.load())
    assert one_line(raised.value) == (
        "the work folder is not writable by uid 1000. Fix: sudo chown -R 1000 work"
    )


def test_a_lab_that_stops_without_a_reason_points_at_its_log(fake_bin, monkeypatch, one_line):
    monkeypatch.setattr(manage, "LOOK_EVERY_S", 0.0)
    fake_bin("docker", "true")
    with pytest.raises(HostError) as raised:
        manage.wait_until_serving("lab-cpu", "http://127.0.0.1:9/", TOKEN, Settings.load())
    assert (
        one_line(raised.value) == "lab-cpu stopped while it started. Fix: read its log: make logs"
    )
