"""CI's plan: every phase `bash .ci/run` runs after installing its tools and starting the engine,
in order, each with its command and the reason for it; and the suite CI runs in each image (the
GitHub workflow's image jobs run the same suites: make ci-suite-<variant>).

Read from the manifest, the locks and the settings alone, never from built images, so it is
tested without Docker:
- The order of the images: the cpu image first; then the variants on a torch release the cpu
  suite does not run before those on its release; among those, a CPU mode that still runs the
  variant's own device (xla: XLA on the CPU) before one that falls back to the plain CPU (cuda);
  else the manifest's order.
- Each image's suite: every test, always. The notebooks (the `notebook` marker, most of a
  suite's time) once per torch release on a platform: they test the course against a release's
  Python API and the lab stack, which every image of that release shares; an image's own
  promises (its build, kernels, driver check) are in the tests it always runs and in check-build.
  A later image of a release runs again only the notebooks needing a package an earlier one left
  out (TORCHLAB_WITHOUT, within the manifest's `omittable`).
- The cpu image's other platforms (linux/arm64 on an x86 machine): built and tested here under
  emulation (QEMU's user mode), a named subset of the suite (EMULATED_SUBSET), then both
  platforms through a registry under one name.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from torchlab.variants import Manifest, Variant, this_platform
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.lockfiles.files import all_locks, omitted

NOTEBOOK = "notebook"  # the marker of a whole notebook (tests/device/test_notebooks.py)
# What CI runs of a suite in another platform's image, under emulation, where torch imports
# about 11x and a 1024x1024 matmul about 1500x slower than natively (make bench): the
# environment (installed packages equal the locks, torch the promised build, the device
# computes), the tensor and autograd core on the CPU, and one course lab. The probe runs before
# it, as before every suite.
EMULATED_SUBSET = ("test_environment", "test_tensors", "test_autograd", "02_tensors")
# How .ci/run runs a step: a phase; in the background from the start (beside the phases up to
# the one that waits for it); a phase that waits for the background step.
RUN, BACKGROUND, WAIT = "run", "background", "wait"
HOW = (RUN, BACKGROUND, WAIT)


@dataclass(frozen=True)
class Suite:
    """What CI runs in one image: its suite in CPU mode, with these pytest options."""

    variant: Variant
    options: tuple[str, ...]  # () for the whole suite
    why: str

    @property
    def command(self) -> tuple[str, ...]:
        return make(f"ci-suite-{self.variant.name}")


@dataclass(frozen=True)
class Step:
    """One step of .ci/run: its phase's name (the log, the timing summary), its commands (each
    runs while the ones before it succeed), why it is there, and how it runs."""

    name: str
    commands: tuple[tuple[str, ...], ...]
    why: str = ""
    how: str = RUN

    @property
    def command_line(self) -> str:
        return " && ".join(shlex.join(command) for command in self.commands)

    @property
    def line(self) -> str:
        """The step as make ci-plan prints it, and .ci/run reads it: four fields, tab-separated."""
        return "\t".join((self.how, self.name, self.command_line, self.why))


def make(target: str, **variables: str) -> tuple[str, ...]:
    return ("make", target, *(f"{name}={value}" for name, value in variables.items()))


def torch_release(variant: Variant, platform: str) -> str:
    """The torch release a variant ships on a platform, less its local build (2.13.0+cpu:
    2.13.0)."""
    return variant.platforms[platform].torch.partition("+")[0]


def own_device_in_cpu_mode(variant: Variant) -> bool:
    """Whether its suite in CPU mode still runs on its own device (xla's PJRT_DEVICE=CPU: XLA
    on the CPU), rather than the plain CPU (cuda's TORCHLAB_EXPECT=cpu)."""
    return variant.cpu_mode.get("TORCHLAB_EXPECT", variant.device) == variant.device


def order(manifest: Manifest, platform: str) -> list[Variant]:
    """The variants that ship for a platform, in the order CI runs their suites."""
    shipped = [variant for variant in manifest.variants if platform in variant.platforms]
    first = [variant for variant in shipped if variant.device == "cpu"][:1]
    covered = {torch_release(variant, platform) for variant in first}
    rest = [variant for variant in shipped if variant not in first]
    # sorted() is stable: what the key leaves equal keeps the manifest's order.
    return first + sorted(
        rest,
        key=lambda v: (torch_release(v, platform) in covered, not own_device_in_cpu_mode(v)),
    )


def placed(variant: Variant, platform: str, first: Variant | None) -> str:
    """Why a variant's suite stands where order() put it (first: the cpu image, if it ships)."""
    release = torch_release(variant, platform)
    if variant is first:
        return (
            "first: the other images build on its fresh no-cache layers, and its image serves "
            "the round trip, the rebuild check and the reproducibility check"
        )
    on = f"torch {release}"
    if first is not None and release == torch_release(first, platform):
        return f"{on}, the {first.name} suite's release: after the releases it does not run"
    unrun = f", which the {first.name} suite does not run" if first else ""
    mode = " ".join(f"{key}={value}" for key, value in variant.cpu_mode.items()) or "none"
    if own_device_in_cpu_mode(variant):
        return (
            f"{on}{unrun}; its CPU mode ({mode}) still runs {variant.device}: first of its release"
        )
    return f"{on}{unrun}; its CPU mode ({mode}) is the plain CPU: after those running their device"


def suites(manifest: Manifest, settings: Settings, platform: str | None = None) -> list[Suite]:
    """Each image's suite in CI on a platform (default: PLATFORM, else this machine's), in the
    order CI runs them."""
    platform = platform or settings.platform
    ordered = order(manifest, platform)
    if platform != this_platform():
        subset = " or ".join(EMULATED_SUBSET)
        why = (
            f"{platform} under emulation (QEMU) on this {this_platform()} machine: the named "
            f'subset of the suite (pytest -k "{subset}")'
        )
        return [Suite(variant, ("-k", subset), why) for variant in ordered]
    first = ordered[0] if ordered and ordered[0].device == "cpu" else None
    lacking: dict[str, set[str]] = {}  # release -> the packages its notebooks have not had
    ran: dict[str, str] = {}  # release -> the variant whose suite ran its notebooks
    found = []
    for variant in ordered:
        release = torch_release(variant, platform)
        left_out = omitted(variant, settings, platform)
        if release not in lacking:
            options: tuple[str, ...] = ()
            runs = "runs every test and every notebook"
            if left_out:
                runs += (
                    f"; built without {', '.join(sorted(left_out))} (TORCHLAB_WITHOUT), so the "
                    "notebooks needing it skip here"
                )
            lacking[release], ran[release] = set(left_out), variant.name
        else:
            again = sorted(lacking[release] - left_out)
            expression = " or ".join([f"not {NOTEBOOK}", *(f"needs(package='{p}')" for p in again)])
            options = ("-m", expression)
            runs = (
                f"runs every test but the notebooks, which {ran[release]}'s suite runs on torch "
                f"{release}"
            )
            if again:
                runs += f", and those needing {', '.join(again)}, which that image lacked"
            runs += f' (pytest -m "{expression}")'
            lacking[release] &= left_out
        why = f"{placed(variant, platform, first)}; {runs}"
        found.append(Suite(variant, options, why))
    return found


def suite_of(variant: Variant, manifest: Manifest, settings: Settings) -> Suite:
    """The suite CI runs in one image here (make ci-suite-<variant>)."""
    platform = settings.platform_of(variant, f"make ci-suite-{variant.name}")
    return next(suite for suite in suites(manifest, settings, platform) if suite.variant == variant)


def steps(manifest: Manifest, settings: Settings) -> list[Step]:
    """Every step of bash .ci/run after its tools, the engine and the host environment."""
    ordered = suites(manifest, settings)
    if not ordered or ordered[0].variant.device != "cpu":
        raise HostError(
            f"CI's plan starts from a cpu image, and variants.toml ships none for "
            f"{settings.platform}",
            f"run CI on a platform a cpu variant ships for, or add {settings.platform} to its "
            "platforms",
        )
    base, *others = ordered
    cpu = base.variant.name
    emulated = [p for p in base.variant.platforms if p != settings.platform]
    # Every lock but the other images' first: the cpu phases wait for those alone, and the
    # other images' wheels (the CUDA ones, most of the bytes) download beside them.
    others_own = {suite.variant.lock for suite in others}
    first_locks = [lock for lock in all_locks(manifest) if lock not in others_own]
    other_locks = [lock for lock in all_locks(manifest) if lock in others_own]
    first_downloads = (make("check-locks"), make("wheels", LOCKS=" ".join(first_locks)),
                       make("base-image"))  # fmt: skip
    other_downloads = (make("wheels", LOCKS=" ".join(other_locks)),) if other_locks else ()
    if emulated:
        other_downloads += (make("qemu"),)
        other_downloads += tuple(make("wheels", PLATFORM=p) for p in emulated)
        other_downloads += tuple(make("base-image", PLATFORM=p) for p in emulated)
    also = (
        f"; {' and '.join(emulated)}: QEMU (make qemu), every lock's wheels for it, each checked "
        "against its hash (so the images CI does not build there are install-verified), and its "
        "base image"
        if emulated
        else ""
    )
    first_name = f"locks, wheelhouse, base image for the {cpu} phases"
    other_name = "the other images' wheels"
    plan = [
        # The background steps run one after another, beside the phases up to each one's wait.
        Step(first_name, first_downloads,
             "they need only the network and the engine: beside the host environment, lint and "
             "the fast tests, which use the CPUs", BACKGROUND),
        Step(other_name, other_downloads,
             f"the other locks' wheels{also}: beside the {cpu} image's phases", BACKGROUND),
        Step("lint (make lint)", (make("lint"),)),
        Step("fast tests (make test)", (make("test"),), "the README's test command"),
        # A wait names its background step, whose commands it repeats (every field of a line
        # has words: .ci/run reads them).
        Step(f"{first_name}: the rest", first_downloads,
             "every build from here installs from the wheelhouse, on the base image", WAIT),
        Step(f"build {cpu} image, no cache",
             (("env", "DOCKER_BUILD_FLAGS=--no-cache", *make(f"build-{cpu}")),),
             "a clean build: the layer cache must not hide a broken step; the other images then "
             "share its fresh OS and lab layers (several no-cache builds would leave copies of "
             "them, and the classic builder's cache lookup could pick another variant's copy for "
             "the rebuild check)"),
        Step("build hub image (make hub-build)", (make("hub-build"),)),
        Step("image sizes", (make("image-sizes"),)),
        Step(f"{cpu} image to a file and back", (make("image-round-trip", VARIANT=cpu),),
             "make image-save, the image removed, make image-load: the suite that follows tests "
             "the loaded image; the layers beneath stay as the rebuild check's cache"),
        Step(f"{cpu} image suite (make ci-suite-{cpu})", (base.command,), base.why),
        Step("rebuild after a one-line change", (make("rebuild-check"),),
             "only the layers after the toolkit may rebuild, so a one-line change takes seconds"),
        Step(f"{cpu} slow tier: labs, browser, hub", (make(f"test-images-{cpu}"),)),
        Step("Slurm cluster (make test-slurm)", (make("test-slurm"),),
             f"a real Slurm cluster here (a login node and two compute nodes in namespaces of "
             f"their own), the {cpu} image in podman on the nodes: the proof and a failing "
             "script from sbatch, the lab reached from the login node and stopped by scancel"),
    ]  # fmt: skip
    if other_downloads:
        plan.append(
            Step(f"{other_name}: the rest", other_downloads,
                 "the other images build from their wheels", WAIT),
        )  # fmt: skip
    for suite in others:
        name = suite.variant.name
        plan += [
            Step(f"build {name} image on fresh layers", (make(f"build-{name}"),),
                 f"on the {cpu} image's fresh OS and lab layers"),
            Step(f"{name} image sizes", (make("image-sizes"),)),
            Step(f"{name} image suite on the CPU", (suite.command,), suite.why),
            Step(f"{name} slow tier", (make(f"test-images-{name}"),)),
            Step(f"remove the {name} image", (make("image-remove", VARIANT=name),),
                 "one image besides the cpu image on disk at a time: all of them at once outgrew "
                 "a CI machine's disk"),
        ]  # fmt: skip
    plan.append(
        Step("same layers in two builds",
             (make("verify-reproducible", VARIANT=cpu, AGAINST=base.variant.image),),
             f"one more no-cache build of the {cpu} image, from a fresh clone, must give the "
             f"layers of this run's own ({base.variant.image} came back from the file, and the "
             "rebuild check built it back from the checkout)"),
    )  # fmt: skip
    for platform in emulated:
        plan += [
            Step(f"build {cpu} image for {platform}, emulated",
                 (make(f"build-{cpu}", PLATFORM=platform),),
                 f"under QEMU (make qemu), on the {platform} base image; last, as Docker keeps "
                 f"one platform of a name and {base.variant.image} is {platform}'s from here"),
            Step(f"{cpu} image suite on {platform}, emulated",
                 (make(f"ci-suite-{cpu}", PLATFORM=platform),),
                 suite_of(base.variant, manifest, settings.with_values(PLATFORM=platform)).why),
        ]  # fmt: skip
    if emulated:
        plan.append(
            Step(f"{cpu} image's platforms through a registry", (make(f"test-platforms-{cpu}"),),
                 f"both platforms of {base.variant.image} and one manifest list over them in a "
                 "registry on 127.0.0.1 (Debian's docker-registry); pulled back, the name is this "
                 "machine's platform, and with --platform another's, under emulation"),
        )  # fmt: skip
    return plan
