"""The CA certificates the labs and the hub's servers trust beside their image's own. A
company's proxy that inspects TLS signs with the company's own CA, which the host trusts and an
image does not: make lab and make hub hand the certificates on as PEM text
(TORCHLAB_CA_CERTIFICATES), which each container's entrypoint (docker/entrypoint) adds to its
own bundle at start. No image keeps them, so a published image carries no company's CA."""

from __future__ import annotations

import re
from pathlib import Path

from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings

# Where Debian and Ubuntu keep the CAs a host trusts beyond the public ones
# (update-ca-certificates adds them to the host's bundle).
HOST_LOCAL_CAS = Path("/usr/local/share/ca-certificates")
VARIABLE = "TORCHLAB_CA_CERTIFICATES"
PEM = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


def certificates_in(place: Path) -> list[str]:
    """Every PEM certificate in a file, or in the files of a folder and its subfolders."""
    files = [place]
    if place.is_dir():
        files = sorted(path for path in place.rglob("*") if path.is_file())
    found = []
    for path in files:
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as error:
            raise HostError(
                f"the CA certificate {path} cannot be read ({error.strerror})",
                f"make it readable (chmod a+r {path}), or set LAB_CA_CERTS to another place",
            ) from None
        found += PEM.findall(text)
    return found


def ca_certificates(settings: Settings) -> str:
    """The PEM text of the certificates LAB_CA_CERTS names: unset, the host's local CAs (none
    where the host has none); set and empty, none. A place named that holds none is an error."""
    configured = settings["LAB_CA_CERTS"]
    if not configured:
        if settings.given("LAB_CA_CERTS") or not HOST_LOCAL_CAS.is_dir():
            return ""
        return "\n".join(certificates_in(HOST_LOCAL_CAS))
    place = Path(configured)
    if not place.exists():
        raise HostError(
            f"LAB_CA_CERTS={place} does not exist",
            "name a PEM file or a folder of them, or set LAB_CA_CERTS= to trust none",
        )
    found = certificates_in(place)
    if not found:
        raise HostError(
            f"LAB_CA_CERTS={place} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            "name a PEM file or a folder of them (openssl x509 -inform der -in CA.cer -out "
            "CA.crt turns a DER one into PEM)",
        )
    return "\n".join(found)
