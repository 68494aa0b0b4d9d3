"""The image's software bill of materials: one CycloneDX 1.6 document listing every Python
package of the image's environment and every Debian package installed, made at build time
(`torchlab sbom`) and kept at $TORCHLAB_SBOM, the path the label org.torchlab.sbom names.

Standard library only. The document depends on nothing but what is installed and the build's
SOURCE_DATE_EPOCH, so the same inputs give the same bytes.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import uuid
from importlib import metadata
from typing import Any
from urllib.parse import quote

from . import __version__
from .locks import canonical
from .packages import locked_site

DEBIAN = "debian-12"


def purl(kind: str, name: str, version: str, **qualifiers: str) -> str:
    """A package URL (purl): pkg:pypi/torch@2.13.0%2Bcpu, pkg:deb/debian/tini@0.19.0-1?arch=..."""
    namespace = "debian/" if kind == "deb" else ""
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in qualifiers.items())
    return f"pkg:{kind}/{namespace}{quote(name, safe='')}@{quote(version, safe='')}" + (
        f"?{query}" if query else ""
    )


def component(kind: str, name: str, version: str, **qualifiers: str) -> dict[str, Any]:
    reference = purl(kind, name, version, **qualifiers)
    return {
        "type": "library",
        "bom-ref": reference,
        "name": name,
        "version": version,
        "purl": reference,
    }


def python_packages() -> list[dict[str, Any]]:
    """Every distribution of the environment's own site-packages (what pip list shows)."""
    found = {
        canonical(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions(path=[str(locked_site())])
    }
    return [component("pypi", name, version) for name, version in sorted(found.items())]


def debian_packages() -> list[dict[str, Any]]:
    """Every Debian package dpkg has installed (status "install ok installed")."""
    listed = subprocess.run(
        [
            "dpkg-query",
            "--show",
            "--showformat",
            "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packages = []
    for line in listed.splitlines():
        status, name, version, architecture = line.split("\t")
        if status.strip() == "ii":
            packages.append(component("deb", name, version, arch=architecture, distro=DEBIAN))
    return sorted(packages, key=lambda entry: entry["name"])


def document(image: str) -> dict[str, Any]:
    """The SBOM of the image named image. No commit in it: an image is its build inputs, and
    a commit that leaves them alone leaves the image's layers alone too."""
    components = python_packages() + debian_packages()
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or 0)
    # The serial number names this document: the same contents, the same number.
    serial = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps([image, components], sort_keys=True))
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.fromtimestamp(epoch, datetime.UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "tools": {
                "components": [{"type": "application", "name": "torchlab", "version": __version__}]
            },
            "component": {
                "type": "container",
                "bom-ref": image,
                "name": image,
                "version": __version__,
            },
        },
        "components": components,
    }


def write(path: str, image: str) -> int:
    bom = document(image)
    with open(path, "w") as file:
        json.dump(bom, file, indent=1, sort_keys=True)
        file.write("\n")
    return len(bom["components"])
