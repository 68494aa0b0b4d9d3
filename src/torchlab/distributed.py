"""`torchlab distributed`: the proof that a group of processes started by torchrun computes as
one, with the same honesty as the probe: the world is what torchrun promised, every rank runs
the same software, collectives give exact answers, data-parallel training keeps every rank's
model identical and equal to one process with the whole batch, and all-reduce's bandwidth over
message sizes from 8 bytes up, as nccl-tests reports it.

    torchrun --nproc-per-node 2 -m torchlab distributed            # one machine
    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d \\
        --rdzv-endpoint node-0:29400 -m torchlab distributed       # on each of two machines

gloo on the CPU, NCCL on CUDA; XLA is refused, with the reason. Rank 0 prints the report; any
failure is one line from the rank that saw it, naming the rank, the step and the fix.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import __version__, system
from .backends import Backend, Hint, KnownFailure, all_backends, get
from .backends.cpu import shm_too_small

FEATURES = 256
# One process with the whole batch adds the same numbers in another order: float32 rounding.
DDP_TOLERANCE = 1e-5
# A DataLoader worker holds a batch in /dev/shm while the next one waits there too.
BATCHES_IN_SHM = 2
EXPECTED_FROM_TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")


class ProofFailure(Exception):
    """A check failed on this rank; the message is the one line that says which and why."""


class AgreedFailure(ProofFailure):
    """A check every rank knows failed (they agreed on it), so each can say so before any exits."""


@dataclass
class Rank:
    """What torchrun told one process, and what it runs."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node: int
    host: str = field(default_factory=socket.gethostname)


def torchrun_rank() -> Rank:
    missing = [name for name in EXPECTED_FROM_TORCHRUN if name not in os.environ]
    if missing:
        raise ProofFailure(
            f"torchlab distributed runs under torchrun, which sets {', '.join(missing)}. "
            "Fix: torchrun --nproc-per-node 2 -m torchlab distributed"
        )
    return Rank(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
        local_world_size=int(os.environ["LOCAL_WORLD_SIZE"]),
        node=int(os.environ["GROUP_RANK"]),
    )


def choose(expect: str | None) -> Backend:
    """The device kind to prove: the expected one, or the best usable; never a fall-back."""
    if expect:
        backend = get(expect)
        status = backend.status()
        if not status.usable:
            raise ProofFailure(f"expected {backend.name}, but {status.hint}")
    else:
        backend = next(backend for backend in all_backends() if backend.status().usable)
    if backend.distributed_backend is None:
        raise ProofFailure(str(backend.distributed_unsupported()))
    return backend


def software() -> dict[str, str]:
    """What every rank must agree on."""
    import torch

    nccl = ""
    if torch.version.cuda and torch.cuda.is_available():
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    return {
        "torch": torch.__version__,
        "nccl": nccl,
        "torchlab": __version__,
        "revision": os.environ.get("TORCHLAB_REVISION", "unknown"),
        "image": os.environ.get("TORCHLAB_VARIANT", "none"),
    }


def failures(backend: Backend) -> list[KnownFailure]:
    """What distributed runs fail with, in the words torch, gloo and the network use."""
    return [
        *backend.distributed_failures(),
        KnownFailure(
            re.compile(
                r"Connection closed by peer|Connection reset by peer|Broken pipe"
                r"|connection was reset|recvBytes|Read error|EOF"
            ),
            lambda _: Hint(
                "another rank stopped in the middle (killed, crashed, out of memory) or the "
                "network between the nodes dropped",
                "read the other ranks' output, whose line says why, and start them all again",
            ),
        ),
        KnownFailure(
            re.compile(
                r"Connection refused|No route to host|Name or service not known"
                r"|failed to connect|Could not resolve|Network is unreachable"
            ),
            lambda _: Hint(
                "this rank cannot reach the others (a firewall between the nodes, or a "
                "rendezvous endpoint that does not resolve to rank 0's node)",
                "open the rendezvous port (29400) and the ports the ranks pick between the "
                "nodes, and give every node the same --rdzv-endpoint that reaches node 0",
            ),
        ),
        KnownFailure(
            re.compile(r"[Tt]imed? ?out|Timeout"),
            lambda _: Hint(
                "the other ranks did not answer in time: one of them stopped, hangs, or never "
                "joined",
                "start the same command on every node, check each one's output, and raise "
                "--timeout only where a rank needs longer to start",
            ),
        ),
    ]


def explain(error: BaseException, backend: Backend) -> Hint:
    text = f"{type(error).__name__}: {error}"
    for known in failures(backend):
        match = known.pattern.search(text)
        hint = known.hint(match) if match else None
        if hint:
            return hint
    return Hint(
        f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}",
        "read this rank's output above; if it names no cause, run with TORCH_CPP_LOG_LEVEL=INFO",
    )


def message_sizes(max_bytes: int) -> list[int]:
    """8 bytes, then four times as many, up to and including max_bytes."""
    sizes, size = [], 8
    while size < max_bytes:
        sizes.append(size)
        size *= 4
    return [*sizes, max_bytes]


def bus_bandwidth(algbw: float, ranks: int) -> float:
    """nccl-tests' bus bandwidth of an all-reduce: what each link carries, comparable across
    world sizes (busbw = algbw * 2(n-1)/n)."""
    return algbw * 2 * (ranks - 1) / ranks


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:g} {unit}"
        size //= 1024
    raise AssertionError("unreachable")


class Proof:
    """One rank's part of the proof. Every check that decides pass or fail ends in a collective
    that tells all ranks the outcome, so they fail together instead of waiting for each other."""

    def __init__(self, rank: Rank, backend: Backend, args: Any) -> None:
        import torch
        import torch.distributed as dist

        self.rank, self.backend, self.args = rank, backend, args
        self.torch, self.dist = torch, dist
        self.device = (
            torch.device(backend.device_type, rank.local_rank)
            if backend.device_type == "cuda"
            else backend.devices()[0]
        )
        self.report: dict[str, Any] = {"checks": []}

    def agree(self, step: str, problem: str | None) -> None:
        """Fail on every rank when this check failed on any, naming the ranks that saw it."""
        said = [None] * self.rank.world_size
        self.dist.all_gather_object(said, problem)
        failed = [(rank, text) for rank, text in enumerate(said) if text]
        if failed:
            ranks = ", ".join(str(rank) for rank, _ in failed)
            raise AgreedFailure(f"{step} failed on rank {ranks}: {failed[0][1]}")
        self.report["checks"].append(step)

    def identities(self) -> list[dict[str, Any]]:
        mine = {**self.rank.__dict__, "device": str(self.device), **software()}
        everyone: list[Any] = [None] * self.rank.world_size
        self.dist.all_gather_object(everyone, mine)
        self.report["ranks"] = everyone
        return everyone

    def check_world(self, everyone: list[dict[str, Any]]) -> None:
        dist, problems = self.dist, []
        if dist.get_world_size() != self.rank.world_size or dist.get_rank() != self.rank.rank:
            problems.append(
                f"the group says rank {dist.get_rank()} of {dist.get_world_size()}, torchrun "
                f"said {self.rank.rank} of {self.rank.world_size}"
            )
        if sorted(entry["rank"] for entry in everyone) != list(range(self.rank.world_size)):
            problems.append("the ranks are not 0 to world size - 1, each once")
        nodes: dict[int, list[dict[str, Any]]] = {}
        for entry in everyone:
            nodes.setdefault(entry["node"], []).append(entry)
        for node, entries in nodes.items():
            local = sorted(entry["local_rank"] for entry in entries)
            if local != list(range(entries[0]["local_world_size"])):
                problems.append(f"node {node}'s local ranks are {local}")
            devices = [entry["device"] for entry in entries]
            if self.device.type == "cuda" and len(set(devices)) != len(devices):
                problems.append(f"node {node}'s ranks share a GPU: {devices}")
        self.agree("the world is what torchrun promised", "; ".join(problems) or None)
        self.report["world"] = {
            "ranks": self.rank.world_size,
            "nodes": len(nodes),
            "backend": dist.get_backend(),
            "device": self.device.type,
        }

    def check_software(self, everyone: list[dict[str, Any]]) -> None:
        disagree = []
        for key in software():
            seen: dict[str, list[int]] = {}
            for entry in everyone:
                seen.setdefault(entry[key] or "-", []).append(entry["rank"])
            if len(seen) > 1:
                versions = "; ".join(f"{value} on ranks {ranks}" for value, ranks in seen.items())
                disagree.append(f"{key}: {versions}")
        problem = (
            "the ranks run different software ("
            + " | ".join(disagree)
            + "). Fix: run the same image, of the same revision, on every node"
            if disagree
            else None
        )
        self.agree("every rank runs the same software", problem)

    def check_shm(self) -> None:
        """DataLoader workers hand batches over through /dev/shm: this node's ranks together
        need room for theirs, or the DDP check would die (or hang) halfway."""
        needed = self.rank.local_world_size * BATCHES_IN_SHM * self.args.batch_bytes
        free = system.shm_free_bytes()
        problem = None
        if free is not None and free < needed:
            problem = (
                f"/dev/shm on node {self.rank.node} has {system.human_bytes(free)} free, and its "
                f"{self.rank.local_world_size} ranks' DataLoader workers need "
                f"{system.human_bytes(needed)} for batches of "
                f"{system.human_bytes(self.args.batch_bytes)}. Fix: {shm_too_small().fix}, or "
                "a smaller --batch-bytes"
            )
        self.agree("/dev/shm holds the batches", problem)

    def check_collectives(self) -> None:
        torch, dist, n, me = self.torch, self.dist, self.rank.world_size, self.rank.rank
        summed = torch.full((1024,), me + 1, dtype=torch.int64, device=self.device)
        dist.all_reduce(summed)
        expected = n * (n + 1) // 2
        wrong = (summed != expected).sum().item()
        self.agree(
            "all_reduce adds exactly",
            f"{wrong} of 1024 sums differ from {expected}" if wrong else None,
        )

        mine = torch.arange(4, dtype=torch.int64, device=self.device) + 100 * me
        gathered = [torch.empty_like(mine) for _ in range(n)]
        dist.all_gather(gathered, mine)
        bad = [
            rank
            for rank, tensor in enumerate(gathered)
            if tensor.cpu().tolist() != [100 * rank + i for i in range(4)]
        ]
        self.agree(
            "all_gather brings every rank's tensor",
            f"the parts from ranks {bad} are wrong" if bad else None,
        )

        sent = torch.arange(1000, dtype=torch.int64, device=self.device) * 7 + 3
        received = sent.clone() if me == 0 else torch.zeros_like(sent)
        dist.broadcast(received, src=0)
        self.agree(
            "broadcast copies rank 0's tensor exactly",
            None if torch.equal(received.cpu(), sent.cpu()) else "this rank got other values",
        )

    def batches(self) -> Iterator[tuple[Any, Any]]:
        """This rank's shard of each step's global batch, read by two DataLoader workers."""
        from torch.utils.data import DataLoader

        loader = DataLoader(
            Shards(self.rank.rank, self.rank.world_size, self.local_batch, self.args.steps),
            batch_size=None,
            num_workers=2,
            prefetch_factor=1,
            timeout=self.args.timeout,
        )
        return iter(loader)

    @property
    def local_batch(self) -> int:
        return max(1, self.args.batch_bytes // (FEATURES * 4))

    def check_ddp(self) -> None:
        torch, dist = self.torch, self.dist
        from torch.nn.parallel import DistributedDataParallel

        torch.manual_seed(1234)
        model = regression_model().to(self.device)
        cuda = self.device.type == "cuda"
        ddp = DistributedDataParallel(model, device_ids=[self.device.index] if cuda else None)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
        diverged, seconds = None, []
        for step, (features, targets) in enumerate(self.batches()):
            start = time.perf_counter()
            loss = torch.nn.functional.mse_loss(
                ddp(features.to(self.device)), targets.to(self.device)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self.backend.synchronize(self.device)
            seconds.append(time.perf_counter() - start)
            flat = flat_parameters(model)
            everyone = [torch.empty_like(flat) for _ in range(self.rank.world_size)]
            dist.all_gather(everyone, flat)
            if diverged is None and not all(torch.equal(other, flat) for other in everyone):
                diverged = f"after step {step + 1} the ranks' parameters differ"
        self.agree(
            f"DDP keeps every rank's parameters identical ({self.args.steps} steps)", diverged
        )
        self.report["ddp"] = {
            "steps": self.args.steps,
            "local_batch": self.local_batch,
            "global_batch": self.local_batch * self.rank.world_size,
            "step_ms": round(statistics.median(seconds[1:] or seconds) * 1e3, 2),
        }
        difference = None
        if self.rank.rank == 0:
            difference = self.single_process_difference(flat_parameters(model).cpu())
            self.report["ddp"]["max_relative_difference"] = difference
        said = [difference]
        dist.broadcast_object_list(said, src=0)
        self.agree(
            f"DDP equals one process with the global batch (within {DDP_TOLERANCE:g})",
            f"the largest relative difference is {said[0]:.2e}"
            if said[0] > DDP_TOLERANCE
            else None,
        )

    def single_process_difference(self, trained: Any) -> float:
        """Train the same model on the whole global batch in this process alone."""
        torch = self.torch
        torch.manual_seed(1234)
        model = regression_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        shards = [
            Shards(rank, self.rank.world_size, self.local_batch, self.args.steps)
            for rank in range(self.rank.world_size)
        ]
        for step in range(self.args.steps):
            parts = [shard[step] for shard in shards]
            features = torch.cat([features for features, _ in parts])
            targets = torch.cat([targets for _, targets in parts])
            loss = torch.nn.functional.mse_loss(model(features), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        reference = flat_parameters(model)
        return ((trained - reference).abs().max() / reference.abs().max()).item()

    def sweep(self) -> None:
        torch, dist, n = self.torch, self.dist, self.rank.world_size
        rows = []
        for size in message_sizes(self.args.max_bytes):
            buffer = torch.zeros(max(1, size // 4), dtype=torch.float32, device=self.device)
            repeats = 20 if size <= 2**20 else 5 if size <= 32 * 2**20 else 3
            dist.all_reduce(buffer)  # warm-up: connections, buffers
            self.backend.synchronize(self.device)
            dist.barrier()
            start = time.perf_counter()
            for _ in range(repeats):
                dist.all_reduce(buffer)
            self.backend.synchronize(self.device)
            elapsed = torch.tensor([(time.perf_counter() - start) / repeats], device=self.device)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
            seconds = elapsed.item()
            algbw = size / seconds / 1e9
            rows.append(
                {
                    "bytes": size,
                    "time_us": round(seconds * 1e6, 1),
                    "algbw_gbps": round(algbw, 3),
                    "busbw_gbps": round(bus_bandwidth(algbw, n), 3),
                }
            )
        self.report["all_reduce"] = rows


class Shards:
    """Each step's global batch of a synthetic regression, cut into the ranks' shards: shard
    (step, rank) is drawn from its own seed, so any process can make any shard."""

    def __init__(self, rank: int, ranks: int, size: int, steps: int) -> None:
        self.rank, self.ranks, self.size, self.steps = rank, ranks, size, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> tuple[Any, Any]:
        import torch

        generator = torch.Generator().manual_seed(1000 * step + self.rank)
        features = torch.randn(self.size, FEATURES, generator=generator)
        weights = torch.linspace(-1, 1, FEATURES).unsqueeze(1)
        return features, features @ weights + 0.1 * torch.randn(self.size, 1, generator=generator)


def regression_model() -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(FEATURES, 32), nn.Tanh(), nn.Linear(32, 1))


def flat_parameters(model: Any) -> Any:
    import torch

    return torch.cat([parameter.detach().flatten() for parameter in model.parameters()])


def render(report: dict[str, Any]) -> str:
    world = report["world"]
    lines = [
        f"torchlab distributed proof: {world['ranks']} ranks on {world['nodes']} node(s), "
        f"backend {world['backend']}, device {world['device']}",
        "",
        f"  {'rank':<5} {'node':<5} {'local':<6} {'host':<20} {'device':<8} {'torch':<14} "
        f"{'nccl':<8} revision",
    ]
    for entry in report["ranks"]:
        lines.append(
            f"  {entry['rank']:<5} {entry['node']:<5} {entry['local_rank']:<6} "
            f"{entry['host'][:20]:<20} {entry['device']:<8} {entry['torch']:<14} "
            f"{entry['nccl'] or '-':<8} {entry['revision'][:12]}"
        )
    lines += ["", "Checks"] + [f"  ok  {check}" for check in report["checks"]]
    ddp = report["ddp"]
    lines.append(
        f"      DDP step: {ddp['step_ms']} ms for a global batch of {ddp['global_batch']} "
        f"({ddp['local_batch']} per rank); largest difference from one process "
        f"{ddp['max_relative_difference']:.1e}"
    )
    lines += [
        "",
        "all_reduce, float32 (as nccl-tests: algbw = bytes / time, busbw = algbw * 2(n-1)/n)",
        f"  {'size':>9}  {'time (us)':>11}  {'algbw (GB/s)':>12}  {'busbw (GB/s)':>12}",
    ]
    lines += [
        f"  {human_size(row['bytes']):>9}  {row['time_us']:>11}  {row['algbw_gbps']:>12}  "
        f"{row['busbw_gbps']:>12}"
        for row in report["all_reduce"]
    ]
    return "\n".join(lines)


def main(args: Any) -> int:
    import torch
    import torch.distributed as dist

    # --json's stdout is the report alone: gloo (torch 2.9) prints its connections to stdout,
    # so what the process itself writes there goes to stderr instead.
    report_out = os.fdopen(os.dup(1), "w") if args.json else sys.stdout
    if args.json:
        sys.stdout.flush()
        os.dup2(2, 1)
    step, backend, rank = "start", None, None
    try:
        rank = torchrun_rank()
        backend = choose(args.expect)
        if backend.device_type == "cuda":
            torch.cuda.set_device(rank.local_rank)
        step = "joining the other ranks (init_process_group)"
        dist.init_process_group(
            backend.distributed_backend, timeout=datetime.timedelta(seconds=args.timeout)
        )
        proof = Proof(rank, backend, args)
        step = "exchanging identities"
        everyone = proof.identities()
        proof.check_world(everyone)
        proof.check_software(everyone)
        proof.check_shm()
        step = "all_reduce, all_gather and broadcast"
        proof.check_collectives()
        step = "DDP training"
        proof.check_ddp()
        step = "the all_reduce sweep"
        proof.sweep()
        # DDP is gone by now, but gloo (torch 2.13) can abort at exit while a collected-later
        # DDP still holds its buckets: collect it before the process group ends.
        gc.collect()
        dist.barrier()
    except (ProofFailure, Exception) as error:
        where = f"rank {rank.rank} (node {rank.node}, {rank.host})" if rank else "torchlab"
        if isinstance(error, ProofFailure):
            said = str(error)
        else:  # the collective library says why in its own words; known ones become hints
            said = f"{step} failed: {explain(error, backend) if backend else error}"
        # One write, so the lines of ranks sharing a node's stderr never run into each other.
        sys.stderr.write(f"torchlab: {where}: {said}\n")
        sys.stderr.flush()
        if isinstance(error, AgreedFailure):
            # torchrun stops a node's other ranks once one exits: wait until all have written.
            with contextlib.suppress(Exception):
                dist.barrier()
        os._exit(1)  # tearing the process group down would wait for ranks that are gone
    if rank.rank == 0:
        report = json.dumps(proof.report, indent=2) if args.json else render(proof.report)
        print(report, file=report_out, flush=True)
    dist.destroy_process_group()
    return 0
