"""make test-ddp and make ddp: torchrun across containers of the cpu image, one per node, on a
compose network of their own, with c10d rendezvous at node 0: the distributed proof, or a
script of yours, run the way a cluster runs it (every node runs `torchlab torchrun`, as the
Slurm script and the PyTorchJob in deploy/ do).
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from pathlib import Path

from torchlab.variants import Manifest
from torchlab_host import ARTIFACTS, ROOT
from torchlab_host.core.engine import quiet, remove_containers, require_engine
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.image.build import ensure_image
from torchlab_host.image.spec import variant_build
from torchlab_host.lab.config import for_lab, shown
from torchlab_host.lab.services import compose_environment, lab_compose_command

PROOF = ("-m", "torchlab", "distributed")
NODE = "torchlab-ddp-node-{index}"
RDZV_PORT = 29400
# A rank waits this long for the others before it gives up, and the whole run a little longer.
RANK_TIMEOUT_S = 60


def node_command(program: list[str]) -> list[str]:
    """A node's command: torchrun, with the settings of its environment, then the program."""
    return ["torchlab", "torchrun", *program]


def node_settings(names: list[str], nproc: int, run_id: str) -> dict[str, int | str]:
    """What `torchlab torchrun` reads on every node, and each process's share of the CPUs."""
    return {
        "NNODES": len(names),
        "NPROC_PER_NODE": nproc,
        "RDZV_HOST": names[0],
        "RDZV_PORT": RDZV_PORT,
        "RDZV_ID": run_id,
        "OMP_NUM_THREADS": max(1, (os.cpu_count() or 1) // (len(names) * nproc)),
    }


def script_program(script: str, settings: Settings) -> list[str]:
    """A script of the work folder, as the node containers see it, with its arguments."""
    script, *arguments = shlex.split(script)
    path = Path(script)
    work = for_lab(settings).labs
    resolved = (ROOT / path).resolve() if not path.is_absolute() else path
    if not resolved.is_file():
        raise HostError(
            f"SCRIPT={script} is not a file", f"make ddp SCRIPT={shown(work)}/your_script.py"
        )
    if not resolved.is_relative_to(work):
        raise HostError(
            f"SCRIPT={script} is outside the work folder {work}, which the nodes mount",
            f"put it into {shown(work)}/ and make ddp SCRIPT={shown(work)}/{path.name}",
        )
    return [f"/home/lab/labs/{resolved.relative_to(work)}", *arguments]


def proof_program(as_json: bool, steps: int | None) -> list[str]:
    return [*PROOF, *(["--json"] if as_json else []), *([f"--steps={steps}"] if steps else [])]


def start_node(index: int, names: list[str], image: str, shm_size: str, program: list[str],
               node_env: dict[str, int | str], settings: Settings) -> None:  # fmt: skip
    interpolated = dict(
        for_lab(settings).environment(),
        TORCHLAB_DDP_NODE=names[index],
        TORCHLAB_DDP_IMAGE=image,
        TORCHLAB_DDP_SHM_SIZE=shm_size,
    )
    started = quiet(
        lab_compose_command(
            "--profile", "ddp", "run", "--detach", "--name", names[index],
            *(f"--env={key}={value}" for key, value in node_env.items()),
            "ddp-node", *node_command(program),
        ),
        env=compose_environment(settings, interpolated),
    )  # fmt: skip
    if started.returncode != 0:
        remove_containers(*names)
        raise HostError(f"node {index} did not start: {started.stderr.strip()}", "make logs")


def run(
    manifest: Manifest,
    settings: Settings,
    program: list[str],
    nodes: int,
    nproc: int,
    images: dict[int, str] | None = None,
    shm_size: str | None = None,
) -> int:
    """torchrun on `nodes` containers, `nproc` processes each; 0 when every node succeeded."""
    if nodes < 1 or nproc < 1:
        raise HostError(
            f"NODES={nodes} NPROC={nproc}: both must be 1 or more", "make test-ddp NODES=2"
        )
    require_engine()
    cpu = manifest.variant("cpu")
    ensure_image(variant_build(cpu, manifest, settings), manifest)
    names = [NODE.format(index=index) for index in range(nodes)]
    remove_containers(*names)
    node_env = node_settings(names, nproc, f"torchlab-{secrets.token_hex(4)}")
    for index in range(nodes):
        image = (images or {}).get(index, cpu.image)
        start_node(index, names, image, shm_size or settings["TORCHLAB_DDP_SHM_SIZE"], program,
                   node_env, settings)  # fmt: skip
    print(
        f"torchlab: torchrun on {nodes} node(s) x {nproc} process(es): {shlex.join(program)}",
        flush=True,
    )
    return collect(names)


def wait_for(names: list[str], deadline: float) -> dict[str, int]:
    """Each node's exit code, for the nodes that finished before the deadline."""
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
    return codes


def collect(names: list[str]) -> int:
    """Wait for every node, print node 0's report and every rank's own failure line, keep each
    node's whole output in artifacts/, and remove the containers."""
    codes = wait_for(names, time.monotonic() + 20 * RANK_TIMEOUT_S)
    ARTIFACTS.mkdir(exist_ok=True)
    failed_lines = []
    for index, name in enumerate(names):
        logs = quiet(["docker", "logs", name])
        (ARTIFACTS / f"{name}.log").write_text(logs.stdout + logs.stderr)
        if index == 0 and logs.stdout.strip():
            print(logs.stdout.rstrip(), flush=True)
        failed_lines += [line for line in logs.stderr.splitlines() if line.startswith("torchlab: ")]
    remove_containers(*names)
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
