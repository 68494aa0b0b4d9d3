"""NVIDIA GPUs through CUDA, one module per job: the backend (backend.py); the kernels a build
carries and the GPUs they run on (kernels.py); the NVIDIA driver, and whether a host's driver
and GPUs suit an image (driver.py); what goes wrong in the environment, as hints (hints.py).

all_backends() finds this package by its BACKEND; the other names are the ones the host tools
and the tests use.
"""

from .backend import BACKEND
from .driver import DRIVER_URL, TOOLKIT_URL, smi_driver
from .kernels import kernel_archs, serving_arch

__all__ = ["BACKEND", "DRIVER_URL", "TOOLKIT_URL", "kernel_archs", "serving_arch", "smi_driver"]
