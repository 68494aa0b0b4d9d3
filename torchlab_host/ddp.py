"""make test-ddp and make ddp: torchrun across containers of the cpu image, one per node, on a
compose network of their own, with c10d rendezvous at node 0: the distributed proof, or a
script of yours, run the way a cluster runs it.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from pathlib import Path

from torchlab.variants import Manifest

from . import ARTIFACTS, ROOT
from .engine import compose_command, compose_environment, quiet, require_engine
from .errors import fail
from .images import ensure_image, variant_build
from .labs import settings

# The line every node runs: here, in deploy/slurm/*.sbatch and in deploy/kubernetes's
# PyTorchJob, each setting the variables its own way. A test holds the others to this one.
TORCHRUN = (
    'torchrun --nnodes="$NNODES" --nproc-per-node="$NPROC_PER_NODE" --rdzv-backend=c10d '
    '--rdzv-endpoint="$RDZV_HOST:$RDZV_PORT" --rdzv-id="$RDZV_ID" --max-restarts=0'
)
PROOF = ("-m", "torchlab", "distributed")
NODE = "torchlab-ddp-node-{index}"
RDZV_PORT = 29400
# A rank waits this long for the others before it gives up, and the whole run a little longer.
RANK_TIMEOUT_S = 60


def node_command(program: list[str]) -> list[str]:
    """The container's command: the torchrun line, then the program and its arguments."""
    return ["bash", "-c", f'exec {TORCHRUN} "$@"', "torchrun-node", *program]


def script_program(script: str) -> list[str]:
    """A script of the labs folder, as the node containers see it, with its arguments."""
    script, *arguments = shlex.split(script)
    path = Path(script)
    labs = settings().labs
    resolved = (ROOT / path).resolve() if not path.is_absolute() else path
    if not resolved.is_file():
        raise fail(f"SCRIPT={script} is not a file", "make ddp SCRIPT=labs/your_script.py")
    if not resolved.is_relative_to(labs):
        raise fail(
            f"SCRIPT={script} is outside the labs folder {labs}, which the nodes mount",
            f"put it into {labs} and make ddp SCRIPT=labs/{path.name}",
        )
    return [f"/home/lab/labs/{resolved.relative_to(labs)}", *arguments]


def remove(names: list[str]) -> None:
    present = quiet(["docker", "ps", "--all", "--quiet", *(f"--filter=name=^{n}$" for n in names)])
    if present.stdout.split():
        quiet(["docker", "rm", "--force", *present.stdout.split()])


def run(
    manifest: Manifest,
    program: list[str],
    nodes: int,
    nproc: int,
    images: dict[int, str] | None = None,
    shm_size: str | None = None,
) -> int:
    """torchrun on `nodes` containers, `nproc` processes each; 0 when every node succeeded."""
    if nodes < 1 or nproc < 1:
        raise fail(f"NODES={nodes} NPROC={nproc}: both must be 1 or more", "make test-ddp NODES=2")
    require_engine()
    cpu = manifest.variant("cpu")
    ensure_image(variant_build(cpu, manifest), manifest)
    lab = settings()
    names = [NODE.format(index=index) for index in range(nodes)]
    remove(names)
    run_id = f"torchlab-{secrets.token_hex(4)}"
    threads = max(1, (os.cpu_count() or 1) // (nodes * nproc))
    for index, name in enumerate(names):
        interpolated = dict(
            lab.environment(),
            TORCHLAB_DDP_NODE=name,
            TORCHLAB_DDP_IMAGE=(images or {}).get(index, cpu.image),
            TORCHLAB_DDP_SHM_SIZE=shm_size or "2gb",
        )
        settings_of_node = {
            "NNODES": nodes,
            "NPROC_PER_NODE": nproc,
            "RDZV_HOST": names[0],
            "RDZV_PORT": RDZV_PORT,
            "RDZV_ID": run_id,
            "OMP_NUM_THREADS": threads,
        }
        started = quiet(
            compose_command(
                "--profile",
                "ddp",
                "run",
                "--detach",
                "--name",
                name,
                *(f"--env={key}={value}" for key, value in settings_of_node.items()),
                "ddp-node",
                *node_command(program),
            ),
            env=compose_environment(interpolated),
        )
        if started.returncode != 0:
            remove(names)
            raise fail(f"node {index} did not start: {started.stderr.strip()}", "make logs")
    print(
        f"torchlab: torchrun on {nodes} node(s) x {nproc} process(es): {shlex.join(program)}",
        flush=True,
    )
    return collect(names)


def collect(names: list[str]) -> int:
    """Wait for every node, print node 0's report and every rank's own failure line, keep each
    node's whole output in artifacts/, and remove the containers."""
    deadline = time.monotonic() + 20 * RANK_TIMEOUT_S
    codes: dict[str, int] = {}
    while len(codes) < len(names) and time.monotonic() < deadline:
        for name in names:
            if name not in codes:
                state = quiet(
                    ["docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name]
                )
                status, _, code = state.stdout.strip().partition(" ")
                if status == "exited":
                    codes[name] = int(code)
        time.sleep(0.5)
    ARTIFACTS.mkdir(exist_ok=True)
    failed_lines = []
    for index, name in enumerate(names):
        logs = quiet(["docker", "logs", name])
        (ARTIFACTS / f"{name}.log").write_text(logs.stdout + logs.stderr)
        if index == 0 and logs.stdout.strip():
            print(logs.stdout.rstrip(), flush=True)
        failed_lines += [line for line in logs.stderr.splitlines() if line.startswith("torchlab: ")]
    remove(names)
    if len(codes) < len(names):
        failed_lines.append(
            f"torchlab: {len(names) - len(codes)} node(s) never finished within "
            f"{20 * RANK_TIMEOUT_S} s. Fix: read artifacts/{NODE.format(index='*')}.log"
        )
    for line in sorted(set(failed_lines)):
        print(line, file=sys.stderr)
    ok = len(codes) == len(names) and not any(codes.values())
    if not ok:
        print(
            f"torchlab: the distributed run failed (each node's output: artifacts/"
            f"{NODE.format(index='<n>')}.log)",
            file=sys.stderr,
        )
    return 0 if ok else 1
