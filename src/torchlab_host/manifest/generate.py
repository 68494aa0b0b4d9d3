"""make generate: what compose.yaml, the dev containers (.devcontainer/<variant>/) and the Zero
to JupyterHub profiles need from the manifest, written from it, and the docs' generated tables
(reference.py); `make check` fails while any of them differs from what this writes, naming what
it is written from, so adding a variant to variants.toml cannot leave one behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchlab.variants import Manifest, Variant
from torchlab_host import ROOT
from torchlab_host.core.certificates import VARIABLE as CA_VARIABLE
from torchlab_host.core.settings import PROXY_VARIABLES
from torchlab_host.lab.containers import CDI_SPEC_COMMANDS, cdi_devices, run_flags, wants_gpu
from torchlab_host.lab.services import (
    CDI_COMPOSE,
    LAB_COMPOSE,
    SELFTEST,
    SELINUX_COMPOSE,
    lab_service,
    test_service,
)
from torchlab_host.manifest import reference
from torchlab_host.manifest.yamltext import Alias, Anchored, Comment, Spaced, Tagged, dump

GENERATED = (
    "Generated from variants.toml by `make generate` (src/torchlab_host/manifest/generate.py):\n"
    "edit those, never this file; `make check` fails while it is out of date."
)
NO_TOKEN = "JUPYTER_TOKEN is empty: run make lab-cpu, which writes one to .env"
HOME = "/home/lab"
LABS = "/home/lab/labs"
DATA = "/home/lab/lab-data"
# The labs' bind mounts (source, target), by the anchor compose.yaml names each.
FOLDERS = {
    "home": ("${LAB_HOME_DIR:-./lab-data/home}", HOME),
    "work-folder": ("${LABS_DIR:-./work}", LABS),
    "lab-data": ("${LAB_DATA_DIR:-./lab-data}", DATA),
}
# Where the Zero to JupyterHub profiles pull from: replace it with your registry
# (docs/class/kubernetes.md).
CLUSTER_REGISTRY = "ghcr.io/torchlab.example"
PROFILES = ROOT / "deploy/kubernetes/jupyterhub/profiles.yaml"


def merged(*anchors: str) -> Alias | list[Alias]:
    """A merge key's value: one alias, or the list of them."""
    aliases = [Alias(name) for name in anchors]
    return aliases[0] if len(aliases) == 1 else aliases


def device_keys(variant: Variant) -> dict[str, Any]:
    """The variant's device block less its environment (which merges into the service's)."""
    return {key: value for key, value in variant.compose.items() if key != "environment"}


def lab(variant: Variant) -> dict[str, Any]:
    device = variant.compose
    on_host_network = device.get("network_mode") == "host"
    environment: dict[Any, Any] = {
        "<<": merged("token", "network"),
        "TORCHLAB_EXPECT": variant.device,
        Comment("Idle kernels are shut down after this many seconds (0: never)."): None,
        "TORCHLAB_CULL_IDLE_TIMEOUT": "${LAB_CULL_IDLE_TIMEOUT:-0}",
        **device.get("environment", {}),
    }
    if on_host_network:
        environment[Comment("On the host's network Jupyter itself listens on LAB_BIND.")] = None
        environment["TORCHLAB_LISTEN"] = "${LAB_BIND:-127.0.0.1}"
        environment["TORCHLAB_PORT"] = "${LAB_PORT:-8888}"
    service: dict[Any, Any] = {
        "<<": merged("container", *([] if device.get("privileged") else ["confined"])),
        "image": variant.image,
        **device_keys(variant),
    }
    if not on_host_network:
        service["ports"] = ["${LAB_BIND:-127.0.0.1}:${LAB_PORT:-8888}:8888"]
    service["volumes"] = [Alias("home"), Alias("work-folder"), Alias("lab-data")]
    service["environment"] = environment
    return service


def test(variant: Variant) -> dict[str, Any]:
    device = variant.compose
    anchors = ["test"]
    anchors += [] if device.get("privileged") else ["confined"]
    anchors += [] if "network_mode" in device else ["offline"]
    service: dict[str, Any] = {
        "<<": merged(*anchors),
        "image": variant.image,
        **device_keys(variant),
    }
    if device.get("environment"):
        service["environment"] = dict(device["environment"])
    return service


def test_on_cpu(variant: Variant) -> dict[str, Any]:
    anchors = merged("test", "confined", "offline")
    return {"<<": anchors, "image": variant.image, "environment": dict(variant.cpu_mode)}


def services(manifest: Manifest) -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    for variant in manifest.variants:
        found[Comment(f"{variant.image}: {variant.summary}.")] = None
        found[lab_service(variant)] = lab(variant)
        found[test_service(variant)] = test(variant)
        if variant.device != "cpu":
            found[test_service(variant, on_cpu=True)] = test_on_cpu(variant)
    found[Comment(
        "One node of a distributed run (make test-ddp, make ddp): the host tools start one\n"
        "container per node, each named and reachable as TORCHLAB_DDP_NODE on the ddp network,\n"
        "each running `torchlab torchrun` with its settings (its healthcheck follows torchrun)."
    )] = None  # fmt: skip
    found["ddp-node"] = {
        "<<": merged("container", "confined"),
        "profiles": ["ddp"],
        "image": "${TORCHLAB_DDP_IMAGE:-torchlab:cpu}",
        "hostname": "${TORCHLAB_DDP_NODE:-torchlab-ddp-node-0}",
        "shm_size": f"${{TORCHLAB_DDP_SHM_SIZE:-{manifest.containers['shm_size']}}}",
        "networks": ["ddp"],
        "volumes": [Alias("work-folder")],
        "environment": {"TORCHLAB_EXPECT": "cpu"},
    }
    return found


def bind_mount(source: str, target: str) -> dict[str, Any]:
    return {"type": "bind", "source": source, "target": target, "bind": {"create_host_path": False}}


def cdi_compose(manifest: Manifest) -> str:
    """compose.cdi.yaml: the GPU services' device requests as CDI devices, for the engines
    that take GPUs only that way."""
    found: dict[Any, Any] = {}
    for variant in manifest.variants:
        devices = cdi_devices(variant)
        for service in (lab_service(variant), test_service(variant)) if devices else ():
            found[service] = {"deploy": Tagged("!reset", None), "devices": devices}
            if variant.compose.get("ipc") == "host":
                # The host's /dev/shm: Podman refuses a size for it, where Docker ignores one.
                found[service]["shm_size"] = Tagged("!reset", None)
    return dump({
        Comment(
            f"{GENERATED}\n\n"
            "Over compose.yaml where the engine takes GPUs as CDI devices (Podman, and Docker\n"
            "with CDI on): the host tools add it there (make probe names the engine), and by\n"
            "hand: docker compose -f compose.yaml -f compose.cdi.yaml ... The devices come\n"
            f"from the host's CDI spec: {CDI_SPEC_COMMANDS['nvidia.com/gpu']}"
        ): None,
        "services": Spaced(found),
    })  # fmt: skip


def labelled(mount: dict[str, Any]) -> dict[str, Any]:
    """A bind mount SELinux lets containers use: relabelled shared (z). Compose labels only
    binds it may create (the host tools create these folders first anyway)."""
    return {**mount, "bind": {"create_host_path": True, "selinux": "z"}}


def selinux_compose(manifest: Manifest) -> str:
    """compose.selinux.yaml: the labs' bind mounts, labelled for an enforcing SELinux."""
    folders = {name: bind_mount(*where) for name, where in FOLDERS.items()}
    found: dict[Any, Any] = {
        lab_service(variant): {"volumes": [labelled(mount) for mount in folders.values()]}
        for variant in manifest.variants
    }
    found["ddp-node"] = {"volumes": [labelled(folders["work-folder"])]}
    return dump({
        Comment(
            f"{GENERATED}\n\n"
            "Over compose.yaml where SELinux enforces (the host tools add it there): without\n"
            "a label, SELinux denies the containers their bind mounts."
        ): None,
        "services": Spaced(found),
    })  # fmt: skip


def compose(manifest: Manifest) -> str:
    containers = manifest.containers
    return dump({
        Comment(
            f"{GENERATED}\n\n"
            "The labs (make lab-<variant>) and the in-image test runs (make test-<variant>, and\n"
            "make test-<variant>-on-cpu for a machine without the variant's device), for each\n"
            "variant of variants.toml. The host tools pass the host user (LAB_UID, LAB_GID),\n"
            "LAB_PORT, LAB_BIND, LABS_DIR, LAB_DATA_DIR and LAB_HOME_DIR; JUPYTER_TOKEN comes\n"
            "from .env, which make lab-* writes with a random token when missing."
        ): None,
        "name": "torchlab",
        "x-container": Anchored("container", {
            "user": "${LAB_UID:-1000}:${LAB_GID:-1000}",
            Comment(
                "keep-id under rootless Podman (the host tools set it): your uid is the same\n"
                "inside, so what the lab saves is yours on the host. Empty elsewhere."
            ): None,
            "userns_mode": "${LAB_USERNS:-}",
            Comment("DataLoader workers pass batches through /dev/shm."): None,
            "shm_size": f"${{LAB_SHM_SIZE:-{containers['shm_size']}}}",
            Comment("A fork bomb stops here, not at the host's process table."): None,
            "pids_limit": containers["pids_limit"],
        }),
        "x-confined": Anchored("confined", {
            "cap_drop": containers["cap_drop"], "security_opt": containers["security_opt"],
        }),
        Comment(
            "Your work (LABS_DIR, else work/), where each start brings the image's course; the\n"
            "checkout's labs/ is the course's source, which no lab writes into."
        ): None,
        "x-work-folder": Anchored("work-folder", bind_mount(*FOLDERS["work-folder"])),
        Comment(
            "The lab's data folder: the packages you add, and the caches of pip, torch hub,\n"
            "Hugging Face and the labs' datasets. Kept across make down and rebuilds."
        ): None,
        "x-lab-data": Anchored("lab-data", bind_mount(*FOLDERS["lab-data"])),
        Comment(
            "The lab's home, kept in the data folder: JupyterLab's settings and workspaces, the\n"
            "kernels and git configuration you add, the shell's history. The image keeps\n"
            "nothing of its own there."
        ): None,
        "x-home": Anchored("home", bind_mount(*FOLDERS["home"])),
        "x-token": Anchored("token", {
            "JUPYTER_TOKEN": f"${{JUPYTER_TOKEN:?{NO_TOKEN}}}",
            Comment("A password instead of the token (docs/security.md): its hash, from .env."):
                None,
            "TORCHLAB_PASSWORD_HASH": "${TORCHLAB_PASSWORD_HASH:-}",
            Comment("1 lets Colab's page use the lab (make lab-<variant> COLAB=1)."): None,
            "TORCHLAB_COLAB": "${TORCHLAB_COLAB:-}",
            Comment(
                "1 under rootless Docker only (the host tools set it), where the container's\n"
                "root is you on the host: the lab runs as root there so your files stay yours."
            ): None,
            "TORCHLAB_ALLOW_ROOT": "${LAB_ALLOW_ROOT:-}",
        }),
        Comment(
            "The host's network, as make lab hands it on: its proxy (proxies() in\n"
            "core/settings.py of the host tools: each name in both cases, loopback bypassed),\n"
            "and the CA certificates the lab trusts beside the image's (PEM text, from\n"
            "LAB_CA_CERTS: core/certificates.py); each empty where there is none."
        ): None,
        "x-network": Anchored("network", {
            **{name: f"${{{name}:-}}" for name in PROXY_VARIABLES},
            CA_VARIABLE: f"${{{CA_VARIABLE}:-}}",
        }),
        "x-test": Anchored("test", {
            "<<": Alias("container"), "profiles": ["test"], "command": SELFTEST,
        }),
        Comment("The suites prove that the labs run offline, where the device needs no network."):
            None,
        "x-offline": Anchored("offline", {"network_mode": "none"}),
        "services": Spaced(services(manifest)),
        "networks": {"ddp": {"name": "torchlab-ddp"}},
    })  # fmt: skip


def devcontainer(variant: Variant, manifest: Manifest) -> str:
    settings: dict[str, Any] = {
        "name": f"torchlab ({variant.name})",
        "initializeCommand": ["make", f"prepare-{variant.name}"],
        "image": variant.image,
        "workspaceMount": f"source=${{localWorkspaceFolder}}/work,target={LABS},type=bind",
        "workspaceFolder": LABS,
        "postStartCommand": ["torchlab", "course"],
        "mounts": [
            f"source=${{localWorkspaceFolder}}/lab-data/home,target={HOME},type=bind",
            f"source=${{localWorkspaceFolder}}/lab-data,target={DATA},type=bind",
        ],
        **({"hostRequirements": {"gpu": True}} if wants_gpu(variant) else {}),
        "remoteUser": "lab",
        "containerUser": "lab",
        "updateRemoteUserUID": True,
        "runArgs": [*run_flags(manifest, variant), "--no-healthcheck"],
        "customizations": {
            "vscode": {
                "extensions": ["ms-python.python", "ms-toolsai.jupyter"],
                "settings": {"python.defaultInterpreterPath": "/opt/venv/bin/python"},
            }
        },
    }
    gpus = " GPUs: the editor passes them all, or refuses to start." if wants_gpu(variant) else ""
    about = (
        f'The {variant.name} lab in VS Code (Dev Containers: "Reopen in Container", or the\n'
        f"devcontainer CLI): the image make lab-{variant.name} runs, work/, lab-data/ and the\n"
        "lab's home (lab-data/home) mounted where the lab has them, the lab user given your\n"
        "uid so your files stay yours,\n"
        f"confined as every lab is; make prepare-{variant.name} readies the image and the\n"
        "folders first, and each start brings the image's course into work/ as the lab does.\n"
        "The editor runs the kernels itself, so the image's Jupyter server and its\n"
        f"healthcheck do not start.{gpus}"
    )
    comments = "".join(f"// {line}\n" for line in f"{GENERATED}\n\n{about}".splitlines())
    return comments.replace("// \n", "//\n") + json.dumps(settings, indent=2) + "\n"


def cluster_profiles(manifest: Manifest) -> str:
    profiles = []
    for index, variant in enumerate(manifest.variants):
        profile: dict[str, Any] = {
            "display_name": f"{variant.summary} ({variant.name})",
            "description": f"{variant.image}",
            "slug": variant.name,
        }
        if index == 0:
            profile["default"] = True
        # The device's options (which GPU: whole, shared, MIG) are the profile's own key;
        # everything else overrides the spawner's settings.
        options = variant.kubernetes.get("profile_options")
        profile["kubespawner_override"] = {
            "image": f"{CLUSTER_REGISTRY}/{variant.image}",
            **{key: value for key, value in variant.kubernetes.items() if key != "profile_options"},
        }
        if options:
            profile["profile_options"] = options
        profiles.append(profile)
    return dump({
        Comment(
            f"{GENERATED}\n\n"
            "The profiles each user picks from on Kubernetes, one per variant, with what its\n"
            "pod needs to reach the device (and for a GPU, which: a whole one, a time-sliced\n"
            "share or a MIG instance, the last two where the NVIDIA device plugin offers them);\n"
            "Helm reads them after values.yaml (docs/class/kubernetes.md).\n"
            f"Replace {CLUSTER_REGISTRY} with where your images are."
        ): None,
        "singleuser": {"profileList": profiles},
    })  # fmt: skip


@dataclass(frozen=True)
class Output:
    text: str
    sources: tuple[str, ...]  # what it is written from, from the root: make check names them


FROM_MANIFEST = ("variants.toml",)


def outputs(manifest: Manifest) -> dict[Path, Output]:
    """Every generated file, by path, as make generate writes it, with what it is written from."""
    written = {
        LAB_COMPOSE: Output(compose(manifest), FROM_MANIFEST),
        CDI_COMPOSE: Output(cdi_compose(manifest), FROM_MANIFEST),
        SELINUX_COMPOSE: Output(selinux_compose(manifest), FROM_MANIFEST),
        PROFILES: Output(cluster_profiles(manifest), FROM_MANIFEST),
    }
    for path, text in reference.outputs(manifest).items():  # the docs' tables
        written[path] = Output(text, reference.sources(text))
    for variant in manifest.variants:
        if variant.per_user:
            path = ROOT / ".devcontainer" / variant.name / "devcontainer.json"
            written[path] = Output(devcontainer(variant, manifest), FROM_MANIFEST)
    return written


def leftovers(wanted: dict[Path, Output]) -> list[Path]:
    """Generated files of variants the manifest no longer has (wanted: its outputs)."""
    return [path for path in ROOT.glob(".devcontainer/*/devcontainer.json") if path not in wanted]


def differing(wanted: dict[Path, Output]) -> dict[str, tuple[str, ...]]:
    """The generated files that differ from these outputs, and the leftovers (of variants gone
    from the manifest), from the root, each with what it is written from."""
    found = {
        path: output.sources
        for path, output in wanted.items()
        if not path.exists() or path.read_text() != output.text
    }
    found.update(dict.fromkeys(leftovers(wanted), FROM_MANIFEST))
    return {str(path.relative_to(ROOT)): sources for path, sources in found.items()}


def stale(manifest: Manifest) -> dict[str, tuple[str, ...]]:
    """The generated files that differ from what make generate writes, relative to the root,
    each with what it is written from."""
    return differing(outputs(manifest))


def write(manifest: Manifest) -> list[str]:
    """Write every generated file that differs, remove the leftovers; what changed."""
    wanted = outputs(manifest)  # once: it reads the locks and every document
    changed = list(differing(wanted))
    for path in leftovers(wanted):
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    for path, output in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(output.text)
    return changed
