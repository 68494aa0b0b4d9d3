"""JupyterLab in a torchlab image: the labs folder as its root, and a token, always."""

import os

from tornado.httputil import HTTPServerRequest
from tornado.web import OutputTransform

c = get_config()  # noqa: F821 (Jupyter provides get_config to its config files)

# Inside the container's own network 0.0.0.0 is private: compose publishes the port on
# 127.0.0.1 only. lab-tpu shares the host's network, so it listens on LAB_BIND itself.
c.ServerApp.ip = os.environ.get("TORCHLAB_LISTEN", "0.0.0.0")
c.ServerApp.port = int(os.environ.get("TORCHLAB_PORT", "8888"))
c.ServerApp.port_retries = 0  # a taken port is an error, not a silent move to another one
c.ServerApp.root_dir = os.environ.get("TORCHLAB_LABS", "/home/lab/labs")
c.ServerApp.open_browser = False
# Root only under rootless Docker, where the container's root is the host user (the host tools
# set TORCHLAB_ALLOW_ROOT there): anywhere else the lab runs as the user's own uid.
c.ServerApp.allow_root = os.environ.get("TORCHLAB_ALLOW_ROOT") == "1"
# No calls home: the lab works the same on an air-gapped cluster.
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"

# The token comes from JUPYTER_TOKEN (compose passes the one in .env); when it is unset or
# empty, Jupyter generates one. A password (hash from jupyter_server.auth.passwd) replaces it:
# then the password is required and the token no longer opens the lab.
password_hash = os.environ.get("TORCHLAB_PASSWORD_HASH")
if password_hash:
    c.PasswordIdentityProvider.hashed_password = password_hash
    c.PasswordIdentityProvider.password_required = True
    c.PasswordIdentityProvider.allow_password_change = False
    c.IdentityProvider.token = ""


def seconds(variable: str, default: int) -> int:
    """A whole number of seconds from the environment. A bad value stops the server with one
    line: as an ordinary error Jupyter would log it and start without this whole file."""
    value = os.environ.get(variable) or str(default)
    if not value.isdigit():
        raise SystemExit(
            f"torchlab: {variable} is {value!r}, not a number of seconds. Fix: set it (make lab: "
            "LAB_CULL_IDLE_TIMEOUT, make hub: HUB_CULL_IDLE_TIMEOUT) to whole seconds, 0 for never"
        )
    return int(value)


# Kernel culling: a kernel idle for TORCHLAB_CULL_IDLE_TIMEOUT seconds is shut down and frees
# its memory, a GPU's included; 0 never culls (one person's lab: make lab's default). An open
# tab keeps a kernel connected but is no use of it (cull_connected), and a running cell is
# never cut off (cull_busy off). The server is checked every TORCHLAB_CULL_INTERVAL seconds,
# so a kernel goes at most that long after its timeout.
c.MappingKernelManager.cull_idle_timeout = seconds("TORCHLAB_CULL_IDLE_TIMEOUT", 0)
c.MappingKernelManager.cull_interval = seconds("TORCHLAB_CULL_INTERVAL", 60)
c.MappingKernelManager.cull_connected = True
c.MappingKernelManager.cull_busy = False

# Kernels talk to the server over Unix sockets in the runtime folder instead of TCP on
# loopback: no other process can reach them, and ipykernel no longer warns about plain TCP.
c.KernelManager.transport = "ipc"

# jupyter_server 2.21 hands its websocket ping settings, in milliseconds, to tornado 6.5, which
# reads seconds and warns at every connection that the timeout exceeds the interval
# (jupyter-server/jupyter_server#1612). No timeout can satisfy both readers, so the pings, which
# only spot vanished browsers, are off; JupyterLab reconnects a dropped websocket by itself.
c.ServerApp.tornado_settings = {"ws_ping_interval": 0}

# Colab's "Connect to a local runtime" (make lab-<variant> COLAB=1): Colab's page, and no other
# origin, may call this server, still with the token; Chrome asks a public page's requests to
# a local address first (private network access), and the answer must allow it.
COLAB_ORIGIN = "https://colab.research.google.com"


class OnlyColabIsAllowed(OutputTransform):
    """jupyter_server answers yes to any origin's preflight that asks to send a token: no
    page but Colab's is told yes, to any request."""

    def __init__(self, request: HTTPServerRequest) -> None:
        self.origin = request.headers.get("Origin")
        super().__init__(request)

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        if self.origin and self.origin != COLAB_ORIGIN:
            for name in [name for name in headers if name.lower().startswith("access-control-")]:
                del headers[name]
        return status_code, headers, chunk


if os.environ.get("TORCHLAB_COLAB") == "1":
    c.ServerApp.allow_origin = COLAB_ORIGIN
    c.ServerApp.allow_credentials = True
    c.ServerApp.tornado_settings["headers"] = {"Access-Control-Allow-Private-Network": "true"}
    # tornado's Application takes its output transforms from the settings it is given.
    c.ServerApp.tornado_settings["transforms"] = [OnlyColabIsAllowed]

# TensorBoard inside JupyterLab, through the lab's own URL and token (<lab>/tensorboard/, or
# its launcher tile): jupyter-server-proxy starts it on first use, on loopback, reading every
# run under the labs folder (SummaryWriter's runs/ included).
c.ServerProxy.servers = {
    "tensorboard": {
        "command": [
            "tensorboard",
            "--logdir",
            c.ServerApp.root_dir,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--path_prefix",
            "{base_url}tensorboard",
        ],
        "absolute_url": True,
        "timeout": 60,
        "launcher_entry": {"title": "TensorBoard"},
    }
}
