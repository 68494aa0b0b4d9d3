"""The image's SBOM lists exactly what is installed: every Python package of its environment
(pip freeze) and every Debian package (dpkg-query), no more, no fewer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from torchlab.locks import canonical
from torchlab.packages import locked_site

# An image says where its SBOM is; a host environment has none.
pytestmark = pytest.mark.skipif(
    not os.environ.get("TORCHLAB_SBOM"), reason="an image's build makes its SBOM; this is no image"
)


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(Path(os.environ["TORCHLAB_SBOM"]).read_text())


def listed(document: dict, kind: str) -> dict[str, str]:
    prefix = f"pkg:{kind}/"
    return {c["name"]: c["version"] for c in document["components"] if c["purl"].startswith(prefix)}


def test_it_is_a_cyclonedx_document_of_this_image(document):
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    assert document["metadata"]["component"]["name"] == f"torchlab-{os.environ['TORCHLAB_VARIANT']}"
    references = [component["bom-ref"] for component in document["components"]]
    assert len(references) == len(set(references))


def test_it_lists_exactly_the_python_packages_pip_freeze_reports(document):
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--path", str(locked_site())],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    installed = {}
    for line in frozen.splitlines():
        if " @ " in line:  # installed from a folder (the toolkit): pip names its source instead
            name = line.split(" @ ")[0]
            installed[canonical(name)] = metadata.version(name)
        else:
            name, version = line.split("==")
            installed[canonical(name)] = version
    assert listed(document, "pypi") == installed


def test_it_lists_exactly_the_debian_packages_dpkg_reports(document):
    shown = subprocess.run(
        ["dpkg-query", "--show", "--showformat", "${db:Status-Abbrev}${Package} ${Version}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    installed = dict(line[3:].split() for line in shown.splitlines() if line.startswith("ii"))
    assert listed(document, "deb") == installed
    assert {"python3.11", "tini", "g++", "git", "openssh-client"} <= set(installed)
