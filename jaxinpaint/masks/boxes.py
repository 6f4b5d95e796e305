"""Rectangular holes: the centre box (Context Encoder's, Shift-Net's and evaluation's)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from jaxinpaint.masks.base import Preset, check_call


@dataclasses.dataclass(frozen=True)
class CenterBox:
    """Context Encoders' fixed hole: rows [H/4, 3H/4) and cols [W/4, 3W/4) (the central 64² of 128²)."""

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Returns the fixed central box; the rng is accepted for interface uniformity and not used."""
        height, width = check_call(type(self).__name__, rng, height, width)
        mask = np.zeros((height, width), bool)
        mask[height // 4:3 * height // 4, width // 4:3 * width // 4] = True
        return mask


PRESETS: Mapping[str, Preset] = {
    "center_box": Preset(lambda p: CenterBox(), {}),
}
