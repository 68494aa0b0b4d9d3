"""A class on the hub through its REST API, as the teacher's scripts and make bench drive it:
users who start at the same moment all get a server, and a hub restarted while servers start
leaves every user with a running server or one they can start, and every file where it was.
The hub has a name of its own (HUB_NAME), so no other hub is touched."""

from __future__ import annotations

import json

import pytest
from support import class_hub, docker, require_image

HUB_NAME = "torchlab-hub-restart-test"
USERS = ["ada", "grace", "alan", "edsger"]


@pytest.fixture(scope="module")
def hub():
    require_image("torchlab:cpu")
    with class_hub(HUB_NAME) as (started, _):
        yield started


def test_users_who_start_at_the_same_moment_all_get_a_server(hub):
    ready, failed = hub.start_at_once(USERS, timeout=300)
    assert failed == {}
    assert sorted(ready) == sorted(USERS)
    # The hub watches its servers: the image's healthcheck (make lab's) would only cost CPU.
    checked = docker("inspect", "--format", "{{json .Config.Healthcheck}}", f"{HUB_NAME}-user-ada")
    assert json.loads(checked.stdout)["Test"] == ["NONE"]  # Docker keeps the image's timings


def test_a_hub_restarted_while_servers_start_loses_no_server_and_no_file(hub):
    restarted = hub.restart_while_starting(USERS, starting=2, timeout=300)
    assert restarted["failed"] == {}, restarted
    assert restarted["files_lost"] == [], restarted
    assert restarted["running_after_the_restart"] + restarted["started_again"] == len(USERS)
    # The users who were running before it kept their servers through it.
    assert restarted["running_after_the_restart"] >= len(USERS) - 2, restarted
    log = docker("logs", HUB_NAME)
    assert "Traceback" not in log.stdout + log.stderr
