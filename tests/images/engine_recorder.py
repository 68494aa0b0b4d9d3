"""A recording proxy for the Docker engine, for the slow tier's hub on a machine without a GPU.

EngineRecorder listens on a unix socket of its own and forwards every connection to the
engine's socket byte for byte, with one exception: each `POST /containers/create` body is
recorded as the client sent it, and what this machine cannot give is taken out before the
engine sees it (fixing Content-Length): its NVIDIA device requests, and the ulimits above this
machine's hard limits (a GPU server's unlimited memlock; runc cannot raise it here), so a GPU
server's container starts here and the test still reads what it asked for. The requests of a
connection are read one after another (keep-alive; Content-Length or chunked bodies); after a
request that hijacks the connection (an upgrade, attach, exec start) it is piped both ways as
it is. The engine's answers always are.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

ENGINE = "/var/run/docker.sock"
CREATE = re.compile(rb"POST (?:/v[\d.]+)?/containers/create[?\s]")
# Docker answers these with a raw stream both ways (the CLI also says Upgrade for them).
HIJACKS = re.compile(rb"\S+ (?:/v[\d.]+)?/(?:containers/[^/]+/attach|exec/[^/]+/start)[?\s]")
FRAMING = (b"content-length", b"transfer-encoding")


# The ulimits a create request may name, as Docker names them, and this machine's resource.
LIMITS = {"memlock": resource.RLIMIT_MEMLOCK, "stack": resource.RLIMIT_STACK}


def beyond_this_machine(limit: dict[str, Any]) -> bool:
    """A ulimit whose hard limit is above what this machine lets a container have."""
    which = LIMITS.get(limit["Name"])
    if which is None:
        return False
    hard = resource.getrlimit(which)[1]
    wanted = resource.RLIM_INFINITY if limit["Hard"] == -1 else limit["Hard"]
    return hard != resource.RLIM_INFINITY and (wanted == resource.RLIM_INFINITY or wanted > hard)


@dataclass(frozen=True)
class Created:
    """A container create request: the name it asked for, and its body as sent."""

    name: str
    config: dict[str, Any]


def nvidia(request: dict[str, Any]) -> bool:
    """An NVIDIA device request: by its driver, or (driver left to Docker) by asking for GPUs."""
    capabilities = [word for words in request.get("Capabilities") or [] for word in words]
    return request.get("Driver") == "nvidia" or (
        not request.get("Driver") and "gpu" in capabilities
    )


class EngineRecorder:
    def __init__(self, path: Path, engine: str = ENGINE):
        self.path, self.engine = path, engine
        self.created: list[Created] = []
        self.failures: list[str] = []  # what a connection could not forward (a test asserts none)
        self._listener = socket.socket(socket.AF_UNIX)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> EngineRecorder:
        self._listener.bind(str(self.path))
        self._listener.listen(64)
        self._listener.settimeout(0.2)  # so that the accepting thread sees the stop
        self._accepting.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._accepting.join(timeout=5)
        self._listener.close()
        with self._lock:
            for connection in self._open:  # wakes the threads that wait on them
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        engine = socket.socket(socket.AF_UNIX)
        with self._lock:
            self._open.update((client, engine))
        try:
            engine.connect(self.engine)
            answers = threading.Thread(target=pipe, args=(engine.recv, client), daemon=True)
            answers.start()
            requests = client.makefile("rb")
            while (hijacked := self._forward(requests, engine)) is False:
                pass
            if hijacked:
                pipe(requests.read1, engine)
            else:
                with contextlib.suppress(OSError):
                    engine.shutdown(socket.SHUT_WR)
            answers.join(timeout=60)
        except OSError:
            pass  # a side closed early, or the recorder stops
        except Exception as error:  # a request it cannot read: the test says so
            self.failures.append(repr(error))
        finally:
            with self._lock:
                self._open.difference_update((client, engine))
            client.close()
            engine.close()

    def _forward(self, requests: BinaryIO, engine: socket.socket) -> bool | None:
        """Forward one request: None at the end of the connection, True when it hijacks it."""
        line = requests.readline()
        if not line:
            return None
        headers = []
        while (header := requests.readline()) not in (b"\r\n", b"\n", b""):
            headers.append(header)
        said = dict(field(header) for header in headers)
        chunked = b"chunked" in said.get(b"transfer-encoding", b"")
        length = int(said.get(b"content-length", b"0"))
        if CREATE.match(line):
            body = b"".join(data for _, data in chunks(requests)) if chunked else None
            body = self._recorded(line, requests.read(length) if body is None else body)
            kept = [header for header in headers if field(header)[0] not in FRAMING]
            engine.sendall(b"".join([line, *kept, b"Content-Length: %d\r\n\r\n" % len(body), body]))
        else:
            engine.sendall(b"".join([line, *headers, b"\r\n"]))
            if chunked:
                for sent, _ in chunks(requests):
                    engine.sendall(sent)
            while length > 0 and (data := requests.read1(min(length, 65536))):
                engine.sendall(data)
                length -= len(data)
        return b"upgrade" in said.get(b"connection", b"") or bool(HIJACKS.match(line))

    def _recorded(self, line: bytes, body: bytes) -> bytes:
        """Record a create request; its body without NVIDIA device requests and ulimits beyond
        this machine."""
        query = urlsplit(line.split()[1].decode()).query
        config = json.loads(body)
        self.created.append(Created(parse_qs(query).get("name", [""])[0], json.loads(body)))
        host = config.get("HostConfig") or {}
        requests = host.get("DeviceRequests") or []
        limits = host.get("Ulimits") or []
        if not any(map(nvidia, requests)) and not any(map(beyond_this_machine, limits)):
            return body
        host["DeviceRequests"] = [request for request in requests if not nvidia(request)]
        host["Ulimits"] = [limit for limit in limits if not beyond_this_machine(limit)]
        return json.dumps(config).encode()


def field(header: bytes) -> tuple[bytes, bytes]:
    """A header line's name and value, lower case."""
    name, _, value = header.partition(b":")
    return name.strip().lower(), value.strip().lower()


def chunks(stream: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    """A chunked body's chunks, each (as sent, its data), to the last one and its trailer."""
    while True:
        size_line = stream.readline()
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            trailer = []
            while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
                trailer.append(line)
            yield b"".join([size_line, *trailer, b"\r\n"]), b""
            return
        data = stream.read(size)
        yield size_line + data + stream.readline(), data


def pipe(read: Callable[[int], bytes], target: socket.socket) -> None:
    """Copy until the reading side ends, then end the writing side."""
    with contextlib.suppress(OSError):
        while data := read(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
