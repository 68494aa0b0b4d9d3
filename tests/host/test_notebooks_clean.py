"""The notebooks are committed clean, and each one checks what it teaches."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "labs").glob("*.ipynb"))
BROUGHT = sorted((REPO / "tests/device/notebooks").glob("*.ipynb"))


def test_the_course_is_there():
    assert [path.stem[:2] for path in NOTEBOOKS] == [f"{n:02d}" for n in range(1, 10)]


@pytest.mark.parametrize("path", NOTEBOOKS + BROUGHT, ids=lambda path: path.stem)
def test_notebook_is_valid_and_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_picks_its_device_through_the_toolkit_and_asserts(path):
    code = "\n".join(
        c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
    )
    assert "torchlab.best_device()" in code
    assert code.count("assert ") >= 3
    for hard_coded in ('"cuda"', "'cuda'", '"xla:0"', '"cuda:0"'):
        assert f"torch.device({hard_coded})" not in code and f".to({hard_coded})" not in code


@pytest.mark.parametrize("path", BROUGHT, ids=lambda path: path.stem)
def test_a_brought_notebook_does_not_lean_on_torchlab(path):
    """The lab must run notebooks written elsewhere: these import no torchlab."""
    code = "\n".join(
        c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
    )
    assert "torchlab" not in code and "import torch" in code
