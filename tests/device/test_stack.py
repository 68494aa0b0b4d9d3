"""The stack a course and a first project use: every package imports, and torchvision's ops,
image decoding and model architectures run on each device."""

from __future__ import annotations

import importlib

import pytest
import torch
from _compare import assert_matches_cpu

from torchlab import packages

# Every image's shared stack, and the domain libraries its lock pins.
STACK = ["pandas", "sklearn", "scipy", "tqdm", "requests", "tensorboard", "torchmetrics"]
DOMAIN = ["torchvision", "torchaudio"]


def require_vision() -> None:
    """torchvision, unless this image was built without it: then the skip says so."""
    if "torchvision" in packages.left_out():
        pytest.skip("this image was built without torchvision (TORCHLAB_WITHOUT=torchvision)")


@pytest.mark.parametrize("module", STACK)
def test_the_stack_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize("module", DOMAIN)
def test_the_domain_libraries_of_this_torch_import(module):
    if module == "torchvision":
        require_vision()
    elif module not in packages.locked():  # torchaudio: the xla image only
        pytest.skip(f"{module} is not in this image's locks")
    imported = importlib.import_module(module)
    major_minor = ".".join(torch.__version__.split(".")[:2])
    if module == "torchaudio":  # released in step with torch
        assert imported.__version__.startswith(major_minor), imported.__version__


def test_nms_keeps_the_best_of_overlapping_boxes(device):
    require_vision()
    from torchvision.ops import nms

    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [21, 21, 31, 31], [50, 50, 60, 60.0]]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.5])
    kept = nms(boxes.to(device), scores.to(device), iou_threshold=0.5)
    assert kept.device.type == device.type
    assert kept.cpu().tolist() == [3, 0, 4]


def test_a_jpeg_decodes_to_the_image_that_was_encoded(device):
    require_vision()
    from torchvision.io import decode_jpeg, encode_jpeg

    # A smooth gradient: JPEG keeps it within a few levels.
    rows = torch.linspace(0, 255, 64).to(torch.uint8)
    image = torch.stack([rows.expand(64, 64), rows.expand(64, 64).T, torch.full((64, 64), 128)])
    encoded = encode_jpeg(image.to(torch.uint8), quality=95)
    # nvJPEG decodes on a GPU; elsewhere the CPU decodes and the device gets the pixels.
    on_device = device if device.type == "cuda" else "cpu"
    decoded = decode_jpeg(encoded, device=on_device).to(device)
    assert decoded.shape == (3, 64, 64) and decoded.device.type == device.type
    difference = (decoded.cpu().int() - image.int()).abs()
    assert difference.float().mean() < 2 and difference.max() <= 16


def test_a_pretrained_architecture_runs_forward_on_the_device(device):
    require_vision()
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval()
    inputs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(inputs)
        result = model.to(device)(inputs.to(device))
    assert result.shape == (2, 10) and result.device.type == device.type
    # cuDNN convolves in TF32 by default: its tolerance is half precision.
    assert_matches_cpu(result, expected, torch.float16 if device.type == "cuda" else torch.float32)
