"""make check-locks: every lock holds, for each pin, the hash of a file that each platform its
images ship for can install, so `pip install --require-hashes` passes on all of them. It asks
the indexes (PEP 503 pages, sha256 in each link) and never downloads a wheel."""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from torchlab.locks import PIN, canonical
from torchlab.variants import MACHINES, Manifest
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lockfiles.download import SOURCE_ONLY
from torchlab_host.lockfiles.files import (
    GLIBC_MINOR,
    PYTHON_VERSION,
    all_locks,
    entries,
    lock_file,
    lock_platforms,
)
from torchlab_host.lockfiles.sources import page_listing, torch_cpu_links

PYPI_SIMPLE = "https://pypi.org/simple"
LINK = re.compile(r'href="([^"#]+)#sha256=([0-9a-f]{64})"')
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
ABI = "cp" + PYTHON_VERSION.replace(".", "")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: frozenset[str]
    machine: str | None = None  # the one machine it holds on (its marker); None: every one

    def platforms_of(self, platforms: list[str]) -> list[str]:
        """Those of the platforms it is installed on."""
        return [p for p in platforms if self.machine in (None, MACHINES[p])]


def lock_pins(text: str) -> list[Pin]:
    pinned = []
    for block in entries(text)[1].values():
        found = PIN.match(block)
        if found:
            pinned.append(Pin(found[1], found[2], frozenset(HASH.findall(block)), found[3]))
    return pinned


def installs_on(filename: str, platform: str) -> bool:
    """Whether pip in an image of this platform (CPython 3.11, glibc 2.36) can install a wheel."""
    if not filename.endswith(".whl"):
        return False
    python, abi, tags = filename[:-4].split("-")[-3:]
    if not ({"cp311", "cp3", "py3", "py311"} & set(python.split("."))) and not (
        abi == "abi3" and python.startswith("cp3")
    ):
        return False
    if abi not in (ABI, "abi3", "none"):
        return False
    machine = MACHINES[platform]
    for tag in tags.split("."):
        if tag == "any" or tag in (f"linux_{machine}", f"manylinux2014_{machine}"):
            return True
        glibc = re.fullmatch(rf"manylinux_2_(\d+)_{machine}", tag)
        if glibc and int(glibc[1]) <= GLIBC_MINOR:
            return True
        if tag in (f"manylinux1_{machine}", f"manylinux2010_{machine}"):
            return True
    return False


def page_files(url: str) -> dict[str, str] | None:
    """filename -> sha256 of what an index page or a folder offers; None when it does not answer."""
    if "://" not in url:
        folder = Path(url)
        if not folder.is_dir():
            return None
        return {
            wheel.name: hashlib.sha256(wheel.read_bytes()).hexdigest()
            for wheel in folder.glob("*.whl")
        }
    if url.startswith("file:") and Path(urllib.parse.urlsplit(url).path).is_dir():
        url += "index.html"  # a simple index in a folder (pip reads it so too)
    listing = page_listing(url)
    if listing is None:
        return None
    return {
        urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1]: digest
        for href, digest in LINK.findall(listing)
    }


def release_of(filename: str) -> tuple[str, str] | None:
    """(canonical name, version) of a wheel or a source archive's filename."""
    if filename.endswith(".whl"):
        name, version = filename.split("-")[:2]
    elif filename.endswith(".tar.gz"):
        name, _, version = filename.removesuffix(".tar.gz").rpartition("-")
    else:
        return None
    return canonical(name), version


def offered(pin: Pin, index: str, cpu_links: list[str]) -> dict[str, str] | None:
    """filename -> sha256 of this exact release's files: from the CPU wheel places for a local
    version (2.13.0+cpu), from the index otherwise; None when none of them answers."""
    places = cpu_links if "+" in pin.version else [f"{index}/{canonical(pin.name)}/"]
    answers = [listed for listed in map(page_files, places) if listed is not None]
    if not answers:
        return None
    release = (canonical(pin.name), pin.version)
    files = {
        filename: digest
        for listed in answers
        for filename, digest in listed.items()
        if release_of(filename) == release
    }
    # A CPU wheel folder holds what someone put there, not all PyTorch publishes (make lock
    # keeps such pins as they are, too).
    return None if "+" in pin.version and not files else files


def problems_of(
    pin: Pin, platforms: list[str], files: dict[str, str] | None, lock: str
) -> tuple[list[str], list[str]]:
    """(what is wrong, what could not be checked) for one pin on the given platforms."""
    if files is None:
        return [], [
            f"requirements/{lock}.txt: {pin.name}=={pin.version}: no place it comes from offers it"
        ]
    wrong = []
    for platform in pin.platforms_of(platforms):
        installable = {
            name: digest for name, digest in files.items() if installs_on(name, platform)
        }
        if not installable and canonical(pin.name) in SOURCE_ONLY:
            installable = {
                name: digest for name, digest in files.items() if name.endswith(".tar.gz")
            }
        if not installable:
            wrong.append(
                f"requirements/{lock}.txt: {pin.name}=={pin.version} has no wheel for {platform}"
            )
        elif not pin.hashes & set(installable.values()):
            wrong.append(
                f"requirements/{lock}.txt: {pin.name}=={pin.version} has no hash for {platform} "
                f"(its wheels: {', '.join(sorted(installable))})"
            )
    return wrong, []


def check_lock(
    lock: str, text: str, platforms: list[str], index: str, cpu_links: list[str]
) -> tuple[list[str], list[str]]:
    pinned = lock_pins(text)
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda pin: offered(pin, index, cpu_links), pinned))
    wrong, unchecked = [], []
    for pin, files in zip(pinned, answers, strict=True):
        found, not_checked = problems_of(pin, platforms, files, lock)
        wrong += found
        unchecked += not_checked
    return wrong, unchecked


def check_locks(manifest: Manifest, settings: Settings) -> None:
    index = (settings["PIP_INDEX_URL"] or PYPI_SIMPLE).rstrip("/")
    cpu_links = torch_cpu_links(settings)
    wrong: list[str] = []
    for lock in all_locks(manifest):
        platforms = lock_platforms(lock, manifest)
        found, unchecked = check_lock(
            lock, lock_file(lock).read_text(), platforms, index, cpu_links
        )
        wrong += found
        for line in unchecked:
            print(f"torchlab: not checked here, {line}", flush=True)
        print(
            f"torchlab: requirements/{lock}.txt for {', '.join(platforms)}: "
            f"{'ok' if not found else f'{len(found)} problems'}",
            flush=True,
        )
    if wrong:
        for line in wrong:
            print(f"torchlab: {line}", flush=True)
        raise HostError(
            f"{len(wrong)} pins cannot be installed with --require-hashes on a platform their "
            "images ship for (listed above)",
            "make lock where the index (and, for the cpu variant, PyTorch's CPU wheel pages) "
            "answers, then make check-locks",
        )
