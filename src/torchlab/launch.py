"""The torchrun line every node of a distributed run executes: the node containers the host
tools start, the Slurm script (deploy/slurm) and the PyTorchJob (deploy/kubernetes) each set
its variables their own way and run `torchlab torchrun PROGRAM...`, so the line itself is
written only here.
"""

from __future__ import annotations

from collections.abc import Mapping

# What each launcher sets; torchrun's c10d rendezvous runs at RDZV_HOST:RDZV_PORT.
SETTINGS = ("NNODES", "NPROC_PER_NODE", "RDZV_HOST", "RDZV_PORT", "RDZV_ID")


def torchrun_command(environment: Mapping[str, str], program: list[str]) -> list[str]:
    """torchrun with one agent per node and no restarts (a failed rank fails the run loudly),
    then the program and its arguments. ValueError names the settings that are missing."""
    missing = [name for name in SETTINGS if not environment.get(name)]
    if missing:
        raise ValueError(
            f"torchrun needs {', '.join(missing)} in the environment. Fix: set "
            f"{', '.join(SETTINGS)} (deploy/slurm and deploy/kubernetes show how)"
        )
    if not program:
        raise ValueError(
            "torchlab torchrun has no program to run. Fix: torchlab torchrun -m torchlab "
            "distributed, or torchlab torchrun your_script.py"
        )
    return [
        "torchrun",
        f"--nnodes={environment['NNODES']}",
        f"--nproc-per-node={environment['NPROC_PER_NODE']}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={environment['RDZV_HOST']}:{environment['RDZV_PORT']}",
        f"--rdzv-id={environment['RDZV_ID']}",
        "--max-restarts=0",
        *program,
    ]
