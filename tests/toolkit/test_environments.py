"""torchlab env: a user's own environments outside the locks, each with its kernel beside it,
made by uv (a fake one here, which makes what uv makes: a Python and a package's metadata)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from torchlab import cli, environments

# What uv does, as far as the toolkit relies on it: `uv venv ... FOLDER` makes FOLDER/bin/python,
# `uv pip install --python FOLDER/bin/python REQ...` puts each REQ's metadata in site-packages;
# a requirement named "missing" fails as uv does. It records what it was run with.
FAKE_UV = """#!/bin/sh
echo "$@" >> "$UV_CALLS"
env | grep -E '^(PIP_CONSTRAINT|PYTHONUSERBASE|UV_DEFAULT_INDEX)=' >> "$UV_CALLS"
if [ "$1" = venv ]; then
  for last; do :; done
  mkdir -p "$last/bin" "$last/lib/python3.11/site-packages"
  ln -s /usr/bin/python3 "$last/bin/python"
  exit 0
fi
python=$4
site=${python%/bin/python}/lib/python3.11/site-packages
shift 4
for requirement; do
  [ "$requirement" = missing ] && { echo "error: no version of missing" >&2; exit 1; }
  name=${requirement%%==*}; version=${requirement#*==}
  [ "$version" = "$requirement" ] && version=1.0
  mkdir -p "$site/$name-$version.dist-info"
  printf 'Metadata-Version: 2.1\\nName: %s\\nVersion: %s\\n' "$name" "$version" \
    > "$site/$name-$version.dist-info/METADATA"
done
"""


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A lab's environment: its data folder, the locks' constraints, a fake uv on PATH."""
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    uv = bin_folder / "uv"
    uv.write_text(FAKE_UV)
    uv.chmod(uv.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_folder}:/usr/bin:/bin")
    monkeypatch.setenv("TORCHLAB_DATA", str(tmp_path / "lab-data"))
    monkeypatch.setenv("PIP_CONSTRAINT", "/opt/torchlab/requirements/constraints.txt")
    monkeypatch.setenv("PYTHONUSERBASE", str(tmp_path / "lab-data/packages/cpu"))
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.corp/simple")
    monkeypatch.setenv("UV_CALLS", str(tmp_path / "uv-calls"))
    return tmp_path


def test_an_environment_gets_its_requirements_and_ipykernel_free_of_the_locks(lab, capsys):
    assert cli.main(["env", "create", "old-torch", "torch==2.9.0"]) == 0
    made = lab / "lab-data/envs/old-torch"
    assert "torchlab: made " + str(made) + ", not locked" in capsys.readouterr().out
    calls = (lab / "uv-calls").read_text()
    # uv never sees the image's locks or its user site, and asks the index pip is told to.
    assert "PIP_CONSTRAINT" not in calls and "PYTHONUSERBASE" not in calls
    assert "UV_DEFAULT_INDEX=https://mirror.corp/simple" in calls
    assert f"pip install --python {made}/bin/python ipykernel torch==2.9.0" in calls
    assert environments.packages_of("old-torch") == {"ipykernel": "1.0", "torch": "2.9.0"}


def test_its_kernel_lives_beside_it_and_runs_its_python_without_the_images_locks(lab):
    environments.create("old-torch", [])
    spec = json.loads((lab / "lab-data/envs/.jupyter/kernels/old-torch/kernel.json").read_text())
    assert spec["display_name"] == "old-torch (not locked)"
    argv = spec["argv"]
    assert argv[0] == "/usr/bin/env"
    for variable in ("PIP_CONSTRAINT", "PYTHONUSERBASE"):
        assert argv[argv.index(variable) - 1] == "-u"  # so %pip in it obeys no lock
    made = lab / "lab-data/envs/old-torch"
    assert f"PATH={made}/bin:" in " ".join(argv)
    assert argv[argv.index("-m") - 1] == f"{made}/bin/python"
    assert argv[-2:] == ["-f", "{connection_file}"]


def test_the_probe_lists_each_environment_as_not_locked(lab):
    environments.create("old-torch", ["torch==2.9.0"])
    [found] = environments.summary()
    assert (found["name"], found["locked"], found["kernel"]) == (
        "old-torch", False, "old-torch (not locked)"
    )  # fmt: skip
    assert found["packages"]["torch"] == "2.9.0"


def test_a_failed_environment_leaves_nothing_behind_and_says_why_in_one_line(lab, capsys):
    assert cli.main(["env", "create", "broken", "missing"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("torchlab: uv could not make the environment broken") and "Fix: " in line
    assert environments.listed() == []
    assert not (lab / "lab-data/envs/.jupyter/kernels/broken").exists()


def test_remove_takes_the_environment_and_its_kernel(lab, capsys):
    environments.create("old-torch", [])
    assert cli.main(["env", "remove", "old-torch"]) == 0
    assert environments.listed() == []
    assert not (lab / "lab-data/envs/.jupyter/kernels/old-torch").exists()
    assert cli.main(["env", "remove", "old-torch"]) == 1
    assert "there is no environment old-torch (yours: none)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "why"),
    [("python3", "the image's own, locked kernel"), ("Old", "is not an environment name"),
     ("../up", "is not an environment name"), (".jupyter", "is not an environment name")],
)  # fmt: skip
def test_a_name_that_would_hide_the_locked_kernel_or_leave_the_folder_is_refused(
    lab, capsys, name, why
):
    assert cli.main(["env", "create", name]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert why in line and "Fix: " in line
    assert not (lab / "uv-calls").exists()


def test_an_existing_environment_is_not_made_over(lab, capsys):
    environments.create("old-torch", [])
    assert cli.main(["env", "create", "old-torch"]) == 1
    assert "torchlab env remove old-torch" in capsys.readouterr().err
    assert os.path.isdir(lab / "lab-data/envs/old-torch")
