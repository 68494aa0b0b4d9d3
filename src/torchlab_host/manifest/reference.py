"""What the docs and `make help` say that comes from data: the images and the packages every
image has (variants.toml and the locks), the settings (core/settings.py), the make targets (the
Makefile's `## ` lines, with the variants each pattern target takes from the manifest) and the
toolkit's commands (its table).

make generate writes each table between its markers in the Markdown files,
`<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`; make check fails while
one differs, naming what the document's tables are written from (TABLES), so the docs cannot
fall behind what they describe.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torchlab import cli as toolkit_cli
from torchlab.locks import pins
from torchlab.variants import MACHINES, Manifest, Variant
from torchlab_host import ROOT
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import HANDED_TO_COMPOSE, TABLE, TOPICS
from torchlab_host.lockfiles.files import entries, lock_file, lock_platforms, package_of

MAKEFILE = ROOT / "Makefile"
TARGET = re.compile(r"^([a-z%-]+):[^#\n]*## (.*)$", re.MULTILINE)
REGION = re.compile(
    r"(<!-- begin generated: (?P<name>[a-z-]+) -->\n)(.*?)(<!-- end generated: (?P=name) -->)",
    re.DOTALL,
)
# The pattern targets that take only some variants (every other one takes them all).
TAKES: dict[str, Callable[[Variant], bool]] = {
    # A dev container only for the variants a user can have alone (.devcontainer/<variant>/).
    "prepare-%": lambda variant: variant.per_user,
}
# The libraries beside torch an image is known by, as the locks name them.
DOMAIN_LIBRARIES = ("torchvision", "torchaudio", "torch-xla")


@dataclass(frozen=True)
class Target:
    name: str  # lab-%, test-%-on-cpu, venv
    help: str

    def variants(self, manifest: Manifest) -> list[Variant]:
        if "%" not in self.name:
            return []
        takes = TAKES.get(self.name, lambda variant: True)
        return [variant for variant in manifest.variants if takes(variant)]

    def usage(self, manifest: Manifest) -> str:
        """The help, and for a pattern target the names it takes, aliases after them."""
        chosen = self.variants(manifest)
        if not chosen:
            return self.help
        names = " | ".join(self.name.replace("%", v.name) for v in chosen)
        aliases = [self.name.replace("%", a) for v in chosen for a in v.aliases]
        also = f" (or {', '.join(aliases)})" if aliases else ""
        return f"{self.help}: {names}{also}"


def make_targets(makefile: Path = MAKEFILE) -> list[Target]:
    return [Target(name, text.strip()) for name, text in TARGET.findall(makefile.read_text())]


def make_help(manifest: Manifest) -> str:
    """make help: every target, one line each."""
    return "\n".join(f"  make {t.name:<16} {t.usage(manifest)}" for t in make_targets())


def cell(text: str) -> str:
    """Text in a Markdown table cell: its pipes and angle brackets kept as text."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [f"| {' | '.join(header)} |", f"| {' | '.join('---' for _ in header)} |"]
    return "\n".join(lines + [f"| {' | '.join(row)} |" for row in rows])


def host_commands(manifest: Manifest) -> str:
    return table(
        ("make target", "what it does"),
        [(f"`make {t.name}`", cell(t.usage(manifest))) for t in make_targets()],
    )


def make_variants(manifest: Manifest) -> str:
    rows = []
    for target in make_targets():
        chosen = target.variants(manifest)
        if chosen:
            aliases = [a for v in chosen for a in v.aliases]
            rows.append((
                f"`make {target.name}`",
                ", ".join(v.name for v in chosen),
                ", ".join(f"{a} ({v.name})" for v in chosen for a in v.aliases) if aliases else "",
            ))  # fmt: skip
    return table(("target", "variants", "aliases"), rows)


def settings_table(_: Manifest) -> str:
    blocks = []
    for topic, title in TOPICS.items():
        rows = [
            (f"`{s.name}`", cell(s.meaning), f"`{s.default}`" if s.default else "")
            for s in TABLE
            if s.topic == topic
        ]
        blocks.append(f"**{title}**\n\n" + table(("setting", "what it sets", "default"), rows))
    handed: dict[str, list[str]] = {}  # what is handed -> its variables (a proxy's two cases)
    for name, what in HANDED_TO_COMPOSE.items():
        handed.setdefault(what, []).append(f"`{name}`")
    rows = [(", ".join(names), cell(what)) for what, names in handed.items()]
    title = "Not settings: what the host tools hand compose on every run, over the environment"
    blocks.append(f"**{title}**\n\n" + table(("variable", "what it is"), rows))
    return "\n\n".join(blocks)


def toolkit_commands(_: Manifest) -> str:
    rows = []
    for command in toolkit_cli.commands():
        options = ", ".join(
            f"`{names[0]}`" for names, _ in command.arguments if names[0].startswith("--")
        )
        rows.append((f"`torchlab {command.name}`", cell(command.help), options))
    return table(("command", "what it does", "options"), rows)


def release(version: str) -> str:
    """13.0.96 -> 13.0: the release a library is known by."""
    return ".".join(version.split(".")[:2])


def torch_build(variant: Variant, pinned: dict[str, str], platform: str) -> str:
    """torch's version on a platform and, for a CUDA build, its CUDA, cuDNN, NCCL and kernels."""
    said = pinned.get("torch", "unknown")
    build = variant.build_for(platform)
    if "cuda_major" in build:
        major = build["cuda_major"]
        runtime = pinned.get(f"nvidia-cuda-runtime-cu{major}") or pinned.get("nvidia-cuda-runtime")
        parts = [f"CUDA {release(runtime) if runtime else major}"]
        # cuDNN is known by its release, NCCL by its whole version (NCCL_VERSION).
        for library, name, shown in (
            ("nvidia-cudnn", "cuDNN", release),
            ("nvidia-nccl", "NCCL", str),
        ):
            found = [v for p, v in pinned.items() if p.startswith(library)]
            if found:
                parts.append(f"{name} {shown(found[0])}")
        archs = build.get("archs", [])
        if archs:
            parts.append(f"kernels {archs[0]} … {archs[-1]}")
        said += ", " + ", ".join(parts)
    return said


def images(manifest: Manifest) -> str:
    """One row per image: its first platform's torch and libraries, and another platform's
    beside its name where they differ."""
    rows = []
    for variant in manifest.variants:
        said = {}  # platform -> (torch, libraries)
        for platform in variant.platforms:
            pinned = {}
            for lock in (manifest.shared_lock, variant.lock):
                if lock_file(lock).exists():  # a missing one is make check's first line
                    pinned.update(pins(lock_file(lock).read_text(), MACHINES[platform]))
            libraries = ", ".join(
                f"{name.replace('-', '_')} {pinned[name]}"
                for name in DOMAIN_LIBRARIES
                if name in pinned
            )
            said[platform] = (torch_build(variant, pinned, platform), libraries or "none")
        (first, (torch, libraries)), *others = said.items()
        platforms = [first]
        for platform, (built, libs) in others:
            differ = [
                part
                for part, base in ((f"torch {built}", f"torch {torch}"), (libs, libraries))
                if part != base
            ]
            platforms.append(f"{platform} ({'; '.join(differ)})" if differ else platform)
        rows.append((
            f"`{variant.image}`", cell(variant.summary), torch, libraries,
            ", ".join(platforms), f"{variant.size_ceiling_gb:g} GB",
        ))  # fmt: skip
    header = ("image", "for", "torch", "domain libraries", "platforms", "size ceiling")
    return table(header, rows)


def requested(lock: str) -> set[str]:
    """The packages a lock's .in names, not what they pull in: the entries whose comments say
    they are there for `-r requirements/<lock>.in`; none while the lock is missing (make
    check's first line)."""
    if not lock_file(lock).exists():
        return set()
    asked = f"-r requirements/{lock}.in"
    _, blocks = entries(lock_file(lock).read_text())
    return {package_of(key) for key, block in blocks.items() if asked in block}


def pins_on(lock: str, platform: str) -> dict[str, str]:
    return pins(lock_file(lock).read_text(), MACHINES[platform]) if lock_file(lock).exists() else {}


def pinned_list(names: set[str], pins_in: dict[str, dict[str, str]]) -> str:
    """Each package with its version, by name; where the places (pins_in: each one's pins)
    pin it differently, each version with the places that pin it."""
    said = []
    for name in sorted(names):
        places: dict[str, list[str]] = {}
        for place, pinned in pins_in.items():
            if name in pinned:
                places.setdefault(pinned[name], []).append(place)
        said.append(f"{name} " + " or ".join(
            version if len(places) == 1 else f"{version} ({', '.join(where)})"
            for version, where in places.items()
        ))  # fmt: skip
    return ", ".join(said)


def packages(manifest: Manifest) -> str:
    """What every image installs from the locks besides torch and its domain libraries (the
    images table's): the packages of the shared lock, and those every variant's own lock has."""
    shared = manifest.shared_lock
    locked = [variant for variant in manifest.variants if lock_file(variant.lock).exists()]
    own = set.intersection(*(requested(variant.lock) for variant in locked)) if locked else set()
    everywhere = {
        platform: pins_on(shared, platform) for platform in lock_platforms(shared, manifest)
    }
    each = {
        f"{variant.name} on {platform}": pins_on(variant.lock, platform)
        for variant in locked
        for platform in variant.platforms
    }
    return (
        f"- from `requirements/{shared}.txt`, which every image shares: "
        f"{pinned_list(requested(shared), everywhere)}\n"
        f"- from each image's own lock: {pinned_list(own - {'torch', *DOMAIN_LIBRARIES}, each)}"
    )


@dataclass(frozen=True)
class Table:
    write: Callable[[Manifest], str]
    sources: tuple[str, ...]  # what it is written from, from the root: make check names them


LOCKS = "requirements/*.txt"
TABLES: dict[str, Table] = {
    "images": Table(images, ("variants.toml", LOCKS)),
    "packages": Table(packages, ("variants.toml", LOCKS)),
    "settings": Table(settings_table, ("src/torchlab_host/core/settings.py",)),
    "host-commands": Table(host_commands, ("Makefile", "variants.toml")),
    "make-variants": Table(make_variants, ("Makefile", "variants.toml")),
    "toolkit-commands": Table(toolkit_commands, ("src/torchlab/cli.py",)),
}
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))


def filled(text: str, manifest: Manifest, where: Path) -> str:
    """A Markdown text with every generated region written anew."""

    def fill(match: re.Match[str]) -> str:
        if match["name"] not in TABLES:
            raise HostError(
                f"{where.relative_to(ROOT)} asks for a generated table '{match['name']}', which "
                "torchlab does not make",
                f"name one of {', '.join(TABLES)} in its begin and end markers",
            )
        return f"{match[1]}{TABLES[match['name']].write(manifest)}\n{match[4]}"

    return REGION.sub(fill, text)


def sources(text: str) -> tuple[str, ...]:
    """What the generated regions of a Markdown text are written from, each once."""
    found = [source for match in REGION.finditer(text) for source in TABLES[match["name"]].sources]
    return tuple(dict.fromkeys(found))


def outputs(manifest: Manifest) -> dict[Path, str]:
    """Each document holding a generated region, as make generate writes it."""
    written = {}
    for path in DOCUMENTS:
        text = path.read_text()
        if REGION.search(text):
            written[path] = filled(text, manifest, path)
    return written
