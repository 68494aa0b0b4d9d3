"""What every test tier shares: how a test that cannot run here says so, and a company's CA."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--variant",
        action="append",
        default=[],
        help="the image variant(s) the slow tier tests (default: every variant)",
    )


@pytest.fixture(scope="session")
def require():
    """require(condition, what): skip without it, but fail in CI, where it must be there."""

    def check(condition: bool, what: str) -> None:
        if condition:
            return
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {what}", pytrace=False)
        pytest.skip(f"needs {what}")

    return check


@pytest.fixture
def company_ca(tmp_path, require):
    """company_ca(host): a company's CA, as a TLS-inspecting proxy has, and a certificate for
    host signed by it; the folder holding ca.crt, server.crt and server.key (readable by all,
    for a container's server)."""
    require(shutil.which("openssl") is not None, "openssl")

    def made(host: str) -> Path:
        folder = tmp_path / "company-ca"
        folder.mkdir()

        def openssl(*arguments: str) -> None:
            subprocess.run(["openssl", *arguments], cwd=folder, check=True, capture_output=True)

        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=torchlab test company CA",
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            f"/CN={host}",
        )
        (folder / "names").write_text(f"subjectAltName=DNS:{host}\n")
        openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "names",
            "-out",
            "server.crt",
        )
        for path in folder.iterdir():
            path.chmod(0o644)
        return folder

    return made
