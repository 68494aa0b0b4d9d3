"""The device suite: the same tests on the host and in every image, on every usable device.

Tests that take a `device` run once per usable device (cpu, each cuda device, xla). The
device kind named by $TORCHLAB_EXPECT (torchlab selftest --expect) must be there: when it
is not, its tests fail with the probe's one-line reason. Absent kinds otherwise skip.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from torchlab.backends import Backend, all_backends, for_device
from torchlab.devices import expected


@dataclass(frozen=True)
class Unusable:
    backend: str
    reason: str


def _device_params() -> list:
    params = []
    for backend in all_backends():
        status = backend.status()
        if status.usable:
            params += [pytest.param(device, id=str(device)) for device in backend.devices()]
        else:
            params.append(pytest.param(Unusable(backend.name, str(status.hint)), id=backend.name))
    return params


DEVICE_PARAMS = _device_params()


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too: in an image the suite runs without the checkout's pyproject.toml.
    config.addinivalue_line("markers", "notebook: runs a whole notebook; not in make test")
    config.addinivalue_line("markers", "needs(package): a notebook needs this package")
    # torch's own torch/utils/mkldnn.py, which Inductor imports, still defines TorchScript classes.
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
    )


@pytest.fixture(params=DEVICE_PARAMS)
def device(request: pytest.FixtureRequest) -> torch.device:
    if isinstance(request.param, Unusable):
        unusable = request.param
        if unusable.backend == expected():
            pytest.fail(f"expected {unusable.backend}, but {unusable.reason}", pytrace=False)
        pytest.skip(f"{unusable.backend} is not usable here: {unusable.reason}")
    return request.param


@pytest.fixture
def backend(device: torch.device) -> Backend:
    return for_device(device)


@pytest.fixture(autouse=True)
def _restore_determinism():
    """seed_everything(deterministic=True) is global state; no test leaks it to the next."""
    yield
    torch.use_deterministic_algorithms(False)


def pytest_terminal_summary(terminalreporter) -> None:
    """Say which labs did not run here, and why (a skip's reason is easy to miss)."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if "test_notebook_runs_and_checks_itself" in report.nodeid
    ]
    if skipped:
        terminalreporter.section("labs not run in this environment")
        for report in skipped:
            notebook = report.nodeid.rsplit("[", 1)[-1].rstrip("]")
            terminalreporter.line(f"{notebook}: {report.longrepr[2].removeprefix('Skipped: ')}")
