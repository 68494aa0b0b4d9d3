"""deploy/slurm on a real Slurm cluster: the distributed proof and your script from sbatch on
2 nodes x 2 processes, a failing script's FAILED job, and the interactive lab reached from the
login node, then stopped by scancel. Each job runs the cpu image in podman on the nodes."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BATCH = REPO / "deploy/slurm/torchlab.sbatch"
LAB = REPO / "deploy/slurm/lab.sbatch"
# 2 fake GPUs a node make 2 processes a node (SLURM_GPUS_ON_NODE); 2 CPUs a task keep each
# rank to one thread on this 2-core machine.
TWO_BY_TWO = ("--gpus-per-node=2", "--cpus-per-task=2")


def podman_job(submission: Path, **more: str) -> dict[str, str]:
    return {
        "TORCHLAB_RUNTIME": "podman",
        "TORCHLAB_VARIANT": "cpu",
        "TORCHLAB_HOME": str(submission.parent / "home"),
        **more,
    }


def output_of(fields: dict[str, str]) -> str:
    return Path(fields["StdOut"]).read_text(errors="replace")


def test_the_proof_passes_on_two_nodes_of_two_processes_from_sbatch(cluster, submission):
    job = cluster.submit(BATCH, options=TWO_BY_TWO, cwd=submission, env=podman_job(submission))
    fields = cluster.wait(job, timeout=240)
    output = output_of(fields)
    assert fields["JobState"] == "COMPLETED", output[-3000:]
    assert "torchlab distributed proof: 4 ranks on 2 node(s), backend gloo, device cpu" in output
    rows = re.findall(r"^  (\d)\s+(\d)\s+(\d)\s+(node\d)\s+cpu", output, re.MULTILINE)
    assert rows == [("0", "0", "0", "node1"), ("1", "0", "1", "node1"),
                    ("2", "1", "0", "node2"), ("3", "1", "1", "node2")]  # fmt: skip
    # Every check of the proof passed (tests/host/distributed names them), DDP's last.
    checks = re.findall(r"^  ok  (.+)$", output, re.MULTILINE)
    assert len(checks) == 8 and checks[-1].startswith("DDP equals one process"), output[-3000:]


def test_your_script_gets_the_nodes_gpus_your_variables_and_your_folder(cluster, submission):
    (submission / "where.py").write_text(
        "import glob, json, os, socket\n"
        "rank = os.environ['RANK']\n"
        "report = {'host': socket.gethostname(), 'devices': sorted(glob.glob('/dev/nvidia*')),\n"
        "          'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'),\n"
        "          'course': os.environ.get('COURSE_NAME'), 'cwd': os.getcwd()}\n"
        "open(f'rank-{rank}.json', 'w').write(json.dumps(report))\n"
    )
    env = podman_job(submission, TORCHLAB_PASS="COURSE_NAME", COURSE_NAME="dl-101")
    job = cluster.submit(BATCH, "where.py", options=TWO_BY_TWO, cwd=submission, env=env)
    fields = cluster.wait(job, timeout=180)
    assert fields["JobState"] == "COMPLETED", output_of(fields)[-3000:]
    reports = [json.loads((submission / f"rank-{rank}.json").read_text()) for rank in range(4)]
    assert [report["host"] for report in reports] == ["node1", "node1", "node2", "node2"]
    for report in reports:
        # The step's two GPUs by CDI, renumbered from 0 inside: the job's indexes stay out.
        assert report["devices"] == ["/dev/nvidia0", "/dev/nvidia1"]
        assert report["cuda"] is None
        assert (report["course"], report["cwd"]) == ("dl-101", str(submission))
    assert (submission / "rank-3.json").stat().st_uid == submission.stat().st_uid


def test_a_failing_script_makes_a_failed_job_whose_output_says_why(cluster, submission):
    (submission / "train.py").write_text(
        "raise FileNotFoundError('no data set at /data/imagenet: mount it or set DATA_DIR')\n"
    )
    env = podman_job(submission)
    job = cluster.submit(BATCH, "train.py", options=TWO_BY_TWO, cwd=submission, env=env)
    fields = cluster.wait(job, timeout=180)
    output = output_of(fields)
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] != "0:0", fields
    assert "FileNotFoundError: no data set at /data/imagenet: mount it or set DATA_DIR" in output


def on_login_get(cluster, url: str) -> int:
    """The HTTP status a GET of url has from the login node."""
    asked = cluster.on_login("python3", "-c", (
        "import sys, urllib.error, urllib.request\n"
        "try:\n"
        "    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code)\n"
    ), url)  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    return int(asked.stdout)


def wait_for_line(cluster, job: str, output: Path, text: str, timeout: float = 120) -> str:
    """The job's output once it has text, while the job runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        written = output.read_text() if output.exists() else ""
        if text in written or cluster.job(job).get("JobState") != "RUNNING":
            return written
        time.sleep(0.25)
    return written


def test_the_lab_answers_from_the_login_node_with_its_token_and_scancel_ends_it(
    cluster, submission
):
    (submission / "mine.ipynb").write_text("{}")
    job = cluster.submit(LAB, "--variant", "cpu", options=("--gpus=1",), cwd=submission,
                         env=podman_job(submission))  # fmt: skip
    fields = cluster.wait(job, timeout=60, until={"RUNNING", "FAILED", "COMPLETED"})
    assert fields["JobState"] == "RUNNING", fields
    output_file = Path(fields["StdOut"])
    output = wait_for_line(cluster, job, output_file, "  stop it:")
    found = re.search(r"on the cluster: +(http://node1:(\d+)/lab)\?token=([0-9a-f]{48})$",
                      output, re.MULTILINE)  # fmt: skip
    assert found, output[-3000:]
    lab, port, token = found.groups()
    assert f"ssh -N -L {port}:node1:{port} root@login" in output
    assert f"http://localhost:{port}/lab?token={token}" in output
    assert f"scancel {job}" in output
    # The token is in the output: only its owner reads it.
    assert stat.S_IMODE(output_file.stat().st_mode) == 0o600

    api = lab.removesuffix("/lab") + "/api/contents"
    assert on_login_get(cluster, f"{api}?token={token}") == 200
    assert on_login_get(cluster, api) == 403
    listed = cluster.on_login("python3", "-c", (
        "import json, sys, urllib.request\n"
        "folder = json.load(urllib.request.urlopen(sys.argv[1]))\n"
        "print(json.dumps([entry['name'] for entry in folder['content']]))"
    ), f"{api}?token={token}")  # fmt: skip
    # The lab opens the submission folder: the user's files, and no course brought into it.
    assert "mine.ipynb" in json.loads(listed.stdout)
    assert not (submission / ".torchlab-course.json").exists()

    assert cluster.on_login("scancel", job).returncode == 0
    fields = cluster.wait(job, timeout=30)
    assert fields["JobState"] == "CANCELLED", fields
    assert cluster.strays() == []
