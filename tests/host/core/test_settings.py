"""The settings: one table, read once, with one precedence (the environment, then .env, then
the default), and no host module reading a listed setting on its own."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from torchlab_host import ROOT
from torchlab_host.core import checkout
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import BY_NAME, HANDED_TO_COMPOSE, Settings, proxies
from torchlab_host.lab import config

HOST_TOOLS = ROOT / "src/torchlab_host"


def test_the_environment_wins_over_env_file_which_wins_over_the_default(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("LAB_PORT=8899\nLAB_BIND=0.0.0.0\n")
    settings = Settings.load({"LAB_BIND": "127.0.0.2"}, env_file)
    assert settings["LAB_BIND"] == "127.0.0.2" and settings.origins["LAB_BIND"] == "environment"
    assert settings["LAB_PORT"] == "8899" and settings.origins["LAB_PORT"] == ".env"
    assert settings["HUB_PORT"] == "8000" and not settings.given("HUB_PORT")


def test_an_empty_variable_is_unset_unless_its_blank_means_something(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("LAB_PORT=8899\nTORCHLAB_REGISTRY=127.0.0.1:5000/torchlab\n")
    settings = Settings.load({"LAB_PORT": "", "TORCHLAB_REGISTRY": ""}, env_file)
    assert settings["LAB_PORT"] == "8899"  # as `LAB_PORT= make lab-cpu` always did
    assert settings["TORCHLAB_REGISTRY"] == ""  # set and empty: never pull
    assert Settings.load({}, env_file)["TORCHLAB_REGISTRY"] == "127.0.0.1:5000/torchlab"


def test_lab_port_in_env_file_is_the_port_the_lab_is_published_on(tmp_path):
    """A LAB_PORT in .env was once ignored by the host tools, which then told compose 8888."""
    work = tmp_path / "work"
    work.mkdir()
    env_file = tmp_path / ".env"
    env_file.write_text("LAB_PORT=8899\n")
    given = {"LABS_DIR": str(work), "LAB_DATA_DIR": str(tmp_path / "data")}
    given.update(LAB_UID=str(os.getuid()), LAB_GID=str(os.getgid()))
    lab = config.for_lab(Settings.load(given, env_file))
    assert lab.port == 8899
    assert lab.environment()["LAB_PORT"] == "8899"  # what compose.yaml publishes


def test_a_platform_torchlab_builds_nothing_for_is_one_line(tmp_path):
    settings = Settings.load({"PLATFORM": "linux/riscv64"}, tmp_path / ".env")
    with pytest.raises(HostError) as refused:
        settings.platform  # noqa: B018 (the property refuses)
    said = str(refused.value)
    assert said.startswith("PLATFORM=linux/riscv64: torchlab builds images for linux/amd64")
    assert "\n" not in said and ". Fix: choose one of those, e.g. PLATFORM=linux/amd64" in said


def environment_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of each os.environ[...], os.environ.get(...), os.getenv(...) and
    "..." in os.environ with a literal name."""

    def is_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Subscript) and is_environ(node.value):
            name = node.slice
        elif isinstance(node, ast.Call) and node.args:
            function = node.func
            if (isinstance(function, ast.Attribute) and function.attr == "get"
                    and is_environ(function.value)) or (
                    isinstance(function, ast.Attribute) and function.attr == "getenv"):  # fmt: skip
                name = node.args[0]
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            name = node.left
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            found.append((node.lineno, name.value))
    return found


def test_the_scan_finds_each_way_of_reading_a_setting():
    source = (
        'import os\nos.environ["LAB_PORT"]\nos.environ.get("HUB_PORT")\nos.getenv("PLATFORM")\n'
        '"WHEELHOUSE" in os.environ\n'
    )
    assert [name for _, name in environment_reads(ast.parse(source))] == [
        "LAB_PORT", "HUB_PORT", "PLATFORM", "WHEELHOUSE"
    ]  # fmt: skip


def test_no_host_module_but_the_settings_reads_a_setting_from_the_environment():
    readers = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in sorted(HOST_TOOLS.rglob("*.py"))
        if path != HOST_TOOLS / "core/settings.py"
        for line, name in environment_reads(ast.parse(path.read_text()))
        if name in BY_NAME
    ]
    assert readers == [], "read them from the Settings the command was given"


def test_every_setting_says_what_it_does_and_names_a_known_topic():
    from torchlab_host.core.settings import TOPICS

    for setting in BY_NAME.values():
        assert setting.meaning and setting.topic in TOPICS, setting.name


def test_a_blank_in_env_file_or_on_makes_line_means_none_where_blank_is_a_value(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("TORCHLAB_REGISTRY=\nWHEELHOUSE=/srv/wheels\nPLATFORM=linux/arm64\n")
    from_file = Settings.load({}, env_file)
    assert from_file["TORCHLAB_REGISTRY"] == "" and from_file.wheelhouse == Path("/srv/wheels")
    # make build-cpu WHEELHOUSE= PLATFORM= : from the indexes, for this machine
    cleared = Settings.load({"WHEELHOUSE": "", "PLATFORM": ""}, env_file)
    assert cleared.wheelhouse is None and cleared.only_platform is None


def test_what_make_reads_itself_is_not_taken_from_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("VENV=.venv2\nPYTHON=python3.12\n")
    settings = Settings.load({}, env_file)
    assert (settings["VENV"], settings["PYTHON"]) == (".venv", "python3")


def test_an_env_file_that_cannot_be_read_is_one_line(tmp_path):
    (tmp_path / ".env").mkdir()  # unreadable as a file, even by root
    with pytest.raises(HostError) as refused:
        Settings.load({}, tmp_path / ".env")
    said = str(refused.value)
    assert said.startswith(f"the settings file {tmp_path / '.env'} cannot be read (")
    assert "\n" not in said and "Fix: sudo chown" in said


def test_another_checkouts_host_tools_get_what_was_set_here(tmp_path):
    """The rebuild check and the reproducibility check build in a copy or a clone, which has
    no .env: what the person set here goes with them, folders made absolute."""
    env_file = tmp_path / ".env"
    env_file.write_text("WHEELHOUSE=wheelhouse\nBASE_IMAGE=torchlab/debian:bookworm\n")
    given = Settings.load({"TORCHLAB_WITHOUT": "torchvision"}, env_file)
    environment = checkout.host_environment(tmp_path / "copy", given)
    assert environment["WHEELHOUSE"] == str(ROOT / "wheelhouse")
    assert environment["BASE_IMAGE"] == "torchlab/debian:bookworm"
    assert environment["TORCHLAB_WITHOUT"] == "torchvision"
    assert environment["PYTHONPATH"] == str(tmp_path / "copy/src")
    assert "LAB_PORT" not in given.handed_on()  # a default stays the child's own


def test_the_hosts_proxy_is_handed_on_in_both_cases_with_loopback_never_through_it():
    """Tools read HTTPS_PROXY or https_proxy, never both; a lab's healthcheck and a build's
    wheelhouse are on loopback, which a proxy cannot reach."""
    handed = proxies({"https_proxy": "http://proxy.corp:3128", "NO_PROXY": ".corp,localhost"})
    assert handed == {
        "HTTPS_PROXY": "http://proxy.corp:3128",
        "https_proxy": "http://proxy.corp:3128",
        "NO_PROXY": ".corp,localhost,127.0.0.1,::1",
        "no_proxy": ".corp,localhost,127.0.0.1,::1",
    }
    assert proxies({"NO_PROXY": ".corp"}) == {} == proxies({"HTTP_PROXY": ""})
    assert Settings.load({"HTTP_PROXY": "http://p:8080"}, Path("/dev/null/.env")).proxies == {
        "HTTP_PROXY": "http://p:8080", "http_proxy": "http://p:8080",
        "NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1",
    }  # fmt: skip


# Compose's interpolation: $NAME, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error} ...
# ($$ is a literal dollar), with the default where one is given.
INTERPOLATION = re.compile(
    r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*)|[:?+][^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def interpolated(text: str) -> dict[str, str]:
    """Each variable a compose file reads, with compose's default for it ("" where none)."""
    found: dict[str, str] = {}
    for braced, has_default, default, bare in INTERPOLATION.findall(text):
        name = braced or bare
        found[name] = found.get(name) or (default if has_default else "")
    return found


def compose_reads() -> dict[str, dict[str, str]]:
    """What each of the checkout's compose files reads, by its path from the root."""
    listed = checkout.git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard",
                          "*compose*.yaml", "*compose*.yml").stdout.split()  # fmt: skip
    return {name: interpolated((ROOT / name).read_text()) for name in listed}


def not_settings(reads: dict[str, str]) -> list[str]:
    return [name for name in reads if name not in BY_NAME and name not in HANDED_TO_COMPOSE]


def test_the_scan_finds_each_way_compose_reads_a_variable():
    text = "a: ${A}\nb: ${B:-2gb}\nc: ${C:?make lab passes it}\nd: $D\ne: $$E\nf: ${F-x}\n"
    assert interpolated(text) == {"A": "", "B": "2gb", "C": "", "D": "", "F": "x"}
    assert not_settings(interpolated("${LAB_SHM_SIZE:-2gb} ${LAB_LOOKS_LIKE_ONE:-}")) == [
        "LAB_LOOKS_LIKE_ONE"
    ]


def test_every_variable_a_compose_file_reads_is_a_setting_or_handed_to_it():
    read = compose_reads()
    assert {"compose.yaml", "hub/compose.yaml"} <= read.keys()
    unknown = [f"{path}: {name}" for path, reads in read.items() for name in not_settings(reads)]
    assert unknown == [], (
        "add each to TABLE in src/torchlab_host/core/settings.py (or, where the host tools work "
        "it out on every run, to HANDED_TO_COMPOSE), then make generate"
    )


def test_what_the_host_tools_hand_compose_is_read_by_it_and_is_no_setting():
    read = {name for reads in compose_reads().values() for name in reads}
    assert sorted(HANDED_TO_COMPOSE.keys() - read) == []
    assert sorted(HANDED_TO_COMPOSE.keys() & BY_NAME.keys()) == []


def test_a_settings_default_is_composes_where_both_give_one():
    differ = [
        f"{path}: {name} defaults to {default}, the settings to {BY_NAME[name].default}"
        for path, reads in compose_reads().items()
        for name, default in reads.items()
        if name in BY_NAME and default and BY_NAME[name].default not in ("", default)
    ]
    assert differ == []
