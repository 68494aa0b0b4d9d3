"""Who a lab runs as and what it mounts: the host user (so saved files stay theirs), the labs
folder and the lab's data folder, the port and the address; each checked before it starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import ROOT
from .addresses import LOOPBACK, port_number
from .errors import HostError


@dataclass(frozen=True)
class LabSettings:
    uid: int
    gid: int
    port: int
    bind: str
    labs: Path
    data: Path

    def environment(self) -> dict[str, str]:
        """What compose.yaml interpolates for a lab."""
        return {
            "LAB_UID": str(self.uid),
            "LAB_GID": str(self.gid),
            "LAB_PORT": str(self.port),
            "LAB_BIND": self.bind,
            "LABS_DIR": str(self.labs),
            "LAB_DATA_DIR": str(self.data),
        }


def data_dir() -> Path:
    """The lab's data folder on the host: the packages you add and the caches (LAB_DATA_DIR)."""
    return Path(os.environ.get("LAB_DATA_DIR") or ROOT / "lab-data").resolve()


def writable_by(path: Path, uid: int, gid: int) -> bool:
    status = path.stat()
    if status.st_uid == uid:
        return status.st_mode & 0o300 == 0o300
    if status.st_gid == gid:
        return status.st_mode & 0o030 == 0o030
    return status.st_mode & 0o003 == 0o003


def prepare_data_dir(folder: Path, uid: int, gid: int) -> None:
    """Create the data folder for the lab user; refuse one they could not write to."""
    if not folder.exists():
        folder.mkdir(parents=True)
        if os.getuid() == 0:
            os.chown(folder, uid, gid)
    if not writable_by(folder, uid, gid):
        raise HostError(
            f"the lab's data folder {folder} is not writable by uid {uid}",
            f"sudo chown -R {uid}:{gid} {folder}, or point LAB_DATA_DIR at a folder of yours",
        )


def lab_user(labs: Path) -> tuple[int, int]:
    """The uid:gid the lab runs as, so files saved in labs/ belong to the host user."""
    if os.environ.get("LAB_UID"):
        uid = int(os.environ["LAB_UID"])
        return uid, int(os.environ.get("LAB_GID") or uid)
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    if os.environ.get("SUDO_UID"):
        return int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", os.environ["SUDO_UID"]))
    if labs.is_dir() and labs.stat().st_uid != 0:
        return labs.stat().st_uid, labs.stat().st_gid
    raise HostError(
        f"the lab never runs as root, and {labs} belongs to root",
        f"give the notebooks to a user (sudo chown -R USER: {labs}) or set LAB_UID and LAB_GID",
    )


def settings() -> LabSettings:
    labs = Path(os.environ.get("LABS_DIR") or ROOT / "labs").resolve()
    if not labs.is_dir():
        raise HostError(
            f"the labs folder {labs} is missing",
            "restore it (git checkout -- labs) or point LABS_DIR at your notebooks",
        )
    uid, gid = lab_user(labs)
    if not writable_by(labs, uid, gid):
        raise HostError(
            f"the labs folder {labs} is not writable by uid {uid}",
            f"sudo chown -R {uid}:{gid} {labs}",
        )
    port = port_number(os.environ.get("LAB_PORT") or "8888", "LAB", "make lab-cpu", 8888)
    data = data_dir()
    prepare_data_dir(data, uid, gid)
    return LabSettings(uid, gid, port, os.environ.get("LAB_BIND") or LOOPBACK, labs, data)
