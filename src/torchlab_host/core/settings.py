"""Every setting the host tools read, in one table, read once when a command starts.

Precedence, the same for every setting: a non-empty environment variable (a variable on make's
command line is one: `make lab-cpu LAB_PORT=8899`), else its line `NAME=value` in the checkout's
.env (where compose reads it too), else the default here. A setting whose blank is a value of
its own (TORCHLAB_REGISTRY= : never pull) takes a set but empty variable as said. The docs'
settings table is written from this table (make generate), so what a person reads is what the
tools do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torchlab.variants import MACHINES, Variant, this_platform
from torchlab_host import ROOT
from torchlab_host.core.errors import HostError


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # "" when unset means something of its own, said in meaning
    meaning: str
    topic: str  # the docs group settings by it
    blank_is_a_value: bool = False  # NAME= (set, empty) means "none", not the default
    in_env_file: bool = True  # False: make reads it too, and make never reads .env
    path: bool = False  # a folder: handed to another checkout's host tools made absolute


TOPICS = {
    "lab": "A lab (make lab-*)",
    "hub": "A hub for a class (make hub)",
    "ddp": "Training across containers (make test-ddp, make ddp)",
    "build": "Building and publishing images",
    "slurm": "A Slurm cluster (deploy/slurm)",
    "host": "The host tools and make bench",
}

TABLE = (
    Setting("LAB_PORT", "8888", "the port the lab listens on", "lab"),
    Setting("LAB_BIND", "127.0.0.1", "the address the lab listens on (0.0.0.0: every "
            "network, with a warning)", "lab"),
    Setting("LABS_DIR", "", "your work folder, mounted at /home/lab/labs (unset: work/)", "lab",
            path=True),
    Setting("LAB_DATA_DIR", "", "the packages you add and the caches (unset: lab-data/)", "lab",
            path=True),
    Setting("LAB_UID", "", "the uid the lab runs as (unset: yours, or sudo's caller)", "lab"),
    Setting("LAB_GID", "", "the gid the lab runs as (unset: LAB_UID's, or yours)", "lab"),
    Setting("LAB_CA_CERTS", "", "CA certificates the labs and the hub's servers trust beside "
            "the image's (a company's TLS-inspecting proxy): a PEM file or a folder of them "
            "(unset: the host's local CAs, /usr/local/share/ca-certificates; set and empty: none)",
            "lab", blank_is_a_value=True, path=True),
    Setting("COLAB", "", "1: Colab's page may connect to the lab (make lab-cpu COLAB=1)", "lab"),
    Setting("JUPYTER_TOKEN", "", "the lab's token (unset: a new one, written to .env)", "lab"),
    Setting("TORCHLAB_PASSWORD_HASH", "", "a Jupyter password hash to log in with, besides "
            "the token", "lab"),
    Setting("LAB_SHM_SIZE", "2gb", "the /dev/shm of each lab and in-image test run, where "
            "DataLoader workers pass batches (compose.yaml reads it; default: variants.toml's "
            "shm_size)", "lab"),
    # Off for one person's lab: its kernels are theirs, and a culled one loses what it held;
    # in a class (HUB_CULL_IDLE_TIMEOUT) an idle kernel keeps a GPU from the next student.
    Setting("LAB_CULL_IDLE_TIMEOUT", "0", "seconds before a kernel that runs nothing is shut "
            "down, an open tab or not, freeing its memory and GPU; a running cell keeps it (0: "
            "never; compose.yaml reads it)", "lab"),
    Setting("HUB_ADMIN", "", "the hub's admin user (required by make hub)", "hub"),
    Setting("HUB_PROFILES", "", "the variants the hub offers, e.g. cpu,cuda (unset: cpu and "
            "the accelerators this host's containers reach)", "hub"),
    Setting("HUB_BIND", "127.0.0.1", "the address the hub listens on", "hub"),
    Setting("HUB_PORT", "8000", "the port the hub listens on", "hub"),
    Setting("HUB_MEM_LIMIT", "4G", "each user's server's memory limit", "hub"),
    Setting("HUB_CPU_LIMIT", "2", "each user's server's CPUs", "hub"),
    Setting("HUB_IDLE_TIMEOUT", "3600", "seconds before an idle server is stopped", "hub"),
    Setting("HUB_GPUS_PER_USER", "1", "the GPUs each user's GPU server gets, its own by UUID (a "
            "MIG instance counts as one where a GPU is partitioned)", "hub"),
    Setting("HUB_SERVERS_PER_GPU", "1", "how many servers may share one GPU, at most 8 (1: "
            "none share)", "hub"),
    Setting("HUB_AUTHENTICATOR", "native", "how users sign in: native, github or generic",
            "hub"),
    Setting("HUB_NAME", "torchlab-hub", "the hub's container, network and volumes, and the "
            "prefix of its users'", "hub"),
    Setting("HUB_API_TOKEN", "", "a token for the hub's API (services, the tests)", "hub"),
    Setting("OAUTH_CLIENT_ID", "", "the OAuth app's id (github, generic)", "hub"),
    Setting("OAUTH_CLIENT_SECRET", "", "the OAuth app's secret (github, generic)", "hub"),
    Setting("OAUTH_CALLBACK_URL", "", "the hub's OAuth callback URL (github, generic)", "hub"),
    Setting("OAUTH_ALLOWED_USERS", "", "who may sign in with OAuth, comma separated", "hub"),
    Setting("OAUTH_ALLOWED_ORGS", "", "the GitHub organizations whose members may sign in",
            "hub"),
    Setting("OAUTH_AUTHORIZE_URL", "", "the provider's authorize URL (generic)", "hub"),
    Setting("OAUTH_TOKEN_URL", "", "the provider's token URL (generic)", "hub"),
    Setting("OAUTH_USERDATA_URL", "", "the provider's user data URL (generic)", "hub"),
    Setting("OAUTH_USERNAME_CLAIM", "", "the user data field that is the user name (generic)",
            "hub"),
    Setting("TORCHLAB_DDP_SHM_SIZE", "2gb", "each node's /dev/shm, where DataLoader workers "
            "pass batches (default: variants.toml's shm_size)", "ddp"),
    Setting("PLATFORM", "", "the platform to build, fetch or publish for, e.g. linux/arm64 "
            "(unset or empty: this machine's; for make wheels and publish: every one)", "build",
            blank_is_a_value=True),
    Setting("WHEELHOUSE", "", "a folder of wheels (make wheels) to install and build from, "
            "offline (empty: from the indexes)", "build", blank_is_a_value=True, path=True),
    Setting("LOCKS", "", "the locks make wheels downloads, space separated, e.g. 'lab cpu' "
            "(unset: every one)", "build"),
    Setting("WHEELHOUSE_DIR", "wheelhouse", "where make wheels puts the wheels", "build",
            path=True),
    Setting("WHEELHOUSE_PORT", "8799", "the loopback port an offline build's wheels are served "
            "on (fixed, so the layer cache keeps its URL)", "build"),
    Setting("BASE_IMAGE", "", "a local Debian base image instead of the pinned one (make "
            "base-image makes torchlab/debian:bookworm)", "build"),
    Setting("DEBIAN_MIRROR", "http://deb.debian.org/debian", "the Debian mirror make base-image "
            "installs from", "build"),
    Setting("DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security", "the Debian "
            "security mirror make base-image installs from", "build"),
    Setting("IMAGE_UID", "", "the uid of the image's user (unset: the Dockerfile's, 1000)",
            "build"),
    Setting("IMAGE_GID", "", "the gid of the image's user (unset: the Dockerfile's, 1000)",
            "build"),
    Setting("PIP_INDEX_URL", "", "the package index an online build and make check-locks ask "
            "(unset: PyPI)", "build"),
    Setting("TORCH_CPU_WHEELS", "", "pages or folders holding PyTorch's CPU wheels, space "
            "separated (unset: PyTorch's CPU index)", "build"),
    Setting("TORCHLAB_WITHOUT", "", "packages the manifest lets a build leave out, e.g. "
            "torchvision", "build"),
    Setting("DOCKER_BUILD_FLAGS", "", "more docker build options, e.g. --no-cache", "build"),
    Setting("SOURCE_DATE_EPOCH", "", "the time the image's files carry (unset: the commit's)",
            "build"),
    Setting("TORCHLAB_REGISTRY", "ghcr.io/torchlab", "where make publish pushes and make lab "
            "pulls from; set and empty: never pull", "build", blank_is_a_value=True),
    Setting("TORCHLAB_RUNTIME", "apptainer", "the container runtime deploy/slurm's scripts start "
            "the image with, and make slurm-image converts it for: apptainer, enroot (pyxis) or "
            "podman", "slurm"),
    Setting("PYTHON", "python3", "the Python 3.11 the host tools and venvs run with (the "
            "environment or make's line: not .env, which make does not read)", "host",
            in_env_file=False),
    Setting("VENV", ".venv", "the host environment's folder (the environment or make's line)",
            "host", in_env_file=False),
    Setting("UV", "uv", "the uv that make lock runs", "host"),
    Setting("BENCH_VARIANTS", "", "the images make bench measures (unset: every one)", "host"),
    Setting("BENCH_REPEATS", "3", "make bench's runs of each measure (at least 3)", "host"),
    Setting("BENCH_PARTS", "", "make bench's parts (unset: all)", "host"),
)  # fmt: skip

BY_NAME = {setting.name: setting for setting in TABLE}
# Read where the sudo that ran make says who called it: not a setting, a fact of this call.
CALLER = ("SUDO_UID", "SUDO_GID")
# The host's proxy, in the names every tool knows (either case): not settings of ours, the
# network's, handed on to what reaches the network (the labs, the hub's servers, builds).
PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
PROXY_VARIABLES = tuple(name for upper in PROXY_NAMES for name in (upper, upper.lower()))
LOOPBACK = ("localhost", "127.0.0.1", "::1")
# What compose.yaml and hub/compose.yaml read besides the settings: each worked out by the host
# tools and handed to compose on every run, over the environment and .env, so none is a setting.
HANDED_TO_COMPOSE = {
    "LAB_HOME_DIR": "the lab's home, the folder home in LAB_DATA_DIR",
    "TORCHLAB_COLAB": "1 where COLAB=1, else empty",
    "TORCHLAB_CA_CERTIFICATES": "the PEM text of LAB_CA_CERTS's certificates",
    "TORCHLAB_DDP_NODE": "a distributed run's node: its container's name",
    "TORCHLAB_DDP_IMAGE": "a distributed run's node: its image (the cpu image, or --image-of's)",
    "HUB_ENGINE_SOCKET": "the socket of the engine make hub drives (DOCKER_HOST's, if a socket)",
    "LAB_USERNS": "keep-id under rootless Podman (the lab's uid is the user's own), else empty",
    "LAB_ALLOW_ROOT": "1 under rootless Docker (its root is the host user), else empty",
    **dict.fromkeys(PROXY_VARIABLES, "the host's proxy, in both cases, loopback bypassed"),
}


def proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """The host's proxy settings, each in both cases (some tools read only one), with loopback
    never sent through the proxy: a lab's own healthcheck and a build's wheelhouse are there.
    Nothing where no proxy is set."""
    found = {}
    for name in PROXY_NAMES:
        value = environ.get(name) or environ.get(name.lower())
        if value:
            found[name] = value
    if not (found.get("HTTP_PROXY") or found.get("HTTPS_PROXY")):
        return {}
    bypassed = [host.strip() for host in found.get("NO_PROXY", "").split(",") if host.strip()]
    found["NO_PROXY"] = ",".join([*bypassed, *(host for host in LOOPBACK if host not in bypassed)])
    return {**found, **{name.lower(): value for name, value in found.items()}}


def env_file_lines(path: Path) -> dict[str, str]:
    """NAME=value lines of an .env file (NAME= too), as compose reads the simple ones."""
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):  # no .env: none set there
        return {}
    except OSError as error:  # sudo make lab-cpu wrote it as root, readable by root alone
        raise HostError(
            f"the settings file {path} cannot be read ({error.strerror})",
            f"sudo chown $(id -u):$(id -g) {path}",
        ) from None
    return dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(\S*)$", text, re.MULTILINE))


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, str]  # every setting of TABLE, resolved ("" when unset)
    origins: Mapping[str, str]  # name -> environment, .env or default
    caller: Mapping[str, str]  # SUDO_UID, SUDO_GID where sudo ran make
    env_file: Path
    proxies: Mapping[str, str] = field(default_factory=dict)  # the host's: proxies(environ)

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = None
    ) -> Settings:
        environ = os.environ if environ is None else environ
        env_file = ROOT / ".env" if env_file is None else env_file
        from_file = env_file_lines(env_file)
        values, origins = {}, {}
        for setting in TABLE:
            name = setting.name
            values[name], origins[name] = setting.default, "default"
            places = [("environment", environ)]
            if setting.in_env_file:
                places.append((".env", from_file))
            for origin, said in places:  # the first that says it, an empty value only if one
                if said.get(name) or (setting.blank_is_a_value and name in said):
                    values[name], origins[name] = said[name], origin
                    break
        caller = {name: environ[name] for name in CALLER if environ.get(name)}
        return cls(values, origins, caller, env_file, proxies(environ))

    def __getitem__(self, name: str) -> str:
        return self.values[name]  # a name outside TABLE is a bug: its KeyError shows

    def given(self, name: str) -> bool:
        """Set by the person (the environment or .env), not the default."""
        return self.origins[name] != "default"

    def with_values(self, **values: str) -> Settings:
        """These settings with some replaced, as if given (a command that sets them itself)."""
        return Settings(
            {**self.values, **values},
            {**self.origins, **dict.fromkeys(values, "environment")},
            self.caller,
            self.env_file,
            self.proxies,
        )

    def handed_on(self) -> dict[str, str]:
        """What the person set, for another checkout's host tools (a copy or a clone of this
        one, which has no .env): the environment they start with, folders made absolute."""
        handed = {}
        for setting in TABLE:
            if self.given(setting.name):
                value = self[setting.name]
                handed[setting.name] = (
                    str((ROOT / value).resolve()) if setting.path and value else value
                )
        return handed

    def words(self, name: str) -> list[str]:
        """A list setting: space or comma separated."""
        return self[name].replace(",", " ").split()

    @property
    def wheelhouse(self) -> Path | None:
        return Path(self["WHEELHOUSE"]) if self["WHEELHOUSE"] else None

    @property
    def platform(self) -> str:
        """The platform to build for: PLATFORM, else this machine's; one torchlab builds for."""
        chosen = self["PLATFORM"] or this_platform()
        if chosen not in MACHINES:
            raise HostError(
                f"PLATFORM={chosen}: torchlab builds images for {', '.join(MACHINES)} only",
                f"choose one of those, e.g. PLATFORM={next(iter(MACHINES))}",
            )
        return chosen

    def platform_of(self, variant: Variant, command: str) -> str:
        """The platform, which the variant must ship for; command retries with the first."""
        chosen = self.platform
        if chosen not in variant.platforms:
            shipped = ", ".join(variant.platforms)
            raise HostError(
                f"variants.toml ships {variant.image} for {shipped} only, not {chosen}",
                f"choose one of those: {command} PLATFORM={next(iter(variant.platforms))}",
            )
        return chosen

    @property
    def only_platform(self) -> str | None:
        """For commands that serve every platform unless told one (make wheels, publish)."""
        return self.platform if self["PLATFORM"] else None
