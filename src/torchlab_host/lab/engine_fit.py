"""What a lab of a variant needs from this host's engine before it starts, checked here so a
miss is one line and not the engine's error halfway through compose (or a GPU lab that starts
without its GPU): an engine that hands the GPUs on at all, the CDI spec of the GPUs an engine
takes only as CDI devices, and, under a rootless engine, the user's own hard limits for
the ulimits the variant's containers ask for (no rootless engine can raise them)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from torchlab import system
from torchlab.variants import Variant
from torchlab_host.core.engine import PODMAN_PASSING_CDI_TEXT, Engine
from torchlab_host.core.errors import HostError
from torchlab_host.lab.containers import CDI_SPEC_COMMANDS, cdi_devices

# Where Podman and Docker read CDI specs (CDI's own default folders).
CDI_SPEC_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
YAML_KIND = re.compile(r"""^kind:\s*["']?([^"'\s#]+)""", re.MULTILINE)


def spec_kinds(folders: Sequence[Path] = CDI_SPEC_DIRS) -> set[str]:
    """The device kinds the CDI specs in these folders name (nvidia.com/gpu, ...)."""
    kinds = set()
    for folder in folders:
        for spec in sorted(folder.glob("*")) if folder.is_dir() else ():
            try:
                text = spec.read_text()
            except OSError:
                continue
            if spec.suffix == ".json":
                try:
                    kinds.add(str(json.loads(text).get("kind", "")))
                except (ValueError, AttributeError):
                    continue
            elif spec.suffix in (".yaml", ".yml"):
                kinds.update(YAML_KIND.findall(text))
    return kinds - {""}


def require_cdi_passed_on(variant: Variant, engine: Engine) -> None:
    """A GPU lab never starts on the CPU because the engine dropped its devices."""
    if cdi_devices(variant) and engine.cdi and engine.drops_cdi_devices:
        raise HostError(
            f"{engine.kind} {engine.version}'s Docker API drops the CDI devices compose asks "
            f"for (Podman {PODMAN_PASSING_CDI_TEXT} passes them on), so {variant.image} would "
            "start without its GPUs",
            f"upgrade Podman to {PODMAN_PASSING_CDI_TEXT} or later, or use Docker (the NVIDIA "
            "Container Toolkit's runtime, or CDI on Docker 25 or later)",
        )


def require_cdi_spec(
    variant: Variant, engine: Engine, folders: Sequence[Path] = CDI_SPEC_DIRS
) -> None:
    wanted = {device.partition("=")[0] for device in cdi_devices(variant)}
    missing = sorted(wanted - spec_kinds(folders)) if engine.cdi else []
    if missing:
        where = " or ".join(str(folder) for folder in folders)
        raise HostError(
            f"{engine.kind} takes GPUs as CDI devices, and no CDI spec in {where} names "
            f"{missing[0]}",
            f"write one: {CDI_SPEC_COMMANDS[missing[0]]}",
        )


def require_rootless_limits(variant: Variant, engine: Engine) -> None:
    own = system.limits(hard=True) if engine.rootless else {}
    for name, wanted in variant.compose.get("ulimits", {}).items():
        if name not in own or system.meets(own[name], wanted):
            continue
        raise HostError(
            f"{variant.image}'s containers ask for {name} {system.limit_text(wanted)}, and a "
            f"rootless {engine.kind} cannot raise it above your own hard limit "
            f"({system.limit_text(own[name])})",
            f"raise it for your user: add '$USER - {name} unlimited' to "
            "/etc/security/limits.conf (sudo), log in again and restart the engine",
        )


def require_engine_fits(variant: Variant, engine: Engine) -> None:
    require_cdi_passed_on(variant, engine)
    require_cdi_spec(variant, engine)
    require_rootless_limits(variant, engine)
