"""The CUDA backend: whether this machine's NVIDIA GPUs are usable and what the probe reports of
them, and what `torchlab check-build` asserts of a CUDA build (its CUDA, kernels, cuDNN and
nvcc)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import Backend, BuildCheck, Hint, KnownFailure, Status
from . import driver, hints
from .compiler import check_nvcc, mismatch, nvcc_release
from .driver import cuda_text, driver_cuda_version, needed_driver, nvml_driver
from .kernels import arch_list, kernel_archs, serving_arch

# Datasheet peaks: dense bf16 tensor-core TFLOP/s (no sparsity) and memory TB/s,
# matched against torch.cuda.get_device_name() in order.
PUBLISHED_PEAKS = (
    (r"H100 80GB HBM3|H100 SXM", 989.4, 3.35),
    (r"H100 NVL", 835.0, 3.9),
    (r"H100 PCIe", 756.0, 2.0),
    (r"H200", 989.4, 4.8),
    (r"B200", 2250.0, 8.0),
    (r"A100.*80GB", 312.0, 2.039),
    (r"A100", 312.0, 1.555),
    (r"L40S", 362.1, 0.864),
    (r"\bL4\b", 121.0, 0.3),
)


def smi_uuid(properties: Any) -> str:
    """A device's UUID as nvidia-smi -L, NVIDIA_VISIBLE_DEVICES and the hub write it: MIG- for
    a MIG instance (whose name says so), GPU- for a whole GPU. The probe lists the devices this
    container was given, and only those: CUDA sees no others."""
    kind = "MIG" if " MIG " in properties.name else "GPU"
    return f"{kind}-{properties.uuid}"


def _hip_version() -> str | None:
    import torch

    return getattr(torch.version, "hip", None)


class CudaBackend(Backend):
    name = "cuda"
    device_type = "cuda"
    priority = 20
    checks_host = True
    distributed_backend = "nccl"
    bench_matmul_size = 8192
    bench_copy_megabytes = 2048

    def recognises_build(self) -> bool:
        return _hip_version() is None

    def status(self) -> Status:
        import torch

        if not self.recognises_build():
            return Status(False, hints.rocm_build(_hip_version()))
        if torch.version.cuda is None:
            return Status(False, hints.cpu_only_build())
        _, nvml_error = nvml_driver()
        if nvml_error:
            return Status(False, self.explain(nvml_error))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            count = torch.cuda.device_count()
        messages = [str(warning.message) for warning in caught]
        if count == 0:
            try:
                torch.cuda.init()
            except Exception as error:  # torch says why in its own words; we map them
                messages.append(str(error))
            for message in messages:
                hint = self.explain(message)
                if hint:
                    return Status(False, hint)
            if driver_cuda_version() is None:
                return Status(False, hints.no_driver())
            return Status(False, hints.no_gpu_visible())
        arches = arch_list()
        for index in range(count):
            capability = torch.cuda.get_device_capability(index)
            if serving_arch(capability, arches) is None:
                return Status(False, hints.arch_missing(f"sm_{capability[0]}{capability[1]}"))
        return Status(True)

    def devices(self) -> list[Any]:
        import torch

        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]

    def describe(self) -> dict[str, Any]:
        import torch

        facts: dict[str, Any] = {"build_cuda": torch.version.cuda}
        if torch.version.cuda is None:
            return facts
        facts["nvcc"] = nvcc_release()
        arches = arch_list()
        driver_version, nvml_error = nvml_driver()
        driver_cuda = driver_cuda_version()
        facts.update(
            cudnn=torch.backends.cudnn.version(),
            nccl=".".join(map(str, torch.cuda.nccl.version())),
            arch_list=arches,
            driver=driver_version,
            nvml_error=nvml_error,
            driver_cuda=cuda_text(driver_cuda) if driver_cuda else None,
            driver_needed=needed_driver(int(torch.version.cuda.split(".")[0])),
            driver_supports_build=(
                driver_cuda // 1000 >= int(torch.version.cuda.split(".")[0])
                if driver_cuda
                else None
            ),
        )
        gpus = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # status() reports why a GPU is unusable
            count = torch.cuda.device_count()
        for index in range(count):
            properties = torch.cuda.get_device_properties(index)
            capability = (properties.major, properties.minor)
            gpus.append(
                {
                    "index": index,
                    "name": properties.name,
                    "uuid": smi_uuid(properties),
                    "capability": f"{properties.major}.{properties.minor}",
                    "sm": f"sm_{properties.major}{properties.minor}",
                    "memory_bytes": properties.total_memory,
                    "multiprocessors": properties.multi_processor_count,
                    # bf16 tensor cores came with Ampere (sm_80)
                    "bf16": properties.major >= 8,
                    "arch_in_build": serving_arch(capability, arches),
                }
            )
        facts["gpus"] = gpus
        return facts

    def warnings(self) -> list[str]:
        import torch

        problem = mismatch(nvcc_release(), torch.version.cuda)
        return [str(problem)] if problem else []

    def known_failures(self) -> list[KnownFailure]:
        return hints.known_failures()

    def distributed_failures(self) -> list[KnownFailure]:
        return hints.distributed_failures()

    def host_requirements(self, build: Mapping[str, Any] | None = None) -> Hint | None:
        return driver.host_requirements(build or {}, self.explain)

    def build_checks(self) -> dict[str, BuildCheck]:
        return {
            **super().build_checks(),
            "cuda_major": _check_cuda_major,
            "archs": _check_archs,
            "cudnn": _check_cudnn,
            "nvcc": check_nvcc,
        }

    def supports_bf16(self, device: Any) -> bool:
        import torch

        return torch.cuda.get_device_capability(device)[0] >= 8

    def published_peak(self, device: Any) -> dict[str, float] | None:
        import torch

        name = torch.cuda.get_device_name(device)
        for pattern, bf16_tflops, memory_tbps in PUBLISHED_PEAKS:
            if re.search(pattern, name):
                return {"bf16_tflops": bf16_tflops, "memory_tbps": memory_tbps}
        return None

    def synchronize(self, device: Any) -> None:
        import torch

        torch.cuda.synchronize(device)


def _check_cuda_major(major: int) -> list[str]:
    import torch

    if torch.version.cuda is None:
        return [f"torch {torch.__version__} has no CUDA; CUDA {major} is promised"]
    if int(torch.version.cuda.split(".")[0]) != major:
        return [f"torch is built for CUDA {torch.version.cuda}, not {major}"]
    return []


def _check_archs(required: list[str]) -> list[str]:
    import torch

    library = Path(torch.__file__).parent / "lib/libtorch_cuda.so"
    if not library.exists():
        return [f"torch {torch.__version__} has no CUDA library; kernels for {required} promised"]
    kernels = kernel_archs(library)
    return [
        f"{library.name} has no {arch} kernels (it has {kernels})"
        for arch in required
        if arch not in kernels
    ]


def _check_cudnn(expected: bool) -> list[str]:
    import torch

    return (
        ["cuDNN cannot be loaded"] if expected and not torch.backends.cudnn.is_available() else []
    )


BACKEND = CudaBackend()
