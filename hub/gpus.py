"""Which GPUs each user's server gets: its own, by UUID, never every GPU of the host.

The hub's devices are what make hub found in the host's nvidia-smi -L (each GPU, or the MIG
instances of a partitioned one); what the running servers hold is read back from their
containers' label, so a restarted hub knows it and no memory of its own can drift from what
Docker runs. Pure Python, without Docker: the hub's config (jupyterhub_config.py) asks Docker,
the host tests drive this module with recorded listings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# The label each GPU server's container carries: the UUIDs of its devices, comma separated.
LABEL = "org.torchlab.gpus"


class NoGpuFree(Exception):
    """No device has room for one more server: the line the user's page shows."""


def held_by(containers: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """What each running container holds, by its name, from Docker's list of containers (the
    Names and Labels of each, as the engine's API answers GET /containers/json)."""
    held = {}
    for container in containers:
        uuids = (container.get("Labels") or {}).get(LABEL, "")
        if uuids:
            held[container["Names"][0].lstrip("/")] = tuple(uuids.split(","))
    return held


def choose(
    devices: list[str],
    held: Mapping[str, tuple[str, ...]],
    per_server: int,
    servers_per_device: int,
) -> tuple[str, ...]:
    """The devices (UUIDs, as listed) a starting server gets: the least-held ones with room for
    it (fewest servers first, then the listing's order)."""
    load = dict.fromkeys(devices, 0)
    for uuids in held.values():
        for uuid in uuids:
            if uuid in load:  # not one no longer listed (a GPU since partitioned)
                load[uuid] += 1
    least_held = sorted(devices, key=load.__getitem__)  # stable: ties in the listing's order
    free = [uuid for uuid in least_held if load[uuid] < servers_per_device]
    if len(free) < per_server:
        raise NoGpuFree(refusal(len(free), len(devices), per_server, servers_per_device))
    return tuple(free[:per_server])


def refusal(free: int, devices: int, per_server: int, servers_per_device: int) -> str:
    by = "a server" if servers_per_device == 1 else f"{servers_per_device} servers"
    if per_server > 1:
        short = f"your server needs {per_server} GPUs and {free} of this hub's {devices} are free"
    elif devices == 1:
        short = f"this hub's one GPU is taken by {by}"
    else:
        short = f"all {devices} of this hub's GPUs are taken, each by {by}"
    return (
        f"no GPU is free for your server: {short}. Fix: start the cpu profile, or ask whoever "
        "runs the hub to stop an idle server or to let more servers share a GPU: make hub "
        f"HUB_SERVERS_PER_GPU={servers_per_device + 1}"
    )


def wants_gpus(host_config: Mapping[str, Any]) -> bool:
    """Whether a profile's container settings ask Docker for NVIDIA GPUs."""
    return any(request["Driver"] == "nvidia" for request in host_config.get("device_requests", []))


def device_requests(requests: list[dict[str, Any]], uuids: tuple[str, ...]) -> list[dict]:
    """The profile's GPU requests (the manifest's, for every GPU: Count -1) made to name these
    devices alone (none, where none are named: Docker hands out no GPU without a count or
    IDs); requests of other drivers stay as they are."""
    return [
        {**{k: v for k, v in request.items() if k != "Count"}, "DeviceIDs": list(uuids)}
        if request["Driver"] == "nvidia"
        else request
        for request in requests
    ]
