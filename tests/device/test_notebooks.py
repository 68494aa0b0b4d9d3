"""Every lab notebook runs on this environment's device, checks itself, and leaves labs/ as it was.

The notebooks assert what their text claims (shapes, values, a final loss), so a notebook that
silently goes wrong on some device fails here.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import torchlab
from torchlab import system

LABS = system.labs_dir()
NOTEBOOKS = sorted(LABS.glob("*.ipynb"))
# What a newcomer waits for on a laptop CPU, at most, per notebook.
CPU_BUDGET_S = 60


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file() and ".ipynb_checkpoints" not in path.parts
    }


def test_the_labs_folder_has_the_course():
    assert len(NOTEBOOKS) >= 4, f"expected the course notebooks in {LABS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_and_checks_itself(path):
    notebook = nbformat.read(path, as_version=4)
    before = snapshot(LABS)
    start = time.monotonic()
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(LABS)}}
    ).execute()
    elapsed = time.monotonic() - start
    assert snapshot(LABS) == before, "the notebook left files behind in the labs folder"
    if torchlab.best_device().type == "cpu":
        assert elapsed < CPU_BUDGET_S, f"{path.name} took {elapsed:.0f} s on the CPU"
