"""Real work in lab-cpu: packages people add and keep, caches that persist, TensorBoard in the
lab, and what an image built without torchvision says about it."""

from __future__ import annotations

import json
import shutil

import pytest
from support import HOST_GID, HOST_UID, TOKEN, build_wheel, docker, run_in_kernel

CACHES = ("TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME/pip", "TORCHLAB_DATA/datasets")


def in_lab(lab, *command: str, check: bool = True):
    """A command in the running lab, as the lab's user, like a terminal in JupyterLab."""
    return docker("exec", lab.container, *command, check=check)


@pytest.fixture
def wheels(lab_cpu):
    """Wheel files in the labs folder, which the lab mounts."""
    folder = lab_cpu.labs / "wheels"
    folder.mkdir()
    built = {name: build_wheel(folder, name) for name in ("kept_extra", "notebook_extra")}
    for path in [folder, *folder.iterdir()]:
        shutil.chown(path, HOST_UID, HOST_GID)
    return {name: f"/home/lab/labs/wheels/{path.name}" for name, path in built.items()}


def test_a_package_installed_in_the_lab_stays_and_is_listed(lab_cpu, wheels):
    assert lab_cpu.up().returncode == 0
    installed = in_lab(lab_cpu, "pip", "install", "--no-index", wheels["kept_extra"])
    assert "Successfully installed kept-extra-1.0" in installed.stdout

    assert lab_cpu.host("down").returncode == 0
    assert lab_cpu.up().returncode == 0
    imported = in_lab(lab_cpu, "python", "-c", "import kept_extra; print(kept_extra.__file__)")
    assert imported.stdout.startswith("/home/lab/lab-data/packages/cpu/lib/python3.11/")
    added = lab_cpu.labs.parent / "lab-data/packages/cpu"
    assert (added.stat().st_uid, added.stat().st_gid) == (HOST_UID, HOST_GID)

    report = json.loads(in_lab(lab_cpu, "torchlab", "probe", "--json", "--no-smoke").stdout)
    assert report["packages"]["added"] == {"kept-extra": "1.0"}
    assert "kept-extra 1.0" in in_lab(lab_cpu, "torchlab", "probe", "--no-smoke").stdout
    assert in_lab(lab_cpu, "torchlab", "packages").stdout == "kept-extra==1.0\n"

    refused = in_lab(lab_cpu, "torchlab", "packages", "--remove", "torch", check=False)
    assert refused.returncode == 1 and "torch is not a package you added" in refused.stderr
    assert in_lab(lab_cpu, "torchlab", "packages", "--remove", "kept-extra").returncode == 0
    assert in_lab(lab_cpu, "torchlab", "packages").stdout == ""
    assert in_lab(lab_cpu, "python", "-c", "import torch").returncode == 0


def test_pip_in_a_notebook_installs_for_the_running_kernel(running_lab_cpu, wheels):
    printed = run_in_kernel(
        running_lab_cpu.url("").rstrip("/"),
        TOKEN,
        f"%pip install --quiet --no-index {wheels['notebook_extra']}\n"
        "import notebook_extra\nprint('imported', notebook_extra.__version__)",
    )
    assert printed.strip().endswith("imported 1.0"), printed


def test_another_torch_is_refused_by_the_locks_constraint(running_lab_cpu):
    asked = in_lab(running_lab_cpu, "pip", "install", "--no-index", "torch==2.9.0", check=False)
    assert asked.returncode != 0
    assert "The user requested (constraint) torch==2.13.0+cpu" in asked.stdout + asked.stderr
    torch = in_lab(running_lab_cpu, "python", "-c", "import torch; print(torch.__version__)")
    assert torch.stdout.strip() == "2.13.0+cpu"


def test_caches_survive_down_and_a_rebuild_and_belong_to_the_lab_user(lab_cpu):
    assert lab_cpu.up().returncode == 0
    for cache in CACHES:
        variable, _, below = cache.partition("/")
        in_lab(
            lab_cpu,
            "bash",
            "-c",
            f'mkdir -p "${variable}/{below}" && echo kept > "${variable}/{below}/kept"',
        )

    assert lab_cpu.host("down").returncode == 0
    rebuilt = lab_cpu.host("build", "cpu")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert lab_cpu.up().returncode == 0
    for cache in CACHES:
        variable, _, below = cache.partition("/")
        kept = in_lab(lab_cpu, "bash", "-c", f'cat "${variable}/{below}/kept"')
        assert kept.stdout == "kept\n", cache
    data = lab_cpu.labs.parent / "lab-data"
    on_host = sorted(str(path.relative_to(data)) for path in data.rglob("kept"))
    assert on_host == [
        "cache/huggingface/kept",
        "cache/pip/kept",
        "cache/torch/kept",
        "datasets/kept",
    ]
    assert {(p.stat().st_uid, p.stat().st_gid) for p in data.rglob("*")} == {(HOST_UID, HOST_GID)}


def test_tensorboard_opens_through_the_labs_url_and_token(running_lab_cpu):
    status, body = running_lab_cpu.get("/tensorboard/", timeout=90)
    assert status == 200 and "<title>TensorBoard</title>" in body
    assert running_lab_cpu.get("/tensorboard/", token=None, follow_redirects=False)[0] in (302, 403)
    published = json.loads(docker("inspect", running_lab_cpu.container).stdout)[0]
    assert list(published["NetworkSettings"]["Ports"]) == ["8888/tcp"]  # no port of its own


def test_an_image_built_without_torchvision_says_so(container):
    labels = json.loads(docker("image", "inspect", "torchlab:cpu").stdout)[0]["Config"]["Labels"]
    code, output = container.run_to_end(
        "torchlab:cpu", "python", "-c", "import torchvision", clean_log=False
    )
    if labels["org.torchlab.without"] != "torchvision":
        assert code == 0, output  # built with it
        return
    assert code == 1
    _, probe = container.run_to_end("torchlab:cpu", "torchlab", "probe", "--no-smoke")
    assert "left out     torchvision: this image was built without it" in probe
    code, output = container.run_to_end(
        "torchlab:cpu",
        "python",
        "-c",
        "import torchlab; torchlab.require('torchvision')",
        clean_log=False,
    )
    assert code == 1
    last = output.strip().splitlines()[-1]
    assert last.startswith("torchlab.packages.MissingPackage: torchvision is not in this image")
