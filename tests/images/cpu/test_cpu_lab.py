"""lab-cpu started the way a person starts it: its start-up line, its security, its files."""

from __future__ import annotations

import json
import os
import re
import socket

from support import (
    HOST_GID,
    HOST_UID,
    TOKEN,
    docker,
    make_lab,
    one_line_failure,
    run_in_kernel,
    save_notebook,
    wait_until,
)

from torchlab_host.core.engine import problem_lines

START_LINE = re.compile(
    r"^torchlab: lab-cpu is ready at (?P<url>http://127\.0\.0\.1:\d+/lab\?token=\S+) "
    r"\(ready in (?P<seconds>[\d.]+) s; stop: make down\)$"
)


def test_start_up_prints_one_line_with_the_url_and_how_to_stop(lab_cpu):
    started = lab_cpu.up()
    assert started.returncode == 0, started.stderr
    [line] = started.stdout.strip().splitlines()
    match = START_LINE.match(line)
    assert match, line
    assert match["url"] == lab_cpu.url(f"/lab?token={TOKEN}")
    assert float(match["seconds"]) < 60
    # The line comes once the server answers, not at Docker's next health check.
    assert lab_cpu.get("/api/status")[0] == 200
    # Docker's own health status, which make hub and a deployment watch, follows.
    assert wait_until(lambda: health(lab_cpu.container) == "healthy", timeout=15)


def health(container: str) -> str:
    return json.loads(docker("inspect", container).stdout)[0]["State"]["Health"]["Status"]


def test_requests_without_the_token_are_refused(running_lab_cpu):
    assert running_lab_cpu.get("/api/contents", token=None)[0] == 403
    assert running_lab_cpu.get("/api/contents", token="wrong")[0] == 403
    status, _ = running_lab_cpu.get("/lab", token=None, follow_redirects=False)
    assert status == 302
    status, body = running_lab_cpu.get("/api/contents")
    assert status == 200
    assert "02_tensors.ipynb" in [item["name"] for item in json.loads(body)["content"]]


def test_the_port_is_published_on_loopback_only(running_lab_cpu):
    ports = json.loads(docker("inspect", running_lab_cpu.container).stdout)[0]["NetworkSettings"]
    [binding] = ports["Ports"]["8888/tcp"]
    assert binding == {"HostIp": "127.0.0.1", "HostPort": str(running_lab_cpu.port)}


def test_the_lab_runs_as_the_host_user_and_not_as_root(running_lab_cpu):
    ids = docker("exec", running_lab_cpu.container, "id", "-u").stdout.strip()
    assert ids == str(HOST_UID)
    config = json.loads(docker("inspect", running_lab_cpu.container).stdout)[0]["HostConfig"]
    assert config["CapDrop"] == ["ALL"] and not config["Privileged"]


def test_the_token_appears_in_no_log(running_lab_cpu):
    logs = docker("logs", running_lab_cpu.container)
    assert "ServerApp" in logs.stdout + logs.stderr
    assert TOKEN not in logs.stdout + logs.stderr


def test_a_saved_notebook_lands_in_labs_owned_by_the_host_user(running_lab_cpu):
    save_notebook(running_lab_cpu, "mine.ipynb", "my notes")
    saved = running_lab_cpu.labs / "mine.ipynb"
    assert (saved.stat().st_uid, saved.stat().st_gid) == (HOST_UID, HOST_GID)
    assert "my notes" in saved.read_text()


def test_saved_work_survives_down_kill_and_a_rebuild(lab_cpu):
    assert lab_cpu.up().returncode == 0
    save_notebook(lab_cpu, "kept.ipynb", "still here")
    assert lab_cpu.host("down").returncode == 0
    assert "still here" in (lab_cpu.labs / "kept.ipynb").read_text()

    assert lab_cpu.up().returncode == 0
    docker("kill", lab_cpu.container)
    assert "still here" in (lab_cpu.labs / "kept.ipynb").read_text()

    rebuilt = lab_cpu.host("build", "cpu")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert lab_cpu.up().returncode == 0
    status, body = lab_cpu.get("/api/contents/kept.ipynb")
    assert status == 200 and "still here" in body


def test_a_port_in_use_is_one_line(lab_cpu):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", lab_cpu.port))
        taken.listen()
        line = one_line_failure(lab_cpu.up())
    assert f"port {lab_cpu.port} on 127.0.0.1 is already in use" in line


def test_a_missing_labs_folder_is_one_line(labs_folder):
    lab = make_lab("cpu", labs_folder.parent / "no-such-folder")
    assert "is missing" in one_line_failure(lab.up())


def test_a_labs_folder_the_user_cannot_write_is_one_line(labs_folder):
    os.chown(labs_folder, 0, 0)
    labs_folder.chmod(0o755)
    line = one_line_failure(make_lab("cpu", labs_folder).up())
    assert f"not writable by uid {HOST_UID}" in line


def test_an_address_that_is_not_this_machines_is_one_line(labs_folder):
    lab = make_lab("cpu", labs_folder)
    lab.environment["LAB_BIND"] = "192.0.2.55"
    line = one_line_failure(lab.up())
    assert "LAB_BIND=192.0.2.55 is not an address of this machine" in line


def test_a_kernel_runs_code_and_leaves_no_warning_or_error_in_the_log(running_lab_cpu):
    printed = run_in_kernel(running_lab_cpu.url("").rstrip("/"), TOKEN, "print(6 * 7)")
    assert printed == "42\n"
    assert "Kernel started" in running_lab_cpu.log()
    assert problem_lines(running_lab_cpu.log()) == []


def test_a_password_replaces_the_token(labs_folder):
    import http.cookiejar
    import urllib.parse
    import urllib.request

    from jupyter_server.auth import passwd

    lab = make_lab("cpu", labs_folder)
    lab.environment["TORCHLAB_PASSWORD_HASH"] = passwd("correct horse battery staple")
    try:
        started = lab.up()
        assert started.returncode == 0, started.stderr
        assert "(log in with your password)" in started.stdout and TOKEN not in started.stdout
        assert lab.get("/api/contents")[0] == 403  # the token no longer opens the lab

        cookies = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
        browser.open(lab.url("/login")).read()
        xsrf = next(cookie.value for cookie in cookies if cookie.name == "_xsrf")
        form = {"password": "correct horse battery staple", "_xsrf": xsrf}
        browser.open(lab.url("/login"), urllib.parse.urlencode(form).encode()).read()
        with browser.open(lab.url("/api/contents")) as response:
            assert "02_tensors.ipynb" in response.read().decode()
    finally:
        lab.host("down")


def test_the_dashboards_answer_behind_the_token_and_say_there_is_no_gpu(running_lab_cpu):
    status, body = running_lab_cpu.get("/api/metrics/v1")
    assert status == 200 and json.loads(body)["rss"] > 0
    status, body = running_lab_cpu.get("/nvdashboard/accelerators/check")
    assert status == 200
    assert {key: json.loads(body)[key] for key in ("has_gpu", "ngpus")} == {
        "has_gpu": False,
        "ngpus": 0,
    }
    # Nothing in the server's log about the missing GPU (what follows logs its refusals).
    assert problem_lines(running_lab_cpu.log()) == []
    # No GPU, so no GPU feeds.
    assert running_lab_cpu.get("/nvdashboard/gpu_utilization")[0] == 404
    assert running_lab_cpu.get("/api/metrics/v1", token=None)[0] == 403
    # Without the token the dashboard's page sends you to the login page.
    status, _ = running_lab_cpu.get(
        "/nvdashboard/accelerators/check", token=None, follow_redirects=False
    )
    assert status in (302, 403)
