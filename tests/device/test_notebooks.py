"""Every lab notebook runs on this environment's device, checks itself, and leaves labs/ as it was.

The notebooks assert what their text claims (shapes, values, a final loss), so a notebook that
silently goes wrong on some device fails here. Beside the course, notebooks/ holds notebooks
written as people bring them from Colab or a plain Jupyter install: no torchlab, only the stack.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from torchlab import packages, system

# Whole notebooks take most of the device suite's time: they run in every image's suite
# (make test-<variant>) and in make test-host-<variant>, not in the fast tier.
pytestmark = pytest.mark.notebook

LABS = system.labs_dir()
NOTEBOOKS = sorted(LABS.glob("*.ipynb"))
BROUGHT = sorted((Path(__file__).parent / "notebooks").glob("*.ipynb"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of a traceback


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file() and ".ipynb_checkpoints" not in path.parts
    }


def run(notebook: nbformat.NotebookNode, folder: Path) -> None:
    """Run every cell in a fresh kernel, in folder, as Jupyter does. The kernel talks over IPC
    like the lab's (a TCP kernel warns that its traffic is unencrypted)."""
    with tempfile.TemporaryDirectory() as runtime:
        kernel = KernelManager(
            kernel_name="python3", transport="ipc", connection_file=str(Path(runtime, "k.json"))
        )
        client = NotebookClient(
            notebook, km=kernel, timeout=600, resources={"metadata": {"path": str(folder)}}
        )
        try:
            client.execute()
        finally:
            # The client does not own a kernel it was handed: stop both here.
            if client.kc is not None:
                client.kc.stop_channels()
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=True)


def needed(notebook: nbformat.NotebookNode) -> list[str]:
    """The packages a notebook declares it needs beyond every image's stack (its metadata)."""
    return list(notebook.metadata.get("torchlab", {}).get("needs", []))


def test_the_labs_folder_has_the_course():
    assert len(NOTEBOOKS) >= 9, f"expected the course notebooks in {LABS}"
    assert BROUGHT, "expected the notebooks people bring, in tests/device/notebooks"


def with_needs(path: Path):
    """A notebook as a test case, marked needs(package=...) for each package it declares:
    -m "needs(package='torchvision')" selects those that need torchvision."""
    marks = [pytest.mark.needs(package=name) for name in needed(nbformat.read(path, as_version=4))]
    return pytest.param(path, marks=marks, id=path.stem)


@pytest.mark.parametrize("path", [with_needs(path) for path in NOTEBOOKS + BROUGHT])
def test_notebook_runs_and_checks_itself(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    missing = [name for name in needed(notebook) if importlib.util.find_spec(name) is None]
    assert set(missing) <= set(packages.left_out()), (
        f"{path.name} needs {missing}, and this environment lacks them without being built so"
    )
    # A course notebook runs in the labs folder and must leave it as it was; a brought one
    # runs in a folder of its own, where it may write its data as such notebooks do.
    folder = LABS if path in NOTEBOOKS else tmp_path
    before = snapshot(LABS)
    try:
        run(notebook, folder)
    except CellExecutionError as error:
        if not missing:
            raise
        # Built without what it needs, a lab stops at once with the line that says so.
        said = ANSI.sub("", str(error)).strip().splitlines()[-1]
        assert any(name in said for name in missing), said
        pytest.skip(
            f"{path.stem} needs {', '.join(missing)}, which this image was built without "
            f'(TORCHLAB_WITHOUT): it stopped with "{said}"'
        )
    assert not missing, f"{path.name} ran without {missing}: it does not need them"
    assert snapshot(LABS) == before, "the notebook left files behind in the labs folder"
