"""The hub's proxy: configurable-http-proxy and its dependencies as npm ci installs them from
hub/proxy's lock (integrity hashes checked), packed for the hub image's build context."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import tempfile
from pathlib import Path

from torchlab_host import ROOT
from torchlab_host.core.engine import run
from torchlab_host.core.errors import HostError

PROXY = ROOT / "hub/proxy"
PROXY_TARBALL = "proxy.tar.gz"


def packed(wheelhouse: Path | None) -> bytes:
    """From the wheelhouse (make wheels packs it there), else packed here, where npm reaches
    its registry."""
    if wheelhouse:
        found = wheelhouse / "hub" / PROXY_TARBALL
        if not found.exists():
            raise HostError(
                f"the wheelhouse {wheelhouse} has no packed proxy (hub/{PROXY_TARBALL})",
                f"fill it first: make wheels WHEELHOUSE_DIR={wheelhouse}",
            )
        return found.read_bytes()
    return pack()


def pack() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(PROXY / name, folder)
        installed = run(
            ["npm", "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--silent"],
            cwd=folder,
        )
        if installed.returncode != 0:
            raise HostError(
                "npm could not install configurable-http-proxy from hub/proxy's lock",
                "check that this machine reaches the npm registry (npm ping), then try again",
            )
        return reproducible_tarball(Path(folder), "node_modules")


def reproducible_tarball(root: Path, name: str) -> bytes:
    """root/name as a gzipped tar that depends on nothing but the files: sorted, owned by
    root, dated 0."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as archive,
    ):
        for path in sorted([root / name, *(root / name).rglob("*")]):
            info = archive.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_file():
                with open(path, "rb") as file:
                    archive.addfile(info, file)
            else:
                archive.addfile(info)
    return buffer.getvalue()


def write_to_wheelhouse(folder: Path) -> None:
    """make wheels packs the proxy beside the wheels, for offline hub builds."""
    (folder / "hub").mkdir(parents=True, exist_ok=True)
    (folder / "hub" / PROXY_TARBALL).write_bytes(pack())
