"""The host tests' fake commands: a PATH of one folder, with a fake `docker` or a fake
`nvidia-smi` in it where a test says so.

The fake nvidia-smi answers each invocation the host tools make (torchlab.backends.cuda's
driver check) as nvidia-smi does on a recorded host (data/nvidia-smi/, see its README.md):
`nvidia-smi` its table, whose header names the driver and the newest CUDA it supports;
`nvidia-smi -L` its GPUs (a recorded listing of several, with MIG instances, where a test
names one); `--query-gpu=name,compute_cap --format=csv,noheader` their names and compute
capabilities; `--query-gpu=uuid,mig.mode.current --format=csv,noheader` which of them are in MIG
mode. Any other invocation fails, so a new one in the host tools is noticed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torchlab_host.core import certificates
from torchlab_host.core.settings import Settings

RECORDED = Path(__file__).parent / "data/nvidia-smi"
# The GPU of each recorded host, as nvidia-smi --query-gpu=name,compute_cap answers.
GPUS = {
    "470": "Tesla T4, 7.5",
    "535": "Tesla V100-SXM2-16GB, 7.0",
    "550": "NVIDIA A100-SXM4-40GB, 8.0",
    "570": "NVIDIA H100 80GB HBM3, 9.0",
    "580": "NVIDIA H100 80GB HBM3, 9.0",
}
# The recordings of a driver that does not answer, with nvidia-smi's exit status for each: it
# prints the error to every invocation and fails.
FAILURES = {"not-loaded": 9, "mismatch": 18, "unknown-error": 255}


def put(folder: Path, name: str, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """PATH is one empty folder (no docker, no nvidia-smi); fake_bin(name, script) puts a fake
    command in it."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(folder))
    return lambda name, script: put(folder, name, script)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """host(recording, gpu=None, toolkit=True, listing=None): from then on, PATH is a folder
    whose nvidia-smi answers as on the recorded host (gpu: the query of names and
    capabilities, "name, 9.0", where it is not that recording's; listing: a recorded
    nvidia-smi -L, list-*.txt, where the host's GPUs are not the one of the recording, whose
    GPUs' MIG modes are in mig-mode-*.txt beside it), with the NVIDIA Container Toolkit unless
    toolkit=False. Nothing else is on PATH: the fake reads its recording with /bin/cat."""
    folder = tmp_path / "bin"

    def recorded(
        name: str, gpu: str | None = None, toolkit: bool = True, listing: str | None = None
    ) -> None:
        output = RECORDED / f"{name}.txt"
        assert output.is_file(), f"no recording {output.name}"
        if name in FAILURES:
            put(folder, "nvidia-smi", f"/bin/cat {output}\nexit {FAILURES[name]}")
        else:
            gpu = gpu or GPUS[name]
            listed = f"echo 'GPU 0: {gpu.rpartition(',')[0]} (UUID: GPU-0)'"
            mig_modes = "echo 'GPU-0, Disabled'"
            if listing:
                modes = RECORDED / listing.replace("list-", "mig-mode-", 1)
                assert (RECORDED / listing).is_file(), f"no recording {listing}"
                assert modes.is_file(), f"no recording {modes.name}"
                listed = f"/bin/cat {RECORDED / listing}"
                mig_modes = f"/bin/cat {modes}"
            put(
                folder,
                "nvidia-smi",
                f'case "$*" in\n'
                f"'') /bin/cat {output};;\n"
                f"-L) {listed};;\n"
                f"'--query-gpu=name,compute_cap --format=csv,noheader') echo '{gpu}';;\n"
                f"'--query-gpu=uuid,mig.mode.current --format=csv,noheader') {mig_modes};;\n"
                f'*) echo "fake nvidia-smi: no recorded answer to: $*" >&2; exit 2;;\nesac',
            )
        if toolkit:
            put(folder, "nvidia-ctk", "exit 0")
        monkeypatch.setenv("PATH", str(folder))

    return recorded


@pytest.fixture
def current():
    """current(**values): the Settings this test's environment gives (its monkeypatched
    variables, no .env), with values given beside them."""
    return lambda **values: Settings.load({**os.environ, **values}, Path("/dev/null/.env"))


@pytest.fixture
def one_line():
    """one_line(error): its message, which must be one line with its fix."""

    def checked(error: Exception) -> str:
        message = str(error)
        assert "\n" not in message and ". Fix: " in message
        return message

    return checked


@pytest.fixture(autouse=True)
def no_host_local_cas(tmp_path, monkeypatch):
    """The host's local CAs (which make lab and make hub hand on by default) are a folder of
    the test's: none, until a test puts certificates there. This machine's own stay out."""
    folder = tmp_path / "host-local-cas"
    monkeypatch.setattr(certificates, "HOST_LOCAL_CAS", folder)
    return folder
