"""deploy/slurm's refusals, without Slurm: a job with an unknown runtime, without its runtime,
or without its image is refused in one line, exit 2, before any node works (srun is never
called); so is a lab job with an option it does not know. And make slurm-image's refusals."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from torchlab import variants
from torchlab_host.core.errors import HostError
from torchlab_host.image import archive
from torchlab_host.slurm import images

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = [REPO / "deploy/slurm/torchlab.sbatch", REPO / "deploy/slurm/lab.sbatch"]
BASH = "/bin/bash"


def run(script: Path, tmp_path: Path, *arguments: str, fakes: dict[str, str], **environment):
    """The script as a batch job's first step would run it, with only these commands on PATH
    (each a shell script), and srun among them recording that it ran."""
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir(exist_ok=True)
    fakes = {"srun": f"touch {tmp_path}/srun-ran", **fakes}
    for name, body in fakes.items():
        (bin_folder / name).write_text(f"#!{BASH}\n{body}\n")
        (bin_folder / name).chmod(0o755)
    # PATH: the fakes alone, unless the script needs more (PATH_TAIL: the system's commands).
    tail = environment.pop("PATH_TAIL", "")
    env = {
        "PATH": f"{bin_folder}:{tail}".rstrip(":"),
        "HOME": str(tmp_path / "home"),
        **environment,
    }
    done = subprocess.run([BASH, str(script), *arguments], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=30)  # fmt: skip
    return done, (tmp_path / "srun-ran").exists()


def refused(done: subprocess.CompletedProcess, ran_srun: bool) -> str:
    assert (done.returncode, ran_srun) == (2, False), done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("torchlab: ") and ". Fix: " in line
    return line


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_an_unknown_runtime_is_one_line(script, tmp_path):
    line = refused(*run(script, tmp_path, fakes={}, TORCHLAB_RUNTIME="docker"))
    assert "TORCHLAB_RUNTIME=docker is not a runtime these scripts know" in line
    assert "Fix: TORCHLAB_RUNTIME=apptainer, enroot (pyxis) or podman" in line


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_missing_apptainer_image_is_one_line_with_the_command_that_makes_it(script, tmp_path):
    done = run(script, tmp_path, fakes={"apptainer": "exit 0"}, TORCHLAB_VARIANT="cpu")
    line = refused(*done)
    assert "the Apptainer image torchlab-cpu.sif is not here" in line
    assert "make slurm-image VARIANT=cpu TORCHLAB_RUNTIME=apptainer" in line


def test_an_image_missing_from_podman_is_one_line(tmp_path):
    # podman image exists answers 1 for an image it does not hold.
    fakes = {"podman": '[[ "$1 $2" == "image exists" ]] && exit 1; exit 0'}
    done = run(SCRIPTS[0], tmp_path, fakes=fakes, TORCHLAB_RUNTIME="podman",
               TORCHLAB_IMAGE="torchlab:cuda12")  # fmt: skip
    line = refused(*done)
    assert "the image torchlab:cuda12 is not in this node's podman storage" in line
    assert "podman load -i" in line


def test_a_runtime_the_node_lacks_is_one_line(tmp_path):
    line = refused(*run(SCRIPTS[1], tmp_path, fakes={}, TORCHLAB_RUNTIME="podman"))
    assert "podman is not on this node" in line


def test_without_pyxis_srun_has_no_container_image_and_enroot_is_refused(tmp_path):
    fakes = {"srun": 'echo "Usage: srun [OPTIONS(0)...]"; touch ' + f"{tmp_path}/srun-ran"}
    done, _ = run(SCRIPTS[0], tmp_path, fakes=fakes, TORCHLAB_RUNTIME="enroot")
    assert done.returncode == 2
    assert "srun has no --container-image: pyxis is not installed here" in done.stderr


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (("--gpus", "2"), "--gpus is not an option of lab.sbatch"),
        (("--port",), "--port needs a value"),
        (("--port", "eighty"), "--port eighty is not a port number"),
    ],
)
def test_the_lab_refuses_what_it_does_not_know_with_its_usage(arguments, said, tmp_path):
    line = refused(*run(SCRIPTS[1], tmp_path, *arguments, fakes={}))
    assert said in line and "Fix: sbatch [--time=H:MM:SS] deploy/slurm/lab.sbatch" in line


CPU = variants.load().variant("cpu")


def test_make_slurm_image_refuses_an_unknown_runtime_and_a_missing_tool(monkeypatch):
    with pytest.raises(HostError, match=r"TORCHLAB_RUNTIME=singularity is not a runtime"):
        images.convert(CPU, "singularity")
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    with pytest.raises(HostError, match=r"^enroot is not on this machine\. Fix: install enroot"):
        images.convert(CPU, "enroot")


def test_make_slurm_image_checks_an_image_save_file_before_converting(monkeypatch, tmp_path):
    monkeypatch.setattr(images.shutil, "which", lambda name: f"/usr/bin/{name}")
    converted = []
    monkeypatch.setattr(images, "to_podman", lambda variant, source: converted.append(source))
    file = tmp_path / "torchlab-cpu-inputs-0123.tar.gz"
    file.write_bytes(b"an image")
    with pytest.raises(HostError, match=r"\.sha256 is missing beside"):
        images.convert(CPU, "podman", str(file))
    archive.checksum_file(file).write_text(f"{'0' * 64}  {file.name}\n")
    with pytest.raises(HostError, match="does not match its checksum"):
        images.convert(CPU, "podman", str(file))
    archive.checksum_file(file).write_text(f"{archive.sha256_of(file)}  {file.name}\n")
    images.convert(CPU, "podman", str(file))
    assert converted == [file]


def test_enroot_reads_no_archive_and_says_how_to_load_it_first(monkeypatch, tmp_path):
    monkeypatch.setattr(images.shutil, "which", lambda name: f"/usr/bin/{name}")
    file = tmp_path / "x.tar.gz"
    file.write_bytes(b"")
    archive.checksum_file(file).write_text(f"{archive.sha256_of(file)}  x.tar.gz\n")
    with pytest.raises(
        HostError, match=r"Fix: make image-load FILE=.*x\.tar\.gz, then make slurm-image"
    ):
        images.convert(CPU, "enroot", str(file))


PROOF = ["torchlab", "torchrun", "-m", "torchlab", "distributed"]


@pytest.mark.parametrize("runtime", ["apptainer", "enroot"])
def test_the_sites_runtimes_start_each_node_with_the_folder_the_home_and_the_settings(
    runtime, tmp_path
):
    """What srun is handed for the runtimes this machine lacks (the podman one runs for real in
    make test-slurm): the image, the submission folder, the lab's home, the job's GPUs, and the
    torchrun settings over the image's environment."""
    image = tmp_path / "torchlab-cuda.sif"
    image.write_bytes(b"")
    fakes = {
        # pyxis' option first in a long help, and a large allocation: a reader that stops at
        # its first line would kill the writer by SIGPIPE, which pipefail takes for a failure.
        "srun": f'[[ $1 == --help ]] && {{ echo "  --container-image=[USER@][REGISTRY#]IMAGE"; '
        f'seq 100000; exit 0; }}\nprintf "%s\\n" "$@" > {tmp_path}/srun-args\n'
        f"env > {tmp_path}/srun-env",
        "apptainer": "exit 0",
        "scontrol": f"[[ $2 == hostnames ]] && seq -f node%g 100000 && exit 0\n"
        f'echo "   Command={SCRIPTS[0]} -m torchlab distributed"',
    }
    slurm = dict(SLURM_JOB_ID="7", SLURM_NNODES="2", SLURM_GPUS_ON_NODE="4",
                 SLURM_CPUS_PER_TASK="8", SLURM_JOB_NODELIST="node[1-2]")  # fmt: skip
    done, _ = run(SCRIPTS[0], tmp_path, fakes=fakes, TORCHLAB_RUNTIME=runtime,
                  TORCHLAB_IMAGE=str(image), NCCL_DEBUG="INFO", **slurm,
                  PATH_TAIL="/usr/bin:/bin")  # fmt: skip
    assert done.returncode == 0, done.stderr
    arguments = (tmp_path / "srun-args").read_text().splitlines()
    home = f"{tmp_path}/home/.torchlab/home"
    passed = ["NNODES", "NPROC_PER_NODE", "RDZV_HOST", "RDZV_PORT", "RDZV_ID", "OMP_NUM_THREADS"]
    if runtime == "apptainer":
        assert arguments == ["--ntasks-per-node=1", "apptainer", "exec", "--nv", "--home",
                             f"{home}:/home/lab", "--bind", str(tmp_path), "--pwd", str(tmp_path),
                             str(image), *PROOF]  # fmt: skip
        environment = (tmp_path / "srun-env").read_text().splitlines()
        for line in ("APPTAINERENV_NNODES=2", "APPTAINERENV_NPROC_PER_NODE=4",
                     "APPTAINERENV_RDZV_HOST=node1", "APPTAINERENV_RDZV_ID=7",
                     "APPTAINERENV_OMP_NUM_THREADS=2", "APPTAINERENV_NCCL_DEBUG=INFO"):  # fmt: skip
            assert line in environment
    else:
        assert arguments == ["--ntasks-per-node=1", f"--container-image={image}",
                             f"--container-workdir={tmp_path}",
                             f"--container-mounts={tmp_path}:{tmp_path},{home}:/home/lab",
                             f"--container-env={','.join(passed)},NCCL_DEBUG,NCCL_SOCKET_IFNAME",
                             *PROOF]  # fmt: skip
