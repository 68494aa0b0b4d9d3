"""make lock: requirements/*.in -> requirements/*.txt, exact pins with hashes, resolved by uv
for the images' Python on each machine the lock's images ship for; where those resolutions
differ, each machine's pin carries its marker. A CPU-build pin that cannot be resolved here is
kept, never dropped, with the entries of what only it needs; the rest resolves without it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from torchlab.locks import PIN, canonical, marker
from torchlab.variants import MACHINES, Manifest
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
    lock_platforms,
    unmarked,
)
from torchlab_host.lockfiles.platforms import check_locks
from torchlab_host.lockfiles.sources import (
    LOCAL_PIN,
    LocalPin,
    answers,
    torch_cpu_links,
    torch_sources,
    unreachable_local_pins,
)


def lock(manifest: Manifest, settings: Settings) -> None:
    for name in all_locks(manifest):
        lock_one(name, manifest, settings)
    # uv keeps every file's hash of each pin: the check proves that covers every platform the
    # images ship for.
    check_locks(manifest, settings)


def kept_entries(name: str, unreachable: list[LocalPin], places: str) -> dict[str, str]:
    """The existing lock's entries (unmarked) for pins that cannot be resolved here: kept,
    never dropped."""
    _, existing = entries(lock_file(name).read_text()) if lock_file(name).exists() else ("", {})
    by_release = {
        (canonical(found[1]), found[2]): block
        for block in existing.values()
        if (found := PIN.match(block))
    }
    kept = {}
    for pin in unreachable:
        block = by_release.get((canonical(pin.package), pin.version))
        if block is None:
            raise HostError(
                f"{pin.package}=={pin.version} cannot be resolved here (none of {places} offers "
                f"it) and requirements/{name}.txt holds no pin of it to keep",
                "run make lock where PyTorch's CPU wheel pages are reachable, or point "
                "TORCH_CPU_WHEELS at a folder holding the wheel",
            )
        kept[canonical(pin.package)] = unmarked(block)
    return kept


def requirement_of(block: str) -> str:
    """An entry without its comments: the pin and its hashes, which two resolutions must share
    for one entry to serve both."""
    lines = block.splitlines(keepends=True)
    return "".join(line for line in lines if not line.lstrip().startswith("#"))


def with_marker(block: str, machine: str) -> str:
    first, _, rest = block.partition("\n")
    pin, _, continued = first.partition(" \\")
    return f"{pin} ; {marker(machine)} \\{continued}\n{rest}"


def merged(resolutions: dict[str, str]) -> str:
    """One lock from each machine's resolution (the first machine's header and comments): an
    entry they all agree on as it is, one they do not once per machine, with its marker."""
    header = entries(next(iter(resolutions.values())))[0]
    by_machine = {machine: entries(text)[1] for machine, text in resolutions.items()}
    names = sorted({name for blocks in by_machine.values() for name in blocks})
    out = {}
    for name in names:
        found = {machine: blocks[name] for machine, blocks in by_machine.items() if name in blocks}
        if len(found) == len(by_machine) and len(set(map(requirement_of, found.values()))) == 1:
            out[name] = next(iter(found.values()))
        else:
            out.update({f"{name} ; {m}": with_marker(block, m) for m, block in found.items()})
    return joined(header, out)


def via(block: str) -> set[str]:
    """The packages an entry's comments say it is there for (not the input or constraint
    files)."""
    names, listing = set(), False
    for line in block.splitlines()[1:]:
        text = line.strip()
        if text.startswith("# via "):
            names.add(text.removeprefix("# via "))
        listing = text == "# via" or (listing and text.startswith("#   "))
        if listing and text.startswith("#   "):
            names.add(text.removeprefix("#   "))
    return {canonical(name) for name in names if not name.startswith("-")}


def with_dependencies(
    kept: dict[str, str], existing: dict[str, str], resolved: dict[str, str]
) -> dict[str, str]:
    """The kept entries and, from the existing lock (one machine's, unmarked), the entries of
    what they alone need (what the resolution without them does not hold), and of what they
    need beside others where the pin is the same, so their comments still name the kept."""
    found = dict(kept)
    while grown := {
        name: block
        for name, block in existing.items()
        if name not in found and name not in resolved and via(block) & found.keys()
    }:
        found.update(grown)
    shared = {
        name: block
        for name, block in existing.items()
        if name in resolved
        and requirement_of(block) == requirement_of(resolved[name])
        and via(block) & found.keys()
    }
    return {**found, **shared}


def lock_one(name: str, manifest: Manifest, settings: Settings) -> None:
    options = [f"--constraint=requirements/{c}.txt" for c in constraints(name, manifest)]
    unreachable: list[LocalPin] = []
    if "pytorch-cpu" in torch_sources(name, manifest):
        # Only the places that answer: uv fails at a page that does not.
        options += [f"--find-links={link}" for link in torch_cpu_links(settings) if answers(link)]
        unreachable = unreachable_local_pins(name, settings)
        for pin in unreachable:
            print(
                f"torchlab: kept {pin.package}=={pin.version} and its hashes from "
                f"requirements/{name}.txt: no CPU wheel place answers for it here",
                flush=True,
            )
    kept = kept_entries(name, unreachable, ", ".join(torch_cpu_links(settings)))
    out_of_reach = {(canonical(pin.package), pin.version) for pin in unreachable}
    wanted = LOCAL_PIN.sub(
        lambda m: "" if (canonical(m[1]), m[2]) in out_of_reach else m[0],
        (files.REQUIREMENTS / f"{name}.in").read_text(),
    )
    existing = lock_file(name).read_text() if lock_file(name).exists() else ""
    machines = [MACHINES[platform] for platform in lock_platforms(name, manifest)]
    resolutions = {}
    for machine in machines:
        print(f"torchlab: resolving requirements/{name}.in for {machine}", flush=True)
        kept_here = {
            canonical(pin.package): kept[canonical(pin.package)]
            for pin in unreachable
            if pin.holds_on(machine)
        }
        header, blocks = entries(
            resolve(settings["UV"], name, wanted, options, machine, set(kept_here))
        )
        existing_here = entries(files.for_machine(existing, machine))[1]
        resolutions[machine] = joined(
            header, {**blocks, **with_dependencies(kept_here, existing_here, blocks)}
        )
    text = resolutions[machines[0]] if len(machines) == 1 else merged(resolutions)
    lock_file(name).write_text(text)


def resolve(
    uv: str, name: str, wanted: str, options: list[str], machine: str, kept: set[str]
) -> str:
    """One machine's resolution of a lock's input, uv's existing lock as its preferences; the
    kept packages are taken out of it (an override whose marker never holds removes a package
    from every dependency list, so no other release of it is resolved in its place)."""
    with tempfile.TemporaryDirectory() as folder:
        source, output = Path(folder, f"{name}.in"), Path(folder, f"{name}.txt")
        overrides = Path(folder, "kept.txt")
        source.write_text(wanted)
        overrides.write_text("".join(f"{package} ; sys_platform == 'never'\n" for package in kept))
        if lock_file(name).exists():  # so uv keeps the pins it need not change
            output.write_text(lock_file(name).read_text())
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
                f"{machine}-manylinux_2_{GLIBC_MINOR}",
                *options,
                "--override",
                str(overrides),
                "--output-file",
                str(output),
                str(source),
            ],
            cwd=ROOT,
        )
        if result.returncode != 0:
            raise HostError(
                f"resolving requirements/{name}.in for {machine} failed (uv's output is above)",
                "fix the requirement it names, then make lock",
            )
        return output.read_text().replace(str(source), f"requirements/{name}.in")
