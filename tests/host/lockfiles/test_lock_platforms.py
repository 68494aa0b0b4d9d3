"""make check-locks: a lock must hold a hash that each platform its images ship for can install,
checked against an index (here a PEP 503 index in a folder) without downloading a wheel."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from torchlab import variants
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lockfiles import download, files, platforms

MANIFEST = variants.load()
BOTH = ["linux/amd64", "linux/arm64"]


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def index_with(folder: Path, project: str, filenames: list[str]) -> str:
    """A simple index offering these files of one project, each with its sha256 in the link."""
    page = folder / project / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="../../files/{n}#sha256={digest(n)}">{n}</a>\n' for n in filenames)
    page.write_text(f"<html><body>\n{links}</body></html>\n")
    return folder.as_uri()


def lock_text(pin: str, filenames: list[str]) -> str:
    hashes = "".join(f" \\\n    --hash=sha256:{digest(name)}" for name in filenames)
    return f"# a lock\n{pin}{hashes}\n    # via -r x.in\n"


NUMPY = [
    "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
    "numpy-2.4.6-cp312-cp312-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
    "numpy-2.4.6-cp311-cp311-musllinux_1_2_aarch64.whl",
    "numpy-2.4.6.tar.gz",
]


def test_a_lock_with_only_the_x86_hash_fails_for_arm64_and_names_the_wheel(tmp_path):
    index = index_with(tmp_path, "numpy", NUMPY)
    text = lock_text("numpy==2.4.6", [NUMPY[0], NUMPY[2], NUMPY[3], NUMPY[4]])
    wrong, unchecked = platforms.check_lock("lab", text, BOTH, index, [])
    assert unchecked == []
    assert wrong == [
        f"requirements/lab.txt: numpy==2.4.6 has no hash for linux/arm64 (its wheels: {NUMPY[1]})"
    ]
    # The image of one platform alone needs only its own.
    assert platforms.check_lock("lab", text, ["linux/amd64"], index, []) == ([], [])


def test_a_lock_with_every_platforms_hash_passes(tmp_path):
    index = index_with(tmp_path, "numpy", NUMPY)
    assert platforms.check_lock("lab", lock_text("numpy==2.4.6", NUMPY), BOTH, index, []) == (
        [],
        [],
    )


def test_a_pure_python_wheel_serves_every_platform_and_a_missing_arm_wheel_is_said(tmp_path):
    index_with(tmp_path, "six", ["six-1.17.0-py2.py3-none-any.whl"])
    index = index_with(tmp_path, "libtpu", ["libtpu-0.0.21-cp311-cp311-manylinux_2_31_x86_64.whl"])
    text = lock_text("six==1.17.0", ["six-1.17.0-py2.py3-none-any.whl"]) + lock_text(
        "libtpu==0.0.21", ["libtpu-0.0.21-cp311-cp311-manylinux_2_31_x86_64.whl"]
    ).removeprefix("# a lock\n")
    wrong, _ = platforms.check_lock("xla", text, BOTH, index, [])
    assert wrong == ["requirements/xla.txt: libtpu==0.0.21 has no wheel for linux/arm64"]


def test_a_wheel_for_a_newer_glibc_than_the_images_does_not_count():
    assert platforms.installs_on("x-1-cp311-cp311-manylinux_2_36_aarch64.whl", "linux/arm64")
    assert not platforms.installs_on("x-1-cp311-cp311-manylinux_2_39_aarch64.whl", "linux/arm64")
    assert not platforms.installs_on("x-1-cp311-cp311-manylinux_2_28_x86_64.whl", "linux/arm64")
    assert platforms.installs_on("x-1-cp39-abi3-manylinux2014_aarch64.whl", "linux/arm64")


def test_each_lock_is_checked_for_the_platforms_its_images_ship_for():
    assert files.lock_platforms("lab", MANIFEST) == BOTH  # every image has the shared lock
    assert files.lock_platforms("cuda", MANIFEST) == BOTH
    assert files.lock_platforms("xla", MANIFEST) == ["linux/amd64"]


def test_check_locks_fails_with_one_line_naming_the_fix(tmp_path, monkeypatch):
    index = index_with(tmp_path, "numpy", NUMPY)
    (tmp_path / "requirements").mkdir()
    for name in files.all_locks(MANIFEST):  # every lock holds the x86 hash alone
        (tmp_path / "requirements" / f"{name}.txt").write_text(lock_text("numpy==2.4.6", NUMPY[:1]))
    monkeypatch.setattr(files, "REQUIREMENTS", tmp_path / "requirements")
    settings = Settings.load({"PIP_INDEX_URL": index}, tmp_path / ".env")
    with pytest.raises(HostError) as raised:
        platforms.check_locks(MANIFEST, settings)
    assert "cannot be installed with --require-hashes on a platform" in str(raised.value)
    assert "make lock where the index" in str(raised.value)


def test_make_wheels_fetches_every_platform_or_the_one_named(tmp_path, monkeypatch):
    fetched = []
    monkeypatch.setattr(
        download, "download_one", lambda name, platform, *rest: fetched.append((name, platform))
    )
    download.download(tmp_path, ["lab", "xla"], MANIFEST, Settings.load({}, tmp_path / ".env"))
    assert fetched == [("lab", "linux/amd64"), ("lab", "linux/arm64"), ("xla", "linux/amd64")]
    fetched.clear()
    arm64 = Settings.load({"PLATFORM": "linux/arm64"}, tmp_path / ".env")  # for arm64 builds
    download.download(tmp_path, ["lab", "xla"], MANIFEST, arm64)
    assert fetched == [("lab", "linux/arm64")]


def test_make_wheels_downloads_the_locks_named_in_their_order_or_every_one(tmp_path, one_line):
    """CI downloads the cpu phases' locks first and the other images' beside those phases."""
    chosen = Settings.load({"LOCKS": "xla lab"}, tmp_path / ".env")
    assert files.chosen_locks(MANIFEST, chosen) == ["lab", "xla"]
    every = Settings.load({}, tmp_path / ".env")
    assert files.chosen_locks(MANIFEST, every) == files.all_locks(MANIFEST)
    with pytest.raises(HostError) as raised:
        files.chosen_locks(MANIFEST, Settings.load({"LOCKS": "lab rocm"}, tmp_path / ".env"))
    line = one_line(raised.value)
    assert line.startswith("LOCKS names rocm, which is no lock in requirements/")
    assert "Fix: name some of: lab " in line
