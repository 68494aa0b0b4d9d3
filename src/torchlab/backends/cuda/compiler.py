"""CUDA's compiler in an image (nvcc, from NVIDIA's wheels, at /usr/local/cuda: docker/cuda-home):
which CUDA release it is, and whether that is torch's, as extensions built with it need."""

from __future__ import annotations

import re
import shutil
import subprocess

from .. import Hint

RELEASE = re.compile(r"release (\d+\.\d+)")
NVCC_TIMEOUT_S = 30


def nvcc_release(said: str | None = None) -> str | None:
    """The CUDA release (13.0) of the nvcc on PATH, from `nvcc --version` (or its text, given);
    None where there is none."""
    if said is None:
        path = shutil.which("nvcc")
        if path is None:
            return None
        try:
            said = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=NVCC_TIMEOUT_S
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
    found = RELEASE.search(said)
    return found[1] if found else None


def mismatch(nvcc: str | None, torch_cuda: str | None) -> Hint | None:
    """Why extensions built with this nvcc may not suit this torch (None where it is torch's
    release, or either is absent): torch.utils.cpp_extension refuses another major release, and
    another minor one brings headers torch was not built with."""
    if nvcc is None or torch_cuda is None or nvcc == ".".join(torch_cuda.split(".")[:2]):
        return None
    return Hint(
        f"nvcc is CUDA {nvcc}, but torch is built for CUDA {torch_cuda}: extensions built here "
        "may fail to build or to load",
        f"pip install 'cuda-toolkit[nvcc,cccl]=={torch_cuda}.*', or put the nvcc of CUDA "
        f"{torch_cuda} first on PATH",
    )


def check_nvcc(expected: bool) -> list[str]:
    """check-build: the promised nvcc is on PATH, is torch's CUDA release, and is where
    torch.utils.cpp_extension looks (its CUDA_HOME)."""
    if not expected:
        return []
    import torch

    release = nvcc_release()
    if release is None:
        return ["nvcc is promised, but none is on PATH (docker/cuda-home links /usr/local/cuda)"]
    problem = mismatch(release, torch.version.cuda)
    problems = [str(problem)] if problem else []
    from torch.utils import cpp_extension

    home = str(shutil.which("nvcc")).removesuffix("/bin/nvcc")
    if home != cpp_extension.CUDA_HOME:
        problems.append(
            f"torch.utils.cpp_extension finds CUDA at {cpp_extension.CUDA_HOME}, not {home}"
        )
    return problems
