"""Every image on its own, checked on the built image: labels, size, user, what runs first,
layer order, and that the host tools are not in it."""

from __future__ import annotations

import hashlib
import json
import re

from support import REPO, docker, require_image

from torchlab import variants
from torchlab.locks import pins


def inspect(image: str) -> dict:
    require_image(image)
    return json.loads(docker("image", "inspect", image).stdout)[0]


def test_labels_name_the_variant_torch_and_lock(variant):
    image = inspect(variant.image)
    labels, platform = image["Config"]["Labels"], f"{image['Os']}/{image['Architecture']}"
    lock_text = {
        name: (REPO / "requirements" / f"{name}.txt").read_text() for name in ("lab", variant.lock)
    }
    # The torch the manifest ships on the image's platform, which its lock pins there.
    torch_pin = variant.platforms[platform].torch
    assert pins(lock_text[variant.lock], variants.MACHINES[platform])["torch"] == torch_pin
    assert labels["org.torchlab.variant"] == variant.name
    assert labels["org.torchlab.torch"] == torch_pin
    # The digest covers both locks the image installs: the shared one, then the variant's.
    digest = hashlib.sha256("".join(lock_text.values()).encode()).hexdigest()
    assert labels["org.torchlab.lock.sha256"] == digest
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels["org.opencontainers.image.revision"])
    for lock in labels["org.torchlab.lock"].split():
        assert docker("run", "--rm", variant.image, "test", "-s", lock, check=False).returncode == 0


def test_image_size_is_within_the_manifests_ceiling(variant):
    size_gb = inspect(variant.image)["Size"] / 1e9
    assert size_gb <= variant.size_ceiling_gb, f"{variant.image} is {size_gb:.2f} GB"


def test_runs_jupyter_as_a_non_root_user_under_an_init_with_a_healthcheck(variant):
    config = inspect(variant.image)["Config"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["tini", "--", "/opt/torchlab/scripts/entrypoint"]
    assert config["Cmd"] == ["torchlab", "serve"]
    assert config["Healthcheck"]["Test"] == ["CMD", "torchlab", "healthcheck"]
    assert config["Env"].count(f"TORCHLAB_EXPECT={variant.device}") == 1
    assert docker("run", "--rm", variant.image, "id", "-u").stdout.strip() == "1000"


def test_every_container_trusts_the_ca_certificates_it_is_handed_beside_the_images(variant):
    """make lab and make hub hand the host's CAs on (TORCHLAB_CA_CERTIFICATES, PEM text); the
    entrypoint adds them to the container's own bundle, which every tool with a CA setting of
    its own is pointed at, and the image itself keeps none."""
    certificate = "-----BEGIN CERTIFICATE-----\nMIIBcompanyCA\n-----END CERTIFICATE-----"
    shown = (
        "for name in SSL_CERT_FILE REQUESTS_CA_BUNDLE PIP_CERT CURL_CA_BUNDLE GIT_SSL_CAINFO; "
        'do printenv "$name"; done; tail -n 3 "$SSL_CERT_FILE"; '
        'grep -c BEGIN /etc/ssl/certs/ca-certificates.crt "$SSL_CERT_FILE"; '
        "printenv TORCHLAB_CA_CERTIFICATES || echo handed-on-no-further"
    )
    said = docker(
        "run", "--rm", "--env", f"TORCHLAB_CA_CERTIFICATES={certificate}", variant.image,
        "sh", "-c", shown,
    ).stdout.splitlines()  # fmt: skip
    bundle = "/tmp/torchlab-ca/ca-certificates.crt"
    assert said[:5] == [bundle] * 5, said
    assert said[5:8] == certificate.splitlines(), said
    image_count, bundle_count = (int(line.rpartition(":")[2]) for line in said[8:10])
    assert bundle_count == image_count + 1 > 100, said
    assert said[10] == "handed-on-no-further"
    plain = docker("run", "--rm", variant.image, "sh", "-c", "printenv SSL_CERT_FILE || echo none")
    assert plain.stdout.strip() == "none"


def test_the_toolkit_comes_after_the_packages_so_its_changes_rebuild_in_seconds(variant):
    require_image(variant.image)
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", variant.image)
    steps = list(reversed(history.stdout.splitlines()))  # oldest first

    def first(pattern: str) -> int:
        return next(i for i, step in enumerate(steps) if re.search(pattern, step))

    order = [
        first(r"install-lock /opt/venv\s+/opt/torchlab/requirements/\$\{SHARED_LOCK\}"),
        first(r"install-lock /opt/venv\s+/opt/torchlab/requirements/\$\{LOCK\}"),
        first(r"torchlab check-build"),
        first(r"cp -r /opt/torchlab/labs /home/lab/labs"),
    ]
    assert "COPY" in steps[order[2] - 1], "the toolkit is copied just before it is installed"
    assert order == sorted(order), steps


def test_the_host_tools_are_not_in_the_image_and_the_toolkit_works(variant, container):
    for module in ("torchlab_host", "torchlab.host", "torchlab.host_bench"):
        code, output = container.run_to_end(
            variant.image, "python", "-c", f"import {module}", clean_log=False
        )
        assert code == 1 and "ModuleNotFoundError" in output, module
    code, output = container.run_to_end(
        variant.image,
        "python",
        "-c",
        "import torchlab; print(torchlab.best_device('cpu'), torchlab.__version__)",
    )
    assert code == 0 and output.startswith("cpu "), output


def test_the_probe_in_cpu_mode_passes_with_a_clean_log(variant, container):
    options = tuple(f"--env={key}={value}" for key, value in variant.cpu_mode.items())
    code, output = container.run_to_end(variant.image, "torchlab", "probe", options=options)
    assert code == 0, output
    assert "Devices" in output


def test_the_lab_users_site_is_on_and_the_system_adds_no_packages(variant, container):
    """The venv reads a user site (what a lab user installs) and, so, the system's
    site-packages, which must stay empty: the locks decide everything else."""
    code, output = container.run_to_end(
        variant.image,
        "python",
        "-c",
        "import glob, site, sys; print(site.ENABLE_USER_SITE, site.getusersitepackages());"
        "print(sorted(p for d in sys.path if 'dist-packages' in d for p in glob.glob(d + '/*')))",
    )
    assert code == 0, output
    enabled, system_packages = output.splitlines()
    assert enabled.split() == [
        "True",
        f"/home/lab/lab-data/packages/{variant.name}/lib/python3.11/site-packages",
    ]
    assert system_packages == "[]"


def test_the_sbom_label_names_the_images_cyclonedx_document(variant, container):
    path = inspect(variant.image)["Config"]["Labels"]["org.torchlab.sbom"]
    code, output = container.run_to_end(variant.image, "cat", path, clean_log=False)
    assert code == 0 and json.loads(output)["bomFormat"] == "CycloneDX"


def test_the_label_says_what_the_build_left_out(variant):
    image = inspect(variant.image)
    left_out = set(image["Config"]["Labels"]["org.torchlab.without"].split())
    assert left_out <= set(variant.omittable_on(f"{image['Os']}/{image['Architecture']}"))


def test_the_resource_and_gpu_dashboards_are_enabled(variant, container):
    """jupyter-resource-usage (memory and CPU in the status bar) and NVIDIA's GPU dashboard,
    front end and server side, in every image."""
    code, output = container.run_to_end(
        variant.image,
        "bash",
        "-c",
        "jupyter labextension list 2>&1; jupyter server extension list 2>&1",
        clean_log=False,
    )
    assert code == 0, output
    for extension in (
        "@jupyter-server/resource-usage",
        "jupyterlab-nvdashboard",
        "jupyter_resource_usage",
        "jupyterlab_nvdashboard",
    ):
        # The lab extension says both on one line; the server extension on two.
        said = " ".join(line for line in output.splitlines() if f"{extension} " in f"{line} ")
        assert "enabled" in said and "OK" in said and "disabled" not in said, output


def test_git_commits_clones_and_has_ssh_as_the_labs_user(variant):
    """Many courses start with `!git clone`, and a student's work wants committing and
    pushing: git and ssh are in every image and work as the lab's user, in a fresh home."""
    require_image(variant.image)
    steps = (
        "cd /tmp && git init -q --initial-branch=main work && cd work",
        "git config user.email student@example.org && git config user.name Student",
        "echo 'my work' > notes.txt && git add notes.txt && git commit -q -m 'my first commit'",
        "cd /tmp && git clone -q work copy && cat copy/notes.txt",
        "git -C copy log --format=%s",
        "ssh -V 2>&1",
    )
    ran = docker("run", "--rm", variant.image, "bash", "-ec", " && ".join(steps), check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[:2] == ["my work", "my first commit"], ran.stdout
    assert ran.stdout.splitlines()[2].startswith("OpenSSH_"), ran.stdout
