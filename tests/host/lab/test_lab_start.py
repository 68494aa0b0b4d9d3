"""Starting a lab: the device it needs, the variant by name or alias, the work folder and who
the lab runs as, each refused in one line that names its fix; cleaning the lab's data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from torchlab import variants
from torchlab.backends import cuda, get
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lab import config as lab_settings
from torchlab_host.lab import manage as lab

REPO = Path(__file__).resolve().parents[3]
MANIFEST = variants.load()
CPU, CUDA = MANIFEST.variant("cpu"), MANIFEST.variant("cuda")


def test_gpu_lab_without_a_driver_names_the_driver(fake_bin):
    hint = get("cuda").host_requirements()
    assert "no NVIDIA driver on this host" in hint.problem and cuda.DRIVER_URL in hint.fix


def test_gpu_lab_with_a_broken_driver_relays_nvml(host):
    host("unknown-error")
    hint = get("cuda").host_requirements()
    assert "lost access to the GPU" in hint.problem


def test_gpu_lab_without_the_container_toolkit_names_it(host):
    host("580", toolkit=False)
    hint = get("cuda").host_requirements(CUDA.build_here())
    assert "NVIDIA Container Toolkit is not installed" in hint.problem
    assert cuda.TOOLKIT_URL in hint.fix and "nvidia-ctk runtime configure" in hint.fix
    assert lab.auto_variant(MANIFEST).name == "cpu"


def test_make_lab_picks_cuda_when_driver_and_toolkit_are_there(host):
    host("580")
    assert get("cuda").host_requirements(CUDA.build_here()) is None
    assert lab.auto_variant(MANIFEST).name == "cuda"


def test_a_gpu_lab_without_a_driver_also_names_the_cpu_lab(one_line, fake_bin):
    with pytest.raises(HostError) as raised:
        lab.require_host_device(CUDA, MANIFEST)
    line = one_line(raised.value)
    assert "no NVIDIA driver on this host" in line and "(without one: make lab-cpu)" in line


def test_aliases_name_the_same_variant():
    assert MANIFEST.variant("gpu") == MANIFEST.variant("cuda") == CUDA
    assert MANIFEST.variant("tpu").name == "xla"


def test_unknown_variant():
    with pytest.raises(
        variants.UnknownVariant,
        match=f"^unknown image variant 'foo': choose one of {', '.join(MANIFEST.names)}$",
    ):
        MANIFEST.variant("foo")


def test_colab_with_a_password_is_refused_before_anything_starts(one_line, tmp_path):
    """Colab's "Connect to a local runtime" sends the token, which a password turns off: the
    lab would start and Colab could never connect."""
    both = {"COLAB": "1", "TORCHLAB_PASSWORD_HASH": "argon2:$argon2id$v=19$m=10240,t=10,p=8$x"}
    # No PATH: the refusal comes before Docker is even looked for.
    settings = Settings.load({**both, "PATH": ""}, env_file=tmp_path / ".env")
    with pytest.raises(HostError) as raised:
        lab.up("cpu", MANIFEST, settings)
    line = one_line(raised.value)
    assert line.startswith("COLAB=1 with TORCHLAB_PASSWORD_HASH set: Colab connects with")
    assert "remove TORCHLAB_PASSWORD_HASH from .env" in line


def test_missing_work_folder(current, one_line, tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_DIR", str(tmp_path / "gone"))
    with pytest.raises(HostError) as raised:
        lab_settings.for_lab(current())
    assert one_line(raised.value) == (
        f"the work folder LABS_DIR={tmp_path / 'gone'} is missing. "
        "Fix: create it, or unset LABS_DIR to work in work/"
    )


def test_no_lab_writes_into_the_courses_source(current, monkeypatch):
    monkeypatch.setenv("LABS_DIR", str(lab_settings.COURSE_SOURCE))
    with pytest.raises(HostError, match="the course's source, which no lab writes into"):
        lab_settings.for_lab(current())


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A checkout from before work/ existed: the course committed in labs/, no work/."""
    root = tmp_path / "checkout"
    (root / "labs" / "data").mkdir(parents=True)
    (root / "labs" / "01.ipynb").write_text("course 1")
    (root / "labs" / "02.ipynb").write_text("course 2")
    (root / "labs" / "data" / "x.csv").write_text("1,2")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "course"], check=True)
    monkeypatch.setattr(lab_settings, "ROOT", root)
    monkeypatch.setattr(lab_settings, "COURSE_SOURCE", root / "labs")
    monkeypatch.setattr(lab_settings, "DEFAULT_WORK", root / "work")
    monkeypatch.delenv("LABS_DIR", raising=False)
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "lab-data"))
    monkeypatch.setenv("LAB_UID", str(os.getuid()))
    monkeypatch.setenv("LAB_GID", str(os.getgid()))
    return root


def test_an_upgrade_copies_your_labs_files_into_work_and_changes_nothing_in_labs(
    current, checkout, capsys
):
    (checkout / "labs" / "02.ipynb").write_text("my edit")
    (checkout / "labs" / "mine").mkdir()
    (checkout / "labs" / "mine" / "train.py").write_text("print('mine')")
    before = {path: path.read_bytes() for path in (checkout / "labs").rglob("*") if path.is_file()}

    assert lab_settings.for_lab(current()).labs == checkout / "work"

    work = checkout / "work"
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) == [
        "02.ipynb",
        "mine/train.py",
    ]
    assert (work / "02.ipynb").read_text() == "my edit"
    assert {path: path.read_bytes() for path in before} == before
    assert capsys.readouterr().out.strip() == (
        "torchlab: your work now lives in work/, and 2 files you had in labs/ are copied "
        "there; labs/ is the course's source and stays as it was"
    )
    # Only the first start does it.
    lab_settings.for_lab(current())
    assert capsys.readouterr().out == ""


def test_a_fresh_checkout_starts_an_empty_work_folder(current, checkout, capsys):
    assert lab_settings.for_lab(current()).labs == checkout / "work"
    assert list((checkout / "work").iterdir()) == []
    assert capsys.readouterr().out.strip() == (
        "torchlab: your work now lives in work/; labs/ is the course's source and stays as it was"
    )


def test_without_git_all_of_labs_is_carried_over(current, checkout, capsys):
    (checkout / ".git").rename(checkout / "not-git")
    lab_settings.for_lab(current())
    assert len(list((checkout / "work").rglob("*.*"))) == 3
    assert "3 files you had in labs/ are copied there" in capsys.readouterr().out


def test_labs_folder_not_writable_by_the_lab_user(current, one_line, tmp_path, monkeypatch):
    folder = tmp_path / "labs"
    folder.mkdir(mode=0o755)
    monkeypatch.setenv("LABS_DIR", str(folder))
    monkeypatch.setenv("LAB_UID", "4242")
    monkeypatch.setenv("LAB_GID", "4242")
    with pytest.raises(HostError) as raised:
        lab_settings.for_lab(current())
    assert "not writable by uid 4242" in one_line(raised.value)
    assert f"chown -R 4242:4242 {folder}" in str(raised.value)


def test_the_lab_runs_as_the_owner_of_labs_when_started_by_root(
    current, tmp_path, monkeypatch, require
):
    require(os.getuid() == 0, "root, to give a folder away")
    folder = tmp_path / "labs"
    folder.mkdir()
    os.chown(folder, 4242, 4343)
    monkeypatch.delenv("LAB_UID", raising=False)
    monkeypatch.delenv("SUDO_UID", raising=False)
    assert lab_settings.lab_user(folder, current()) == (4242, 4343)
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "1235")
    assert lab_settings.lab_user(folder, current()) == (1234, 1235)
    monkeypatch.delenv("SUDO_UID")
    os.chown(folder, 0, 0)
    with pytest.raises(HostError, match="never runs as root"):
        lab_settings.lab_user(folder, current())


@pytest.mark.parametrize("target", ["test-cuda", "lab-cuda", "shell-cuda", "lab-gpu"])
def test_gpu_targets_without_a_gpu_name_what_to_install(fake_bin, target):
    environment = dict(os.environ, PATH=f"{os.environ['PATH']}:/usr/bin:/bin")
    if any(Path(folder, "nvidia-smi").exists() for folder in ("/usr/bin", "/bin")):
        pytest.skip("this machine has an NVIDIA driver")
    result = subprocess.run(
        ["make", "-s", target], cwd=REPO, capture_output=True, text=True, env=environment
    )
    assert result.returncode != 0
    [line] = result.stderr.splitlines()[:1]
    assert line.startswith("torchlab: no NVIDIA driver on this host") and cuda.DRIVER_URL in line


def test_each_clean_target_removes_its_part_of_the_lab_data_only(current, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    parts = (
        "cache/torch/hub", "datasets/digits", "packages/cpu/lib", "envs/old-torch/bin",
        "home/.jupyter/lab",
    )  # fmt: skip
    for part in parts:
        (tmp_path / part).mkdir(parents=True)
        (tmp_path / part / "kept").write_text("data")
    assert lab.clean_data("cache", current()) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envs", "home", "packages"]
    assert lab.clean_data("packages", current()) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envs", "home"]
    assert lab.clean_data("envs", current()) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert lab.clean_data("home", current()) == 0
    assert list(tmp_path.iterdir()) == []


def test_a_labs_home_is_made_in_its_data_folder_with_the_folders_mounted_in_it(
    current, tmp_path, monkeypatch, require
):
    """The engine would make the mount points inside the home as root, where the user could
    not remove them: make lab makes them, the lab user's."""
    require(os.getuid() == 0, "root, to create folders owned by another uid")
    (tmp_path / "work").mkdir()
    os.chown(tmp_path / "work", 4242, 4343)
    monkeypatch.setenv("LABS_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "lab-data"))
    monkeypatch.setenv("LAB_UID", "4242")
    monkeypatch.setenv("LAB_GID", "4343")
    home = lab_settings.for_lab(current()).home
    assert home == tmp_path / "lab-data/home"
    for folder in (home, home / "labs", home / "lab-data"):
        assert (folder.stat().st_uid, folder.stat().st_gid) == (4242, 4343), folder
