"""The CA certificates a lab trusts beside its image's (a company's TLS-inspecting proxy signs
with its own CA): which ones make lab and make hub hand on, and the one line for a wrong place."""

from __future__ import annotations

import base64
import os

import pytest

from torchlab_host.core.certificates import VARIABLE, ca_certificates
from torchlab_host.core.errors import HostError
from torchlab_host.lab import config as lab_settings
from torchlab_host.lab import manage as lab


def pem(seed: str) -> str:
    body = base64.b64encode(seed.encode() * 40).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----"])


COMPANY, PROXY = pem("company root CA"), pem("inspecting proxy CA")


def test_by_default_the_hosts_local_cas_are_handed_on_every_one_of_them(current, no_host_local_cas):
    """Debian keeps them in /usr/local/share/ca-certificates, subfolders too; a file there that
    holds no certificate is no error, and the order is the folder's."""
    (no_host_local_cas / "corp").mkdir(parents=True)
    (no_host_local_cas / "company.crt").write_text(COMPANY + "\n")
    (no_host_local_cas / "corp/proxy.crt").write_text(f"a comment\n{PROXY}\n")
    (no_host_local_cas / "README").write_text("notes\n")
    assert ca_certificates(current()) == f"{COMPANY}\n{PROXY}"


def test_a_host_without_local_cas_hands_on_none(current):
    assert ca_certificates(current()) == ""


def test_a_file_or_folder_named_replaces_the_hosts_and_empty_means_none(
    current, no_host_local_cas, tmp_path
):
    no_host_local_cas.mkdir()
    (no_host_local_cas / "company.crt").write_text(COMPANY)
    named = tmp_path / "named"
    (named / "more").mkdir(parents=True)
    (named / "proxy.pem").write_text(PROXY)
    (named / "more/company.pem").write_text(COMPANY)
    assert ca_certificates(current(LAB_CA_CERTS=str(named / "proxy.pem"))) == PROXY
    assert ca_certificates(current(LAB_CA_CERTS=str(named))) == f"{COMPANY}\n{PROXY}"
    assert ca_certificates(current(LAB_CA_CERTS="")) == ""


@pytest.mark.parametrize("place", ["missing.pem", "empty"])
def test_a_place_named_that_holds_no_certificate_is_one_line(current, tmp_path, place):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/notes.txt").write_text("no certificate here\n")
    with pytest.raises(HostError) as raised:
        ca_certificates(current(LAB_CA_CERTS=str(tmp_path / place)))
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"LAB_CA_CERTS={tmp_path / place} ")
    assert ". Fix: " in message


def test_a_labs_compose_environment_carries_them_beside_its_folders(
    current, no_host_local_cas, tmp_path, monkeypatch
):
    no_host_local_cas.mkdir()
    (no_host_local_cas / "company.crt").write_text(COMPANY)
    monkeypatch.setenv("LABS_DIR", str(tmp_path))
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "lab-data"))
    monkeypatch.setenv("LAB_UID", str(os.getuid()))
    monkeypatch.setenv("LAB_GID", str(os.getgid()))
    settings = current(HTTPS_PROXY="http://proxy.corp:3128")
    environment = lab.network_environment(lab_settings.for_lab(settings), settings)
    assert environment[VARIABLE] == COMPANY
    assert environment["HTTPS_PROXY"] == "http://proxy.corp:3128"
    assert environment["LAB_HOME_DIR"] == str(tmp_path / "lab-data/home")
