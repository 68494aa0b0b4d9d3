"""make bench's distributed part: all_reduce's bus bandwidth per message size across containers
of the cpu image (1 node x 2 processes, 2 x 1, 2 x 2), and the DDP step time of two containers
against the same two-node torchrun on the host (goal: at least 0.95 of the host's speed).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

from torchlab_host.core.checkout import run_host_tools
from torchlab_host.core.errors import HostError
from torchlab_host.distributed.torchrun import PROOF, node_command, node_settings

TOPOLOGIES = ((1, 2), (2, 1), (2, 2))


def report_of(output: str) -> dict[str, Any]:
    """The proof's JSON report, from output that may start with the host tools' own line."""
    return json.loads(output[output.index("{") :])


def in_containers(nodes: int, nproc: int) -> dict[str, Any]:
    ran = run_host_tools("ddp", "--nodes", str(nodes), "--nproc", str(nproc), "--json")
    if ran.returncode != 0:
        raise HostError(f"the proof on {nodes} x {nproc} failed: {ran.stderr.strip()[-500:]}")
    return report_of(ran.stdout)


def on_host(venv_python: Path, nodes: int, nproc: int) -> dict[str, Any]:
    """The same `torchlab torchrun`, one agent per node, all of them on this machine."""
    settings = node_settings(["localhost"] * nodes, nproc, "torchlab-bench")
    environment = dict(
        os.environ,
        **{key: str(value) for key, value in settings.items()},
        PATH=f"{venv_python.parent}{os.pathsep}{os.environ['PATH']}",
        TORCHLAB_EXPECT="cpu",
    )
    agents = [
        subprocess.Popen(
            node_command([*PROOF, "--json"]),
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(nodes)
    ]
    outputs = [agent.communicate(timeout=900) for agent in agents]
    if any(agent.returncode for agent in agents):
        raise HostError(f"the proof on the host failed: {outputs[0][1].strip()[-500:]}")
    return report_of(next(stdout for stdout, _ in outputs if "{" in stdout))


def measure(venv_python: Path, repeats: int) -> dict[str, Any]:
    topologies = {f"{nodes}x{nproc}": in_containers(nodes, nproc) for nodes, nproc in TOPOLOGIES}
    containers, host = [], []
    for _ in range(repeats):  # alternating, so a slow spell of the machine hits both sides
        containers.append(in_containers(2, 1)["ddp"]["step_ms"])
        host.append(on_host(venv_python, 2, 1)["ddp"]["step_ms"])
    container_ms, host_ms = statistics.median(containers), statistics.median(host)
    return {
        "busbw_gbps": {
            name: {row["bytes"]: row["busbw_gbps"] for row in report["all_reduce"]}
            for name, report in topologies.items()
        },
        "latency_us": {
            name: report["all_reduce"][0]["time_us"] for name, report in topologies.items()
        },
        "ddp_step_ms": {"containers_2x1": container_ms, "host_2x1": host_ms},
        "ddp_speed_of_host": round(host_ms / container_ms, 3),
        "global_batch": topologies["2x1"]["ddp"]["global_batch"],
    }
