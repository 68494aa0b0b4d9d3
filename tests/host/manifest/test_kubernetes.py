"""The Kubernetes manifests validate against the schemas of what they are written for.

Zero to JupyterHub 4.4.0's chart values and schema, and Kubeflow's PyTorchJob CRD, are read
from ../shared/reference (or $TORCHLAB_REFERENCE): they are not copied into the project.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from torchlab import variants

REPO = Path(__file__).resolve().parents[3]
REFERENCE = Path(os.environ.get("TORCHLAB_REFERENCE") or REPO.parent / "shared/reference")
Z2JH = REFERENCE / "z2jh-4.4.0"
OURS = REPO / "deploy/kubernetes/jupyterhub/values.yaml"
MANIFEST = variants.load()
PROFILES = REPO / "deploy/kubernetes/jupyterhub/profiles.yaml"


def ours() -> dict:
    """values.yaml, then profiles.yaml over it, as Helm merges two --values files."""
    return helm_merge(yaml.safe_load(OURS.read_text()), yaml.safe_load(PROFILES.read_text()))


def helm_merge(defaults, overrides):
    """Values as Helm merges them: maps merge key by key, anything else is replaced, and a
    null removes the key."""
    if not (isinstance(defaults, dict) and isinstance(overrides, dict)):
        return copy.deepcopy(overrides)
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(merged.get(key), value)
    return merged


@pytest.fixture(scope="module")
def chart() -> tuple[dict, dict]:
    if not Z2JH.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the chart's reference files at {Z2JH}", pytrace=False)
        pytest.skip(f"needs the chart's reference files at {Z2JH}")
    defaults = yaml.safe_load((Z2JH / "values.yaml").read_text())
    schema = yaml.safe_load((Z2JH / "values.schema.yaml").read_text())
    return defaults, schema


def test_helm_merge_merges_maps_replaces_lists_and_drops_nulls():
    merged = helm_merge({"a": {"b": 1, "c": [1, 2]}, "d": 3}, {"a": {"c": [9]}, "d": None})
    assert merged == {"a": {"b": 1, "c": [9]}}


def test_the_values_validate_against_the_charts_schema(chart):
    defaults, schema = chart
    values = helm_merge(defaults, ours())
    assert values["singleuser"]["profileList"] and values["singleuser"]["storage"]
    jsonschema.validate(values, schema, cls=jsonschema.Draft7Validator)


def test_the_schema_would_catch_a_mistake(chart):
    defaults, schema = chart
    wrong = ours()
    wrong["singleuser"]["storag"] = wrong["singleuser"].pop("storage")
    with pytest.raises(jsonschema.ValidationError, match="storag"):
        jsonschema.validate(helm_merge(defaults, wrong), schema, cls=jsonschema.Draft7Validator)


def test_each_user_gets_the_images_user_start_command_shm_and_volume():
    singleuser = yaml.safe_load(OURS.read_text())["singleuser"]
    assert (singleuser["uid"], singleuser["fsGid"]) == (1000, 1000)  # the images' USER
    assert singleuser["cmd"] == ["torchlab", "singleuser"]
    [shm] = [v for v in singleuser["storage"]["extraVolumes"] if v["name"] == "shm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m for m in singleuser["storage"]["extraVolumeMounts"]}
    assert mounts["/dev/shm"]["name"] == "shm"
    # One volume, where a single lab mounts its home, its data folder and its work folder.
    for path, folder in (("/home/lab", "home"), ("/home/lab/lab-data", "lab-data")):
        assert mounts[path]["name"] == "volume-{user_server}", path
        assert mounts[path]["subPath"] == folder, path
    assert singleuser["storage"]["homeMountPath"] == "/home/lab/labs"
    assert singleuser["storage"]["dynamic"]["subPath"] == "labs"


def test_the_profiles_reach_their_devices():
    profiles = {p["slug"]: p for p in ours()["singleuser"]["profileList"]}
    assert list(profiles) == MANIFEST.names
    assert profiles["cpu"]["default"] is True
    for name, profile in profiles.items():
        assert profile["kubespawner_override"]["image"].endswith(f"/torchlab:{name}")
    cuda = profiles["cuda"]["kubespawner_override"]
    assert cuda["image"].endswith(":cuda")
    # Which GPU is the user's choice alone: KubeSpawner merges a choice's resource limits into
    # the profile's, so a whole GPU there would come with every share and MIG instance too.
    assert "extra_resource_limits" not in cuda
    for name in ("cuda", "cuda12"):
        [(option, gpu)] = profiles[name]["profile_options"].items()
        limits = {
            choice: chosen["kubespawner_override"]["extra_resource_limits"]
            for choice, chosen in gpu["choices"].items()
        }
        assert (option, limits) == (
            "gpu",
            {
                "whole": {"nvidia.com/gpu": "1"},
                "shared": {"nvidia.com/gpu.shared": "1"},  # the plugin's renamed replicas
                "mig": {"nvidia.com/mig-1g.10gb": "1"},  # the plugin's mixed MIG strategy
            },
        ), name
        assert [c for c, chosen in gpu["choices"].items() if chosen.get("default")] == ["whole"]
    xla = profiles["xla"]["kubespawner_override"]
    assert xla["extra_resource_limits"] == {"google.com/tpu": "1"}
    assert "cloud.google.com/gke-tpu-accelerator" in xla["node_selector"]
    assert xla["environment"] == {"PJRT_DEVICE": "TPU"}


# What KubeSpawner reads of a profile, of a profile's option and of an option's choice (its
# profile_list's documentation): the chart's schema leaves profileList's items unchecked.
PROFILE_KEYS = {"display_name", "description", "slug", "default", "kubespawner_override",
                "profile_options"}  # fmt: skip
OPTION_KEYS = {"display_name", "choices", "unlisted_choice"}
CHOICE_KEYS = {"display_name", "default", "kubespawner_override"}


def kubespawner_merge(settings: dict, override: dict) -> dict:
    """An override applied as KubeSpawner applies one: a dict merged key by key into the
    setting's dict, anything else replaced."""
    merged = copy.deepcopy(settings)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = kubespawner_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def gpu_pods() -> list[tuple[str, dict]]:
    """Each GPU choice of each profile, as the settings KubeSpawner ends with: the profile's
    overrides, then the choice's."""
    found = []
    for profile in ours()["singleuser"]["profileList"]:
        for option in profile.get("profile_options", {}).values():
            for name, choice in option["choices"].items():
                settings = kubespawner_merge(
                    profile["kubespawner_override"], choice["kubespawner_override"]
                )
                found.append((f"{profile['slug']}/{name}", settings))
    return found


def test_every_profile_and_choice_is_what_kubespawner_reads():
    for profile in ours()["singleuser"]["profileList"]:
        assert set(profile) <= PROFILE_KEYS, profile["slug"]
        for option in profile.get("profile_options", {}).values():
            assert set(option) <= OPTION_KEYS and option["display_name"], profile["slug"]
            for choice in option["choices"].values():
                assert set(choice) <= CHOICE_KEYS and choice["display_name"], profile["slug"]
            # KubeSpawner starts a user who chose nothing on the one default choice.
            assert sum(bool(c.get("default")) for c in option["choices"].values()) == 1
    assert {name for name, _ in gpu_pods()} >= {"cuda/whole", "cuda/shared", "cuda/mig"}


@pytest.mark.parametrize(("name", "settings"), gpu_pods(), ids=[name for name, _ in gpu_pods()])
def test_each_gpu_choice_makes_a_valid_pod_with_one_gpu_of_its_kind(name, settings):
    import kubernetes_validate

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name.replace("/", "-")},
        "spec": {
            **settings["extra_pod_config"],
            "tolerations": settings["tolerations"],
            "containers": [
                {
                    "name": "notebook",
                    "image": settings["image"],
                    "resources": {"limits": settings["extra_resource_limits"]},
                }
            ],
        },
    }
    kubernetes_validate.validate(pod, "1.30", strict=True)
    [(resource, count)] = settings["extra_resource_limits"].items()
    assert resource.startswith("nvidia.com/") and count == "1"


def test_idle_servers_are_culled():
    cull = yaml.safe_load(OURS.read_text())["cull"]
    assert cull["enabled"] is True and cull["timeout"] > 0


KUBEFLOW = REFERENCE / "kubeflow-training-operator-1.9.0"
PYTORCHJOB = REPO / "deploy/kubernetes/pytorchjob.yaml"


def strict(schema):
    """A CRD's schema as the API server enforces it with strict field validation: an object
    with listed properties takes no others (unless it says it keeps unknown fields)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def pytorchjob_schema() -> dict:
    if not KUBEFLOW.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the CRD at {KUBEFLOW}", pytrace=False)
        pytest.skip(f"needs the training operator's CRD at {KUBEFLOW}")
    crd = yaml.safe_load((KUBEFLOW / "kubeflow.org_pytorchjobs.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strict(version["schema"]["openAPIV3Schema"])


def test_the_pytorchjob_validates_against_the_crds_schema(pytorchjob_schema):
    job = yaml.safe_load(PYTORCHJOB.read_text())
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    jsonschema.validate(job, pytorchjob_schema, cls=jsonschema.Draft7Validator)


def test_the_crd_schema_would_catch_a_mistake(pytorchjob_schema):
    job = yaml.safe_load(PYTORCHJOB.read_text())
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        jsonschema.validate(job, pytorchjob_schema, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("role", ["Master", "Worker"])
def test_each_pod_template_is_a_valid_pod_with_gpus_shm_and_nccl(role):
    import kubernetes_validate

    template = yaml.safe_load(PYTORCHJOB.read_text())["spec"]["pytorchReplicaSpecs"][role]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": role.lower()},
        **template["template"],
    }
    kubernetes_validate.validate(pod, "1.30", strict=True)
    [container] = pod["spec"]["containers"]
    assert container["name"] == "pytorch"  # the operator's container
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/dev/shm"}
    [shm] = pod["spec"]["volumes"]
    assert shm["emptyDir"]["medium"] == "Memory"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["NCCL_SOCKET_IFNAME"] and env["TORCHLAB_EXPECT"] == "cuda"
