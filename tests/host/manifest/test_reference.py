"""The docs' tables and make help come from the data they describe: a variant, a setting or a
target added there shows in them, and a table edited by hand is written back by make generate."""

from __future__ import annotations

import dataclasses
import re
import shutil

import pytest

from torchlab import variants
from torchlab.locks import canonical, pins
from torchlab_host import ROOT
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import TABLE, Setting
from torchlab_host.lockfiles.files import REQUIREMENTS, lock_file
from torchlab_host.manifest import check, generate, reference

MANIFEST = variants.load()


def usage_of(target: str, manifest=MANIFEST) -> str:
    [found] = [t for t in reference.make_targets() if t.name == target]
    return found.usage(manifest)


def test_a_pattern_target_names_every_variant_and_alias_of_the_manifest():
    usage = usage_of("lab-%")
    for variant in MANIFEST.variants:
        assert f"lab-{variant.name}" in usage
        for alias in variant.aliases:
            assert f"lab-{alias}" in usage  # make lab-gpu, the name the project is known by


def test_a_variant_added_to_the_manifest_reaches_make_help():
    cpu = MANIFEST.variant("cpu")
    more = dataclasses.replace(cpu, name="cpunext", aliases=("next",))
    manifest = dataclasses.replace(MANIFEST, variants=(*MANIFEST.variants, more))
    assert "shell-cpunext" in usage_of("shell-%", manifest)
    assert "make build-%" in reference.make_help(manifest)
    assert "build-cpunext | " not in reference.make_help(MANIFEST)


def test_prepare_takes_only_the_variants_with_a_dev_container():
    usage = usage_of("prepare-%")
    for variant in MANIFEST.variants:
        assert (f"prepare-{variant.name}" in usage) == variant.per_user
        assert (ROOT / ".devcontainer" / variant.name).is_dir() == variant.per_user


def test_every_target_with_a_help_line_is_in_make_help():
    said = reference.make_help(MANIFEST)
    listed = re.findall(r"^([a-z%-]+):[^#\n]*## ", (ROOT / "Makefile").read_text(), re.M)
    assert listed and all(f"make {name} " in said for name in listed)


def test_the_images_table_says_each_variants_torch_from_its_lock():
    images = reference.images(MANIFEST)
    for variant in MANIFEST.variants:
        torch = pins(lock_file(variant.lock).read_text())["torch"]
        [row] = [line for line in images.splitlines() if line.startswith(f"| `{variant.image}` |")]
        assert f"| {torch}" in row and f"{variant.size_ceiling_gb:g} GB" in row


def test_the_settings_table_holds_every_setting_with_its_default():
    written = reference.settings_table(MANIFEST)
    for setting in TABLE:
        assert f"| `{setting.name}` |" in written
        if setting.default:
            assert f"| `{setting.default}` |" in written


def test_the_packages_list_names_each_package_of_the_shared_lock_with_its_pin():
    listed = reference.packages(MANIFEST)
    shared = MANIFEST.shared_lock
    pinned = pins(lock_file(shared).read_text())
    asked = re.findall(
        r"^[A-Za-z0-9][A-Za-z0-9._-]*", (REQUIREMENTS / f"{shared}.in").read_text(), re.M
    )
    assert asked and all(f"{canonical(name)} {pinned[canonical(name)]}" in listed for name in asked)
    # every variant's lock asks for torchmetrics beside torch, which the images table says
    [own] = [line for line in listed.splitlines() if line.startswith("- from each image's own")]
    torchmetrics = pins(lock_file(MANIFEST.variants[0].lock).read_text())["torchmetrics"]
    assert f"torchmetrics {torchmetrics}" in own and "torch " not in own


def test_a_package_pinned_differently_says_which_version_is_where():
    pins_in = {"linux/amd64": {"numpy": "2.4.6"}, "linux/arm64": {"numpy": "2.4.5"}}
    assert reference.pinned_list({"numpy"}, pins_in) == (
        "numpy 2.4.6 (linux/amd64) or 2.4.5 (linux/arm64)"
    )
    assert reference.pinned_list({"numpy"}, {"linux/amd64": {"numpy": "2.4.6"}}) == "numpy 2.4.6"


def test_a_packages_list_behind_its_lock_is_named_with_the_locks_in_make_check(
    tmp_path, monkeypatch
):
    locks = shutil.copytree(REQUIREMENTS, tmp_path / "requirements")
    shared = locks / f"{MANIFEST.shared_lock}.txt"
    numpy = pins(shared.read_text())["numpy"]
    shared.write_text(shared.read_text().replace(f"numpy=={numpy}", "numpy==0.0.1"))
    monkeypatch.setattr(reference, "lock_file", lambda lock: locks / f"{lock}.txt")
    assert "numpy 0.0.1" in reference.packages(MANIFEST)
    found = check.problems(MANIFEST)
    for document in ("README.md", "docs/index.md"):
        assert (
            f"{document} is out of date with variants.toml and requirements/*.txt. "
            "Fix: make generate"
        ) in found


def test_a_stale_settings_page_is_named_with_the_settings_table_it_is_written_from(monkeypatch):
    added = Setting("LAB_NEW", "", "a setting the docs do not have yet", "lab")
    monkeypatch.setattr(reference, "TABLE", (*TABLE, added))
    found = [line for line in check.problems(MANIFEST) if "docs/reference/settings.md" in line]
    assert found == [
        "docs/reference/settings.md is out of date with src/torchlab_host/core/settings.py. "
        "Fix: make generate"
    ]


def test_what_each_generated_file_is_written_from_is_in_the_checkout():
    named = {source for output in generate.outputs(MANIFEST).values() for source in output.sources}
    named |= {source for table in reference.TABLES.values() for source in table.sources}
    assert [source for source in sorted(named) if not list(ROOT.glob(source))] == []


def test_a_table_edited_by_hand_is_written_back_and_a_written_one_stays():
    text = "# x\n\n<!-- begin generated: images -->\n| edited |\n<!-- end generated: images -->\n"
    filled = reference.filled(text, MANIFEST, ROOT / "docs/x.md")
    assert "| edited |" not in filled and "`torchlab:cpu`" in filled
    assert reference.filled(filled, MANIFEST, ROOT / "docs/x.md") == filled


def test_an_unknown_table_is_one_line():
    text = "<!-- begin generated: colours -->\n<!-- end generated: colours -->\n"
    with pytest.raises(HostError) as raised:
        reference.filled(text, MANIFEST, ROOT / "docs/x.md")
    assert "docs/x.md asks for a generated table 'colours'" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_checked_in_docs_are_as_make_generate_writes_them():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in reference.outputs(MANIFEST).items()
        if path.read_text() != text
    ]
    assert stale == [], "make generate"


def test_the_readme_is_short_and_each_of_its_links_into_the_checkout_exists():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    links = re.findall(r"\]\(((?!https?:|#)[^)#\s]+)", readme)
    assert any(link.startswith("docs/") for link in links)
    assert [link for link in links if not (ROOT / link).exists()] == []
