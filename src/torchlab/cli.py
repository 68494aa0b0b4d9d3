"""`torchlab`: the commands the Makefile, the images and CI call."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_EXPECTATION = 1


def _fail(message: str) -> int:
    print(f"torchlab: {message}", file=sys.stderr)
    return EXIT_EXPECTATION


def probe(args: argparse.Namespace) -> int:
    from . import probe as probe_module

    report = probe_module.collect(smoke=not args.no_smoke)
    if args.bench:
        from . import bench

        report["bench"] = bench.device_benchmarks(report)
    print(json.dumps(report, indent=2) if args.json else probe_module.render_table(report))
    if args.expect:
        failure = probe_module.expectation_failure(report, args.expect)
        if failure:
            return _fail(failure)
    return 0


def check_build(args: argparse.Namespace) -> int:
    """The build-time assert of each image: its torch is what the manifest promises."""
    from . import variants
    from .backends import get, installed_version

    try:
        variant = variants.load().variant(args.variant)
        here = variants.this_platform()
    except variants.ManifestError as error:  # an unknown variant too (UnknownVariant)
        return _fail(str(error))
    if here not in variant.platforms:
        problems = [
            f"it was built for {here}, and variants.toml ships {variant.name} for "
            f"{', '.join(variant.platforms)} only"
        ]
    else:
        problems = get(variant.device).check_build(variant.build_for(here))
        promised, installed = variant.platforms[here].torch, installed_version("torch")
        if installed != promised:
            problems.append(
                f"variants.toml ships torch {promised} on {here}, and torch {installed} is "
                "installed"
            )
    for problem in problems:
        print(f"torchlab: the {variant.name} image is wrong: {problem}", file=sys.stderr)
    if not problems:
        import torch

        print(f"torchlab: {variant.name} build ok for {here} (torch {torch.__version__})")
    return EXIT_EXPECTATION if problems else 0


def selftest(args: argparse.Namespace) -> int:
    """The probe, then the device suite (and the labs' notebooks) in this environment."""
    import pytest

    from . import probe as probe_module

    report = probe_module.collect()
    print(probe_module.render_table(report), flush=True)
    if args.expect:
        failure = probe_module.expectation_failure(report, args.expect)
        if failure:
            return _fail(failure)
        os.environ["TORCHLAB_EXPECT"] = args.expect
    suite = Path(os.environ.get("TORCHLAB_SUITE", "tests/device"))
    if not suite.is_dir():
        return _fail(f"the device suite is not at {suite}: set TORCHLAB_SUITE")
    return int(pytest.main([str(suite), "-p", "no:cacheprovider", *args.passed_on]))


def serve(args: argparse.Namespace) -> int:
    """Check what a lab needs, then replace this process with JupyterLab."""
    from . import packages, system

    labs_problem = system.labs_problem(system.container())
    if labs_problem:
        return _fail(labs_problem)
    if not args.without_course and course(args):
        return EXIT_EXPECTATION
    if args.expect:
        from .backends import get

        status = get(args.expect).status()
        if not status.usable:
            return _fail(f"expected {args.expect}, but {status.hint}")
    packages.prepare_user_site()
    os.execvp("jupyter", ["jupyter", "lab", *args.passed_on])
    raise AssertionError("unreachable: execvp does not return")


def torchrun(args: argparse.Namespace) -> int:
    """One node of a distributed run: the torchrun line, then the program (launch.py)."""
    from .launch import torchrun_command

    try:
        command = torchrun_command(os.environ, args.passed_on)
    except ValueError as error:
        return _fail(str(error))
    os.execvp(command[0], command)
    raise AssertionError("unreachable: execvp does not return")


def distributed(args: argparse.Namespace) -> int:
    """The distributed proof, in each process torchrun starts."""
    from . import distributed as proof

    return proof.main(args)


def course(args: argparse.Namespace) -> int:
    """Bring what is new in the image's course into the work folder, and say what arrived."""
    from . import course as course_module
    from . import system

    source, work = course_module.course_dir(), system.labs_dir()
    if not source.is_dir():
        return _fail(f"there is no course at {source}. Fix: set TORCHLAB_COURSE to the course")
    try:
        line = course_module.deliver(source, work).line()
    except OSError as error:
        return _fail(
            f"could not bring the course into {work}: {error}. "
            "Fix: on the host, chown -R $(id -u):$(id -g) on your work folder"
        )
    if line:
        print(line, flush=True)
    return 0


def singleuser(args: argparse.Namespace) -> int:
    """A user's server in a hub: the course brought in, then jupyterhub-singleuser."""
    from . import packages, system

    labs_problem = system.labs_problem(system.container())
    if labs_problem:
        return _fail(labs_problem)
    if course(args):
        return EXIT_EXPECTATION
    packages.prepare_user_site()
    os.execvp("jupyterhub-singleuser", ["jupyterhub-singleuser", *args.passed_on])
    raise AssertionError("unreachable: execvp does not return")


def bench(args: argparse.Namespace) -> int:
    from . import bench as measurements

    print(json.dumps(measurements.cpu_benchmarks(args.repeats), indent=2))
    return 0


def packages(args: argparse.Namespace) -> int:
    """The packages a lab user added, as requirement lines for requirements/*.in."""
    from . import packages as added_packages

    if args.remove is not None:
        return added_packages.remove_added(args.remove)
    for name, version in sorted(added_packages.added().items()):
        print(f"{name}=={version}")
    return 0


def env(args: argparse.Namespace) -> int:
    """Your own environments, outside the locks, each with its kernel: create, list, remove."""
    from . import environments

    try:
        if args.action == "list":
            for found in environments.summary():
                kernel = f"kernel {found['kernel']!r}" if found["kernel"] else "no kernel"
                print(
                    f"{found['name']}: not locked, {len(found['packages'])} packages, "
                    f"{kernel}, in {found['path']}"
                )
            return 0
        if not args.name:
            return _fail(
                f"torchlab env {args.action} needs a name. Fix: torchlab env {args.action} NAME"
            )
        if args.action == "create":
            made = environments.create(args.name, args.requirements)
            print(
                f"torchlab: made {made}, not locked; its kernel is "
                f"{environments.display_name(args.name)!r} (remove: torchlab env remove "
                f"{args.name})"
            )
            return 0
        if args.requirements:
            return _fail(f"torchlab env {args.action} takes a name alone")
        environments.remove(args.name)
        print(f"torchlab: removed the environment {args.name} and its kernel")
        return 0
    except environments.EnvProblem as problem:
        return _fail(str(problem))


def sbom(args: argparse.Namespace) -> int:
    """The image's CycloneDX SBOM: its Python and Debian packages."""
    from . import sbom as bill

    count = bill.write(args.output, f"torchlab-{os.environ.get('TORCHLAB_VARIANT', 'unknown')}")
    print(f"torchlab: {args.output} lists {count} packages")
    return 0


def healthcheck(_: argparse.Namespace) -> int:
    from . import healthcheck as health

    return health.main()


# A handler's int is the exit status.
Handler = Callable[[argparse.Namespace], int]
Argument = tuple[tuple[str, ...], dict[str, Any]]


@dataclass(frozen=True)
class Command:
    """One command of a table: this one's and the host tools' (whose handlers also get the
    manifest and the settings)."""

    name: str
    help: str
    run: Callable[..., Any]
    arguments: tuple[Argument, ...] = field(default=())
    # The arguments it does not know go on to the program it starts (pytest, jupyter lab,
    # jupyterhub-singleuser, the program torchrun starts); elsewhere they are an error.
    passes_on: bool = False


def commands() -> tuple[Command, ...]:
    """The table, made with the parser: --expect's choices are the backends found, and the
    defaults from the environment are the environment's at that moment."""
    from .backends import all_backends

    expect = (
        ("--expect",),
        {
            "choices": [backend.name for backend in all_backends()],
            "default": os.environ.get("TORCHLAB_EXPECT") or None,
            "help": "fail unless this kind of device is usable and computes right "
            "(default: $TORCHLAB_EXPECT)",
        },
    )
    return (
        Command("probe", "report the environment and its devices", probe, (
            (("--json",), {"action": "store_true", "help": "machine-readable output"}),
            (("--no-smoke",), {"action": "store_true", "help": "skip the timed smoke ops"}),
            (("--bench",), {"action": "store_true",
                            "help": "also measure matmul TFLOP/s and memory bandwidth per device"}),
            expect,
        )),
        Command("distributed", "under torchrun: prove the ranks compute as one (world, software, "
                "collectives, DDP) and measure all_reduce's bandwidth", distributed, (
            (("--json",), {"action": "store_true", "help": "machine-readable output (rank 0)"}),
            (("--max-bytes",), {"type": int, "default": 256 * 2**20,
                                "help": "largest all_reduce message"}),
            (("--batch-bytes",), {"type": int, "default": 32 * 2**20,
                                  "help": "each rank's DDP batch, read through DataLoader "
                                  "workers (/dev/shm)"}),
            (("--steps",), {"type": int, "default": 5, "help": "DDP training steps"}),
            (("--timeout",), {"type": int, "default": 60,
                              "help": "seconds a rank waits for the others"}),
            expect,
        )),
        Command("torchrun", "one node of a distributed run: torchrun with the settings of the "
                "environment (NNODES, NPROC_PER_NODE, RDZV_HOST, RDZV_PORT, RDZV_ID), then the "
                "program after it", torchrun, passes_on=True),
        Command("check-build", "assert that torch is the build the manifest promises a variant",
                check_build, ((("variant",), {"help": "an image variant of variants.toml"}),)),
        Command("selftest", "probe, then run the device suite (other arguments go to pytest)",
                selftest, (expect,), passes_on=True),
        Command("serve", "check the lab's needs, then start JupyterLab (other arguments go to it)",
                serve, (expect, (("--without-course",), {
                    "action": "store_true",
                    "help": "leave the course out of the work folder (a project's folder on a "
                    "cluster: deploy/slurm/lab.sbatch)"})), passes_on=True),
        Command("singleuser", "a user's server in a hub: the course brought in, then "
                "jupyterhub-singleuser (other arguments go to it)", singleuser, passes_on=True),
        Command("course", "bring what is new in the image's course into the work folder, never "
                "over a file you changed (serve and singleuser do it at every start)", course),
        Command("bench", "CPU matmul GFLOP/s and DataLoader MB/s, as JSON (medians)", bench,
                ((("--repeats",), {"type": int, "default": 3}),)),
        Command("packages", "the packages you added with pip, as requirement lines for "
                "requirements/*.in", packages,
                ((("--remove",), {"nargs": "*", "metavar": "NAME",
                                  "help": "uninstall these, or all you added (the locks' "
                                  "packages stay)"}),)),
        Command("env", "your own environments outside the locks, each with its Jupyter "
                "kernel, kept in the lab's data folder: create NAME [REQUIREMENT ...], list, "
                "remove NAME", env, (
            (("action",), {"choices": ["create", "list", "remove"]}),
            (("name",), {"nargs": "?", "help": "the environment (small letters, digits, . _ -)"}),
            (("requirements",), {"nargs": "*", "metavar": "REQUIREMENT",
                                 "help": "what create installs besides ipykernel, as pip "
                                 "takes it (torch==2.9.0, -r requirements.txt)"}),
        )),
        Command("sbom", "write the CycloneDX SBOM of this environment's Python and Debian "
                "packages", sbom,
                ((("--output",), {"default": os.environ.get("TORCHLAB_SBOM"),
                                  "required": not os.environ.get("TORCHLAB_SBOM"),
                                  "help": "where to write it (in an image: $TORCHLAB_SBOM, the "
                                  "path its label names)"}),)),
        Command("healthcheck", "ask the running Jupyter server if it is up", healthcheck),
    )  # fmt: skip


def parser(table: tuple[Command, ...]) -> argparse.ArgumentParser:
    from . import __version__

    made = argparse.ArgumentParser(prog="torchlab", description=__doc__)
    made.add_argument("--version", action="version", version=f"torchlab {__version__}")
    add_commands(made, table)
    return made


def add_commands(parser: argparse.ArgumentParser, table: tuple[Command, ...]) -> None:
    """A subcommand of parser for each command of the table; args.run is its handler."""
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in table:
        sub = subparsers.add_parser(command.name, help=command.help)
        for names, options in command.arguments:
            sub.add_argument(*names, **options)
        sub.set_defaults(run=command.run)


def main(argv: list[str] | None = None) -> int:
    table = commands()
    made = parser(table)
    args, unknown = made.parse_known_args(argv)
    passes_on = next(command.passes_on for command in table if command.name == args.command)
    if unknown and not passes_on:
        made.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.passed_on = unknown[1:] if unknown[:1] == ["--"] else unknown
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
