"""One person's lab: start it (make lab-cpu), run an image's suite (make test-cpu), a shell in
it, its logs, stop it, and clean up."""

from __future__ import annotations

import shutil
import sys
import time
from urllib.parse import urlsplit

from torchlab import healthcheck
from torchlab.backends import HostTooOld, get
from torchlab.variants import Manifest, Variant
from torchlab_host import ARTIFACTS
from torchlab_host.core import certificates
from torchlab_host.core.addresses import browser_url, require_free_port, warn_if_exposed
from torchlab_host.core.engine import (
    current_engine,
    problem_lines,
    require_docker,
    require_engine,
    run,
    streamed,
)
from torchlab_host.core.envfile import token
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.image.build import ensure_image
from torchlab_host.image.spec import variant_build
from torchlab_host.image.tags import image_exists, prune_replaced_images
from torchlab_host.lab.config import LabSettings, data_dir, for_lab, warn_if_on_windows
from torchlab_host.lab.engine_fit import require_engine_fits
from torchlab_host.lab.services import (
    SELFTEST,
    compose,
    compose_environment,
    in_service,
    lab_service,
    run_in_service,
    test_service,
)

READY_TIMEOUT_S = 180
# How often make lab asks the lab's server whether it answers, and how often whether its
# container still runs (a compose call: about 0.1 s of CPU, taken from the starting server).
ASK_EVERY_S = 0.05
LOOK_EVERY_S = 2.0


def require_host_device(variant: Variant, manifest: Manifest) -> None:
    """The variant's device reaches containers here, and the host's driver and GPUs suit its
    image; else one line, naming the variant of the same device that does suit, if one does."""
    hint = get(variant.device).host_requirements(variant.build_here())
    if hint is None:
        return
    if not isinstance(hint, HostTooOld):
        raise HostError(hint.problem, f"{hint.fix} (without one: make lab-cpu)")
    suiting = [
        other.name
        for other in manifest.variants
        if other.device == variant.device
        and other is not variant
        and get(other.device).host_requirements(other.build_here()) is None
    ]
    instead = f"use make lab-{suiting[0]}, or " if suiting else ""
    raise HostError(f"{hint.found}, but {variant.image} needs {hint.needs}", instead + hint.fix)


def auto_variant(manifest: Manifest) -> Variant:
    """`make lab`: the first variant, of the best device kind that reaches containers here,
    whose image the host's driver and GPUs suit; else cpu. Where the device is here but no
    image of it suits (a driver too old for all of them), it refuses instead of falling back."""
    by_priority = sorted(manifest.variants, key=lambda v: -get(v.device).priority)
    unsuited: list[tuple[Variant, HostTooOld]] = []
    for variant in by_priority:
        backend = get(variant.device)
        if not backend.checks_host:
            continue
        hint = backend.host_requirements(variant.build_here())
        if hint is None:
            return variant
        if isinstance(hint, HostTooOld):
            unsuited.append((variant, hint))
    if unsuited:
        found = " and ".join(dict.fromkeys(hint.found for _, hint in unsuited))
        needs = " and ".join(f"{variant.image} needs {hint.needs}" for variant, hint in unsuited)
        raise HostError(
            f"{found}, but {needs}",
            f"{unsuited[-1][1].fix} (or run the lab on the CPU: make lab-cpu)",
        )
    return next(variant for variant in by_priority if variant.device == "cpu")


def running(service: str, settings: Settings) -> bool:
    listed = compose(settings, "ps", "--quiet", "--status", "running", service, capture=True)
    return bool(listed.stdout.strip())


def failure_reason(service: str, said: str, settings: Settings) -> HostError:
    """The container's own one-line reason (torchlab serve prints it), else where to look."""
    if f"no such service: {service}" in said:
        return HostError(
            f"compose.yaml has no service {service}", "write it from variants.toml: make generate"
        )
    logs = compose(settings, "logs", "--no-log-prefix", service, capture=True).stdout.splitlines()
    reasons = [line for line in logs if line.startswith("torchlab: ")]
    if reasons:
        return HostError(reasons[-1].removeprefix("torchlab: "))
    said_last = said.strip().splitlines()[-1:]
    why = f"did not start ({said_last[0]})" if said_last else "stopped while it started"
    return HostError(f"{service} {why}", "read its log: make logs")


def wait_until_serving(service: str, root: str, token: str | None, settings: Settings) -> None:
    """Until the lab's server answers at the URL make lab prints, asked as the image's
    healthcheck asks it (with the token, where there is one). Docker's health status would say
    so only at its next check, up to its 2 s interval later, and Docker 20.10 has no faster
    interval for the start. A container that stops meanwhile is its own reason."""
    address = urlsplit(root)
    server = {"hostname": address.hostname, "port": address.port, "base_url": "/", "token": token}
    start = looked = time.monotonic()
    while not healthcheck.check(server, timeout=1.0):
        now = time.monotonic()
        if now - looked >= LOOK_EVERY_S:
            if not running(service, settings):
                raise failure_reason(service, "", settings)
            looked = now
        if now - start > READY_TIMEOUT_S:
            raise HostError(
                f"{service} did not answer at {root} in {READY_TIMEOUT_S} s",
                "read its log: make logs",
            )
        time.sleep(ASK_EVERY_S)


def network_environment(lab: LabSettings, settings: Settings) -> dict[str, str]:
    """What compose.yaml interpolates for a lab that reaches the network: its folders and user,
    the host's proxy, and the CA certificates it trusts beside the image's."""
    return dict(
        lab.environment(),
        **settings.proxies,
        **{certificates.VARIABLE: certificates.ca_certificates(settings)},
    )


def prepare(name: str, manifest: Manifest, settings: Settings) -> None:
    """What an editor's dev container (.devcontainer/<variant>) needs before it starts: the
    image of this checkout, and the work and data folders, writable by the lab's user."""
    variant = manifest.variant(name)
    require_engine()
    lab = for_lab(settings)
    ensure_image(variant_build(variant, manifest, settings), manifest)
    print(f"torchlab: {variant.image} and {lab.labs}, {lab.data} are ready for the editor")
    warn_if_on_windows(lab.labs)


def up(name: str, manifest: Manifest, settings: Settings) -> float:
    """Start a variant's lab and print its URL with the token; seconds until it answers."""
    colab, password = settings["COLAB"] == "1", bool(settings["TORCHLAB_PASSWORD_HASH"])
    if colab and password:
        raise HostError(
            "COLAB=1 with TORCHLAB_PASSWORD_HASH set: Colab connects with the lab's token, and "
            "a password turns the token off",
            "remove TORCHLAB_PASSWORD_HASH from .env (and the environment) while Colab uses "
            "the lab, which its token then guards; or start it without COLAB=1",
        )
    variant = auto_variant(manifest) if name == "auto" else manifest.variant(name)
    require_host_device(variant, manifest)
    require_engine()
    require_engine_fits(variant, current_engine())
    lab = for_lab(settings)
    service = lab_service(variant)
    try:
        require_free_port(lab.bind, lab.port, f"make lab-{variant.name}")
    except HostError:
        if not running(service, settings):  # else it is this lab's own port
            raise
    ensure_image(variant_build(variant, manifest, settings), manifest)
    environment = dict(
        network_environment(lab, settings),
        JUPYTER_TOKEN=token(settings),
        TORCHLAB_COLAB="1" if colab else "",
    )
    start, since = time.monotonic(), int(time.time())
    started = compose(settings, "up", "--detach", service, environment=environment, capture=True)
    if started.returncode != 0:
        raise failure_reason(service, started.stderr, settings)
    root = browser_url(lab.bind, lab.port)
    wait_until_serving(service, root, None if password else environment["JUPYTER_TOKEN"], settings)
    elapsed = time.monotonic() - start
    for line in course_news(service, since, environment, settings):
        print(line)
    url = browser_url(lab.bind, lab.port, "/lab")
    login = " (log in with your password)" if password else ""
    if not login:
        url += f"?token={environment['JUPYTER_TOKEN']}"
    print(
        f"torchlab: {service} is ready at {url}{login} (ready in {elapsed:.1f} s; stop: make down)"
    )
    if colab:
        # Colab's dialog takes the server's root with the token, on localhost.
        local = browser_url(lab.bind, lab.port, "/").replace("127.0.0.1", "localhost")
        print(
            "torchlab: in Colab, Connect > Connect to a local runtime, and paste: "
            f"{local}?token={environment['JUPYTER_TOKEN']}"
        )
    warn_if_exposed(lab.bind, "LAB", "the lab", "the token or password is all that guards it")
    warn_if_on_windows(lab.labs)
    return elapsed


def test(
    name: str,
    manifest: Manifest,
    settings: Settings,
    on_cpu: bool,
    pytest_options: list[str] = (),
) -> int:
    """The probe and the device suite in a variant's image; no warning or error line allowed.
    pytest_options go to the suite's pytest."""
    variant = manifest.variant(name)
    if not on_cpu:
        require_host_device(variant, manifest)
    require_engine()
    if not on_cpu:
        require_engine_fits(variant, current_engine())
    ensure_image(variant_build(variant, manifest, settings), manifest)
    service = test_service(variant, on_cpu)
    # Keep this run's probe report (CI uploads it), then run the probe and the suite.
    report = run_in_service(settings, service, "torchlab", "probe", "--json")
    if report.stdout.strip().startswith("{"):
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"probe-{service}.json").write_text(report.stdout)
    command = [*SELFTEST, *pytest_options] if pytest_options else []
    code, output = streamed(
        in_service(service, *command, settings=settings), compose_environment(settings)
    )
    problems = problem_lines(output)
    if code == 0 and problems:
        print(
            f"torchlab: {service} passed, but its output has {len(problems)} warning or error "
            f"line(s), the first: {problems[0]!r}. Fix: remove their cause",
            file=sys.stderr,
        )
        return 1
    return code


def shell(name: str, manifest: Manifest, settings: Settings) -> int:
    variant = manifest.variant(name)
    require_host_device(variant, manifest)
    require_engine()
    require_engine_fits(variant, current_engine())
    ensure_image(variant_build(variant, manifest, settings), manifest)
    environment = network_environment(for_lab(settings), settings)
    return compose(
        settings, "run", "--rm", lab_service(variant), "bash", environment=environment
    ).returncode


def down(settings: Settings) -> int:
    require_engine()
    return compose(settings, "--profile", "*", "down", "--remove-orphans").returncode


def course_news(
    service: str, since: int, environment: dict[str, str], settings: Settings
) -> list[str]:
    """What the course brought at this start of the lab (the container says it in its log)."""
    logged = compose(
        settings, "logs", "--no-log-prefix", "--since", str(since), service,
        environment=environment, capture=True,
    ).stdout  # fmt: skip
    return [line for line in logged.splitlines() if line.startswith("torchlab: the course brought")]


def logs(settings: Settings) -> int:
    require_engine()
    return compose(settings, "logs", "--tail", "200").returncode


def clean_data(part: str, settings: Settings) -> int:
    """Remove one part of the lab's data folder: the caches, the packages you added, your
    environments, or the lab's home."""
    parts = {
        "cache": ("cache", "datasets"),
        "packages": ("packages",),
        "envs": ("envs",),
        "home": ("home",),
    }
    for name in parts[part]:
        folder = data_dir(settings) / name
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue
        except PermissionError:
            raise HostError(
                f"{folder} holds files you may not remove", f"sudo rm -rf {folder}"
            ) from None
        print(f"torchlab: removed {folder}")
    return 0


def clean(manifest: Manifest, settings: Settings) -> int:
    """Remove the containers, the torchlab images and the dangling layers they left."""
    require_docker()
    down(settings)
    present = [v.image for v in manifest.variants if image_exists(v.image)]
    if present:
        run(["docker", "image", "rm", *present], capture_output=True)
    return prune_replaced_images()
