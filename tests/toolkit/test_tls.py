"""The lab's pip says in one line when the index's certificate is why it failed (a proxy that
inspects TLS with a CA the lab does not trust), and says nothing where it is not."""

from __future__ import annotations

import http.server
import ssl
import threading

import pytest

from torchlab import tls


def test_the_index_asked_is_pips():
    assert tls.index_of(["install", "six"], {}) == "https://pypi.org/simple/"
    assert tls.index_of(["install", "six"], {"PIP_INDEX_URL": "https://m.corp/s/"}) == (
        "https://m.corp/s/"
    )
    given = {"PIP_INDEX_URL": "https://m.corp/s/"}
    assert tls.index_of(["download", "-i", "https://i.corp/", "six"], given) == "https://i.corp/"
    assert tls.index_of(["install", "--index-url=https://j.corp/", "six"], given) == (
        "https://j.corp/"
    )


@pytest.fixture
def company_index(company_ca, monkeypatch):
    """An index on loopback whose certificate a company's CA signed; no proxy on the way."""
    for name in ("PIP_CERT", "HTTPS_PROXY", "https_proxy", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    certificates = company_ca("localhost")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.crt", certificates / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}/simple/", certificates / "ca.crt"
    server.shutdown()


def test_an_index_signed_by_a_ca_the_lab_does_not_trust_is_named_with_the_fix(
    company_index, capsys
):
    url, _ = company_index
    problem = tls.certificate_problem(url)
    assert problem == "unable to get local issuer certificate"  # OpenSSL's words
    tls.say_why_it_failed(["download", "--index-url", url, "six"])
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("torchlab: pip could not verify the certificate of localhost (")
    assert "Fix: start the lab with your company's CA in LAB_CA_CERTS" in line


def test_with_the_companys_ca_trusted_nothing_is_said(company_index, capsys, monkeypatch):
    url, ca = company_index
    monkeypatch.setenv("PIP_CERT", str(ca))  # as the entrypoint sets it
    assert tls.certificate_problem(url) is None
    tls.say_why_it_failed(["download", "--index-url", url, "six"])
    assert capsys.readouterr().err == ""


def test_an_index_that_does_not_answer_is_pips_to_explain():
    # Nothing listens on port 9 of loopback; plain HTTP has no certificate.
    assert tls.certificate_problem("https://127.0.0.1:9/simple/") is None
    assert tls.certificate_problem("http://127.0.0.1:9/simple/") is None
