"""Another platform's builds run under QEMU: one new enough for PyTorch (8 or newer), found
through the kernel's binfmt_misc handler, or one line that says what is missing and make qemu."""

from __future__ import annotations

import pytest

from torchlab_host.core.errors import HostError
from torchlab_host.image import emulation


@pytest.fixture
def handler(tmp_path):
    """handler(version): a binfmt_misc folder whose qemu-aarch64 entry runs a fake QEMU that
    says that version, as Debian's does (`qemu-aarch64 version 10.0.2 (Debian ...)`), through a
    link aarch64-binfmt-P, which (as Debian's) answers nothing outside binfmt_misc."""
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()

    def registered(version: str) -> None:
        qemu = tmp_path / "qemu-aarch64"
        qemu.write_text(
            '#!/bin/sh\ncase $0 in *-binfmt-P) echo "has to be run using binfmt-misc" >&2; '
            f"exit 1;; esac\necho 'qemu-aarch64 version {version} (Debian)'\n"
        )
        qemu.chmod(0o755)
        link = tmp_path / "aarch64-binfmt-P"
        link.symlink_to(qemu)
        (binfmt / "qemu-aarch64").write_text(
            f"enabled\ninterpreter {link}\nflags: POF\noffset 0\nmagic 7f454c46\n"
        )

    registered.folder = binfmt
    return registered


def test_qemu_10_runs_arm64_builds(handler):
    handler("10.0.2")
    assert emulation.require_emulation("linux/arm64", handler.folder) == "QEMU 10.0"


def test_debian_12s_qemu_is_refused_with_its_version_and_the_fix(handler):
    handler("7.2.15")
    with pytest.raises(HostError) as refused:
        emulation.require_emulation("linux/arm64", handler.folder)
    said = str(refused.value)
    assert "\n" not in said
    assert said.startswith("linux/arm64 programs run here under ")
    assert "QEMU 7.2, which crashes PyTorch's aarch64 build; it needs QEMU 8 or newer" in said
    assert said.endswith("Fix: " + emulation.FIX)


def test_no_handler_is_one_line_naming_make_qemu(handler):
    with pytest.raises(HostError) as refused:
        emulation.require_emulation("linux/arm64", handler.folder)
    assert str(refused.value).startswith("this machine cannot run linux/arm64 programs: ")
    assert "Fix: make qemu" in str(refused.value)


def test_a_disabled_handler_counts_as_none(handler):
    handler("10.0.2")
    entry = handler.folder / "qemu-aarch64"
    entry.write_text(entry.read_text().replace("enabled", "disabled", 1))
    with pytest.raises(HostError, match="cannot run linux/arm64 programs"):
        emulation.require_emulation("linux/arm64", handler.folder)
