"""The locks (requirements/*.txt): resolving them, downloading their wheels, installing them.

Where pip looks is decided here, and only here:
- with a wheelhouse (a folder, or the URL the image build is served it at): <wheelhouse>/<lock>/
  alone, never an index;
- otherwise pip's own configuration (PyPI unless configured), plus, for a variant whose torch
  comes from PyTorch's CPU wheel pages, those pages (or the folders in TORCH_CPU_WHEELS).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from torchlab.locks import canonical, pins
from torchlab.variants import Manifest, Variant

from . import ROOT
from .engine import run
from .errors import fail

# The images' interpreter: Debian bookworm's CPython 3.11 on glibc 2.36, x86-64.
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
TORCH_CPU_PAGES = (
    "https://download.pytorch.org/whl/cpu/torch/",
    "https://download.pytorch.org/whl/cpu/torchvision/",
)
LOCAL_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+\+\S+)\s*$", re.M)
REQUIREMENTS = ROOT / "requirements"
INSTALL_LOCK = ROOT / "docker/install-lock"
WHEELHOUSE_DIR = Path(os.environ.get("WHEELHOUSE_DIR") or ROOT / "wheelhouse")


def lock_file(lock: str) -> Path:
    return REQUIREMENTS / f"{lock}.txt"


def entries(text: str) -> tuple[str, dict[str, str]]:
    """A lock's header, and its entries (a pin with its hashes and comments) by package name."""
    header, blocks, name = [], {}, None
    for line in text.splitlines(keepends=True):
        if line[:1] not in ("", " ", "#", "\n"):
            name = canonical(line.split("==")[0])
            blocks[name] = line
        elif name is None:
            header.append(line)
        else:
            blocks[name] += line
    return "".join(header), blocks


def joined(header: str, blocks: dict[str, str]) -> str:
    return header + "".join(blocks[name] for name in sorted(blocks))


def without(text: str, names: set[str]) -> str:
    """A lock's text less some packages' entries."""
    header, blocks = entries(text)
    return joined(header, {name: b for name, b in blocks.items() if name not in names})


def omitted(variant: Variant) -> set[str]:
    """What TORCHLAB_WITHOUT leaves out of this variant: only what its manifest entry allows."""
    asked = set((os.environ.get("TORCHLAB_WITHOUT") or "").replace(",", " ").split())
    return {canonical(name) for name in asked} & {canonical(n) for n in variant.omittable}


def require_omittable(manifest: Manifest) -> None:
    asked = set((os.environ.get("TORCHLAB_WITHOUT") or "").replace(",", " ").split())
    allowed = {canonical(name) for v in manifest.variants for name in v.omittable}
    unknown = sorted(name for name in asked if canonical(name) not in allowed)
    if unknown:
        raise fail(
            f"TORCHLAB_WITHOUT names {', '.join(unknown)}, which no variant may leave out "
            f"(variants.toml allows: {', '.join(sorted(allowed)) or 'nothing'})",
            "name only those, or unset TORCHLAB_WITHOUT",
        )


def installed_text(lock: str, manifest: Manifest) -> str:
    """What a build installs of a lock: the lock, less what TORCHLAB_WITHOUT leaves out."""
    text = lock_file(lock).read_text()
    left_out = set().union(*(omitted(v) for v in manifest.variants if v.lock == lock))
    return without(text, left_out) if left_out else text


def constraints_text(names: list[str]) -> str:
    """The constraints a lab's own pip installs obey (PIP_CONSTRAINT): every pin of the locks,
    so a package someone adds can never replace or break one the lock installed."""
    pinned: dict[str, str] = {}
    for name in names:
        pinned.update(pins(lock_file(name).read_text()))
    sources = " and ".join(f"requirements/{name}.txt" for name in names)
    return f"# The pins of {sources}: pip keeps every install in this image to them.\n" + "".join(
        f"{package}=={version}\n" for package, version in sorted(pinned.items())
    )


def wheel_page_has(link: str, name: str, version: str) -> bool:
    """Whether a find-links place (folder or page) offers this exact wheel; False when the
    page cannot be reached."""
    stem = f"{canonical(name).replace('-', '_')}-{version}-"
    if "://" not in link:
        return any(Path(link).glob(f"{stem}*.whl"))
    try:
        with urllib.request.urlopen(link, timeout=10) as page:
            listing = urllib.parse.unquote(page.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return stem in listing


def require_locks(names: list[str]) -> None:
    for name in names:
        if not lock_file(name).exists():
            raise fail(
                f"the lock requirements/{name}.txt is missing",
                f"write requirements/{name}.in (what only this image adds), then make lock",
            )


def all_locks(manifest: Manifest) -> list[str]:
    """Every lock, in the order they resolve: each is constrained by locks before it."""
    ordered = [manifest.shared_lock, *(variant.lock for variant in manifest.variants)]
    ordered += [lock for lock in (*manifest.host_locks, manifest.hub_lock) if lock not in ordered]
    return list(dict.fromkeys(ordered))


def constraints(lock: str, manifest: Manifest) -> list[str]:
    """The locks a lock is resolved against, so the packages they share have one version."""
    if lock == manifest.shared_lock:
        return []
    if lock in manifest.host_locks and lock not in {v.lock for v in manifest.variants}:
        return list(manifest.host_locks[: manifest.host_locks.index(lock)])
    return [manifest.shared_lock]


def torch_source(lock: str, manifest: Manifest) -> str | None:
    for variant in manifest.variants:
        if variant.lock == lock:
            return variant.torch_from
    return None


def torch_cpu_links() -> list[str]:
    return (os.environ.get("TORCH_CPU_WHEELS") or " ".join(TORCH_CPU_PAGES)).split()


def sources(lock: str, manifest: Manifest, wheelhouse: str | None = None) -> list[str]:
    """pip's options saying where the wheels of one lock come from."""
    if wheelhouse:
        return ["--no-index", "--find-links", f"{wheelhouse.rstrip('/')}/{lock}/"]
    if torch_source(lock, manifest) == "pytorch-cpu":
        return [option for link in torch_cpu_links() for option in ("--find-links", link)]
    return []


def shielded(lock: str, manifest: Manifest, folder: Path) -> dict[str, str]:
    """pip's environment for a lock on this host, whose pip configuration may name find-links
    folders (here: one holding torch 2.13.0+cpu), which --find-links adds to rather than
    replaces. With a wheelhouse, pip must see it alone; without, a folder with torch 2.13.0+cpu
    would satisfy torch==2.13.0 (local versions sort higher), so the locks that pin PyPI's
    builds look in their own folder. PIP_FIND_LINKS overrides the configuration's."""
    environment = dict(os.environ)
    wheelhouse = os.environ.get("WHEELHOUSE")
    if wheelhouse:
        environment["PIP_FIND_LINKS"] = f"{wheelhouse.rstrip('/')}/{lock}/"
    elif torch_source(lock, manifest) == "pypi":
        environment["PIP_FIND_LINKS"] = str(folder)
    return environment


def unreachable_local_pins(name: str) -> dict[str, str]:
    """The local-version pins of a lock's input (torchvision==0.28.0+cpu) that none of the
    CPU wheel places offers from here."""
    wanted = {m[1]: m[2] for m in LOCAL_PIN.finditer((REQUIREMENTS / f"{name}.in").read_text())}
    return {
        package: version
        for package, version in wanted.items()
        if not any(wheel_page_has(link, package, version) for link in torch_cpu_links())
    }


def kept_entries(name: str, unreachable: dict[str, str]) -> dict[str, str]:
    """The existing lock's entries for pins that cannot be resolved here: kept, never dropped."""
    _, existing = entries(lock_file(name).read_text()) if lock_file(name).exists() else ("", {})
    kept = {}
    for package, version in unreachable.items():
        entry = existing.get(canonical(package), "")
        if not entry.startswith(f"{package}=={version} "):
            places = ", ".join(torch_cpu_links())
            raise fail(
                f"{package}=={version} cannot be resolved here (none of {places} offers it) "
                f"and requirements/{name}.txt holds no pin of it to keep",
                "run make lock where PyTorch's CPU wheel pages are reachable, or point "
                "TORCH_CPU_WHEELS at a folder holding the wheel",
            )
        kept[canonical(package)] = entry
    return kept


def lock(manifest: Manifest, uv: str) -> None:
    """requirements/*.in -> requirements/*.txt: exact pins with hashes, for the images' Python."""
    for name in all_locks(manifest):
        lock_one(name, manifest, uv)


def lock_one(name: str, manifest: Manifest, uv: str) -> None:
    options = [f"--constraint=requirements/{c}.txt" for c in constraints(name, manifest)]
    kept: dict[str, str] = {}
    if torch_source(name, manifest) == "pytorch-cpu":
        options += [f"--find-links={link}" for link in torch_cpu_links()]
        unreachable = unreachable_local_pins(name)
        kept = kept_entries(name, unreachable)
        for package, version in unreachable.items():
            print(
                f"torchlab: kept {package}=={version} and its hashes from "
                f"requirements/{name}.txt: no CPU wheel place answers for it here",
                flush=True,
            )
    print(f"torchlab: resolving requirements/{name}.in", flush=True)
    wanted = (REQUIREMENTS / f"{name}.in").read_text()
    with tempfile.TemporaryDirectory() as folder:
        # uv resolves the rest; the kept pins' own dependencies are pinned by the locks.
        source = Path(folder, f"{name}.in")
        source.write_text(LOCAL_PIN.sub(lambda m: "" if canonical(m[1]) in kept else m[0], wanted))
        resolve(uv, name, source, options)
    text = lock_file(name).read_text().replace(str(source), f"requirements/{name}.in")
    if kept:
        header, blocks = entries(text)
        text = joined(header, {**blocks, **kept})
    lock_file(name).write_text(text)


def resolve(uv: str, name: str, source: Path, options: list[str]) -> None:
    result = run(
        [
            uv,
            "pip",
            "compile",
            "--quiet",
            "--generate-hashes",
            "--custom-compile-command",
            "make lock",
            "--python-version",
            PYTHON_VERSION,
            "--python-platform",
            f"x86_64-manylinux_2_{GLIBC_MINOR}",
            *options,
            "--output-file",
            f"requirements/{name}.txt",
            str(source),
        ],
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise fail(
            f"resolving requirements/{name}.in failed (uv's output is above)",
            "fix the requirement it names, then make lock",
        )


@contextlib.contextmanager
def as_installed(name: str, manifest: Manifest) -> Iterator[Path]:
    """A copy of a lock as a build installs it: less what TORCHLAB_WITHOUT leaves out."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder, f"{name}.txt")
        copy.write_text(installed_text(name, manifest))
        yield copy


def download(folder: Path, locks: list[str], manifest: Manifest) -> None:
    """Fill folder/<lock>/ with the wheels each lock pins, for the images' platform."""
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(17, GLIBC_MINOR + 1)]
    platforms += ["manylinux2014_x86_64", "linux_x86_64"]
    for name in locks:
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        print(f"torchlab: downloading requirements/{name}.txt into {target}/", flush=True)
        with as_installed(name, manifest) as lock_copy:
            result = run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--progress-bar",
                    "off",
                    "--no-deps",
                    "--require-hashes",
                    "--only-binary=:all:",
                    *(f"--no-binary={name}" for name in SOURCE_ONLY),
                    "--implementation",
                    "cp",
                    "--python-version",
                    PYTHON_VERSION,
                    *(f"--abi={tag}" for tag in (abi, "abi3", "none")),
                    *(f"--platform={platform}" for platform in platforms),
                    *sources(name, manifest, os.environ.get("WHEELHOUSE")),
                    "--dest",
                    str(target),
                    "--requirement",
                    str(lock_copy),
                ],
                env=shielded(name, manifest, target),
            )
        if result.returncode != 0:
            raise fail(
                f"downloading the wheels of requirements/{name}.txt failed (pip's output is above)",
                "check that this machine reaches the package index, then make wheels",
            )


# Pinned packages PyPI publishes only as source archives: downloaded as such, built by pip
# inside the image (their build requirements are in the same lock: requirements/hub.in).
SOURCE_ONLY = ("onetimepass",)
PROXY = ROOT / "hub/proxy"
PROXY_TARBALL = "proxy.tar.gz"


def packed_proxy() -> bytes:
    """configurable-http-proxy and its dependencies as npm ci installs them from hub/proxy's
    lock (integrity hashes checked), packed for the hub image: from the wheelhouse (make wheels
    packs it there), else packed here, where npm reaches its registry."""
    wheelhouse = os.environ.get("WHEELHOUSE")
    if wheelhouse:
        packed = Path(wheelhouse) / "hub" / PROXY_TARBALL
        if not packed.exists():
            raise fail(
                f"the wheelhouse {wheelhouse} has no packed proxy (hub/{PROXY_TARBALL})",
                f"fill it first: make wheels WHEELHOUSE_DIR={wheelhouse}",
            )
        return packed.read_bytes()
    return pack_proxy()


def pack_proxy() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(PROXY / name, folder)
        installed = run(
            ["npm", "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--silent"],
            cwd=folder,
        )
        if installed.returncode != 0:
            raise fail(
                "npm could not install configurable-http-proxy from hub/proxy's lock",
                "check that this machine reaches the npm registry (npm ping), then try again",
            )
        return packed(Path(folder), "node_modules")


def packed(root: Path, name: str) -> bytes:
    """root/name as a gzipped tar that depends on nothing but the files: sorted, owned by
    root, dated 0."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as archive,
    ):
        for path in sorted([root / name, *(root / name).rglob("*")]):
            info = archive.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_file():
                with open(path, "rb") as file:
                    archive.addfile(info, file)
            else:
                archive.addfile(info)
    return buffer.getvalue()


def require_python(python: str) -> None:
    """The locks pin wheels for one Python: a venv from another one would not install them."""
    found = run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    if found.stdout.strip() != PYTHON_VERSION:
        said = found.stdout.strip() or "missing"
        raise fail(
            f"the locks are for Python {PYTHON_VERSION}, but {python} is {said}",
            f"install python{PYTHON_VERSION} and set PYTHON=python{PYTHON_VERSION}",
        )


def venv(path: Path, locks: list[str], manifest: Manifest) -> bool:
    """A venv holding exactly these locks and the toolkit (editable); False if already fresh."""
    require_locks(locks)
    marker = path / ".locked"
    inputs = [lock_file(name) for name in locks] + [ROOT / "pyproject.toml"]
    if marker.exists() and all(
        source.stat().st_mtime <= marker.stat().st_mtime for source in inputs
    ):
        return False
    python = os.environ.get("PYTHON") or "python3"
    if not (path / "bin/python").exists():
        require_python(python)
    for name in locks:
        with as_installed(name, manifest) as lock_copy:
            installed = run(
                [
                    str(INSTALL_LOCK),
                    str(path),
                    str(lock_copy),
                    *sources(name, manifest, os.environ.get("WHEELHOUSE")),
                ],
                env=dict(shielded(name, manifest, WHEELHOUSE_DIR / name), PYTHON=python),
            )
        if installed.returncode != 0:
            raise fail(
                f"installing requirements/{name}.txt into {path} failed (pip's output is above)",
                f"fix what it names, or remove {path} and run the command again",
            )
    toolkit = run(
        [
            str(path / "bin/python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--editable",
            str(ROOT),
        ]
    )
    if toolkit.returncode != 0:
        raise fail(f"installing the toolkit into {path} failed", f"remove {path} and try again")
    # The marker says how the venv was built, so its own lock test knows what to compare.
    left_out = set().union(*(omitted(v) for v in manifest.variants if v.lock in locks))
    marker.write_text(
        json.dumps(
            {
                "TORCHLAB_LOCKS": " ".join(str(lock_file(name)) for name in locks),
                "TORCHLAB_WITHOUT": " ".join(sorted(left_out)),
            }
        )
        + "\n"
    )
    return True


def torch_version(locks: list[str]) -> str:
    """The torch a set of locks pins ("unknown" when none does), for the image labels."""
    found = "unknown"
    for name in locks:
        found = pins(lock_file(name).read_text()).get("torch", found)
    return found
