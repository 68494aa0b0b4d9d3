"""What the docs and `make help` say that comes from data: the images (variants.toml and the
locks), the settings (core/settings.py), the make targets (the Makefile's `## ` lines, with the
variants each pattern target takes from the manifest) and the toolkit's commands (its table).

make generate writes each table between its markers in the Markdown files,
`<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`; make check fails while
one differs, so the docs cannot fall behind what they describe.
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
from torchlab_host.core.settings import TABLE, TOPICS
from torchlab_host.lockfiles.files import lock_file

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


TABLES: dict[str, Callable[[Manifest], str]] = {
    "images": images,
    "settings": settings_table,
    "host-commands": host_commands,
    "make-variants": make_variants,
    "toolkit-commands": toolkit_commands,
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
        return f"{match[1]}{TABLES[match['name']](manifest)}\n{match[4]}"

    return REGION.sub(fill, text)


def outputs(manifest: Manifest) -> dict[Path, str]:
    """Each document holding a generated region, as make generate writes it."""
    written = {}
    for path in DOCUMENTS:
        text = path.read_text()
        if REGION.search(text):
            written[path] = filled(text, manifest, path)
    return written
