"""The `torchlab` command: what scripts, the images and CI rely on."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from torchlab import cli, healthcheck, variants

REPO = Path(__file__).resolve().parents[2]


def torchlab(*args: str, **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TORCHLAB_EXPECT"}
    env.update(environment)
    return subprocess.run(
        [sys.executable, "-m", "torchlab", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def report() -> dict:
    result = torchlab("probe", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_probe_json_reports_the_machine_and_the_build(report):
    machine = report["machine"]
    assert machine["python"].startswith("3.")
    assert machine["glibc"] and machine["cpu_count"] >= 1 and machine["ram_bytes"] > 0
    assert report["torch"]["version"]
    assert set(report["backends"]) == {"cpu", "cuda", "xla"}
    assert report["backends"]["cuda"]["facts"]["build_cuda"] is None  # the host's cpu build


def test_probe_json_reports_the_container_side(report):
    container = report["container"]
    assert container["uid"] == os.getuid() and container["gid"] == os.getgid()
    assert container["shm_bytes"] > 0
    assert {"labs_dir", "labs_exists", "labs_writable", "in_container"} <= set(container)
    assert set(container["environment"]) == {
        "TORCHLAB_EXPECT",
        "NVIDIA_VISIBLE_DEVICES",
        "CUDA_VISIBLE_DEVICES",
        "PJRT_DEVICE",
        "CUBLAS_WORKSPACE_CONFIG",
    }


def test_probe_json_has_a_timed_smoke_op_per_usable_device(report):
    cpu = report["backends"]["cpu"]
    assert cpu["usable"] and cpu["devices"] == ["cpu"]
    [smoke] = cpu["smoke"]
    assert smoke["ok"] and smoke["ms"] > 0 and smoke["relative_error"] < 1e-5
    for name in ("cuda", "xla"):
        entry = report["backends"][name]
        assert not entry["usable"] and "Fix:" in entry["hint"] and "smoke" not in entry


def test_probe_table_is_readable():
    result = torchlab("probe", "--no-smoke")
    assert result.returncode == 0
    for heading in ("Python", "glibc", "/dev/shm", "labs", "Devices", "cpu", "cuda", "xla"):
        assert heading in result.stdout


def test_expect_cuda_without_a_gpu_fails_with_one_line_that_names_the_fix():
    result = torchlab("probe", "--expect", "cuda", "--no-smoke")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("torchlab: expected cuda, but ") and "Fix: " in line
    assert "torchlab:cuda" in line


def test_expect_comes_from_the_environment_too():
    assert torchlab("probe", "--no-smoke", TORCHLAB_EXPECT="xla").returncode == 1
    assert torchlab("probe", "--no-smoke", TORCHLAB_EXPECT="cpu").returncode == 0


def test_expect_cpu_passes():
    assert torchlab("probe", "--expect", "cpu").returncode == 0


def test_check_build_asserts_what_the_manifest_promises_the_variant():
    assert torchlab("check-build", "cpu").returncode == 0
    wrong = torchlab("check-build", "cuda")
    assert wrong.returncode == 1
    assert wrong.stderr.splitlines()[0] == (
        "torchlab: the cuda image is wrong: torch 2.13.0+cpu has no CUDA; CUDA 13 is promised"
    )
    assert "torch 2.13.0+cpu has no CUDA library; kernels for ['sm_75'," in wrong.stderr
    assert "torch_xla not installed" in torchlab("check-build", "tpu").stderr


def test_check_build_reads_the_manifest_the_image_carries(tmp_path):
    manifest = tmp_path / "variants.toml"
    text = (REPO / "variants.toml").read_text()
    manifest.write_text(text.replace("build = { cpu_only = true }", "build = { cpu_onyl = true }"))
    wrong = torchlab("check-build", "cpu", TORCHLAB_MANIFEST=str(manifest))
    assert wrong.returncode == 1
    assert "the manifest asks for 'cpu_onyl', which the cpu backend does not check" in wrong.stderr


def test_check_build_of_an_unknown_variant_is_one_line_that_names_the_variants(capsys):
    assert cli.main(["check-build", "foo"]) == 1
    names = ", ".join(variants.load().names)
    assert capsys.readouterr().err == (
        f"torchlab: unknown image variant 'foo': choose one of {names}\n"
    )


def test_a_key_error_is_a_bug_and_keeps_its_traceback(monkeypatch):
    """Only the toolkit's own errors become one line: a KeyError from a bug in check-build's
    path is not passed off as a problem the user can fix."""
    monkeypatch.setattr(variants, "this_platform", lambda: {}["linux/riscv64"])
    with pytest.raises(KeyError, match="linux/riscv64"):
        cli.main(["check-build", "cpu"])


def test_bench_adds_device_measurements():
    result = torchlab("probe", "--json", "--bench")
    assert result.returncode == 0, result.stderr
    [cpu] = json.loads(result.stdout)["bench"]
    assert cpu["device"] == "cpu"
    assert cpu["matmul_float32_tflops"] > 0 and cpu["copy_gbps"] > 0


class FakeJupyter(http.server.BaseHTTPRequestHandler):
    """Answers /api/status like Jupyter Server: only with the right token."""

    def do_GET(self):
        if self.path == "/api/status" and self.headers["Authorization"] == "token right":
            body = json.dumps({"started": "2026-11-24T00:00:00Z"}).encode()
            self.send_response(200)
        else:
            body = b"{}"
            self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def jupyter(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeJupyter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    yield server.server_address[1], tmp_path
    server.shutdown()


def write_runtime_file(folder, port, token, pid=None):
    info = {
        "pid": pid or os.getpid(),
        "port": port,
        "token": token,
        "base_url": "/",
        "hostname": "0.0.0.0",
    }
    (folder / f"jpserver-{info['pid']}.json").write_text(json.dumps(info))


def test_healthcheck_asks_the_server_with_its_token(jupyter):
    port, runtime = jupyter
    write_runtime_file(runtime, port, "right")
    assert healthcheck.main() == 0


def test_healthcheck_fails_when_the_server_refuses(jupyter):
    port, runtime = jupyter
    write_runtime_file(runtime, port, "wrong")
    assert healthcheck.main() == 1


def test_healthcheck_fails_without_a_running_server(jupyter):
    port, runtime = jupyter
    write_runtime_file(runtime, port, "right", pid=2**22 + 1)  # no such process
    assert healthcheck.main() == 1


def test_a_node_of_a_distributed_run_is_healthy_while_its_torchrun_agent_runs(jupyter, tmp_path):
    """A ddp node serves no lab: its healthcheck follows torchrun (the script Python runs)."""
    agent = tmp_path / "bin" / "torchrun"
    agent.parent.mkdir()
    agent.write_text("import time\ntime.sleep(60)\n")
    assert healthcheck.main() == 1
    with subprocess.Popen([sys.executable, str(agent)]) as running:
        try:
            assert wait_until(lambda: running.pid in healthcheck.torchrun_agents())
            assert healthcheck.main() == 0
        finally:
            running.kill()
    assert healthcheck.main() == 1


def wait_until(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_selftest_passes_pytest_options_through():
    result = torchlab(
        "selftest",
        "--expect",
        "cpu",
        "-k",
        "test_pip_check_is_clean",
        "-q",
        TORCHLAB_SUITE="tests/device",
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 passed" in result.stdout


def test_notebooks_are_selected_by_the_packages_they_need():
    """CI runs an image's notebooks that need what the cpu image lacks: -m needs(package=...)
    selects exactly those whose metadata declares the package."""
    result = torchlab(
        "selftest", "--collect-only", "-q", "-m", "needs(package='torchvision')",
        TORCHLAB_SUITE="tests/device",
    )  # fmt: skip
    selected = re.findall(r"test_notebook_runs_and_checks_itself\[(\w+)\]", result.stdout)
    notebooks = [*(REPO / "labs").glob("*.ipynb"), *(REPO / "tests/device/notebooks").glob("*")]
    declared = [
        path.stem
        for path in notebooks
        if "torchvision"
        in json.loads(path.read_text())["metadata"].get("torchlab", {}).get("needs", ())
    ]
    assert len(declared) >= 3 and sorted(selected) == sorted(declared), result.stdout[-2000:]


def test_other_commands_refuse_unknown_arguments():
    result = torchlab("probe", "--no-smoke", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr


@pytest.fixture
def course_and_work(tmp_path):
    """An image's course (two notebooks and a data file) and an empty work folder."""
    source, work = tmp_path / "course", tmp_path / "work"
    (source / "data").mkdir(parents=True)
    (source / "01.ipynb").write_text("course 1")
    (source / "02.ipynb").write_text("course 2")
    (source / "data" / "x.csv").write_text("1,2")
    work.mkdir()
    return source, work


def test_the_course_arrives_once_and_the_start_up_line_says_so(course_and_work):
    from torchlab import course

    source, work = course_and_work
    first = course.deliver(source, work)
    assert first.new == ["01.ipynb", "02.ipynb", "data/x.csv"]
    assert first.line() == "torchlab: the course brought 3 new, 0 updated into your work folder"
    assert (work / "data" / "x.csv").read_text() == "1,2"
    again = course.deliver(source, work)
    assert again.line() is None


def test_a_newer_course_updates_untouched_files_and_lands_beside_edited_ones(course_and_work):
    from torchlab import course

    source, work = course_and_work
    course.deliver(source, work)
    (work / "02.ipynb").write_text("mine")
    (work / "data" / "x.csv").unlink()  # deleted on purpose: it stays deleted
    (source / "01.ipynb").write_text("course 1, fixed")
    (source / "02.ipynb").write_text("course 2, fixed")
    (source / "03.ipynb").write_text("course 3")

    brought = course.deliver(source, work)

    assert (brought.new, brought.updated, brought.beside) == (
        ["03.ipynb"],
        ["01.ipynb"],
        ["02.course-update.ipynb"],
    )
    assert (work / "01.ipynb").read_text() == "course 1, fixed"
    assert (work / "02.ipynb").read_text() == "mine"
    assert (work / "02.course-update.ipynb").read_text() == "course 2, fixed"
    assert not (work / "data" / "x.csv").exists()
    assert "1 beside your edits (02.course-update.ipynb)" in brought.line()
    assert course.deliver(source, work).line() is None


def test_a_folder_from_before_the_record_keeps_every_file(course_and_work):
    """Upgrading: work carried over from labs/ holds edits the record never saw."""
    from torchlab import course

    source, work = course_and_work
    (work / "01.ipynb").write_text("course 1")
    (work / "02.ipynb").write_text("my edit")
    (work / "mine.py").write_text("print('mine')")

    brought = course.deliver(source, work)

    assert (brought.new, brought.updated, brought.beside) == (
        ["data/x.csv"],
        [],
        ["02.course-update.ipynb"],
    )
    assert (work / "02.ipynb").read_text() == "my edit"
    assert (work / "mine.py").read_text() == "print('mine')"


def test_torchlab_course_fills_the_work_folder_and_refuses_without_a_course(
    course_and_work, tmp_path
):
    source, work = course_and_work
    environment = {"TORCHLAB_COURSE": str(source), "TORCHLAB_LABS": str(work)}
    result = torchlab("course", **environment)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == "torchlab: the course brought 3 new, 0 updated into your work folder"
    )
    missing = torchlab("course", **{**environment, "TORCHLAB_COURSE": str(tmp_path / "none")})
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"torchlab: there is no course at {tmp_path / 'none'}. "
        "Fix: set TORCHLAB_COURSE to the course"
    )


@pytest.mark.parametrize("without_course", [False, True])
def test_serve_brings_the_course_unless_told_to_leave_it_out(
    without_course, course_and_work, tmp_path
):
    """lab.sbatch opens a project's folder: --without-course keeps the course out of it."""
    source, work = course_and_work
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    jupyter = bin_folder / "jupyter"
    jupyter.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/jupyter-ran\n')
    jupyter.chmod(0o755)
    options = ["--without-course"] if without_course else []
    result = torchlab(
        "serve", *options, "--ServerApp.port=9999",
        TORCHLAB_COURSE=str(source), TORCHLAB_LABS=str(work),
        PATH=f"{bin_folder}:{os.environ['PATH']}", PYTHONUSERBASE=str(tmp_path / "user"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "jupyter-ran").read_text() == "lab --ServerApp.port=9999\n"
    brought = sorted(path.name for path in work.iterdir())
    assert brought == (
        [] if without_course else [".torchlab-course.json", "01.ipynb", "02.ipynb", "data"]
    )
