"""A real Slurm cluster on this one machine, for make test-slurm: Debian's slurmctld and slurmd
(22.05) and munge, with the config in cluster/ beside this file.

- The login node: slurmctld, in a network namespace holding the cluster's bridge, and UTS and
  mount namespaces of its own (hostname login, the cluster's /etc/hosts). Commands "on the
  login node" (sbatch, scontrol, curl) run in those namespaces.
- Two compute nodes: slurmd in network (a veth on that bridge), UTS and mount namespaces of
  their own, where /etc/hosts, /etc/cdi (the fake GPUs' CDI spec) and podman's settings are the
  cluster's, and crun does not see this VM's hybrid cgroup tree. Started with nsenter + unshare:
  `ip netns exec` remounts /sys, and slurmd then finds no cgroup filesystem.
- munged: our own, on a socket and with a key in the cluster's folder.

down() stops it all and says what it found left over: a daemon, a process in the cluster's
namespaces, a namespace, a container or a mount.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import stat
import string
import subprocess
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).parent / "cluster"
NODES = ("node1", "node2")
# The project's own test hosts, in namespaces this harness makes (never a real network).
ADDRESSES = {"login": "10.250.36.1", "node1": "10.250.36.11", "node2": "10.250.36.12"}
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "nsenter", "unshare", "ip", "podman")
NVIDIA_MAJOR = 195
CDI = Path("/etc/cdi")
PODMAN_DEFAULTS = Path("/usr/share/containers/containers.conf")
CGROUP_V2_IN_HYBRID = Path("/sys/fs/cgroup/unified")
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}  # fmt: skip


class Cluster:
    def __init__(self, prefix: str = "torchlab-test") -> None:
        self.prefix = prefix
        self.root = Path(tempfile.mkdtemp(prefix="torchlab-slurm-"))
        self.daemons: dict[str, subprocess.Popen] = {}
        self.namespaces: dict[str, int] = {}  # netns name -> its inode
        self.made_cdi = False

    # Bringing it up ---------------------------------------------------------------------

    def up(self, timeout: float = 30) -> None:
        self.root.chmod(0o755)
        for folder in ("munge", "etc", "dev", "spool", "state", "log", "cdi"):
            (self.root / folder).mkdir()
        self._write_config()
        for index in range(2):
            os.mknod(self.root / f"dev/nvidia{index}", 0o666 | stat.S_IFCHR,
                     os.makedev(NVIDIA_MAJOR, index))  # fmt: skip
        self._start_munge()
        self._make_network()
        if not CDI.exists():
            CDI.mkdir()  # a mount point: the nodes see the cluster's spec there, the host none
            self.made_cdi = True
        etc = self.root / "etc"
        binds = f"mount --bind {etc}/hosts /etc/hosts"
        self._daemon("slurmctld", "login", f"{binds} && exec slurmctld -D")
        node_binds = (
            f"{binds} && mount --bind {self.root}/cdi {CDI} && "
            f"mount --bind {etc}/containers.conf {PODMAN_DEFAULTS}"
        )
        if CGROUP_V2_IN_HYBRID.is_mount():
            node_binds += f" && umount {CGROUP_V2_IN_HYBRID}"
        for node in NODES:
            self._daemon(f"slurmd-{node}", node, f"{node_binds} && exec slurmd -D")
        self._wait_for_idle_nodes(timeout)

    def _write_config(self) -> None:
        values = {
            "root": str(self.root),
            "nofile": str(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
            **{f"{name}_address": address for name, address in ADDRESSES.items()},
        }
        for name in ("slurm.conf", "gres.conf", "hosts", "containers.conf"):
            text = string.Template((CONFIG / name).read_text()).substitute(values)
            (self.root / "etc" / name).write_text(text)
        shutil.copy(CONFIG / "cdi.yaml", self.root / "cdi" / "fake-gpus.yaml")

    def _start_munge(self) -> None:
        key_folder = self.root / "munge-key"
        key_folder.mkdir(mode=0o700)
        key = key_folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        munge = self.root / "munge"
        self._spawn("munged", [
            "munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
            f"--key-file={key}", f"--pid-file={munge}/munged.pid",
            f"--seed-file={munge}/munged.seed", f"--log-file={self.root}/log/munged.log",
        ])  # fmt: skip
        deadline = time.monotonic() + 10
        while not (munge / "munge.socket").exists():
            if time.monotonic() > deadline or self.daemons["munged"].poll() is not None:
                raise RuntimeError(f"munged did not start: {self.log('munged.out')}")
            time.sleep(0.05)

    def _make_network(self) -> None:
        login = self.netns("login")
        self._ip("netns", "add", login)
        self._ip("-n", login, "link", "add", "br0", "type", "bridge")
        self._ip("-n", login, "addr", "add", f"{ADDRESSES['login']}/24", "dev", "br0")
        self._ip("-n", login, "link", "set", "br0", "up")
        self._ip("-n", login, "link", "set", "lo", "up")
        for index, node in enumerate(NODES, 1):
            name = self.netns(node)
            self._ip("netns", "add", name)
            self._ip("link", "add", f"veth{index}", "netns", login, "type", "veth",
                     "peer", "name", "eth0", "netns", name)  # fmt: skip
            self._ip("-n", login, "link", "set", f"veth{index}", "master", "br0", "up")
            self._ip("-n", name, "addr", "add", f"{ADDRESSES[node]}/24", "dev", "eth0")
            self._ip("-n", name, "link", "set", "eth0", "up")
            self._ip("-n", name, "link", "set", "lo", "up")
        self.namespaces = {
            self.netns(host): os.stat(f"/run/netns/{self.netns(host)}").st_ino
            for host in ("login", *NODES)
        }

    def _daemon(self, name: str, host: str, script: str) -> None:
        """A daemon on a host of the cluster: its network namespace, then new UTS and mount
        namespaces named and set up by the script, which then execs the daemon."""
        self._spawn(name, [
            "nsenter", f"--net=/run/netns/{self.netns(host)}", "unshare", "--uts", "--mount",
            "sh", "-c", f"hostname {host} && {script}",
        ])  # fmt: skip

    def _spawn(self, name: str, command: list[str]) -> None:
        with (self.root / "log" / f"{name}.out").open("wb") as out:
            self.daemons[name] = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "SLURM_CONF": self.slurm_conf},
                start_new_session=True,
            )

    def _ip(self, *arguments: str) -> None:
        subprocess.run(["ip", *arguments], check=True, capture_output=True)

    def _wait_for_idle_nodes(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        states = ""
        while time.monotonic() < deadline:
            for name, daemon in self.daemons.items():
                if daemon.poll() is not None:
                    raise RuntimeError(f"{name} stopped: {self.log(f'{name}.out')}")
            states = self.on_login("sinfo", "--noheader", "--Node", "--format=%N %T").stdout
            if sorted(states.split()) == sorted([*NODES, "idle", "idle"]):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the nodes are not idle after {timeout} s: {states!r}")

    # Using it --------------------------------------------------------------------------

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def slurm_conf(self) -> str:
        return str(self.root / "etc" / "slurm.conf")

    def log(self, name: str) -> str:
        path = self.root / "log" / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def on_login(
        self, *command: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess:  # fmt: skip
        """A command on the login node: in slurmctld's namespaces, with the cluster's config."""
        pid = self.daemons["slurmctld"].pid
        return subprocess.run(
            ["nsenter", "-t", str(pid), "--net", "--mount", "--uts",
             f"--wd={cwd or self.root}", *command],
            env={**os.environ, "SLURM_CONF": self.slurm_conf, **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def submit(
        self, script: Path, *arguments: str, options: tuple[str, ...] = (),
        cwd: Path, env: dict[str, str] | None = None,
    ) -> str:  # fmt: skip
        """sbatch from the login node in cwd (the submission folder): the job's id."""
        done = self.on_login("sbatch", "--parsable", *options, str(script), *arguments,
                             cwd=cwd, env=env)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"sbatch failed: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """scontrol show job's fields (the one-line form, words without spaces)."""
        shown = self.on_login("scontrol", "show", "job", "--oneliner", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", shown))

    def wait(self, job_id: str, timeout: float, until: set[str] = FINISHED) -> dict[str, str]:
        """The job once its state is one of until (default: finished), polled at 0.25 s:
        sbatch --wait polls far more slowly."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            if fields.get("JobState") in until:
                return fields
            if time.monotonic() > deadline:
                state = fields.get("JobState")
                raise TimeoutError(f"job {job_id} is still {state} after {timeout} s")
            time.sleep(0.25)

    # Taking it down ---------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop every job and daemon and remove the namespaces and folders; what was left
        before anything was forced (empty when the cluster cleaned up after itself)."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            self.on_login("scancel", "--full", "--user=root")
            deadline = time.monotonic() + 30
            while (
                time.monotonic() < deadline
                and self.on_login("squeue", "--noheader", "--format=%i").stdout.strip()
            ):
                time.sleep(0.25)
        for name in reversed(list(self.daemons)):
            self._stop(self.daemons[name])
        left = self.leftovers()
        for pid in self._processes_in_namespaces():
            os.kill(pid, signal.SIGKILL)
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        if self.made_cdi:
            CDI.rmdir()
        shutil.rmtree(self.root, ignore_errors=True)
        return left + [f"namespace {name}" for name in self.namespaces if self._netns_exists(name)]

    @staticmethod
    def _stop(daemon: subprocess.Popen) -> None:
        if daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()

    def leftovers(self) -> list[str]:
        """What is left of the cluster: its daemons, what its jobs left, its mounts."""
        left = [f"daemon {name}" for name, d in self.daemons.items() if d.poll() is None]
        left += [f"process {pid} in the cluster's namespaces: {self._command_of(pid)}"
                 for pid in self._processes_in_namespaces()]  # fmt: skip
        left += [stray for stray in self.strays() if stray.startswith("container")]
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        return left + [f"mount {line.split()[4]}" for line in mounts if str(self.root) in line]

    def strays(self) -> list[str]:
        """What jobs left running: processes on the compute nodes but slurmd, and torchlab
        containers."""
        left = [f"process {pid} on a node: {self._command_of(pid)}"
                for pid in self._processes_in_namespaces(NODES)]  # fmt: skip
        containers = subprocess.run(
            ["podman", "ps", "--all", "--format", "{{.Names}}"], capture_output=True, text=True
        ).stdout.split()
        return left + [f"container {name}" for name in containers if name.startswith("torchlab-")]

    def _processes_in_namespaces(self, hosts: tuple[str, ...] = ("login", *NODES)) -> list[int]:
        """The live processes in the network namespaces of these hosts, but for the daemons."""
        ours = {f"net:[{self.namespaces[self.netns(host)]}]" for host in hosts}
        daemons = {d.pid for d in self.daemons.values() if d.poll() is None}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                pid = int(entry.name)
                if not zombie and pid not in daemons and os.readlink(entry / "ns/net") in ours:
                    found.append(pid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        return found

    @staticmethod
    def _command_of(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except OSError:
            return "?"

    @staticmethod
    def _netns_exists(name: str) -> bool:
        return Path(f"/run/netns/{name}").exists()
