"""A build you can see: make context stages the cpu image's build context in build/cpu/ and
prints the one docker build command that make build-cpu runs. Run by hand, as a person would
copy it, that command gives the image make build-cpu gave, layer for layer."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import urllib.request
from collections.abc import Iterator

from support import REPO, docker, require_image, wait_until

SERVE_PREFIX = "# serve the wheelhouse while it builds: "


def layers(image: str) -> list[str]:
    return docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", image).stdout


@contextlib.contextmanager
def served_while(lines: list[str]) -> Iterator[None]:
    """The wheelhouse server the printed lines ask for (an offline build), for as long as the
    build runs; nothing for an online build."""
    serve = [line.removeprefix(SERVE_PREFIX) for line in lines if line.startswith(SERVE_PREFIX)]
    if not serve:
        yield
        return
    command = shlex.split(serve[0].removesuffix(" &"))
    port = command[command.index("http.server") + 1]
    with subprocess.Popen(command, cwd=REPO) as server:
        try:
            assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/"), timeout=20)
            yield
        finally:
            server.terminate()


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except OSError:
        return False
    return True


def test_the_printed_docker_build_gives_the_layers_of_make_build_cpu():
    require_image("torchlab:cpu")
    made_by_make = layers("torchlab:cpu")
    printed = subprocess.run(
        ["make", "-s", "context", "VARIANT=cpu"], cwd=REPO, capture_output=True, text=True
    )
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0] == "torchlab: the build context of torchlab:cpu is in build/cpu/"
    assert (REPO / "build/cpu/Dockerfile").is_file()
    command = shlex.split(lines[-1])
    assert command[:2] == ["docker", "build"] and command[-1] == str(REPO / "build/cpu")
    with served_while(lines):
        built = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    tags = [command[index + 1] for index, word in enumerate(command) if word == "--tag"]
    assert "torchlab:cpu" in tags
    for tag in tags:
        assert layers(tag) == made_by_make, tag
