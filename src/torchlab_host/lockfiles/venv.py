"""Host venvs built from the locks (make venv; make test-host-<variant>): exactly the pinned
packages, and the checkout's src/ installed editable, so `import torchlab` and
`import torchlab_host` need no path."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from torchlab.variants import MACHINES, Manifest, this_platform
from torchlab_host import ROOT
from torchlab_host.core.engine import quiet, run
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lockfiles.files import (
    PYTHON_VERSION,
    as_installed,
    left_out_of,
    lock_file,
    require_locks,
)
from torchlab_host.lockfiles.sources import (
    local_pins,
    shielded,
    sources,
    torch_cpu_links,
    torch_sources,
    wheel_place_has,
)

INSTALL_LOCK = ROOT / "docker/install-lock"


def require_python(python: str) -> None:
    """The locks pin wheels for one Python: a venv from another one would not install them."""
    found = quiet([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    if found.stdout.strip() != PYTHON_VERSION:
        said = found.stdout.strip() or "missing"
        raise HostError(
            f"the locks are for Python {PYTHON_VERSION}, but {python} is {said}",
            f"install python{PYTHON_VERSION} and set PYTHON=python{PYTHON_VERSION}",
        )


def pip_setting(python: str, name: str) -> list[str]:
    """A setting of pip's own configuration (global.find-links, global.index-url), as words."""
    said = quiet([python, "-m", "pip", "config", "get", f"global.{name}"])
    return said.stdout.split() if said.returncode == 0 else []


def unanswered(url: str) -> str | None:
    """Why a package page does not answer from here, else None."""
    try:
        urllib.request.urlopen(url, timeout=10).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as error:
        return str(getattr(error, "reason", error))
    return None


def require_cpu_wheels(lock: str, manifest: Manifest, settings: Settings) -> None:
    """Before pip retries for minutes: every CPU-build pin of the lock that will be installed
    (torch==2.13.0+cpu) is offered by a place pip looks, or one line names the pins, the pages
    that do not answer, and the TORCHLAB_WITHOUT that gets past the ones a build may omit."""
    if settings.wheelhouse or "pytorch-cpu" not in torch_sources(lock, manifest):
        return
    python = settings["PYTHON"]
    links = [*torch_cpu_links(settings), *pip_setting(python, "find-links")]
    places = list(dict.fromkeys(links))
    here = this_platform()
    left_out = left_out_of([lock], manifest, settings, here)
    missing = {
        pin.package: pin.version
        for pin in local_pins(lock)
        if pin.holds_on(MACHINES[here])
        and pin.package not in left_out
        and not any(wheel_place_has(place, pin.package, pin.version) for place in places)
    }
    if not missing:
        return
    silent = [f"{url} ({why})" for url in places if "://" in url and (why := unanswered(url))]
    pins = ", ".join(f"{package}=={version}" for package, version in missing.items())
    said = f"; not answering: {', '.join(silent)}" if silent else ""
    omittable = sorted(
        set(missing)
        & {name for v in manifest.variants if v.lock == lock for name in v.omittable_on(here)}
    )
    fix = "point TORCH_CPU_WHEELS at a folder holding those wheels"
    if omittable:
        fix = f"set TORCHLAB_WITHOUT={','.join(omittable)} to go without it, or {fix}"
    raise HostError(
        f"requirements/{lock}.txt pins {pins}, which no place pip looks offers from here "
        f"({', '.join(places)}){said}",
        fix,
    )


def install_failure(lock: str, path: Path, settings: Settings) -> HostError:
    """The line for a failed install: the index that did not answer, where one did not."""
    indexes = pip_setting(settings["PYTHON"], "index-url") or ["https://pypi.org/simple/"]
    silent = [f"{url} ({why})" for url in indexes if (why := unanswered(url))]
    if silent and not settings.wheelhouse:
        return HostError(
            f"installing requirements/{lock}.txt into {path} failed: the package index "
            f"{', '.join(silent)} does not answer from here",
            "set PIP_INDEX_URL to a mirror this machine reaches, or install from a wheelhouse "
            "made elsewhere: make wheels there, then WHEELHOUSE=wheelhouse here",
        )
    return HostError(
        f"installing requirements/{lock}.txt into {path} failed (pip's output is above)",
        f"fix what it names, or remove {path} and run the command again",
    )


def fresh(path: Path, locks: list[str]) -> bool:
    """Whether the venv was built since its locks and pyproject.toml last changed."""
    marker = path / ".locked"
    inputs = [lock_file(name) for name in locks] + [ROOT / "pyproject.toml"]
    return marker.exists() and all(
        source.stat().st_mtime <= marker.stat().st_mtime for source in inputs
    )


def install_locks(path: Path, locks: list[str], manifest: Manifest, settings: Settings) -> None:
    # Without a wheelhouse, pip looks in the wheels make wheels left in its usual folder too.
    downloaded = ROOT / settings["WHEELHOUSE_DIR"]
    for name in locks:
        require_cpu_wheels(name, manifest, settings)
        with as_installed(name, manifest, settings) as lock_copy:
            installed = run(
                [
                    str(INSTALL_LOCK),
                    str(path),
                    str(lock_copy),
                    *sources(name, manifest, settings, settings.wheelhouse),
                ],
                env=dict(
                    shielded(name, manifest, downloaded / name, settings),
                    PYTHON=settings["PYTHON"],
                ),
            )
        if installed.returncode != 0:
            raise install_failure(name, path, settings)


def venv(path: Path, locks: list[str], manifest: Manifest, settings: Settings) -> bool:
    """A venv holding exactly these locks and the checkout's src/ (editable); False if it is
    fresh already."""
    require_locks(locks)
    if fresh(path, locks):
        return False
    if not (path / "bin/python").exists():
        require_python(settings["PYTHON"])
    install_locks(path, locks, manifest, settings)
    editable = run(
        [str(path / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--editable", str(ROOT)]
    )  # fmt: skip
    if editable.returncode != 0:
        raise HostError(
            f"installing the toolkit into {path} failed", f"remove {path} and try again"
        )
    # The marker says how the venv was built, so its own lock test knows what to compare.
    (path / ".locked").write_text(
        json.dumps(
            {
                "TORCHLAB_LOCKS": " ".join(str(lock_file(name)) for name in locks),
                "TORCHLAB_WITHOUT": " ".join(
                    sorted(left_out_of(locks, manifest, settings, this_platform()))
                ),
            }
        )
        + "\n"
    )
    return True
