"""Where pip looks for a lock's wheels, decided here and only here:
- with a wheelhouse (a folder, or the URL an image build is served it at): <wheelhouse>/<lock>/
  alone, never an index;
- otherwise pip's own configuration (PyPI unless configured), plus, for a variant whose torch
  comes from PyTorch's CPU wheel pages, those pages (or the folders in TORCH_CPU_WHEELS).
"""

from __future__ import annotations

import functools
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from torchlab.locks import canonical
from torchlab.variants import Manifest
from torchlab_host.core.settings import Settings
from torchlab_host.lockfiles import files

TORCH_CPU_PAGES = (
    "https://download.pytorch.org/whl/cpu/torch/",
    "https://download.pytorch.org/whl/cpu/torchvision/",
)
# A local-version pin of a lock's input (torchvision==0.28.0+cpu), and the machine it holds on.
LOCAL_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+\+[^\s;]+)"
    r"(?:\s*;\s*platform_machine\s*==\s*'([A-Za-z0-9_]+)')?\s*$",
    re.M,
)
PAGE_TIMEOUT_S = 10


def torch_sources(lock: str, manifest: Manifest) -> set[str]:
    """Where the torch of a lock's images comes from, on all their platforms (none: a lock
    without torch)."""
    return {
        source
        for variant in manifest.variants
        if variant.lock == lock
        for source in variant.torch_sources
    }


def torch_cpu_links(settings: Settings) -> list[str]:
    return settings.words("TORCH_CPU_WHEELS") or list(TORCH_CPU_PAGES)


def sources(
    lock: str, manifest: Manifest, settings: Settings, wheelhouse: str | Path | None = None
) -> list[str]:
    """pip's options saying where the wheels of one lock come from."""
    if wheelhouse:
        return ["--no-index", "--find-links", f"{str(wheelhouse).rstrip('/')}/{lock}/"]
    if "pytorch-cpu" in torch_sources(lock, manifest):
        return [option for link in torch_cpu_links(settings) for option in ("--find-links", link)]
    return []


def shielded(lock: str, manifest: Manifest, folder: Path, settings: Settings) -> dict[str, str]:
    """pip's environment for a lock on this host, whose pip configuration may name find-links
    folders (one holding torch 2.13.0+cpu, say), which --find-links adds to rather than
    replaces. With a wheelhouse, pip must see it alone; without, a folder with torch 2.13.0+cpu
    would satisfy torch==2.13.0 (local versions sort higher), so the locks that pin PyPI's
    builds look in their own folder. PIP_FIND_LINKS overrides the configuration's."""
    environment = dict(os.environ)  # pip's own configuration and the proxy pass through
    if settings.given("PIP_INDEX_URL"):  # from .env too
        environment["PIP_INDEX_URL"] = settings["PIP_INDEX_URL"]
    if settings.wheelhouse:
        environment["PIP_FIND_LINKS"] = f"{settings.wheelhouse}/{lock}/"
    elif torch_sources(lock, manifest) == {"pypi"}:
        environment["PIP_FIND_LINKS"] = str(folder)
    return environment


@functools.cache
def page_listing(link: str) -> str | None:
    """What a find-links page lists (unquoted), or None when it does not answer (asked once:
    an unreachable page costs its timeout)."""
    try:
        with urllib.request.urlopen(link, timeout=PAGE_TIMEOUT_S) as page:
            return urllib.parse.unquote(page.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def answers(link: str) -> bool:
    """Whether a find-links place is there: a folder that exists, or a page that answers."""
    return Path(link).is_dir() if "://" not in link else page_listing(link) is not None


def wheel_place_has(link: str, name: str, version: str) -> bool:
    """Whether a find-links place (folder or page) offers this exact wheel; False when the
    page cannot be reached."""
    stem = f"{canonical(name).replace('-', '_')}-{version}-"
    if "://" not in link:
        return any(Path(link).glob(f"{stem}*.whl"))
    listing = page_listing(link)
    return listing is not None and stem in listing


@dataclass(frozen=True)
class LocalPin:
    package: str
    version: str
    machine: str | None  # None: every machine's

    def holds_on(self, machine: str) -> bool:
        return self.machine in (None, machine)


def local_pins(lock: str) -> list[LocalPin]:
    """The local-version pins a lock's input asks for (torchvision==0.28.0+cpu)."""
    text = (files.REQUIREMENTS / f"{lock}.in").read_text()
    return [LocalPin(m[1], m[2], m[3]) for m in LOCAL_PIN.finditer(text)]


def unreachable_local_pins(lock: str, settings: Settings) -> list[LocalPin]:
    """The local-version pins of a lock's input that none of the CPU wheel places offers here."""
    return [
        pin
        for pin in local_pins(lock)
        if not any(
            wheel_place_has(link, pin.package, pin.version) for link in torch_cpu_links(settings)
        )
    ]
