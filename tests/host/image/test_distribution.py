"""How images travel: tagged by their inputs, pulled before they are built, saved as a checked
file, published under their names, compared layer by layer, and opened in an editor."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

import torchlab
from torchlab import variants
from torchlab.backends import get
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.image import archive, context, publish, registry, reproducible
from torchlab_host.image import tags as images
from torchlab_host.image.spec import variant_build

REPO = Path(__file__).resolve().parents[3]
MANIFEST = variants.load()
CPU = MANIFEST.variant("cpu")


def digest_of(folder: Path, edit=None, **values: str) -> str:
    settings = Settings.load({"TORCHLAB_WITHOUT": "torchvision", **values}, folder / ".env")
    build = variant_build(CPU, MANIFEST, settings)
    staged = context.stage(build, folder / "context")
    if edit:
        edit(staged)
    return context.inputs_digest(build, staged)


def test_the_same_inputs_give_the_same_tag_and_any_change_another(tmp_path):
    first = digest_of(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert digest_of(tmp_path) == first
    # a date is no input: the layer cache ignores it
    assert digest_of(tmp_path, SOURCE_DATE_EPOCH="1") == first

    def edit_the_toolkit(staged: Path) -> None:
        with open(staged / "toolkit/opt/torchlab/src/src/torchlab/devices.py", "a") as file:
            file.write("# an edit\n")

    assert digest_of(tmp_path, edit_the_toolkit) != first
    assert digest_of(tmp_path, IMAGE_UID="1234") != first  # another image user: another image
    # another base: another image
    assert digest_of(tmp_path, BASE_IMAGE="torchlab/debian:bookworm") != first


def test_inputs_tags_name_the_variant():
    assert images.inputs_tag("torchlab:cpu", "0123456789ab") == "torchlab:cpu-inputs-0123456789ab"
    assert images.inputs_tag("torchlab-hub", "0123456789ab") == "torchlab-hub:inputs-0123456789ab"
    names = ["torchlab:cpu", "torchlab:cpu-inputs-0123456789ab"]
    assert images.inputs_tag_among(names) == "torchlab:cpu-inputs-0123456789ab"
    assert images.inputs_tag_among(["torchlab-hub:inputs-0123456789ab"]) is not None
    assert images.inputs_tag_among(["torchlab:cpu", "torchlab:cpu-0.1.0"]) is None
    assert images.image_of_inputs_tag("torchlab:cpu-inputs-0123456789ab") == "torchlab:cpu"
    pushed = "127.0.0.1:5000/torchlab:cpu-inputs-0123456789ab"  # a registry with a port
    assert images.image_of_inputs_tag(pushed) == "127.0.0.1:5000/torchlab:cpu"
    assert images.image_of_inputs_tag("torchlab-hub:inputs-0123456789ab") == "torchlab-hub:latest"


def test_a_registry_that_does_not_answer_is_one_line_within_seconds(capsys):
    start = time.monotonic()  # nothing listens on port 9
    assert registry.pulled("torchlab:cpu-inputs-0123456789ab", "127.0.0.1:9/torchlab") is False
    assert time.monotonic() - start < registry.REGISTRY_TIMEOUT_S + 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(
        "torchlab: cannot pull 127.0.0.1:9/torchlab/torchlab:cpu-inputs-0123456789ab: "
        "no registry answers at 127.0.0.1:9 ("
    )


def test_an_empty_registry_means_build_without_asking(tmp_path, capsys):
    settings = Settings.load({"TORCHLAB_REGISTRY": ""}, tmp_path / ".env")
    assert registry.configured(settings) == ""
    assert (
        registry.pulled("torchlab:cpu-inputs-0123456789ab", registry.configured(settings)) is False
    )
    assert capsys.readouterr().out == ""


@pytest.fixture
def saved(tmp_path) -> Path:
    """An archive and its checksum file, as make image-save writes them."""
    file = tmp_path / "torchlab-cpu-inputs-0123456789ab.tar.gz"
    file.write_bytes(gzip.compress(b"not really an image", mtime=0))
    archive.checksum_file(file).write_text(f"{archive.sha256_of(file)}  {file.name}\n")
    return file


def test_a_damaged_archive_is_refused_before_docker_sees_it(saved):
    saved.write_bytes(saved.read_bytes()[:-1])
    with pytest.raises(HostError) as raised:
        archive.load(str(saved))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{saved.name} does not match its checksum in {saved.name}.sha256")
    assert "Fix: copy it again" in message


def test_an_archive_without_its_checksum_is_refused(saved):
    archive.checksum_file(saved).unlink()
    with pytest.raises(HostError, match=r"\.sha256 is missing beside .*Fix: copy it along"):
        archive.load(str(saved))


def test_the_checksum_file_is_what_sha256sum_checks(saved):
    checked = subprocess.run(
        ["sha256sum", "--check", archive.checksum_file(saved).name],
        cwd=saved.parent, capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0 and checked.stdout.strip().endswith(": OK")


def test_published_names_are_the_variant_its_version_and_its_commit():
    names = publish.published_names(CPU, "ghcr.io/torchlab", "1a2b3c4d5e6f")
    assert names == [
        "ghcr.io/torchlab/torchlab:cpu",
        f"ghcr.io/torchlab/torchlab:cpu-{torchlab.__version__}",
        "ghcr.io/torchlab/torchlab:cpu-1a2b3c4",
    ]


def test_each_platform_is_published_under_its_own_inputs_tag(tmp_path):
    settings = Settings.load({}, tmp_path / ".env")
    tags = publish.platform_images(MANIFEST.variant("cuda"), MANIFEST, settings)
    assert list(tags) == ["linux/amd64", "linux/arm64"]
    amd, arm = tags.values()
    assert amd.startswith("torchlab:cuda-inputs-") and arm.startswith("torchlab:cuda-inputs-")
    assert amd != arm


def test_a_registry_on_this_machine_is_spoken_to_in_plain_http_and_no_other():
    assert registry.insecure("127.0.0.1:5000/torchlab:cuda") == ["--insecure"]
    assert registry.insecure("localhost:5000/torchlab:cuda") == ["--insecure"]
    assert registry.insecure("ghcr.io/torchlab/torchlab:cuda") == []
    assert registry.insecure("127.example.com/torchlab:cuda") == []


def test_differing_layers_name_their_first_files_and_what_differs():
    entry = {"type": "0", "mode": "0o644", "owner": "0:0", "mtime": 1, "link": "", "content": "a"}
    first = {"opt/a.pyc": entry, "opt/b": entry, "opt/same": entry}
    second = {"opt/a.pyc": dict(entry, content="b", mtime=2), "opt/c": entry, "opt/same": entry}
    assert reproducible.differences(first, second) == [
        "opt/a.pyc: mtime 1 / 2, content a / b",
        "opt/b: only in build 1",
        "opt/c: only in build 2",
    ]
    step = "/opt/torchlab/scripts/reproducible-run bash -o pipefail -c apt-get update  && x"
    assert reproducible.step_name(step) == "apt-get update && x"
    assert reproducible.step_name("/bin/sh -c #(nop) COPY dir:abc in / ") == "COPY dir:abc in /"


def test_one_build_is_compared_only_with_an_image_of_the_same_commit(monkeypatch):
    """AGAINST=<image> saves a build only if that image is HEAD's: any other would differ."""
    monkeypatch.setattr(reproducible, "require_docker", lambda: None)
    monkeypatch.setattr(reproducible, "revision", lambda: "a" * 40)
    label = subprocess.CompletedProcess([], 0, stdout="b" * 40 + "\n", stderr="")
    monkeypatch.setattr(reproducible, "quiet", lambda command: label)
    monkeypatch.setattr(reproducible, "clone_head", pytest.fail)  # nothing may be built
    with pytest.raises(HostError) as refused:
        reproducible.verify(
            "cpu", Settings.load({}, Path("/dev/null/.env")), against="torchlab:cpu"
        )
    said = str(refused.value)
    assert "built from bbbbbbbbbbbb, not HEAD (aaaaaaaaaaaa)" in said
    assert "Fix: make build-cpu" in said and "\n" not in said


@pytest.mark.parametrize("config", sorted(REPO.glob(".devcontainer/*/devcontainer.json")))
def test_each_dev_container_is_a_variants_lab(config):
    variant = MANIFEST.variant(config.parent.name)
    settings = json.loads(
        "\n".join(
            line for line in config.read_text().splitlines() if not line.strip().startswith("//")
        )
    )
    assert settings["image"] == variant.image
    assert settings["initializeCommand"] == ["make", f"prepare-{variant.name}"]
    assert settings["workspaceFolder"] == "/home/lab/labs"
    assert "target=/home/lab/labs" in settings["workspaceMount"]
    assert settings["remoteUser"] == "lab" and settings["updateRemoteUserUID"] is True
    confined = {"--cap-drop=ALL", "--security-opt=no-new-privileges:true", "--shm-size=2gb"}
    limited = {f"--pids-limit={MANIFEST.containers['pids_limit']}"}
    assert confined | limited <= set(settings["runArgs"])  # confined as every lab is
    assert {"ms-python.python", "ms-toolsai.jupyter"} <= set(
        settings["customizations"]["vscode"]["extensions"]
    )
    needs_gpu = get(variant.device).device_type == "cuda"
    assert settings.get("hostRequirements", {}).get("gpu", False) is needs_gpu


def test_every_variant_a_user_can_have_alone_has_a_dev_container():
    """Not xla: a Cloud TPU VM gives its chips to one privileged container on the host's
    network, not to an editor's container."""
    found = {path.parent.name for path in REPO.glob(".devcontainer/*/devcontainer.json")}
    assert found == {variant.name for variant in MANIFEST.variants if variant.per_user}
    assert {"cpu", "cuda"} <= found and "xla" not in found
