"""make hub with the cpu image, driven as a class would use it, in a real browser.

A teacher (the admin) and two students sign up; the teacher approves the students; each starts
a server, saves a notebook and finds it after a restart of the server and of the hub; neither
reaches the other's server; the idle culler stops an idle server; make hub-down leaves nothing
running. The hub under test has a name of its own (HUB_NAME), so a real hub is never touched.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import nbformat
import pytest
from support import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    REPO,
    docker,
    free_port,
    remove_hub,
    require_image,
    wait_until,
)

HUB_NAME = "torchlab-hub-test"
TEACHER, ALICE, BOB, CAROL = "teacher", "alice", "bob", "carol"
PASSWORDS = {
    TEACHER: "chalk-and-board-42",
    ALICE: "alice-in-the-lab",
    BOB: "bob-builds-models",
    CAROL: "carol-computes-a-lot",
}


@dataclass
class Hub:
    port: int
    environment: dict[str, str] = field(default_factory=dict)

    def host(self, *arguments: str, **settings: str):
        import subprocess

        return subprocess.run(
            [sys.executable, "-m", "torchlab_host", *arguments],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=dict(self.environment, **settings),
            timeout=900,
        )

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def containers(prefix: str = HUB_NAME) -> list[str]:
    listed = docker("ps", "--all", "--format", "{{.Names}}", "--filter", f"name=^{prefix}")
    return listed.stdout.split()


@pytest.fixture(scope="module")
def hub():
    require_image("torchlab:cpu")
    remove_hub(HUB_NAME)
    port = free_port()
    hub = Hub(
        port,
        dict(
            os.environ,
            HUB_NAME=HUB_NAME,
            HUB_ADMIN=TEACHER,
            HUB_PORT=str(port),
            HUB_PROFILES="cpu",
            HUB_MEM_LIMIT="2G",
            HUB_CPU_LIMIT="1",
            HUB_IDLE_TIMEOUT="3600",
        ),
    )
    started = hub.host("hub")
    assert started.returncode == 0, started.stdout + started.stderr
    yield hub
    hub.host("hub-down")
    remove_hub(HUB_NAME)


@pytest.fixture(scope="module")
def browser(hub):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Chromium at {CHROMIUM}", pytrace=False)
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


def sign_up(browser, hub: Hub, name: str) -> str:
    page = browser.new_page()
    page.goto(hub.url("/hub/signup"))
    page.fill("#username_input", name)
    page.fill("#password_input", PASSWORDS[name])
    page.fill("#password_confirmation_input", PASSWORDS[name])
    page.click("#signup_submit")
    page.wait_for_load_state()
    said = page.locator(".alert").inner_text()
    page.close()
    return said


def log_in(browser, hub: Hub, name: str, password: str | None = None):
    """A browser session of one user (a context of its own: its own cookies)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(hub.url("/hub/login"))
    page.fill("#username_input", name)
    page.fill("#password_input", password or PASSWORDS[name])
    page.click("#login_submit")
    page.wait_for_load_state()
    return page


def approve(browser, hub: Hub, *students: str) -> None:
    """The teacher approves students who signed up, at /hub/authorize."""
    teacher = log_in(browser, hub, TEACHER)
    teacher.goto(hub.url("/hub/authorize"))
    for student in students:
        teacher.click(f"a[href$='authorize/{student}']")
        teacher.wait_for_load_state()
    teacher.context.close()


def api(page, method: str, path: str, body: dict | None = None):
    """A request with the page's session, as JupyterLab's own calls are made (XSRF included)."""
    xsrf = next((c["value"] for c in page.context.cookies() if c["name"] == "_xsrf"), "")
    return page.context.request.fetch(
        page.url.split("/hub/")[0].split("/user/")[0] + path,
        method=method,
        headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"},
        data=json.dumps(body) if body is not None else None,
    )


def start_server(page, hub: Hub, name: str) -> float:
    """Start the user's server from the spawn page, picking the cpu profile where the hub offers
    more than one; seconds to ready."""
    start = time.monotonic()
    page.goto(hub.url("/hub/spawn"))
    if page.locator("select[name=image]").count():
        page.select_option("select[name=image]", "cpu")
        page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"**/user/{name}/lab**", timeout=180_000)
    page.locator(".jp-DirListing-item").first.wait_for(timeout=120_000)
    return time.monotonic() - start


def stop_server(page, hub: Hub, name: str) -> None:
    """Stop the user's server from the hub's home page, as a student does."""
    # The button's handler is bound by a script require.js loads after the page's load event:
    # a click before the network settles does nothing, and a student would just click again.
    page.goto(hub.url("/hub/home"), wait_until="networkidle")
    with page.expect_response(
        lambda response: (
            response.request.method == "DELETE"
            and urlsplit(response.url).path == f"/hub/api/users/{name}/server"
        )
    ) as stopped:
        page.click("#stop")
    assert stopped.value.status in (202, 204), stopped.value.status
    assert wait_until(lambda: not containers(f"{HUB_NAME}-user-{name}"), timeout=120)


def save_notebook(page, name: str, text: str) -> None:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    body = {"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(notebook))}
    saved = api(page, "PUT", f"/user/{name}/api/contents/mine.ipynb", body)
    assert saved.status in (200, 201), saved.text()


def saved_text(page, name: str) -> str | None:
    answer = api(page, "GET", f"/user/{name}/api/contents/mine.ipynb")
    return answer.text() if answer.status == 200 else None


def test_a_class_signs_up_is_approved_and_works_in_its_own_labs(hub, browser):
    assert "the signup was successful" in sign_up(browser, hub, TEACHER).lower()
    for student in (ALICE, BOB):
        assert "sent to the admin" in sign_up(browser, hub, student).lower()

    unapproved = log_in(browser, hub, ALICE)
    assert "/hub/login" in unapproved.url  # not in before the teacher says so
    assert "has not been authorized by an administrator yet" in unapproved.content()
    unapproved.context.close()

    approve(browser, hub, ALICE, BOB)

    for student in (ALICE, BOB):
        page = log_in(browser, hub, student)
        start_server(page, hub, student)
        save_notebook(page, student, f"{student}'s notes")
        # The course came with the server, into the student's own volume.
        listing = api(page, "GET", f"/user/{student}/api/contents").json()
        assert "05_classification.ipynb" in [item["name"] for item in listing["content"]]
        stop_server(page, hub, student)
        start_server(page, hub, student)
        assert f"{student}'s notes" in saved_text(page, student)
        page.context.close()


def test_a_student_reaches_neither_anothers_server_nor_files(hub, browser):
    alice = log_in(browser, hub, ALICE)
    assert api(alice, "GET", f"/user/{BOB}/api/contents/mine.ipynb").status in (403, 404)
    alice.goto(hub.url(f"/user/{BOB}/lab"))
    assert f"/user/{BOB}/lab" not in alice.url or "403" in alice.content()
    assert "bob's notes" not in alice.content()
    alice.context.close()


def test_a_wrong_password_is_refused(hub, browser):
    page = log_in(browser, hub, ALICE, password="not-alices-password")
    assert "/hub/login" in page.url
    assert "Invalid username or password." in page.locator("body").inner_text()
    page.context.close()


def spawn_failure(page, hub: Hub) -> str:
    """Start the user's server and return what the page then says: a failure within the first
    seconds is the hub's error page, a later one the spawn page's progress message."""
    page.goto(hub.url("/hub/spawn"))
    failed = page.get_by_text("Spawn failed").or_(page.get_by_text("Internal Server Error"))
    failed.first.wait_for(timeout=150_000)
    return " ".join(page.locator("body").inner_text().split())


def test_a_server_that_cannot_start_says_why_on_the_users_page_and_in_the_hub_log(hub, browser):
    assert "sent to the admin" in sign_up(browser, hub, CAROL).lower()
    approve(browser, hub, CAROL)
    # The profile's image gone from the machine (its inputs tag keeps the layers), before
    # carol signs in: signing in starts her server.
    image = docker("image", "inspect", "--format", "{{.Id}}", "torchlab:cpu").stdout.strip()
    docker("image", "rm", "torchlab:cpu")
    try:
        carol = log_in(browser, hub, CAROL)
        said = spawn_failure(carol, hub)
    finally:
        docker("image", "tag", image, "torchlab:cpu")
    gone = (
        "the image torchlab:cpu is not on the hub's machine. Fix: whoever runs the hub runs "
        "make hub again"
    )
    assert gone in said

    # A work folder the server cannot write: it stops at once, and its own last line is shown
    # (the hub's fixture removes the volume).
    volume = f"{HUB_NAME}-{CAROL}-labs"
    docker(
        "run", "--rm", "--user", "0", "--entrypoint", "bash", "-v", f"{volume}:/home/lab/labs",
        "torchlab:cpu", "-c", "chown root:root /home/lab/labs && chmod 755 /home/lab/labs",
    )  # fmt: skip
    said = spawn_failure(carol, hub)
    carol.context.close()
    stopped = (
        "your server stopped (exit code 1): torchlab: the labs folder /home/lab/labs is not "
        "writable by uid 1000"
    )
    assert stopped in said

    logged = docker("logs", HUB_NAME)
    assert f"Error starting {CAROL}'s server: {gone}" in logged.stdout + logged.stderr
    assert f"{CAROL}'s server stopped while starting: {stopped}" in logged.stdout + logged.stderr


def test_the_hub_restarted_keeps_users_volumes_and_files_and_culls_idle_servers(hub, browser):
    assert hub.host("hub-down").returncode == 0
    assert containers() == []  # the hub and every user's server
    networks = docker("network", "ls", "--quiet", "--filter", f"name=^{HUB_NAME}$").stdout
    assert networks.split() == []  # which the servers held while the hub went
    volumes = docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    for name in (f"{HUB_NAME}-state", f"{HUB_NAME}-{ALICE}-labs", f"{HUB_NAME}-{BOB}-data"):
        assert name in volumes, name

    # Back, with servers that are culled after 20 idle seconds.
    restarted = hub.host("hub", HUB_IDLE_TIMEOUT="20")
    assert restarted.returncode == 0, restarted.stderr
    alice = log_in(browser, hub, ALICE)
    assert "/hub/login" not in alice.url  # the user is still there, still approved
    start_server(alice, hub, ALICE)
    assert "alice's notes" in saved_text(alice, ALICE)
    alice.context.close()
    assert wait_until(lambda: not containers(f"{HUB_NAME}-user-{ALICE}"), timeout=180, every=5)


def test_hub_down_leaves_no_container_running(hub):
    assert hub.host("hub-down").returncode == 0
    assert containers() == []


def test_the_hub_and_the_lab_images_run_one_jupyterhub(hub):
    versions = {
        image: docker(
            "run", "--rm", "--entrypoint", "jupyterhub", image, "--version"
        ).stdout.strip()
        for image in ("torchlab-hub", "torchlab:cpu")
    }
    assert set(versions.values()) == {"5.5.0"}, versions
