"""Who a lab runs as and what it mounts: the host user (so saved files stay theirs), the work
folder and the lab's data folder, the port and the address; each checked before it starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from torchlab import system
from torchlab_host import ROOT
from torchlab_host.core.addresses import port_number
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings


@dataclass(frozen=True)
class LabSettings:
    uid: int
    gid: int
    port: int
    bind: str
    labs: Path
    data: Path

    @property
    def home(self) -> Path:
        return home_dir(self.data)

    def environment(self) -> dict[str, str]:
        """What compose.yaml interpolates for a lab."""
        return {
            "LAB_UID": str(self.uid),
            "LAB_GID": str(self.gid),
            "LAB_PORT": str(self.port),
            "LAB_BIND": self.bind,
            "LABS_DIR": str(self.labs),
            "LAB_DATA_DIR": str(self.data),
            "LAB_HOME_DIR": str(self.home),
        }


def data_dir(settings: Settings) -> Path:
    """The lab's data folder on the host: the packages you add and the caches (LAB_DATA_DIR)."""
    return Path(settings["LAB_DATA_DIR"] or ROOT / "lab-data").resolve()


def writable_by(path: Path, uid: int, gid: int) -> bool:
    status = path.stat()
    if status.st_uid == uid:
        return status.st_mode & 0o300 == 0o300
    if status.st_gid == gid:
        return status.st_mode & 0o030 == 0o030
    return status.st_mode & 0o003 == 0o003


def home_dir(data: Path) -> Path:
    """The lab's home on the host, kept in its data folder: mounted at /home/lab."""
    return data / "home"


# Where the work and data folders are mounted inside the home: the engine would create these
# in the home's folder as root, where the user could not remove them.
MOUNTED_IN_HOME = ("labs", "lab-data")


def prepare_data_dir(folder: Path, uid: int, gid: int) -> None:
    """Create the data folder and the home in it for the lab user; refuse one they could not
    write to."""
    home = home_dir(folder)
    for made in (folder, home, *(home / name for name in MOUNTED_IN_HOME)):
        if not made.exists():
            made.mkdir(parents=True)
            if os.getuid() == 0:
                os.chown(made, uid, gid)
    for checked, what in ((folder, "data folder"), (home, "home")):
        if not writable_by(checked, uid, gid):
            raise HostError(
                f"the lab's {what} {checked} is not writable by uid {uid}",
                f"sudo chown -R {uid}:{gid} {folder}, or point LAB_DATA_DIR at a folder of yours",
            )


def lab_user(labs: Path, settings: Settings) -> tuple[int, int]:
    """The uid:gid the lab runs as, so the files it saves belong to the host user."""
    if settings["LAB_UID"]:
        uid = int(settings["LAB_UID"])
        return uid, int(settings["LAB_GID"] or uid)
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    caller = settings.caller
    if caller.get("SUDO_UID"):
        return int(caller["SUDO_UID"]), int(caller.get("SUDO_GID", caller["SUDO_UID"]))
    if labs.is_dir() and labs.stat().st_uid != 0:
        return labs.stat().st_uid, labs.stat().st_gid
    raise HostError(
        f"the lab never runs as root, and {labs} belongs to root",
        f"give the notebooks to a user (sudo chown -R USER: {labs}) or set LAB_UID and LAB_GID",
    )


# The checkout's labs/ is the course's source, which the images carry; a lab writes only into
# the work folder (LABS_DIR, else work/), mounted where the course lands.
COURSE_SOURCE = ROOT / "labs"
DEFAULT_WORK = ROOT / "work"


def shown(path: Path) -> str:
    """A path as a person types it in the checkout: work/x.py, else the absolute path."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def your_files_in_the_course_source() -> list[Path] | None:
    """The files of labs/ someone changed or added (git's view), or None without git."""
    try:
        listed = subprocess.run(
            # safe.directory: sudo make lab-cpu reads a checkout root does not own.
            ["git", "-C", str(ROOT), "-c", f"safe.directory={ROOT}", "ls-files", "-z",
             "--modified", "--others", "--exclude-standard", "--deduplicate", "--", "labs"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def start_work_folder(work: Path, uid: int, gid: int) -> None:
    """Create the work folder on a lab's first start. A checkout from before it existed keeps
    its labs/ untouched, and the notebooks changed or added there are copied into work/."""
    work.mkdir(parents=True)
    carried = your_files_in_the_course_source()
    if carried is None:  # no git to tell the course from your edits: all of labs/
        carried = [path for path in COURSE_SOURCE.rglob("*") if path.is_file()]
    for source in carried:
        target = work / source.relative_to(COURSE_SOURCE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if os.getuid() == 0:
        for path in [work, *work.rglob("*")]:
            os.chown(path, uid, gid)
    files = (
        f"{len(carried)} file you had in labs/ is"
        if len(carried) == 1
        else (f"{len(carried)} files you had in labs/ are")
    )
    copied = f", and {files} copied there" if carried else ""
    print(
        f"torchlab: your work now lives in {shown(work)}/{copied}; labs/ is the course's "
        "source and stays as it was",
        flush=True,
    )


def for_lab(settings: Settings) -> LabSettings:
    """Who the lab runs as and what it mounts, from the settings, each checked."""
    configured = settings["LABS_DIR"]
    labs = Path(configured).resolve() if configured else DEFAULT_WORK
    if configured and not labs.is_dir():
        raise HostError(
            f"the work folder LABS_DIR={labs} is missing",
            "create it, or unset LABS_DIR to work in work/",
        )
    if labs == COURSE_SOURCE:
        raise HostError(
            "LABS_DIR is labs/, the course's source, which no lab writes into",
            "unset LABS_DIR: your work lives in work/",
        )
    uid, gid = lab_user(labs if labs.is_dir() else ROOT, settings)
    if not labs.exists():
        start_work_folder(labs, uid, gid)
    if not writable_by(labs, uid, gid):
        raise HostError(
            f"the work folder {labs} is not writable by uid {uid}",
            f"sudo chown -R {uid}:{gid} {labs}",
        )
    port = port_number(settings["LAB_PORT"], "LAB", "make lab-cpu", 8888)
    data = data_dir(settings)
    prepare_data_dir(data, uid, gid)
    return LabSettings(uid, gid, port, settings["LAB_BIND"], labs, data)


def warn_if_on_windows(labs: Path) -> None:
    """On WSL, say it when the work folder lies on a Windows drive: every file the lab reads or
    writes there crosses to Windows (slow), and it has no Unix permissions."""
    drive = system.windows_drive(labs)
    if drive:
        print(
            f"torchlab: warning: the work folder {labs} is on a Windows drive ({drive}), where "
            "the lab's files are slow and have no Unix permissions; keep the checkout in WSL's "
            "own files (clone it under your WSL home, ~), or mkdir ~/work and make lab "
            "LABS_DIR=~/work",
            file=sys.stderr,
        )
