"""The host tools' commands: what the Makefile, .ci/run and the GitHub workflow call."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from torchlab import variants

from . import ROOT, archive, check, ddp, hub, images, labs, locks, publish, reproducible
from .engine import compose_services, require_docker
from .errors import HostError


def _venv(args: argparse.Namespace, manifest: variants.Manifest) -> int:
    path = Path(args.path)
    if locks.venv(path, args.locks or list(manifest.host_locks), manifest):
        print(f"torchlab: {path} is built from its locks")
    return 0


def _test_host(args: argparse.Namespace, manifest: variants.Manifest) -> int:
    """The device suite in a host venv from one variant's locks (on the CPU unless there)."""
    variant = manifest.variant(args.variant)
    own = [manifest.shared_lock, variant.lock]
    path = ROOT / f".venv-{variant.name}"
    locks.venv(path, own, manifest)
    environment = {**variant.cpu_mode, **os.environ}
    environment.update(
        TORCHLAB_EXPECT=variant.device,
        TORCHLAB_VARIANT=variant.name,
        TORCHLAB_LOCKS=" ".join(str(locks.lock_file(name)) for name in own),
    )
    return subprocess.run(
        [str(path / "bin/python"), "-m", "pytest", "-p", "no:cacheprovider", "tests/device"],
        cwd=ROOT,
        env=environment,
    ).returncode


def _check(_: argparse.Namespace, manifest: variants.Manifest) -> int:
    found = check.problems(manifest, compose_services())
    for problem in found:
        print(f"torchlab: {problem}", file=sys.stderr)
    if not found:
        print(f"torchlab: compose.yaml and the locks agree with {manifest.path.name}")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m torchlab_host", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("shell", "a bash shell in a variant's lab"),
        ("prepare", "a variant's image and the lab's folders, for .devcontainer/<variant>"),
        ("test-host", "the device suite in a host venv from a variant's locks"),
    ):
        commands.add_parser(name, help=text).add_argument("variant")
    command = commands.add_parser("build", help="build a variant's image")
    command.add_argument("variant")
    command.add_argument("--tag", help="tag it so instead of the variant's image name")
    command = commands.add_parser(
        "verify-reproducible",
        help="build HEAD twice from fresh clones with --no-cache and compare the layers",
    )
    command.add_argument("variant")
    command = commands.add_parser("image-save", help="write a variant's image to a .tar.gz")
    command.add_argument("variant")
    command.add_argument("--file", help="where (default: torchlab-<variant>-inputs-<...>.tar.gz)")
    command = commands.add_parser(
        "publish", help="push a built image to TORCHLAB_REGISTRY under its names, and sign it"
    )
    command.add_argument("variant")
    command.add_argument("--sbom", default="sbom.cdx.json", help="where to write its SBOM")
    command = commands.add_parser("image-load", help="check an image-save archive and load it")
    command.add_argument("file")
    commands.add_parser("lab", help="start a variant's lab (auto: the best one here)").add_argument(
        "variant"
    )
    command = commands.add_parser("test", help="the probe and the suite in a variant's image")
    command.add_argument("variant")
    command.add_argument(
        "--on-cpu", action="store_true", help="in CPU mode, for machines without the device"
    )
    for name, text in (
        ("down", "stop and remove the lab containers"),
        ("logs", "the labs' recent log lines"),
        ("clean", "remove the lab containers, the images and their dangling layers"),
        ("clean-cache", "remove the caches in the lab's data folder (pip, torch hub, datasets)"),
        ("clean-packages", "remove the packages you added in the labs"),
        ("check", "check compose.yaml and the locks against variants.toml"),
        ("ci-matrix", "the CI workflow's image matrix, from variants.toml"),
        ("lock", "resolve requirements/*.in into requirements/*.txt"),
        ("hub", "start JupyterHub for a class (make hub)"),
        ("hub-down", "stop the hub and every user's server; the volumes stay"),
        ("hub-build", "build the hub image"),
    ):
        commands.add_parser(name, help=text)
    command = commands.add_parser(
        "ddp", help="torchrun across containers: the distributed proof, or --script"
    )
    command.add_argument("--nodes", type=int, default=2)
    command.add_argument("--nproc", type=int, default=2)
    command.add_argument("--script", help="a script in the labs folder, with its arguments")
    command.add_argument("--json", action="store_true", help="the proof's report as JSON")
    command.add_argument(
        "--steps", type=int, help="the proof's DDP training steps (more for a soak test)"
    )
    command.add_argument("--shm-size", help="each node's /dev/shm (default 2gb)")
    command.add_argument(
        "--image-of",
        action="append",
        default=[],
        metavar="NODE=IMAGE",
        help="run node NODE from another image (proves that a mismatch is refused)",
    )
    command = commands.add_parser("wheels", help="download every lock's wheels into a folder")
    command.add_argument("folder")
    command = commands.add_parser("venv", help="a venv from locks, with the toolkit editable")
    command.add_argument("path")
    command.add_argument("locks", nargs="*", help="default: the host environment's locks")
    args = parser.parse_args(argv)
    try:
        manifest = variants.load()
        if args.command == "build":
            images.build(manifest.variant(args.variant), manifest, args.tag)
        elif args.command == "image-save":
            archive.save(manifest.variant(args.variant), args.file)
        elif args.command == "publish":
            publish.publish(manifest.variant(args.variant), args.sbom)
        elif args.command == "image-load":
            archive.load(args.file)
        elif args.command == "verify-reproducible":
            return reproducible.verify(manifest.variant(args.variant).name)
        elif args.command == "lab":
            labs.up(args.variant, manifest)
        elif args.command == "test":
            return labs.test(args.variant, manifest, args.on_cpu)
        elif args.command == "prepare":
            labs.prepare(args.variant, manifest)
        elif args.command == "shell":
            return labs.shell(args.variant, manifest)
        elif args.command == "test-host":
            return _test_host(args, manifest)
        elif args.command == "down":
            return labs.down()
        elif args.command == "logs":
            return labs.logs()
        elif args.command == "clean":
            require_docker()
            return labs.clean(manifest)
        elif args.command == "ddp":
            program = (
                ddp.script_program(args.script)
                if args.script
                else [
                    *ddp.PROOF,
                    *(["--json"] if args.json else []),
                    *([f"--steps={args.steps}"] if args.steps else []),
                ]
            )
            node_images = {
                int(node): image for node, _, image in (i.partition("=") for i in args.image_of)
            }
            return ddp.run(manifest, program, args.nodes, args.nproc, node_images, args.shm_size)
        elif args.command == "hub":
            hub.up(manifest)
        elif args.command == "hub-down":
            return hub.down()
        elif args.command == "hub-build":
            hub.build(manifest)
        elif args.command in ("clean-cache", "clean-packages"):
            return labs.clean_data(args.command.removeprefix("clean-"))
        elif args.command == "check":
            return _check(args, manifest)
        elif args.command == "ci-matrix":
            print(check.ci_matrix(manifest))
        elif args.command == "lock":
            locks.lock(manifest, os.environ.get("UV") or "uv")
        elif args.command == "wheels":
            locks.download(Path(args.folder), locks.all_locks(manifest), manifest)
            (Path(args.folder) / "hub" / locks.PROXY_TARBALL).write_bytes(locks.pack_proxy())
        elif args.command == "venv":
            return _venv(args, manifest)
    except (HostError, KeyError, variants.ManifestError) as error:
        print(f"torchlab: {error.args[0]}", file=sys.stderr)
        return 1
    return 0
