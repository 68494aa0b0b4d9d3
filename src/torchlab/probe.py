"""The probe: what this environment is, which devices it has, and proof that they compute."""

from __future__ import annotations

import datetime
import os
from typing import Any

from . import __version__, environments, packages, system
from .backends import Backend, all_backends, get


def _smoke(backend: Backend, device: Any) -> dict[str, Any]:
    try:
        return backend.smoke(device)
    except Exception as error:  # a device that is listed but cannot compute is the finding
        hint = backend.explain(error)
        return {
            "device": str(device),
            "ok": False,
            "error": f"{type(error).__name__}: {str(error).strip().splitlines()[0]}",
            "hint": str(hint) if hint else None,
        }


def _backend_entry(backend: Backend, smoke: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"usable": False, "hint": None}
    try:
        status = backend.status()
        entry["usable"] = status.usable
        entry["hint"] = str(status.hint) if status.hint else None
        entry["facts"] = backend.describe()
        if status.usable:
            devices = backend.devices()
            entry["devices"] = [str(device) for device in devices]
            if smoke:
                entry["smoke"] = [_smoke(backend, device) for device in devices]
    except Exception as error:  # the probe reports what broke instead of breaking
        hint = backend.explain(error)
        entry["error"] = f"{type(error).__name__}: {error}"
        entry["hint"] = str(hint) if hint else entry["hint"]
    return entry


def _threads(machine: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {
        "torch": torch.get_num_threads(),
        "from": system.threads_source(),
        "fit_the_limit": system.cpu_limit_threads(machine["cpu_limit"], machine["cpu_count"]),
    }


def _warnings(container: dict[str, Any], threads: dict[str, Any]) -> list[str]:
    found = []
    if threads["fit_the_limit"] and threads["torch"] > threads["fit_the_limit"]:
        found.append(
            f"torch runs {threads['torch']} threads in a limit of {threads['fit_the_limit']} "
            f"CPUs (from {threads['from']}): they wait for the CPU time they are refused. Fix: "
            f"export OMP_NUM_THREADS={threads['fit_the_limit']} (torchlab's entrypoint sets it)"
        )
    shm = container["shm_bytes"]
    if system.shm_is_small(shm):
        found.append(
            f"/dev/shm is {system.human_bytes(shm)}: DataLoader workers crash below "
            f"{system.human_bytes(system.SHM_MINIMUM)}. Fix: docker run --shm-size=2g "
            "(compose.yaml sets it)"
        )
    labs_problem = system.labs_problem(container)
    if labs_problem:
        found.append(labs_problem)
    return found


def _platform_release() -> str | None:
    """In an image whose variant ships another torch on another platform: which this platform
    gets and why (None elsewhere)."""
    from . import variants

    name = os.environ.get("TORCHLAB_VARIANT")
    try:
        variant = variants.load().variant(name) if name else None
        here = variants.this_platform()
    except variants.ManifestError:
        return None
    if variant is None or not variant.torch_differs or here not in variant.platforms:
        return None
    others = ", ".join(
        f"{platform} gets {shipped.torch}"
        for platform, shipped in variant.platforms.items()
        if platform != here
    )
    why = variant.platforms[here].why or "the release this variant is built on"
    return f"{here}'s torch {variant.platforms[here].torch}: {why}; {others}"


def _device_settings(backends: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """In an image whose device is usable here: the settings its containers are started with
    (the manifest's compose block) that this one lacks."""
    from . import variants

    name = os.environ.get("TORCHLAB_VARIANT")
    try:
        variant = variants.load().variant(name) if name else None
    except variants.ManifestError:
        return []
    if variant is None or not backends.get(variant.device, {}).get("usable"):
        return []
    hub_server = "JUPYTERHUB_SERVICE_PREFIX" in os.environ
    problem = system.device_settings_problem(container, variant.compose, hub_server)
    return [problem] if problem else []


def collect(smoke: bool = True) -> dict[str, Any]:
    import torch

    container, machine = system.container(), system.machine()
    threads = _threads(machine)
    backends = {backend.name: _backend_entry(backend, smoke) for backend in all_backends()}
    return {
        "torchlab": __version__,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "threads": threads,
        "torch": {
            "version": torch.__version__,
            "git": torch.version.git_version[:12],
            "debug": torch.version.debug,
            "platform_release": _platform_release(),
        },
        "container": container,
        "backends": backends,
        "packages": {
            "added": packages.added(),
            "added_in": str(packages.user_site()),
            "left_out": packages.left_out(),
            "environments": environments.summary(),
        },
        "warnings": [
            *_warnings(container, threads),
            *_device_settings(backends, container),
            *(line for backend in all_backends() for line in backend.warnings()),
        ],
    }


def expectation_failure(report: dict[str, Any], expect: str) -> str | None:
    """One line saying why the expected device kind is not really working; None when it is."""
    name = get(expect).name
    entry = report["backends"][name]
    if not entry["usable"]:
        return f"expected {name}, but {entry['hint'] or entry.get('error')}"
    for result in entry.get("smoke", []):
        if not result["ok"]:
            reason = (
                result.get("hint")
                or result.get("error")
                or (f"its result is off by {result['relative_error']:.1e} (relative)")
            )
            return f"expected {name}, but the smoke test failed on {result['device']}: {reason}"
    return None


def _value(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("_bytes") and isinstance(value, int):
        return system.human_bytes(value)
    if isinstance(value, list):
        return " ".join(map(str, value)) or "-"
    return str(value)


def _fields(facts: dict[str, Any]) -> str:
    return ", ".join(f"{key} {_value(key, value)}" for key, value in facts.items())


def _added(found: dict[str, Any]) -> str:
    if not found["added"]:
        return f"nothing beyond the locks (pip install puts packages in {found['added_in']})"
    listed = ", ".join(f"{name} {version}" for name, version in sorted(found["added"].items()))
    return f"{listed} (in {found['added_in']}; torchlab packages prints them as requirements)"


def _environments(found: list[dict[str, Any]]) -> str:
    listed = ", ".join(
        f"{env['name']} ({len(env['packages'])} packages"
        f"{', torch ' + env['packages']['torch'] if 'torch' in env['packages'] else ''})"
        for env in found
    )
    return f"{listed}: NOT LOCKED, each with its kernel (torchlab env list)"


def render_table(report: dict[str, Any]) -> str:
    machine, container = report["machine"], report["container"]
    environment = " ".join(f"{k}={v or '-'}" for k, v in container["environment"].items())
    limit = f", limit {machine['cpu_limit']:g}" if machine["cpu_limit"] else ""
    labs_state = (
        "writable"
        if container["labs_writable"]
        else "NOT WRITABLE"
        if container["labs_exists"]
        else "MISSING"
    )
    rows = [
        ("Python", f"{machine['python']} ({machine['python_executable']})"),
        (
            "OS",
            f"{machine['os']}, kernel {machine['kernel']}{' (WSL 2)' if machine['wsl'] else ''}, "
            f"glibc {machine['glibc']}, {machine['arch']}",
        ),
        ("CPUs", f"{machine['cpus_usable']} usable of {machine['cpu_count']}{limit}"),
        (
            "threads",
            f"{report['threads']['torch']} for torch of the host's {machine['cpu_count']} "
            f"cores, from {report['threads']['from']}",
        ),
        (
            "RAM",
            f"{system.human_bytes(machine['ram_bytes'])} "
            f"({system.human_bytes(machine['ram_available_bytes'])} available)",
        ),
        ("torch", f"{report['torch']['version']} (git {report['torch']['git']})"),
        *(
            [("release", report["torch"]["platform_release"])]
            if report["torch"].get("platform_release")
            else []
        ),
        (
            "container",
            f"{_value('', container['in_container'])}, "
            f"uid {container['uid']} gid {container['gid']}",
        ),
        ("/dev/shm", system.human_bytes(container["shm_bytes"])),
        (
            "limits",
            f"IPC namespace {container['ipc']}, "
            + ", ".join(
                f"{name} {system.limit_text(limit)}" for name, limit in container["limits"].items()
            ),
        ),
        ("labs", f"{container['labs_dir']} ({labs_state})"),
        ("environment", environment),
        ("added", _added(report["packages"])),
    ]
    if report["packages"].get("environments"):
        rows.append(("envs", _environments(report["packages"]["environments"])))
    if report["packages"]["left_out"]:
        rows.append(
            (
                "left out",
                f"{', '.join(report['packages']['left_out'])}: this image was built without it "
                "(TORCHLAB_WITHOUT); the labs that need it say so",
            )
        )
    lines = [f"torchlab {report['torchlab']} probe, {report['time']}", ""]
    lines += [f"  {key:<12} {value}" for key, value in rows]
    lines += ["", "Devices"]
    for name, entry in report["backends"].items():
        state = (
            "usable" if entry["usable"] else f"NOT USABLE: {entry['hint'] or entry.get('error')}"
        )
        lines.append(f"  {name:<6} {state}")
        facts = dict(entry.get("facts", {}))
        listed = {
            key: facts.pop(key)
            for key in list(facts)
            if isinstance(facts[key], list) and facts[key] and isinstance(facts[key][0], dict)
        }
        if facts:
            lines.append(f"         {_fields(facts)}")
        for items in listed.values():
            lines += [f"         - {_fields(item)}" for item in items]
        for result in entry.get("smoke", []):
            if "ms" in result:
                verdict = "ok" if result["ok"] else "WRONG RESULT"
                lines.append(
                    f"         smoke {result['device']}: {result['op']} in {result['ms']} ms "
                    f"({result['gflops']} GFLOP/s), relative error "
                    f"{result['relative_error']:.1e}, {verdict}"
                )
            else:
                lines.append(f"         smoke {result['device']}: FAILED {result['error']}")
    if report["warnings"]:
        lines += ["", "Warnings"] + [f"  ! {warning}" for warning in report["warnings"]]
    return "\n".join(lines)
