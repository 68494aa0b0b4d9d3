"""What the probe says: the torch release of this image's platform, what a GPU container lacks of
its device's settings, and whether nvcc is torch's CUDA."""

from __future__ import annotations

import pytest

from torchlab import probe, system, variants


@pytest.mark.parametrize(
    ("platform", "said"),
    [
        (
            "linux/arm64",
            "linux/arm64's torch 2.10.0: PyPI's newest CPU-only aarch64 torch (from 2.11 on, its "
            "aarch64 torch is the CUDA build); linux/amd64 gets 2.13.0+cpu",
        ),
        (
            "linux/amd64",
            "linux/amd64's torch 2.13.0+cpu: the release this variant is built on; linux/arm64 "
            "gets 2.10.0",
        ),
    ],
)
def test_the_probe_says_which_torch_a_platform_gets_where_the_platforms_differ(
    monkeypatch, platform, said
):
    monkeypatch.setenv("TORCHLAB_VARIANT", "cpu")
    monkeypatch.setattr(variants, "this_platform", lambda: platform)
    assert probe._platform_release() == said


@pytest.mark.parametrize("variant", ["cuda", None])
def test_the_probe_says_nothing_of_it_where_every_platform_gets_one_release(monkeypatch, variant):
    if variant:
        monkeypatch.setenv("TORCHLAB_VARIANT", variant)
    else:
        monkeypatch.delenv("TORCHLAB_VARIANT", raising=False)
    monkeypatch.setattr(variants, "this_platform", lambda: "linux/arm64")
    assert probe._platform_release() is None


def test_the_probe_table_has_the_release_line_in_an_arm64_cpu_image(monkeypatch):
    monkeypatch.setenv("TORCHLAB_VARIANT", "cpu")
    monkeypatch.setattr(variants, "this_platform", lambda: "linux/arm64")
    table = probe.render_table(probe.collect(smoke=False))
    [line] = [line for line in table.splitlines() if line.strip().startswith("release")]
    assert "linux/arm64's torch 2.10.0: PyPI's newest CPU-only" in line


# What a GPU container lacks of the settings its device's containers are started with
# (variants.toml: [devices.cuda.compose] ipc and ulimits), on recorded limits.
CUDA_SETTINGS = {"ipc": "host", "ulimits": {"memlock": -1, "stack": 67108864}}


def recorded(ipc: str, memlock: int, stack: int) -> dict:
    return {"ipc": ipc, "limits": {"memlock": memlock, "stack": stack}}


def test_a_gpu_container_started_as_nvidia_recommends_has_nothing_missing():
    assert (
        system.device_settings_problem(recorded("host", -1, 67108864), CUDA_SETTINGS, False) is None
    )
    # A larger stack, or none, is as good.
    assert system.device_settings_problem(recorded("host", -1, -1), CUDA_SETTINGS, False) is None


def test_a_docker_default_gpu_container_is_told_each_setting_it_lacks_in_one_line():
    line = system.device_settings_problem(
        recorded("own", 8 * 2**20, 8 * 2**20), CUDA_SETTINGS, False
    )
    assert line == (
        "this container has its own IPC namespace (wanted the host's), memlock 8.0 MiB (wanted "
        "unlimited), stack 8.0 MiB (wanted 64.0 MiB): NCCL and pinned memory across GPUs need "
        "them. Fix: docker run --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 "
        "(torchlab's compose.yaml sets them)"
    )


def test_only_the_missing_limit_is_named():
    line = system.device_settings_problem(recorded("host", -1, 8 * 2**20), CUDA_SETTINGS, False)
    assert line.startswith("this container has stack 8.0 MiB (wanted 64.0 MiB): ")


def test_a_hub_server_keeps_its_own_ipc_namespace_without_a_warning():
    assert (
        system.device_settings_problem(recorded("own", -1, 67108864), CUDA_SETTINGS, True) is None
    )
    line = system.device_settings_problem(recorded("own", 65536, 67108864), CUDA_SETTINGS, True)
    assert "IPC" not in line and "--ipc" not in line and "memlock 64.0 KiB" in line


def test_this_process_reports_its_limits_and_ipc_namespace():
    facts = system.container()
    assert facts["ipc"] in ("host", "own")
    assert set(facts["limits"]) == {"memlock", "stack"}
    assert all(limit == -1 or limit > 0 for limit in facts["limits"].values())


NVCC_13 = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\n"


def test_nvcc_s_release_is_read_and_matched_against_torch_s():
    from torchlab.backends.cuda import compiler

    assert compiler.nvcc_release(NVCC_13) == "13.0"
    assert compiler.mismatch("13.0", "13.0") is None
    assert compiler.mismatch(None, "12.8") is None  # no nvcc: nothing to warn of
    line = str(compiler.mismatch("12.9", "12.8"))
    assert line == (
        "nvcc is CUDA 12.9, but torch is built for CUDA 12.8: extensions built here may fail to "
        "build or to load. Fix: pip install 'cuda-toolkit[nvcc,cccl]==12.8.*', or put the nvcc "
        "of CUDA 12.8 first on PATH"
    )
