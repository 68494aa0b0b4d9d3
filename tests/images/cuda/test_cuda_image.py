"""The CUDA images on a machine without a GPU: a loud, one-line failure, never the CPU."""

from __future__ import annotations

import os
import shutil

from support import make_lab, one_line_failure


def test_a_cuda_image_without_gpu_access_fails_loudly(device_variant, container):
    code, output = container.run_to_end(
        device_variant.image, "torchlab", "probe", "--no-smoke", clean_log=False
    )
    assert code == 1
    last = output.strip().splitlines()[-1]
    assert last.startswith("torchlab: expected cuda, but no NVIDIA driver is visible")
    assert "NVIDIA Container Toolkit" in last


def test_a_cuda_lab_without_a_gpu_is_one_line(device_variant, labs_folder, require):
    require(not shutil.which("nvidia-smi", path=os.environ["PATH"]), "a machine without a GPU")
    for name in (device_variant.name, *device_variant.aliases):
        line = one_line_failure(make_lab(name, labs_folder).up())
        assert "no NVIDIA driver on this host" in line and "(without one: make lab-cpu)" in line
