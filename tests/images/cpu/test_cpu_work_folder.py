"""Your work apart from the course: make lab-cpu in a fresh clone saves into work/, never into
the checkout's labs/ (the course's source), so git stays clean and the image stays the one the
checkout's inputs name; a newer course arrives beside your edits; a checkout from before work/
keeps every file."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from support import (
    COMPOSE_PROJECT,
    HOST_GID,
    HOST_UID,
    REPO,
    TOKEN,
    Lab,
    docker,
    free_port,
    require_image,
    save_notebook,
)


def git(checkout, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t", *arguments],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.fixture
def clone(tmp_path, require):
    """A fresh clone of this checkout and its lab, which runs as the test's host user."""
    require(os.getuid() == 0, "root, to create files owned by another uid")
    # A clone has what is committed: the image of this checkout's files is the clone's too.
    require(not git(REPO, "status", "--porcelain", "--untracked-files=no"), "a committed checkout")
    require_image("torchlab:cpu")
    checkout = tmp_path / "clone"
    git(REPO, "clone", "--quiet", str(REPO), str(checkout))
    environment = {
        key: value for key, value in os.environ.items() if key not in ("LABS_DIR", "PYTHONPATH")
    }
    environment.update(
        COMPOSE_PROJECT_NAME=COMPOSE_PROJECT,
        PYTHONPATH=str(checkout / "src"),
        LAB_DATA_DIR=str(tmp_path / "lab-data"),
        LAB_PORT=str(free_port()),
        LAB_UID=str(HOST_UID),
        LAB_GID=str(HOST_GID),
        JUPYTER_TOKEN=TOKEN,
    )
    original = docker("image", "inspect", "--format", "{{.Id}}", "torchlab:cpu").stdout.strip()
    lab = Lab("cpu", checkout / "work", int(environment["LAB_PORT"]), environment, checkout)
    yield lab
    lab.host("down")
    # A course change in the clone built its own image: torchlab:cpu is this checkout's again.
    current = docker("image", "inspect", "--format", "{{.Id}}", "torchlab:cpu").stdout.strip()
    if current != original:
        docker("tag", original, "torchlab:cpu")
        docker("image", "rm", current, check=False)


def inputs_tag(lab: Lab) -> str:
    """The inputs tag make context prints for the clone: its digest of the build's inputs."""
    printed = lab.host("context", "cpu")
    assert printed.returncode == 0, printed.stderr
    [tag] = [word for word in printed.stdout.split() if word.startswith("torchlab:cpu-inputs-")]
    return tag


def names(lab: Lab) -> list[str]:
    status, body = lab.get("/api/contents")
    assert status == 200, body
    return sorted(item["name"] for item in json.loads(body)["content"])


def test_saving_in_a_fresh_clone_leaves_git_clean_and_a_newer_course_lands_beside_edits(clone):
    tag = inputs_tag(clone)
    started = clone.up()
    assert started.returncode == 0, started.stderr
    course = sorted(path.name for path in (clone.checkout / "labs").iterdir())
    lines = started.stdout.splitlines()
    work_line = lines.index(
        "torchlab: your work now lives in work/; labs/ is the course's source and stays as it was"
    )
    brought = f"torchlab: the course brought {len(course)} new, 0 updated into your work folder"
    assert work_line < lines.index(brought)
    assert names(clone) == course
    save_notebook(clone, "mine.ipynb", "my notes")
    save_notebook(clone, "02_tensors.ipynb", "my own tensors")
    saved = clone.labs / "mine.ipynb"
    assert (saved.stat().st_uid, saved.stat().st_gid) == (HOST_UID, HOST_GID)
    assert git(clone.checkout, "status", "--porcelain") == ""
    assert inputs_tag(clone) == tag

    # The course changes: a fix to the notebook the user edited, and a new one.
    assert clone.host("down").returncode == 0
    labs = clone.checkout / "labs"
    (labs / "10_new.ipynb").write_bytes((labs / "01_welcome_and_devices.ipynb").read_bytes())
    fixed = json.loads((labs / "02_tensors.ipynb").read_text())
    fixed["cells"][0]["source"] = "# Tensors, fixed"
    (labs / "02_tensors.ipynb").write_text(json.dumps(fixed, indent=1) + "\n")
    git(clone.checkout, "add", "labs")
    git(clone.checkout, "commit", "--quiet", "--message", "the course changes")

    started = clone.up()
    assert started.returncode == 0, started.stderr
    assert (
        "torchlab: the course brought 1 new, 0 updated, 1 beside your edits "
        "(02_tensors.course-update.ipynb) into your work folder"
    ) in started.stdout.splitlines()
    assert "my own tensors" in (clone.labs / "02_tensors.ipynb").read_text()
    assert "Tensors, fixed" in (clone.labs / "02_tensors.course-update.ipynb").read_text()
    assert {"10_new.ipynb", "mine.ipynb"} <= set(names(clone))
    assert git(clone.checkout, "status", "--porcelain") == ""


def test_a_checkout_from_before_work_keeps_every_file_and_says_where_work_lives(clone):
    labs = clone.checkout / "labs"
    (labs / "my_notes.ipynb").write_text((labs / "01_welcome_and_devices.ipynb").read_text())
    before = sorted(path.name for path in labs.iterdir())

    started = clone.up()

    assert started.returncode == 0, started.stderr
    assert (
        "torchlab: your work now lives in work/, and 1 file you had in labs/ is copied there; "
        "labs/ is the course's source and stays as it was"
    ) in started.stdout.splitlines()
    assert sorted(path.name for path in labs.iterdir()) == before
    assert (clone.labs / "my_notes.ipynb").stat().st_uid == HOST_UID
    assert "my_notes.ipynb" in names(clone)
    assert "beside your edits" not in started.stdout
