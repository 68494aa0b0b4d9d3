"""make lab on a Windows laptop: WSL 2 with Docker Desktop. Its GPU reaches containers through
Docker Desktop's engine (no NVIDIA Container Toolkit in the distribution), its driver is the
Windows one, and a work folder on a Windows drive (/mnt/c) is slow and has no Unix permissions:
each said in one line. From a recorded /proc/mounts (data/wsl2/) and fake folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torchlab import system, variants
from torchlab.backends import cuda, get
from torchlab.backends.cuda import driver
from torchlab_host.core.errors import HostError
from torchlab_host.lab import config as lab_settings
from torchlab_host.lab import manage as lab

RECORDED = Path(__file__).parents[1] / "data/wsl2"
MANIFEST = variants.load()
CUDA = MANIFEST.variant("cuda")


@pytest.fixture
def on_wsl(tmp_path, monkeypatch):
    """This host as WSL 2: its kernel release, and /proc/mounts as recorded."""
    (tmp_path / "osrelease").write_text("5.15.167.4-microsoft-standard-WSL2\n")
    monkeypatch.setattr(system, "KERNEL_RELEASE", tmp_path / "osrelease")
    monkeypatch.setattr(system, "MOUNTS", RECORDED / "mounts.txt")


@pytest.fixture
def docker_desktop(tmp_path, monkeypatch):
    """docker_desktop(): PATH's docker is a link into Docker Desktop's tools, as its WSL
    integration makes it (a fake folder where they are mounted)."""
    tools = tmp_path / "mnt/wsl/docker-desktop"
    monkeypatch.setattr(driver, "DOCKER_DESKTOP_TOOLS", tools)

    def linked() -> None:
        (tools / "cli-tools/usr/bin").mkdir(parents=True)
        (tools / "cli-tools/usr/bin/docker").write_text("#!/bin/sh\n")
        (tools / "cli-tools/usr/bin/docker").chmod(0o755)
        (tmp_path / "bin/docker").symlink_to(tools / "cli-tools/usr/bin/docker")

    return linked


@pytest.mark.parametrize(
    ("folder", "drive"),
    [
        ("/mnt/c/Users/ada/torchlab/work", "/mnt/c"),
        ("/mnt/d/courses/torchlab/work", "/mnt/d"),
        ("/home/ada/torchlab/work", None),  # WSL's own ext4
        ("/mnt/c/Users/ada/AppData/Local/Temp/wsl-scratch/work", None),  # a tmpfs inside C:
        ("/usr/lib/wsl/drivers", None),  # 9p too, but not a Windows drive
        ("/mnt/wsl/docker-desktop/cli-tools", None),
    ],
)
def test_a_folder_is_on_a_windows_drive_by_its_own_mount(on_wsl, folder, drive):
    assert system.windows_drive(Path(folder)) == drive


def test_make_lab_warns_in_one_line_of_a_work_folder_on_a_windows_drive(
    current, tmp_path, monkeypatch, capsys
):
    """A checkout cloned under C:\\Users (a fake folder mounted as a Windows drive)."""
    windows = tmp_path / "c-drive"
    work = windows / "Users/ada/torchlab/work"
    work.mkdir(parents=True)
    home = tmp_path / "home/ada/work"
    home.mkdir(parents=True)
    mounts = tmp_path / "mounts"
    mounts.write_text(
        (RECORDED / "mounts.txt").read_text()
        + f"C:\\134 {windows} 9p rw,noatime,dirsync,aname=drvfs;path=C:\\;uid=1000 0 0\n"
    )
    monkeypatch.setattr(system, "MOUNTS", mounts)
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "lab-data"))
    monkeypatch.setenv("LAB_UID", str(os.getuid()))
    monkeypatch.setenv("LAB_GID", str(os.getgid()))

    for folder in (work, home):
        monkeypatch.setenv("LABS_DIR", str(folder))
        lab_settings.warn_if_on_windows(lab_settings.for_lab(current()).labs)
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        f"torchlab: warning: the work folder {work} is on a Windows drive ({windows}), where the "
        "lab's files are slow and have no Unix permissions; keep the checkout in WSL's own "
        "files (clone it under your WSL home, ~), or mkdir ~/work and make lab LABS_DIR=~/work"
    )


def test_without_nvidia_smi_wsl_is_told_the_windows_driver_not_a_linux_one(
    on_wsl, fake_bin, one_line
):
    with pytest.raises(HostError) as raised:
        lab.require_host_device(CUDA, MANIFEST)
    line = one_line(raised.value)
    assert line.startswith("no NVIDIA driver reaches WSL 2 (nvidia-smi not found). Fix: ")
    assert "NVIDIA's Windows driver on Windows" in line and cuda.DRIVER_URL in line
    assert "never a Linux driver inside WSL" in line and "(without one: make lab-cpu)" in line


def test_docker_desktop_brings_the_gpu_to_containers_without_the_toolkit(
    on_wsl, host, docker_desktop
):
    host("580", toolkit=False)
    assert "cannot hand the GPU" in get("cuda").host_requirements(CUDA.build_here()).problem
    docker_desktop()
    assert get("cuda").host_requirements(CUDA.build_here()) is None
    assert lab.auto_variant(MANIFEST).name == "cuda"


def test_a_docker_engine_inside_wsl_without_the_toolkit_names_both_ways(
    on_wsl, host, docker_desktop, tmp_path
):
    host("580", toolkit=False)
    (tmp_path / "bin/docker").write_text("#!/bin/sh\n")  # the distribution's own Docker
    (tmp_path / "bin/docker").chmod(0o755)
    hint = get("cuda").host_requirements(CUDA.build_here())
    assert "this WSL 2 distribution's Docker cannot hand the GPU to containers" in hint.problem
    assert "Docker Desktop with its WSL 2 backend" in hint.fix and cuda.TOOLKIT_URL in hint.fix
    assert lab.auto_variant(MANIFEST).name == "cpu"


def test_docker_desktop_counts_only_on_wsl(host, docker_desktop, tmp_path, monkeypatch):
    """Elsewhere (Linux, a Mac's Docker Desktop) no engine hands out a GPU without the toolkit."""
    (tmp_path / "osrelease").write_text("6.1.0-27-cloud-amd64\n")
    monkeypatch.setattr(system, "KERNEL_RELEASE", tmp_path / "osrelease")
    host("580", toolkit=False)
    docker_desktop()
    hint = get("cuda").host_requirements(CUDA.build_here())
    assert "the NVIDIA Container Toolkit is not installed" in hint.problem
