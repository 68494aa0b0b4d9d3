"""The registry published images come from ($TORCHLAB_REGISTRY): make lab pulls the image of
its inputs from there before it builds one."""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request

from torchlab_host.core.engine import docker_must, problem_lines, streamed
from torchlab_host.core.settings import Settings

REGISTRY_TIMEOUT_S = 5


def configured(settings: Settings) -> str:
    """TORCHLAB_REGISTRY, lower case as registries want it (GitHub owners may have capitals);
    empty means: never pull."""
    return settings["TORCHLAB_REGISTRY"].rstrip("/").lower()


def on_loopback(reference: str) -> bool:
    """Whether a registry (or an image's name) is on this machine, where Docker speaks plain
    HTTP to it (a local registry: docker-registry, registry:2)."""
    host = reference.split("/")[0].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure(reference: str) -> list[str]:
    """docker manifest's option for a registry on this machine, which speaks plain HTTP."""
    return ["--insecure"] if on_loopback(reference) else []


def registry_problem(registry: str) -> str | None:
    """Why the registry does not answer (a refused, unresolved or silent host), else None. Any
    HTTP answer counts: an anonymous /v2/ request is answered 401 by a working registry."""
    host = registry.split("/")[0]
    scheme = "http" if on_loopback(host) else "https"
    try:
        urllib.request.urlopen(f"{scheme}://{host}/v2/", timeout=REGISTRY_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"no registry answers at {host} ({reason})"
    return None


def pulled(tag: str, registry: str) -> bool:
    """Pull the published image of these inputs from a registry (none: ''); say in one line
    why not where it cannot be had."""
    if not registry:
        return False
    published = f"{registry}/{tag}"
    problem = registry_problem(registry)
    if problem:
        print(f"torchlab: cannot pull {published}: {problem}", flush=True)
        return False
    print(f"torchlab: pulling {published}", flush=True)
    code, output = streamed(["docker", "pull", published])
    if code != 0:
        said = (problem_lines(output) or output or ["docker pull failed"])[-1]
        print(f"torchlab: cannot pull {published}: {said.strip()}", flush=True)
        return False
    docker_must("tag", published, tag)
    return True
