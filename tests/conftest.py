"""What every test tier shares: how a test that cannot run here says so."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--variant",
        action="append",
        default=[],
        help="the image variant(s) the slow tier tests (default: every variant)",
    )


@pytest.fixture
def require():
    """require(condition, what): skip without it, but fail in CI, where it must be there."""

    def check(condition: bool, what: str) -> None:
        if condition:
            return
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {what}", pytrace=False)
        pytest.skip(f"needs {what}")

    return check
