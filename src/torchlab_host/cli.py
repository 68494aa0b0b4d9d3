"""The host tools' commands: what the Makefile, .ci/run and the GitHub workflows call, as one
table (name, help, arguments, what runs it) and one place where a problem becomes its line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from torchlab import variants
from torchlab.backends import UnknownDevice
from torchlab.cli import Command, add_commands
from torchlab.variants import Manifest
from torchlab_host import ROOT, measure
from torchlab_host.ci import images as ci_images
from torchlab_host.ci import plan as ci_plan
from torchlab_host.core.engine import current_engine, require_docker
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.distributed import torchrun as ddp
from torchlab_host.hub import manage as hub
from torchlab_host.hub import proxy
from torchlab_host.image import archive, emulation, publish, reproducible
from torchlab_host.image import build as building
from torchlab_host.image.spec import hub_build, variant_build
from torchlab_host.lab import manage as lab
from torchlab_host.lockfiles import download, platforms, resolve
from torchlab_host.lockfiles.files import chosen_locks, lock_file
from torchlab_host.lockfiles.venv import venv
from torchlab_host.manifest import check, generate, reference
from torchlab_host.measure import image_costs
from torchlab_host.slurm import images as slurm_images

# A handler's int is the exit status; anything else it returns (a time, the files it wrote)
# means success. Every handler gets the parsed arguments, the manifest and the settings, each
# read once at start.
VARIANT = (("variant",), {"help": "a variant of variants.toml (or an alias: gpu, tpu)"})


def engine(args: argparse.Namespace, manifest: Manifest, settings: Settings) -> None:
    """make probe's first line: the engine the lab commands drive here, or why there is none (a
    report, so it succeeds either way)."""
    try:
        print(f"engine: {current_engine().describe()}")
    except HostError as missing:
        print(f"engine: none: {missing.args[0]}")


def test_host(args: argparse.Namespace, manifest: Manifest, settings: Settings) -> int:
    """The device suite in a host venv from one variant's locks (on the CPU unless there)."""
    variant = manifest.variant(args.variant)
    own = [manifest.shared_lock, variant.lock]
    path = ROOT / f".venv-{variant.name}"
    venv(path, own, manifest, settings)
    environment = {**variant.cpu_mode, **os.environ}
    environment.update(
        TORCHLAB_EXPECT=variant.device,
        TORCHLAB_VARIANT=variant.name,
        TORCHLAB_LOCKS=" ".join(str(lock_file(name)) for name in own),
    )
    return subprocess.run(
        [str(path / "bin/python"), "-m", "pytest", "-p", "no:cacheprovider", "tests/device"],
        cwd=ROOT,
        env=environment,
    ).returncode


def check_manifest(_: argparse.Namespace, manifest: Manifest, settings: Settings) -> int:
    found = check.problems(manifest)
    for problem in found:
        print(f"torchlab: {problem}", file=sys.stderr)
    if not found:
        print(
            f"torchlab: the locks agree with {manifest.path.name} and the generated files are "
            "up to date"
        )
    return 1 if found else 0


def write_generated(_: argparse.Namespace, manifest: Manifest, settings: Settings) -> int:
    changed = generate.write(manifest)
    print(f"torchlab: wrote {', '.join(changed)}" if changed else "torchlab: nothing to write")
    return 0


def make_venv(args: argparse.Namespace, manifest: Manifest, settings: Settings) -> int:
    path = Path(args.path)
    if venv(path, args.locks or list(manifest.host_locks), manifest, settings):
        print(f"torchlab: {path} is built from its locks")
    return 0


def wheels(args: argparse.Namespace, manifest: Manifest, settings: Settings) -> int:
    folder = Path(args.folder or settings["WHEELHOUSE_DIR"])
    locks = chosen_locks(manifest, settings)
    # The wheels come from the indexes, never from another wheelhouse.
    download.download(folder, locks, manifest, settings.with_values(WHEELHOUSE=""))
    if manifest.hub_lock in locks:
        proxy.write_to_wheelhouse(folder)
    return 0


def run_ddp(args: argparse.Namespace, manifest: Manifest, settings: Settings) -> int:
    program = (
        ddp.script_program(args.script, settings)
        if args.script
        else ddp.proof_program(args.json, args.steps)
    )
    node_images = {int(node): image for node, _, image in (i.partition("=") for i in args.image_of)}
    return ddp.run(manifest, settings, program, args.nodes, args.nproc, node_images, args.shm_size)


def rebuild_check(args: argparse.Namespace, manifest: Manifest, settings: Settings) -> int:
    require_docker()
    return image_costs.rebuild_check(manifest.variant(args.variant), args.ceiling, settings)


def context(args: argparse.Namespace, manifest: Manifest, settings: Settings) -> None:
    build = (
        hub_build(manifest, settings)
        if args.variant == "hub"
        else variant_build(manifest.variant(args.variant), manifest, settings)
    )
    building.print_context(build, manifest)


def ci_suite(args: argparse.Namespace, manifest: Manifest, settings: Settings) -> int:
    """The suite CI's plan runs in a variant's image: in CPU mode, with what it leaves out."""
    suite = ci_plan.suite_of(manifest.variant(args.variant), manifest, settings)
    print(f"torchlab: {suite.variant.name}'s suite in CI: {suite.why}", flush=True)
    return lab.test(suite.variant.name, manifest, settings, True, list(suite.options))


COMMANDS = (
    Command("lab", "start a variant's lab (auto: the best one here)",
            lambda args, manifest, settings: lab.up(args.variant, manifest, settings),
            (VARIANT,)),
    Command("test", "the probe and the suite in a variant's image (after --: pytest options)",
            lambda args, manifest, settings: lab.test(
                args.variant, manifest, settings, args.on_cpu, args.passed_on),
            (VARIANT, (("--on-cpu",), {"action": "store_true",
                                       "help": "in CPU mode, for machines without the device"}))),
    Command("shell", "a bash shell in a variant's lab", lambda a, m, s: lab.shell(a.variant, m, s),
            (VARIANT,)),
    Command("prepare", "a variant's image and the lab's folders, for .devcontainer/<variant>",
            lambda a, m, s: lab.prepare(a.variant, m, s), (VARIANT,)),
    Command("test-host", "the device suite in a host venv from a variant's locks", test_host,
            (VARIANT,)),
    Command("down", "stop and remove the lab containers", lambda a, m, s: lab.down(s)),
    Command("logs", "the labs' recent log lines", lambda a, m, s: lab.logs(s)),
    Command("clean", "remove the lab containers, the images and their dangling layers",
            lambda a, m, s: lab.clean(m, s)),
    Command("clean-cache", "remove the caches in the lab's data folder (pip, torch hub, datasets)",
            lambda a, m, s: lab.clean_data("cache", s)),
    Command("clean-packages", "remove the packages you added in the labs",
            lambda a, m, s: lab.clean_data("packages", s)),
    Command("clean-envs", "remove your own environments (torchlab env) and their kernels",
            lambda a, m, s: lab.clean_data("envs", s)),
    Command("clean-home", "remove the lab's home: your settings, kernels, git config, history",
            lambda a, m, s: lab.clean_data("home", s)),
    Command("hub", "start JupyterHub for a class", lambda a, m, s: hub.up(m, s)),
    Command("hub-down", "stop the hub and every user's server; the volumes stay",
            lambda a, m, s: hub.down(s)),
    Command("hub-build", "build the hub image", lambda a, m, s: hub.build(m, s)),
    Command("ddp", "torchrun across containers: the distributed proof, or --script", run_ddp, (
        (("--nodes",), {"type": int, "default": 2}),
        (("--nproc",), {"type": int, "default": 2}),
        (("--script",), {"help": "a script in the labs folder, with its arguments"}),
        (("--json",), {"action": "store_true", "help": "the proof's report as JSON"}),
        (("--steps",), {"type": int, "help": "the proof's DDP training steps (a soak test)"}),
        (("--shm-size",), {"help": "each node's /dev/shm (default: TORCHLAB_DDP_SHM_SIZE)"}),
        (("--image-of",), {"action": "append", "default": [], "metavar": "NODE=IMAGE",
                           "help": "run node NODE from another image (a mismatch is refused)"}),
    )),
    Command("build", "build a variant's image",
            lambda a, m, s: building.build_variant(m.variant(a.variant), m, s, a.tag),
            (VARIANT, (("--tag",), {"help": "tag it so instead of the variant's image name"}))),
    Command("context", "stage a build context in build/<variant>/ and print its docker build",
            context, ((("variant",), {"help": "a variant of variants.toml, or hub"}),)),
    Command("publish", "push a variant's images (one per platform) and the names over them to "
            "TORCHLAB_REGISTRY, and sign them",
            lambda a, m, s: publish.publish(m.variant(a.variant), m, s, a.sbom),
            (VARIANT, (("--sbom",), {"default": "sbom.cdx.json",
                                     "help": "where to write its SBOM"}))),
    Command("image-save", "write a variant's image to a .tar.gz",
            lambda a, m, s: archive.save(m.variant(a.variant), a.file),
            (VARIANT, (("--file",), {"help": "where (default: torchlab-<variant>-inputs-...)"}))),
    Command("slurm-image", "a variant's image for deploy/slurm's runtime (TORCHLAB_RUNTIME), "
            "from the engine or an image-save file",
            lambda a, m, s: slurm_images.convert(m.variant(a.variant), s["TORCHLAB_RUNTIME"],
                                                 a.file),
            (VARIANT, (("--file",), {"help": "a make image-save archive instead of the engine's "
                                     "image"}))),
    Command("image-load", "check an image-save archive and load it",
            lambda a, m, s: archive.load(a.file), ((("file",), {}),)),
    Command("verify-reproducible",
            "build HEAD from fresh clones with --no-cache, twice or once --against an image of "
            "HEAD, and compare the layers",
            lambda a, m, s: reproducible.verify(m.variant(a.variant).name, s, a.against), (
                VARIANT,
                (("--against",), {"help": "an image built from HEAD to compare one build with"}),
            )),
    Command("base-image", "make the Debian base image here (PLATFORM=linux/arm64: another's)",
            lambda a, m, s: building.make_base_image(s)),
    Command("qemu", "QEMU 8 or newer for other platforms' programs, registered with binfmt_misc "
            "(as root)", lambda a, m, s: emulation.install(s)),
    Command("wheels", "download every lock's wheels into a folder", wheels,
            ((("folder",), {"nargs": "?", "help": "default: WHEELHOUSE_DIR"}),)),
    Command("venv", "a venv from locks, with the checkout's src/ editable", make_venv, (
        (("path",), {}),
        (("locks",), {"nargs": "*", "help": "default: the host environment's locks"}),
    )),
    Command("lock", "resolve requirements/*.in into requirements/*.txt",
            lambda a, m, s: resolve.lock(m, s)),
    Command("check-locks", "every lock has a hash for each platform its images ship for",
            lambda a, m, s: platforms.check_locks(m, s)),
    Command("check", "the locks agree with variants.toml and every generated file is up to "
            "date", check_manifest),
    Command("generate", "write compose.yaml, the dev containers, the cluster profiles and the "
            "docs' tables from their sources", write_generated),
    Command("ci-matrix", "the CI workflow's image matrix, from variants.toml",
            lambda a, m, s: print(check.ci_matrix(m))),
    Command("ci-plan", "CI's steps (bash .ci/run) in order, one a line: how, phase, command, "
            "why (tab-separated)",
            lambda a, m, s: print("\n".join(step.line for step in ci_plan.steps(m, s)))),
    Command("ci-suite", "the suite CI runs in a variant's image, in CPU mode: each torch "
            "release's notebooks once", ci_suite, (VARIANT,)),
    Command("image-sizes", "the torchlab images here, their sizes, and the disk left",
            lambda a, m, s: ci_images.sizes(m)),
    Command("image-remove", "remove a variant's image: every name of it",
            lambda a, m, s: ci_images.remove(m.variant(a.variant)), (VARIANT,)),
    Command("image-round-trip", "image-save, remove, image-load: a variant's image back from "
            "its file", lambda a, m, s: ci_images.round_trip(m.variant(a.variant)), (VARIANT,)),
    Command("engine", "the container engine here: Docker or Podman, rootful or rootless", engine),
    Command("help", "every make target, with the variants each pattern target takes",
            lambda a, m, s: print(reference.make_help(m))),
    Command("variants", "the variants of variants.toml, one per line (.ci/run's images)",
            lambda a, m, s: print("\n".join(m.names))),
    Command("bench", "measure the images, the hub and torchrun (BENCH_* settings)",
            lambda a, m, s: measure.bench(m, s, a.plan),
            ((("--plan",), {"action": "store_true",
                            "help": "say what it would measure, and stop"}),)),
    Command("rebuild-check", "one rebuild after a one-line toolkit change, within --ceiling s",
            rebuild_check, (VARIANT, (("--ceiling",), {"type": float, "default": 30.0}))),
)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(prog="python3 -m torchlab_host", description=__doc__)
    add_commands(made, COMMANDS)
    return made


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # After a --: options for the suite's pytest (test only).
    passed_on = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if "--" in argv and args.command != "test":
        parser().error(f"{args.command} takes no options after --")
    args.passed_on = passed_on
    try:
        status = args.run(args, variants.load(), Settings.load())
    except (HostError, variants.ManifestError, UnknownDevice) as error:
        print(f"torchlab: {error.args[0]}", file=sys.stderr)
        return 1
    return status if type(status) is int else 0
