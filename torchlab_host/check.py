"""`make check`: every place that must agree with the manifest does, or one line names it.

The manifest (variants.toml) says what a variant is; its locks, its device's backend and its
compose services live elsewhere and are checked here, so adding a variant is guided.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from torchlab.backends import all_backends
from torchlab.variants import Manifest, Variant

from .engine import quiet
from .labs import lab_service, test_service
from .locks import REQUIREMENTS, lock_file

SELFTEST = ["torchlab", "selftest"]


def normalised(fragment: dict[str, Any]) -> dict[str, Any]:
    """A compose fragment as Compose itself writes it (count: all is -1, and so on)."""
    if not fragment:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "compose.json")
        path.write_text(json.dumps({"services": {"fragment": {"image": "x", **fragment}}}))
        result = quiet(
            ["docker", "compose", "--file", str(path), "config", "--format", "json"],
            env=dict(os.environ, COMPOSE_PROJECT_NAME="fragment"),
        )
    if result.returncode != 0:
        raise ValueError(f"a compose fragment of variants.toml does not resolve: {result.stderr}")
    service = json.loads(result.stdout)["services"]["fragment"]
    service.pop("image")
    return {key: value for key, value in service.items() if key in fragment}


def contains(whole: Any, part: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            key in whole and contains(whole[key], value) for key, value in part.items()
        )
    return whole == part


def _service_problems(
    variant: Variant, services: dict[str, Any], fragment: dict[str, Any]
) -> list[str]:
    problems = []
    like = "compose.yaml: {service} for variant {variant} {what}. Fix: {fix}"

    def expect(service: str, condition: bool, what: str, fix: str) -> None:
        if not condition:
            problems.append(like.format(service=service, variant=variant.name, what=what, fix=fix))

    wanted = [lab_service(variant), test_service(variant)]
    if variant.device != "cpu":
        wanted.append(test_service(variant, on_cpu=True))
    for service in wanted:
        if service not in services:
            problems.append(
                f"compose.yaml has no service {service} for variant {variant.name}. Fix: add it, "
                f"like the other variants' (image {variant.image}; variants.toml says the rest)"
            )
            continue
        config = services[service]
        expect(
            service,
            config.get("image") == variant.image,
            "runs another image",
            f"image: {variant.image}",
        )
        on_cpu = service.endswith("-on-cpu")
        if on_cpu:
            expect(
                service,
                contains(config.get("environment", {}), variant.cpu_mode),
                "lacks the cpu_mode environment",
                f"environment: {variant.cpu_mode}",
            )
            reaching = [
                key
                for key in fragment
                if key != "environment" and contains(config.get(key), fragment[key])
            ]
            expect(service, not reaching, "reaches for the device", f"remove {reaching} from it")
        else:
            expect(
                service,
                contains(config, fragment),
                "lacks the device block of variants.toml",
                f"give it {json.dumps(fragment)}",
            )
        if service == lab_service(variant):
            expect(
                service,
                config.get("environment", {}).get("TORCHLAB_EXPECT") == variant.device,
                "expects another device",
                f"environment TORCHLAB_EXPECT: {variant.device}",
            )
        else:
            expect(
                service,
                config.get("command") == SELFTEST and "test" in config.get("profiles", []),
                "is not a selftest run",
                "command: [torchlab, selftest], profiles: [test]",
            )
    return problems


def problems(manifest: Manifest, services: dict[str, Any]) -> list[str]:
    """Everything that disagrees with the manifest, one line each, with its fix."""
    found = []
    backends = {backend.name for backend in all_backends()}
    for variant in manifest.variants:
        if variant.device not in backends:
            found.append(
                f"variants.toml: variant {variant.name} wants device '{variant.device}', which no "
                f"backend drives. Fix: add src/torchlab/backends/{variant.device}.py with BACKEND"
            )
        for lock in (manifest.shared_lock, variant.lock):
            if not (REQUIREMENTS / f"{lock}.in").exists():
                found.append(
                    f"requirements/{lock}.in for variant {variant.name} is missing. Fix: write "
                    "it (the packages only this image has), then make lock"
                )
            elif not lock_file(lock).exists():
                found.append(f"requirements/{lock}.txt is missing. Fix: make lock")
        found += _service_problems(variant, services, normalised(variant.compose))
    known = {
        service
        for variant in manifest.variants
        for service in (lab_service(variant), test_service(variant), test_service(variant, True))
    }
    found += [
        f"compose.yaml has {service}, which no variant of variants.toml names. Fix: add the "
        "variant to variants.toml, or remove the service"
        for service in services
        if service.startswith(("lab-", "test-")) and service not in known
    ]
    return found


def ci_matrix(manifest: Manifest) -> str:
    """The CI workflow's image matrix (GitHub Actions reads it from this line)."""
    return "matrix=" + json.dumps({"variant": manifest.names})
