"""JupyterHub for make hub: each user signs in and gets their own torchlab lab in a container.

Everything it reads comes from the environment the host tools give it (hub/compose.yaml, after
src/torchlab_host/hub/manage.py has decided and checked every value): HUB_ADMIN, HUB_AUTHENTICATOR
and OAUTH_*, HUB_PROFILES (each profile's image and how its server container runs, from
variants.toml), HUB_MEM_LIMIT, HUB_CPU_LIMIT, HUB_IDLE_TIMEOUT, HUB_GPUS (the host's GPUs and
MIG instances, to hand out by UUID), HUB_GPUS_PER_USER, HUB_SERVERS_PER_GPU, HUB_API_TOKEN,
and HUB_NAME, which names this hub's container (its host name on its network, of the same
name) and every user's container and volumes.
"""

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

from dockerspawner import DockerSpawner
from gpus import LABEL, NoGpuFree, choose, device_requests, held_by, wants_gpus
from tornado import web

import docker

c = get_config()  # noqa: F821 (JupyterHub provides get_config to its config file)
NAME = os.environ["HUB_NAME"]

# The hub's state volume (kept by make hub-down): its database, cookie secret and proxy token.
STATE = Path("/srv/jupyterhub")


def secret(name: str) -> str:
    """A secret made once, readable by the hub alone (mode 600), never printed."""
    path = STATE / name
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    return path.read_text().strip()


# The proxy listens on the container's port 8000, which compose publishes on HUB_BIND
# (127.0.0.1 unless told otherwise); the hub's API, on 8081, only on the hub's own network.
c.JupyterHub.bind_url = "http://0.0.0.0:8000"
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_url = f"http://{NAME}:8081"
c.JupyterHub.db_url = f"sqlite:///{STATE}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")  # made 600, once
c.ConfigurableHTTPProxy.auth_token = secret("proxy_auth_token")
# Users' servers outlive the hub: a hub restarted (a crash, an upgrade, a reboot) finds them
# running and routes to them again. make hub-down stops them itself.
c.JupyterHub.cleanup_servers = False

# Who may sign in. NativeAuthenticator: people sign up, an admin approves them (at
# /hub/authorize); the first admin is HUB_ADMIN, approved as soon as they sign up.
c.Authenticator.admin_users = {os.environ["HUB_ADMIN"]}
authenticator = os.environ.get("HUB_AUTHENTICATOR", "native")
if authenticator == "native":
    import nativeauthenticator

    c.JupyterHub.authenticator_class = "native"
    c.JupyterHub.template_paths = [f"{os.path.dirname(nativeauthenticator.__file__)}/templates/"]
    c.NativeAuthenticator.open_signup = False
    c.NativeAuthenticator.minimum_password_length = 8
    c.NativeAuthenticator.check_common_password = True
    # NativeAuthenticator decides who is approved; JupyterHub 5 lets in no one unless told.
    c.Authenticator.allow_all = True
else:
    # OAuth (oauthenticator): GitHub, or any OAuth2 provider (generic).
    c.JupyterHub.authenticator_class = authenticator
    c.OAuthenticator.client_id = os.environ["OAUTH_CLIENT_ID"]
    c.OAuthenticator.client_secret = os.environ["OAUTH_CLIENT_SECRET"]
    c.OAuthenticator.oauth_callback_url = os.environ["OAUTH_CALLBACK_URL"]
    c.Authenticator.allowed_users = set(os.environ.get("OAUTH_ALLOWED_USERS", "").split())
    if authenticator == "github":
        c.GitHubOAuthenticator.allowed_organizations = set(
            os.environ.get("OAUTH_ALLOWED_ORGS", "").split()
        )
    else:
        c.GenericOAuthenticator.authorize_url = os.environ["OAUTH_AUTHORIZE_URL"]
        c.GenericOAuthenticator.token_url = os.environ["OAUTH_TOKEN_URL"]
        c.GenericOAuthenticator.userdata_url = os.environ["OAUTH_USERDATA_URL"]
        c.GenericOAuthenticator.username_claim = os.environ.get("OAUTH_USERNAME_CLAIM", "email")


class SpawnFailed(web.HTTPError):
    """A server that could not start, in one line. JupyterHub logs an HTTPError's text without
    a traceback and shows its jupyterhub_message on the user's page (the error page, or the
    spawn page's progress)."""

    def __init__(self, line: str):
        super().__init__(500)
        self.jupyterhub_message = line

    def __str__(self) -> str:
        return self.jupyterhub_message


# Each GPU server gets devices of its own (hub/gpus.py): the least-held of those make hub found,
# by UUID. Those the running servers hold are read from their containers' label at each start
# (a restarted hub loses nothing; another hub's servers on this engine count too); those of
# servers still starting, from here until their containers exist.
NAMES = {device["uuid"]: device["name"] for device in json.loads(os.environ["HUB_GPUS"])}
DEVICES = list(NAMES)  # in nvidia-smi -L's order
GPUS_PER_USER = int(os.environ["HUB_GPUS_PER_USER"])
SERVERS_PER_GPU = int(os.environ["HUB_SERVERS_PER_GPU"])
starting: dict[str, tuple[str, ...]] = {}  # container name -> its devices


class LabSpawner(DockerSpawner):
    """DockerSpawner whose failures say what went wrong and what fixes it, and whose GPU
    servers get GPUs of their own."""

    # make hub builds or pulls every profile's image first; one missing later is an error to
    # report, not a pull from Docker Hub.
    pull_policy = "never"
    gpus: tuple[str, ...] = ()  # the UUIDs of this server's devices

    async def start(self):
        try:
            return await super().start()
        except docker.errors.ImageNotFound:
            raise SpawnFailed(
                f"the image {self.image} is not on the hub's machine. Fix: whoever runs the hub "
                "runs make hub again (it builds or pulls the images it serves)"
            ) from None
        except docker.errors.APIError as error:
            reason = " ".join(str(error.explanation or error).split())
            raise SpawnFailed(
                f"Docker refused your server's container: {reason}. Fix: whoever runs the hub "
                f"reads docker logs {NAME}"
            ) from None
        finally:
            starting.pop(self.container_name, None)  # its container, if made, says it now

    async def create_object(self):
        """The server's container (DockerSpawner's start makes it once the profile's image is
        chosen), with its devices named on its label and in its GPU request."""
        self.gpus = ()
        if wants_gpus(by_image[self.image]["host_config"]):
            running = await self.docker("containers", filters={"label": LABEL})
            try:  # no await from here to the reservation: no other start can come between
                self.gpus = choose(
                    DEVICES, {**held_by(running), **starting}, GPUS_PER_USER, SERVERS_PER_GPU
                )
            except NoGpuFree as refused:
                raise SpawnFailed(str(refused)) from None
            starting[self.container_name] = self.gpus
            given = ", ".join(f"{uuid} ({NAMES[uuid]})" for uuid in self.gpus)
            self.log.info("%s's server gets %s", self.user.name, given)
        return await super().create_object()

    async def progress(self):
        """The spawn page's events. A container that stops while it starts fails the page at
        once, with why, instead of a spinner until the hub's HTTP timeout (120 s)."""
        yield {"progress": 50, "message": "Spawning server..."}
        while True:  # the hub stops reading these when the spawn ends
            await asyncio.sleep(1)
            status = await self.poll() if self.object_id else None
            if status is not None:
                why = status or "your server's container is gone"
                self.log.error("%s's server stopped while starting: %s", self.user.name, why)
                yield {"progress": 100, "failed": True, "message": f"Spawn failed: {why}"}
                return

    async def poll(self):
        """None while the server's container runs; once it has stopped, why, in one line (the
        hub shows it when a server stops while it starts: 'Spawner failed to start
        [status=...]')."""
        container = await self.get_object()
        if container is None:
            return 0
        if container["State"]["Running"]:
            return None
        return await self.why_stopped(container["State"])

    async def why_stopped(self, state: dict) -> str:
        if state.get("OOMKilled"):
            return (
                f"your server ran out of memory (HUB_MEM_LIMIT="
                f"{os.environ['HUB_MEM_LIMIT']}). Fix: whoever runs the hub raises it: "
                "make hub HUB_MEM_LIMIT=4G"
            )
        logged = await self.docker("logs", self.container_id, tail=20)
        lines = [line for line in logged.decode(errors="replace").splitlines() if line.strip()]
        said = lines[-1].strip() if lines else "it printed nothing"
        return f"your server stopped (exit code {state['ExitCode']}): {said}"


# Each user's server: a container of the profile they pick, their own volumes where a single
# lab mounts work/, lab-data/ and its home, memory and CPU limits, no capabilities.
profiles = json.loads(os.environ["HUB_PROFILES"])
by_image = {profile["image"]: profile for profile in profiles}
c.JupyterHub.spawner_class = LabSpawner
c.DockerSpawner.allowed_images = {profile["name"]: profile["image"] for profile in profiles}


def apply_user_options(spawner, user_options: dict) -> None:
    """The one option a user gives, the profile's image, DockerSpawner applies at start (from
    allowed_images); anything else would be applied by nothing, so it is refused."""
    unknown = sorted(set(user_options) - {"image"})
    if unknown:
        raise web.HTTPError(400, f"unknown server options: {', '.join(unknown)}")


c.DockerSpawner.apply_user_options = apply_user_options
c.DockerSpawner.image = profiles[0]["image"]
c.DockerSpawner.cmd = ["torchlab", "singleuser"]
c.DockerSpawner.network_name = NAME
c.DockerSpawner.name_template = f"{NAME}-user-{{username}}"
c.DockerSpawner.remove = True
c.DockerSpawner.volumes = {
    f"{NAME}-{{username}}-home": "/home/lab",
    f"{NAME}-{{username}}-labs": "/home/lab/labs",
    f"{NAME}-{{username}}-data": "/home/lab/lab-data",
}
# The host's proxy (make hub hands it on, each name in both cases), for what a server fetches;
# the hub itself, on the servers' own network, never through it. The CA certificates a server
# trusts beside its image's (a TLS-inspecting proxy's): its entrypoint adds them to its bundle.
network = {
    name: os.environ[name]
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")
    if os.environ.get(name)
}
if network:
    for name in ("NO_PROXY", "no_proxy"):
        network[name] = ",".join(filter(None, [network.get(name), NAME]))
if os.environ.get("TORCHLAB_CA_CERTIFICATES"):
    network["TORCHLAB_CA_CERTIFICATES"] = os.environ["TORCHLAB_CA_CERTIFICATES"]
c.DockerSpawner.environment = network
c.DockerSpawner.mem_limit = os.environ["HUB_MEM_LIMIT"]
c.DockerSpawner.cpu_limit = float(os.environ["HUB_CPU_LIMIT"])
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120


def host_config(spawner) -> dict:
    """The chosen profile's container settings: confined like make lab-cpu (its processes
    limited too), shared memory for DataLoader workers, and what its device needs (the
    server's own GPUs). Its memory limit holds swap included: Docker's default lets a
    container swap as much again, which slows every other server on a machine with swap. A
    container that exits stays until the spawner's stop removes it (remove=True), so
    LabSpawner.poll can read why it stopped."""
    config = {
        **by_image[spawner.image]["host_config"],
        "memswap_limit": os.environ["HUB_MEM_LIMIT"],
        "auto_remove": False,
    }
    if "device_requests" in config:
        config["device_requests"] = device_requests(config["device_requests"], spawner.gpus)
    return config


def create_kwargs(spawner) -> dict:
    """The image's healthcheck is for make lab's start-up; the hub watches its servers itself,
    and one check every 2 s in each of 30 servers (0.11 s of CPU each) took most of a 2-core
    machine. A GPU server's label names its devices, for the next start to read."""
    labels = {LABEL: ",".join(spawner.gpus)} if spawner.gpus else {}
    return {"healthcheck": {"test": ["NONE"]}, "labels": labels}


c.DockerSpawner.extra_host_config = host_config
c.DockerSpawner.extra_create_kwargs = create_kwargs

# Idle servers stop after HUB_IDLE_TIMEOUT seconds; their files stay in the volumes.
timeout = int(os.environ["HUB_IDLE_TIMEOUT"])
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={timeout}",
            f"--cull-every={max(5, min(60, timeout // 2))}",
        ],
    }
]

# HUB_API_TOKEN (optional): a token for scripts that run the class, with the scopes to add
# users and to start and stop their servers (make bench uses one).
if os.environ.get("HUB_API_TOKEN"):
    c.JupyterHub.load_roles.append(
        {
            "name": "class-admin",
            "scopes": ["admin:users", "admin:servers", "list:users", "read:users"],
            "services": ["class-admin"],
        }
    )
    c.JupyterHub.services.append({"name": "class-admin", "api_token": os.environ["HUB_API_TOKEN"]})
