"""A lab container started outside compose.yaml, the way compose.yaml starts one: the
manifest's confinement, shared memory and the variant's device block, as Docker's container
settings (the hub's servers, through DockerSpawner) and as what a dev container asks for."""

from __future__ import annotations

from typing import Any

from torchlab.variants import Manifest, Variant
from torchlab_host.core.errors import HostError


def refuse_unless_per_user(variant: Variant, where: str, instead: str) -> None:
    if not variant.per_user:
        raise HostError(
            f"{where} serves no {variant.name} lab: its device goes to one privileged container "
            "on the host's network, which cannot be given to each user or editor",
            f"start one lab with make lab-{variant.name}, or {instead}",
        )


def gpu_requests(variant: Variant) -> list[dict[str, Any]]:
    """The compose block's device reservations, as Docker's device requests."""
    reservations = variant.compose.get("deploy", {}).get("resources", {}).get("reservations", {})
    return [
        {
            "Driver": device["driver"],
            "Count": -1 if device.get("count", "all") == "all" else int(device["count"]),
            "Capabilities": [device["capabilities"]],
        }
        for device in reservations.get("devices", [])
    ]


# The CDI kind each device driver's GPUs are named by (nvidia.com/gpu=0, =1, ..., =all), and
# the command that writes the host's spec of them.
CDI_KINDS = {"nvidia": "nvidia.com/gpu"}
CDI_SPEC_COMMANDS = {"nvidia.com/gpu": "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"}


def cdi_devices(variant: Variant) -> list[str]:
    """The compose block's device reservations, as the CDI devices an engine that takes GPUs
    through CDI (Podman, Docker with CDI on) is asked for instead."""
    names = []
    for request in gpu_requests(variant):
        kind = CDI_KINDS[request["Driver"]]
        count = request["Count"]
        names += [f"{kind}=all"] if count == -1 else [f"{kind}={n}" for n in range(count)]
    return names


def ulimits(variant: Variant) -> list[dict[str, Any]]:
    """The compose block's ulimits (one number: soft and hard alike), as Docker's."""
    return [
        {"Name": name, "Soft": limit, "Hard": limit}
        for name, limit in variant.compose.get("ulimits", {}).items()
    ]


def host_config(variant: Variant, manifest: Manifest) -> dict[str, Any]:
    """Docker's container settings for a lab of this variant (docker-py's host config), for one
    of many users' servers on a host: the device block's IPC namespace is not given, so each
    server's shared memory stays its own (shm_size serves its DataLoader workers and NCCL
    between its own processes)."""
    understood = {"deploy", "privileged", "environment", "network_mode", "ipc", "ulimits"}
    unknown = sorted(set(variant.compose) - understood)
    if unknown:
        raise HostError(
            f"variants.toml: the {variant.name} device block has {unknown}, which a lab outside "
            "compose cannot be given",
            "express it as a device reservation, privileged, ulimits or environment",
        )
    config: dict[str, Any] = {**manifest.containers}
    if gpu_requests(variant):
        config["device_requests"] = gpu_requests(variant)
    if ulimits(variant):
        config["ulimits"] = ulimits(variant)
    if variant.compose.get("privileged"):
        config["privileged"] = True
        config.pop("cap_drop")
    return config


def wants_gpu(variant: Variant) -> bool:
    return any(request["Driver"] == "nvidia" for request in gpu_requests(variant))


def run_flags(manifest: Manifest, variant: Variant) -> list[str]:
    """The confinement, shared memory and process limit, and the device block's IPC namespace
    and ulimits, as docker run flags (a dev container's runArgs: one person's, like a lab)."""
    containers = manifest.containers
    return [
        *(f"--cap-drop={capability}" for capability in containers["cap_drop"]),
        *(f"--security-opt={option}" for option in containers["security_opt"]),
        f"--shm-size={containers['shm_size']}",
        f"--pids-limit={containers['pids_limit']}",
        *([f"--ipc={variant.compose['ipc']}"] if "ipc" in variant.compose else []),
        *(f"--ulimit={limit['Name']}={limit['Soft']}" for limit in ulimits(variant)),
    ]
