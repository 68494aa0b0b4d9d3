"""make lock: requirements/*.in -> requirements/*.txt, exact pins with hashes, resolved by uv
for the images' Python; a CPU-build pin that cannot be resolved here is kept, never dropped."""

from __future__ import annotations

import tempfile
from pathlib import Path

from torchlab.locks import canonical
from torchlab.variants import Manifest
from torchlab_host import ROOT
from torchlab_host.core.engine import run
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lockfiles import files
from torchlab_host.lockfiles.files import (
    GLIBC_MINOR,
    PYTHON_VERSION,
    all_locks,
    constraints,
    entries,
    joined,
    lock_file,
)
from torchlab_host.lockfiles.platforms import check_locks
from torchlab_host.lockfiles.sources import (
    LOCAL_PIN,
    torch_cpu_links,
    torch_sources,
    unreachable_local_pins,
)


def lock(manifest: Manifest, settings: Settings) -> None:
    for name in all_locks(manifest):
        lock_one(name, manifest, settings)
    # uv resolves for x86_64 and keeps every file's hash of each pin: the check proves that
    # covers every platform the images ship for.
    check_locks(manifest, settings)


def kept_entries(name: str, unreachable: dict[str, str], places: str) -> dict[str, str]:
    """The existing lock's entries for pins that cannot be resolved here: kept, never dropped."""
    _, existing = entries(lock_file(name).read_text()) if lock_file(name).exists() else ("", {})
    kept = {}
    for package, version in unreachable.items():
        entry = existing.get(canonical(package), "")
        if not entry.startswith(f"{package}=={version} "):
            raise HostError(
                f"{package}=={version} cannot be resolved here (none of {places} offers it) "
                f"and requirements/{name}.txt holds no pin of it to keep",
                "run make lock where PyTorch's CPU wheel pages are reachable, or point "
                "TORCH_CPU_WHEELS at a folder holding the wheel",
            )
        kept[canonical(package)] = entry
    return kept


def lock_one(name: str, manifest: Manifest, settings: Settings) -> None:
    options = [f"--constraint=requirements/{c}.txt" for c in constraints(name, manifest)]
    kept: dict[str, str] = {}
    if "pytorch-cpu" in torch_sources(name, manifest):
        links = torch_cpu_links(settings)
        options += [f"--find-links={link}" for link in links]
        unreachable = unreachable_local_pins(name, settings)
        kept = kept_entries(name, unreachable, ", ".join(links))
        for package, version in unreachable.items():
            print(
                f"torchlab: kept {package}=={version} and its hashes from "
                f"requirements/{name}.txt: no CPU wheel place answers for it here",
                flush=True,
            )
    print(f"torchlab: resolving requirements/{name}.in", flush=True)
    wanted = (files.REQUIREMENTS / f"{name}.in").read_text()
    with tempfile.TemporaryDirectory() as folder:
        # uv resolves the rest; the kept pins' own dependencies are pinned by the locks.
        source = Path(folder, f"{name}.in")
        source.write_text(LOCAL_PIN.sub(lambda m: "" if canonical(m[1]) in kept else m[0], wanted))
        resolve(settings["UV"], name, source, options)
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
        raise HostError(
            f"resolving requirements/{name}.in failed (uv's output is above)",
            "fix the requirement it names, then make lock",
        )
