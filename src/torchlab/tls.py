"""pip in a lab, with one line that says why it failed where the package index's certificate
cannot be verified: a company's proxy that inspects TLS signs with a CA the lab was not handed.

pip itself logs the certificate failure among its retries and then ends in a resolver error
("ResolutionImpossible", blaming the locks' constraint), which hides the cause. The image's
`pip` commands and the kernel's %pip run pip through this module: after a failure it asks the
index for its certificate once, as pip would (the same CA bundle and proxy), and where that is
the cause, says so last. Standard library only.
"""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

DEFAULT_INDEX = "https://pypi.org/simple/"
TIMEOUT_S = 10


def index_of(arguments: Sequence[str], environ: Mapping[str, str] = os.environ) -> str:
    """The index pip was told to ask: --index-url (-i), else PIP_INDEX_URL, else PyPI."""
    for position, argument in enumerate(arguments):
        if argument in ("-i", "--index-url") and position + 1 < len(arguments):
            return arguments[position + 1]
        if argument.startswith("--index-url="):
            return argument.partition("=")[2]
    return environ.get("PIP_INDEX_URL") or DEFAULT_INDEX


def certificate_problem(url: str) -> str | None:
    """Why the index's certificate is refused (OpenSSL's words), or None where it is not."""
    address = urlsplit(url)
    if address.scheme != "https" or not address.hostname:
        return None
    host, port = address.hostname, address.port or 443
    # The bundle pip trusts: PIP_CERT's, else OpenSSL's default (SSL_CERT_FILE, the system's).
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        through = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        connection = http.client.HTTPSConnection(
            through.hostname, through.port or 80, context=context, timeout=TIMEOUT_S
        )
        connection.set_tunnel(host, port)
    else:
        connection = http.client.HTTPSConnection(host, port, context=context, timeout=TIMEOUT_S)
    try:
        connection.connect()
    except ssl.SSLCertVerificationError as error:
        return error.verify_message or str(error)
    except OSError:  # unreachable, refused, timed out: pip's own lines say so
        return None
    finally:
        connection.close()
    return None


def explanation(url: str, problem: str) -> str:
    return (
        f"torchlab: pip could not verify the certificate of {urlsplit(url).hostname} "
        f"({problem}): a proxy on this network inspects TLS with a CA this lab does not trust. "
        "Fix: start the lab with your company's CA in LAB_CA_CERTS (a PEM file or folder; the "
        "host's /usr/local/share/ca-certificates are handed on unless it is set), or its PEM "
        "text in the container's TORCHLAB_CA_CERTIFICATES"
    )


def say_why_it_failed(arguments: Sequence[str]) -> None:
    """After pip failed: the one line, where the index's certificate is the cause."""
    url = index_of(arguments)
    problem = certificate_problem(url)
    if problem:
        print(explanation(url, problem), file=sys.stderr, flush=True)


def main() -> None:
    """The image's pip, pip3 and pip3.11 commands: pip in this interpreter."""
    status = subprocess.call([sys.executable, "-m", "pip", *sys.argv[1:]])
    if status != 0:
        say_why_it_failed(sys.argv[1:])
    sys.exit(status)


def load_ipython_extension(shell) -> None:
    """The kernel's %pip (the image's IPython configuration loads this): IPython's own, which
    runs pip in the kernel's interpreter, then the same line after a failure."""
    import shlex

    magic = shell.find_line_magic("pip")

    def pip(line: str) -> None:
        magic(line)
        if shell.user_ns.get("_exit_code"):
            say_why_it_failed(shlex.split(line))

    pip.__doc__ = magic.__doc__
    shell.register_magic_function(pip, "line", "pip")
