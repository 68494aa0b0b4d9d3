"""The three images and how a person asks for each.

Standard library only: the host-side commands import this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str  # the image variant, its lock (requirements/<name>.txt) and the backend it proves
    lab: str  # what a person types: `make lab-<lab>`, compose service `lab-<lab>`
    accelerator: str  # in words, for messages

    @property
    def image(self) -> str:
        return f"torchlab:{self.name}"

    @property
    def service(self) -> str:
        return f"lab-{self.lab}"


VARIANTS = (
    Variant("cpu", "cpu", "CPU"),
    Variant("cuda", "gpu", "NVIDIA GPU"),
    Variant("xla", "tpu", "TPU"),
)


def by_name(name: str) -> Variant:
    for variant in VARIANTS:
        if name in (variant.name, variant.lab):
            return variant
    choices = ", ".join(v.lab for v in VARIANTS)
    raise KeyError(f"unknown lab '{name}': choose one of {choices} (make help lists them)")
