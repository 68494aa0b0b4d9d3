"""Behind a company's TLS-inspecting proxy: the host trusts the company's CA, an image does not.
make lab hands the host's CAs to the lab (LAB_CA_CERTS, by default the host's local ones), so
pip in a lab reaches the index; without them, pip fails with a line that names the certificate
problem, not a resolver's.

Two networks: a company's, made here (an index on the lab's network that serves over TLS with
a certificate of a CA made for the test, as an inspecting proxy does), which runs anywhere; and
this machine's own, whose proxy inspects TLS on the way to PyPI, where the host has local CAs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from support import (
    COMPOSE_PROJECT,
    TOKEN,
    TrackedContainer,
    build_wheel,
    docker,
    in_lab_terminal,
    make_lab,
    require_image,
)

from torchlab_host.core import certificates
from torchlab_host.core.settings import Settings

INDEX_HOST = "index.company.test"
INDEX = f"https://{INDEX_HOST}:8443/simple/"
# The index: Python's file server over TLS, whose folder listings are a simple index pip reads.
SERVE = (
    "import functools, http.server, ssl\n"
    "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory='/srv')\n"
    "server = http.server.ThreadingHTTPServer(('0.0.0.0', 8443), handler)\n"
    "context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "context.load_cert_chain('/certs/server.crt', '/certs/server.key')\n"
    "server.socket = context.wrap_socket(server.socket, server_side=True)\n"
    "server.serve_forever()\n"
)


def pip_download(lab, index: str, package: str) -> tuple[int, str]:
    return in_lab_terminal(
        lab.url("").rstrip("/"), TOKEN,
        f"pip download --no-deps --index-url {index} --dest /tmp/downloaded {package}",
    )  # fmt: skip


def the_line_it_ends_with(printed: str, host: str) -> str:
    """pip's own lines, then the lab's one line: the certificate problem, named, and the fix
    (pip itself ends in a resolver error that blames the locks)."""
    last = printed.strip().splitlines()[-1]
    assert last.startswith(f"torchlab: pip could not verify the certificate of {host} ("), printed
    assert "Fix: start the lab with your company's CA in LAB_CA_CERTS" in last
    return last


@pytest.fixture
def company_index(tmp_path, company_ca):
    """The company's index (a container, which joins a lab's network while the lab runs), and
    the CA its certificate is signed by."""
    require_image("torchlab:cpu")
    certificates = company_ca(INDEX_HOST)
    served = tmp_path / "srv/simple/company-tool"
    served.mkdir(parents=True)
    build_wheel(served, "company_tool")
    for path in [tmp_path / "srv", *(tmp_path / "srv").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    tracked = TrackedContainer()
    index = tracked.run("torchlab:cpu", "python", "-c", SERVE, options=(
        "--volume", f"{tmp_path / 'srv'}:/srv:ro", "--volume", f"{certificates}:/certs:ro",
    ))  # fmt: skip
    yield certificates / "ca.crt", index
    tracked.remove_all()


@contextlib.contextmanager
def lab_beside(index: str, labs_folder: Path, **settings: str):
    """A lab started with these settings, and the company's index on its network meanwhile."""
    lab = make_lab("cpu", labs_folder)
    lab.environment.update(settings)
    network = f"{COMPOSE_PROJECT}_default"
    try:
        started = lab.up()
        assert started.returncode == 0, started.stderr
        docker("network", "connect", "--alias", INDEX_HOST, network, index)
        yield lab
    finally:
        docker("network", "disconnect", "--force", network, index, check=False)
        lab.host("down")


def test_a_lab_trusts_the_company_ca_it_is_handed_and_says_why_without_it(
    company_index, labs_folder
):
    ca, index = company_index
    with lab_beside(index, labs_folder, LAB_CA_CERTS=str(ca)) as lab:
        code, printed = pip_download(lab, INDEX, "company-tool")
        assert code == 0 and "Saved /tmp/downloaded/company_tool-1.0-" in printed, printed
    with lab_beside(index, labs_folder, LAB_CA_CERTS="") as lab:
        code, printed = pip_download(lab, INDEX, "company-tool")
        assert code != 0
        the_line_it_ends_with(printed, INDEX_HOST)


@pytest.fixture
def inspected_network():
    """This machine's network, where a proxy inspects TLS with a CA the host trusts."""
    if not certificates.ca_certificates(Settings.load()):
        pytest.skip("this network inspects no TLS: the host trusts no local CA to hand on")


def test_a_labs_pip_reaches_pypi_through_this_networks_inspecting_proxy(
    inspected_network, labs_folder
):
    """LAB_CA_CERTS unset: the host's local CAs; set and empty: none."""
    require_image("torchlab:cpu")
    for settings, reaches in (({}, True), ({"LAB_CA_CERTS": ""}, False)):
        lab = make_lab("cpu", labs_folder)
        lab.environment.update(settings)
        try:
            started = lab.up()
            assert started.returncode == 0, started.stderr
            code, printed = pip_download(lab, "https://pypi.org/simple/", "six")
        finally:
            lab.host("down")
        if reaches:
            assert code == 0 and "Saved /tmp/downloaded/six-" in printed, printed
        else:
            assert code != 0
            the_line_it_ends_with(printed, "pypi.org")
