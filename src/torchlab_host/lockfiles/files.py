"""A lock's text: its entries, what a build installs of it (TORCHLAB_WITHOUT), the constraints
that keep a lab user's own installs to it, and the order the locks build on each other."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from torchlab.locks import PIN, canonical, marker
from torchlab.variants import MACHINES, Manifest, Variant, this_platform
from torchlab_host import ROOT
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings

REQUIREMENTS = ROOT / "requirements"
# The images' interpreter: Debian bookworm's CPython 3.11 on glibc 2.36.
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36


def lock_file(lock: str) -> Path:
    return REQUIREMENTS / f"{lock}.txt"


def require_locks(names: list[str]) -> None:
    for name in names:
        if not lock_file(name).exists():
            raise HostError(
                f"the lock requirements/{name}.txt is missing",
                f"write requirements/{name}.in (what only this image adds), then make lock",
            )


def entry_key(line: str) -> str:
    """An entry's key: its package's canonical name, and the machine a marked pin holds on
    ("torch ; aarch64")."""
    found = PIN.match(line)
    name = canonical(found[1] if found else line.split("==")[0])
    return f"{name} ; {found[3]}" if found and found[3] else name


def package_of(key: str) -> str:
    return key.split(" ; ")[0]


def entries(text: str) -> tuple[str, dict[str, str]]:
    """A lock's header, and its entries (a pin with its hashes and comments) by entry_key."""
    header, blocks, name = [], {}, None
    for line in text.splitlines(keepends=True):
        if line[:1] not in ("", " ", "#", "\n"):
            name = entry_key(line)
            blocks[name] = line
        elif name is None:
            header.append(line)
        else:
            blocks[name] += line
    return "".join(header), blocks


def joined(header: str, blocks: dict[str, str]) -> str:
    return header + "".join(blocks[name] for name in sorted(blocks))


def without(text: str, names: set[str]) -> str:
    """A lock's text less some packages' entries (on every machine)."""
    header, blocks = entries(text)
    return joined(header, {key: b for key, b in blocks.items() if package_of(key) not in names})


def unmarked(block: str) -> str:
    """An entry without its machine's marker."""
    first, _, rest = block.partition("\n")
    return PIN.sub(lambda m: f"{m[1]}=={m[2]}", first, count=1) + "\n" + rest


def for_machine(text: str, machine: str) -> str:
    """A lock's text as it holds on one machine, its markers gone: what pip on another machine
    (pip download --platform, which judges markers by the machine it runs on) must read."""
    header, blocks = entries(text)
    return joined(
        header,
        {
            package_of(key): unmarked(block)
            for key, block in blocks.items()
            if key == package_of(key) or key.endswith(f" ; {machine}")
        },
    )


def asked_to_omit(settings: Settings) -> set[str]:
    """The packages TORCHLAB_WITHOUT names (by canonical name; commas or spaces between)."""
    return {canonical(name) for name in settings.words("TORCHLAB_WITHOUT")}


def omitted(variant: Variant, settings: Settings, platform: str) -> set[str]:
    """What TORCHLAB_WITHOUT leaves out of this variant on a platform: only what its manifest
    entry allows there."""
    return asked_to_omit(settings) & {canonical(name) for name in variant.omittable_on(platform)}


def require_omittable(settings: Settings, manifest: Manifest) -> None:
    allowed = {
        canonical(name)
        for variant in manifest.variants
        for shipped in variant.platforms.values()
        for name in shipped.omittable
    }
    unknown = sorted(asked_to_omit(settings) - allowed)
    if unknown:
        raise HostError(
            f"TORCHLAB_WITHOUT names {', '.join(unknown)}, which no variant may leave out "
            f"(variants.toml allows: {', '.join(sorted(allowed)) or 'nothing'})",
            "name only those, or unset TORCHLAB_WITHOUT",
        )


def left_out_of(
    locks: list[str], manifest: Manifest, settings: Settings, platform: str
) -> set[str]:
    """What TORCHLAB_WITHOUT leaves out of these locks on a platform, by the variants that
    install them."""
    return set().union(
        *(omitted(v, settings, platform) for v in manifest.variants if v.lock in locks)
    )


def installed_text(lock: str, manifest: Manifest, settings: Settings, platform: str) -> str:
    """What a build for a platform installs of a lock: the lock, less what TORCHLAB_WITHOUT
    leaves out there."""
    text = lock_file(lock).read_text()
    left_out = left_out_of([lock], manifest, settings, platform)
    return without(text, left_out) if left_out else text


@contextlib.contextmanager
def as_installed(
    lock: str, manifest: Manifest, settings: Settings, platform: str | None = None
) -> Iterator[Path]:
    """A copy of a lock as a build for a platform (default: this machine's) installs it, for
    pip to read: with that machine's pins alone, unmarked."""
    platform = platform or this_platform()
    text = for_machine(installed_text(lock, manifest, settings, platform), MACHINES[platform])
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder, f"{lock}.txt")
        copy.write_text(text)
        yield copy


def constraints_text(names: list[str]) -> str:
    """The constraints a lab's own pip installs obey (PIP_CONSTRAINT): every pin of the locks,
    so a package someone adds can never replace or break one the lock installed. A pin of one
    machine keeps its marker: the same file serves every platform's image."""
    pinned: dict[str, str] = {}
    for name in names:
        for key, block in entries(lock_file(name).read_text())[1].items():
            found = PIN.match(block)
            if found:
                machine = f" ; {marker(found[3])}" if found[3] else ""
                pinned[key] = f"{package_of(key)}=={found[2]}{machine}"
    sources = " and ".join(f"requirements/{name}.txt" for name in names)
    return f"# The pins of {sources}: pip keeps every install in this image to them.\n" + "".join(
        f"{pinned[key]}\n" for key in sorted(pinned)
    )


def lock_platforms(lock: str, manifest: Manifest) -> list[str]:
    """The platforms whose images install a lock: its variants', every variant's for the
    shared lock; a lock no variant installs (the host's, the hub's) is this machine's."""
    if lock == manifest.shared_lock:
        shipping = list(manifest.variants)
    else:
        shipping = [variant for variant in manifest.variants if variant.lock == lock]
    found = [platform for variant in shipping for platform in variant.platforms]
    return list(dict.fromkeys(found)) or [this_platform()]


def all_locks(manifest: Manifest) -> list[str]:
    """Every lock, in the order they resolve: each is constrained by locks before it."""
    ordered = [manifest.shared_lock, *(variant.lock for variant in manifest.variants)]
    ordered += [lock for lock in (*manifest.host_locks, manifest.hub_lock) if lock not in ordered]
    return list(dict.fromkeys(ordered))


def chosen_locks(manifest: Manifest, settings: Settings) -> list[str]:
    """The locks LOCKS names (make wheels LOCKS="lab cpu"), in all_locks' order; unset:
    every one."""
    every = all_locks(manifest)
    named = settings["LOCKS"].split()
    unknown = sorted(set(named) - set(every))
    if unknown:
        raise HostError(
            f"LOCKS names {', '.join(unknown)}, which is no lock in requirements/",
            f"name some of: {' '.join(every)}",
        )
    return [lock for lock in every if lock in named] if named else every


def constraints(lock: str, manifest: Manifest) -> list[str]:
    """The locks a lock is resolved against, so the packages they share have one version."""
    if lock == manifest.shared_lock:
        return []
    if lock in manifest.host_locks and lock not in {v.lock for v in manifest.variants}:
        return list(manifest.host_locks[: manifest.host_locks.index(lock)])
    return [manifest.shared_lock]
