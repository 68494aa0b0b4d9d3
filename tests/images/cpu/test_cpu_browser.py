"""A real browser against lab-cpu: with the token it works, without it shows only the login page.

Headless Chromium (Debian's /usr/bin/chromium, or the build $CHROMIUM names) driven by
Playwright. Screenshots go to artifacts/ (not committed).
"""

from __future__ import annotations

import re

import pytest
from support import CHROMIUM, CHROMIUM_FLAGS, REPO, TOKEN

ARTIFACTS = REPO / "artifacts"


@pytest.fixture
def browser(require):
    require(CHROMIUM.exists(), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


def test_the_lab_in_a_browser_runs_a_cell_and_refuses_strangers(running_lab_cpu, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(running_lab_cpu.url(f"/lab?token={TOKEN}"))

    listing = page.locator(".jp-DirListing-item")
    listing.filter(has_text="02_tensors.ipynb").wait_for(timeout=60_000)
    names = listing.all_inner_texts()
    for notebook in ("01_welcome_and_devices.ipynb", "03_workflow.ipynb", "README.md"):
        assert any(notebook in name for name in names), names

    listing.filter(has_text="02_tensors.ipynb").dblclick()
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    first_code_cell = notebook.locator(".jp-CodeCell").first
    first_code_cell.wait_for(timeout=60_000)
    # The status bar says when the kernel has really started.
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)
    assert (
        page.get_by_text("Would you like to get notified about official Jupyter news").count() == 0
    )
    first_code_cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    output = first_code_cell.locator(".jp-OutputArea-output")
    output.filter(has_text="device:").wait_for(timeout=120_000)
    assert output.inner_text().strip() == "device: cpu"
    # jupyter-resource-usage's indicator in the status bar: the server's memory, live.
    page.locator(".jp-StatusBar-Widget").filter(has_text=re.compile(r"Mem:\s+\d")).first.wait_for(
        timeout=60_000
    )
    page.screenshot(path=ARTIFACTS / "browser-lab-with-token.png")

    stranger = browser.new_page()
    stranger.goto(running_lab_cpu.url("/lab"))
    stranger.locator("#password_input").wait_for(timeout=30_000)
    assert "/login" in stranger.url
    assert stranger.locator(".jp-DirListing-item").count() == 0
    assert "02_tensors.ipynb" not in stranger.content()
    stranger.screenshot(path=ARTIFACTS / "browser-lab-without-token.png")
