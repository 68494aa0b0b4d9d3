"""An offline build's packages: a wheelhouse folder (make wheels fills it, one folder per lock)
served on 127.0.0.1 for as long as the build runs, never copied into a layer."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

from torchlab_host.core.errors import HostError


def require_wheels(wheelhouse: Path, needed: list[str]) -> None:
    for lock in needed:
        if not any((wheelhouse / lock).glob("*.whl")):
            raise HostError(
                f"the wheelhouse {wheelhouse} has no {lock} wheels",
                f"fill it first: make wheels WHEELHOUSE_DIR={wheelhouse}",
            )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def served(wheelhouse: Path, needed: list[str], port: int) -> Iterator[str]:
    """Serve a wheelhouse on 127.0.0.1 for the build's pip; yield its URL."""
    require_wheels(wheelhouse, needed)
    handler = functools.partial(_QuietHandler, directory=str(wheelhouse))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        raise HostError(
            f"port {port} for serving the wheelhouse is in use",
            f"set another one: WHEELHOUSE_PORT={port + 1}",
        ) from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def url(port: int) -> str:
    """Where a build finds the wheelhouse while it is served (make context prints builds for it)."""
    return f"http://127.0.0.1:{port}"
