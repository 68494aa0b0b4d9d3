"""A CUDA extension built where the image promises CUDA's compiler (variants.toml: build.nvcc),
as a researcher's custom kernel or a package built from source would be: it compiles with
torch.utils.cpp_extension for the image's kernel architectures without a GPU, and where a GPU
is usable it runs and gives the right answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from torchlab import variants

CPP_SOURCE = "torch::Tensor axpy(torch::Tensor x, torch::Tensor y, double a);"
CUDA_SOURCE = """
__global__ void axpy_kernel(const float* x, const float* y, float* out, float a, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) out[i] = a * x[i] + y[i];
}

torch::Tensor axpy(torch::Tensor x, torch::Tensor y, double a) {
  TORCH_CHECK(x.is_cuda() && y.is_cuda(), "axpy takes CUDA tensors");
  auto out = torch::empty_like(x);
  int64_t n = x.numel();
  axpy_kernel<<<(n + 255) / 256, 256>>>(
      x.data_ptr<float>(), y.data_ptr<float>(), out.data_ptr<float>(), (float)a, n);
  return out;
}
"""


def promised() -> dict:
    """What this image's variant promises (empty outside an image)."""
    name = os.environ.get("TORCHLAB_VARIANT")
    return variants.load().variant(name).build_here() if name else {}


def target_archs() -> list[str]:
    """The image's kernel architectures; on a machine outside an image, its GPUs' own."""
    if promised().get("archs"):
        return promised()["archs"]
    return sorted(
        {
            "sm_{}{}".format(*torch.cuda.get_device_capability(i))
            for i in range(torch.cuda.device_count())
        }
    )


def test_a_cuda_extension_builds_for_every_kernel_arch_and_computes_on_a_gpu(tmp_path, monkeypatch):
    from torch.utils import cpp_extension

    if not promised().get("nvcc") and not (torch.cuda.is_available() and cpp_extension.CUDA_HOME):
        pytest.skip("no CUDA compiler is promised here (variants.toml: build.nvcc)")
    archs = target_archs()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", ";".join(f"{a[3:-1]}.{a[-1]}" for a in archs))

    module = cpp_extension.load_inline(
        name="torchlab_axpy",
        cpp_sources=CPP_SOURCE,
        cuda_sources=CUDA_SOURCE,
        functions=["axpy"],
        build_directory=str(tmp_path),
    )

    from torchlab.backends.cuda.kernels import kernel_archs

    built = kernel_archs(Path(module.__file__))
    assert all(arch in built for arch in archs), f"built for {built}, not all of {archs}"
    if torch.cuda.is_available():
        x = torch.randn(1_000_003, device="cuda")
        y = torch.randn_like(x)
        assert torch.allclose(module.axpy(x, y, 2.5), 2.5 * x + y)
    else:
        with pytest.raises(RuntimeError, match="axpy takes CUDA tensors"):
            module.axpy(torch.ones(3), torch.ones(3), 1.0)
