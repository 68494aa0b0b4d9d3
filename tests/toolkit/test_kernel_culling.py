"""Kernel culling in the image's Jupyter settings (docker/jupyter_server_config.py), loaded as
Jupyter loads them (traitlets' config loader) under the environment a lab or a hub server
gets: TORCHLAB_CULL_IDLE_TIMEOUT and TORCHLAB_CULL_INTERVAL."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config.loader import PyFileConfigLoader

CONFIG = Path(__file__).parents[2] / "docker/jupyter_server_config.py"


def kernel_manager(monkeypatch, **environment: str):
    for name in ("TORCHLAB_CULL_IDLE_TIMEOUT", "TORCHLAB_CULL_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return PyFileConfigLoader(CONFIG.name, str(CONFIG.parent)).load_config().MappingKernelManager


def test_a_set_timeout_culls_idle_kernels_open_tabs_or_not_and_never_a_busy_one(monkeypatch):
    culling = kernel_manager(
        monkeypatch, TORCHLAB_CULL_IDLE_TIMEOUT="1200", TORCHLAB_CULL_INTERVAL="30"
    )
    assert culling.cull_idle_timeout == 1200
    assert culling.cull_interval == 30
    assert culling.cull_connected is True
    assert culling.cull_busy is False


@pytest.mark.parametrize("unset", [{}, {"TORCHLAB_CULL_IDLE_TIMEOUT": ""}])
def test_without_a_timeout_no_kernel_is_culled_and_the_check_is_every_minute(monkeypatch, unset):
    culling = kernel_manager(monkeypatch, **unset)
    assert culling.cull_idle_timeout == 0  # jupyter_server culls only above 0
    assert culling.cull_interval == 60


def test_a_timeout_that_is_not_seconds_stops_the_server_in_one_line(monkeypatch):
    with pytest.raises(SystemExit) as stopped:
        kernel_manager(monkeypatch, TORCHLAB_CULL_IDLE_TIMEOUT="1h")
    assert str(stopped.value) == (
        "torchlab: TORCHLAB_CULL_IDLE_TIMEOUT is '1h', not a number of seconds. Fix: set it "
        "(make lab: LAB_CULL_IDLE_TIMEOUT, make hub: HUB_CULL_IDLE_TIMEOUT) to whole seconds, "
        "0 for never"
    )
