"""Masks of the classic GAN inpainters: Context Encoder's centre box and random regions, GLCIC's box holes.

* ``context_encoder_center`` (:class:`CenterWithOverlap`): the part of Context Encoder's central box that
  ``train.lua`` overwrites, rows and columns [H/4 + o, 3H/4 - o) (``overlap`` o = overlapPred = 4 at 128²:
  [36, 92)). The 4-px ring of the centre stays visible in the input; the generator still predicts the whole
  centre (systems-more.md §2.1, data-masks-metrics.md §2.7).
* ``context_encoder_random`` (:class:`RandomRegion`): ``train_random.lua:274-329``. The original builds, once,
  a 600×600 U(0, 1) noise image bicubic-upscaled to 10000² and thresholded at 0.25 (hole below), then draws
  random F² windows of it until the hole fraction lies in (20 %, 30 %). Because the noise is i.i.d., a
  window of that field is the upscaling of a fresh noise patch of the same cell size (10000/600 = 16.7 px),
  so each draw here upscales a small noise patch (with a margin of two cells against edge effects) instead
  of keeping a 100-MB pattern in memory. Differences: Pillow's bicubic kernel (a = -0.5) may differ from
  Torch7 ``image.scale``'s; windows never straddle the original pattern's border. One mask per *batch*, as
  the original: configs set ``input.mask.per_batch``.
* ``glcic`` (:class:`BoxHoles`): GLCIC's training holes as ``otenim/GLCIC-PyTorch: utils.py:8-84`` samples
  them: a random ``area``² square (the local discriminator's patch) placed uniformly in the image, then
  ``max_holes`` rectangle(s) with sides U{min_size..max_size} placed uniformly inside it. Places2:
  area 128, sides [96, 128] (official ``README.md:93``); CelebA (otenim's defaults): area 96, sides [48, 96].

:func:`hole_box` gives a hole's bounding box; systems that crop around the hole (GLCIC's local
discriminator) or resample it (Context Encoder's inference) add it to their batches in ``prepare_example``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
from PIL import Image

from jaxinpaint.masks.base import Preset, check_call, dataclass_defaults, is_int, is_number, require


def hole_box(mask: np.ndarray) -> np.ndarray:
    """int32 ``[y0, x0, y1, x1]`` (half-open) of the hole pixels (> 0.5) of an (H, W) or (H, W, 1) mask.

    An empty mask gives the whole image, so that code resampling or cropping around the hole stays defined.
    """
    hole = np.asarray(mask).reshape(np.shape(mask)[:2]) > 0.5
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    if rows.size == 0:
        return np.array([0, 0, hole.shape[0], hole.shape[1]], np.int32)
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.int32)


@dataclasses.dataclass(frozen=True)
class CenterWithOverlap:
    """Context Encoder's filled centre: rows [H/4 + overlap, 3H/4 - overlap), columns likewise (rng unused)."""

    overlap: int = 4

    def __post_init__(self) -> None:
        require(type(self).__name__, "overlap", is_int(self.overlap) and self.overlap >= 0, "an int >= 0",
                self.overlap)

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        height, width = check_call(type(self).__name__, rng, height, width)
        o = self.overlap
        if 2 * o >= min(height, width) // 2:
            raise ValueError(f"{type(self).__name__}: overlap {o} leaves no hole in the centre of a "
                             f"{height}x{width} image")
        mask = np.zeros((height, width), bool)
        mask[height // 4 + o:3 * height // 4 - o, width // 4 + o:3 * width // 4 - o] = True
        return mask


@dataclasses.dataclass(frozen=True)
class RandomRegion:
    """Context Encoder's random-region holes: thresholded, upscaled uniform noise (module docstring).

    Attributes:
      cell: pixels per noise cell (10000 / 600 in the original).
      threshold: hole where the upscaled noise is below this (0.25).
      min_fraction, max_fraction: accept a window when its hole fraction lies strictly between (0.2, 0.3).
      max_tries: windows drawn before giving up (RuntimeError); about 1 in 5 is accepted at 128².
    """

    cell: float = 10000 / 600
    threshold: float = 0.25
    min_fraction: float = 0.2
    max_fraction: float = 0.3
    max_tries: int = 1000

    def __post_init__(self) -> None:
        name = type(self).__name__
        require(name, "cell", is_number(self.cell) and self.cell >= 1, "a number >= 1", self.cell)
        require(name, "threshold", is_number(self.threshold) and 0 < self.threshold < 1, "in (0, 1)",
                self.threshold)
        require(name, "min_fraction/max_fraction", 0 <= self.min_fraction < self.max_fraction <= 1,
                "0 <= min_fraction < max_fraction <= 1", (self.min_fraction, self.max_fraction))
        require(name, "max_tries", is_int(self.max_tries) and self.max_tries >= 1, "an int >= 1", self.max_tries)

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        height, width = check_call(type(self).__name__, rng, height, width)
        margin = math.ceil(2 * self.cell)  # bicubic support: two cells on each side
        cells_h = math.ceil((height + 2 * margin) / self.cell) + 1
        cells_w = math.ceil((width + 2 * margin) / self.cell) + 1
        size = (round(cells_w * self.cell), round(cells_h * self.cell))  # PIL: (width, height)
        for _ in range(self.max_tries):
            noise = rng.uniform(size=(cells_h, cells_w)).astype(np.float32)
            field = np.asarray(Image.fromarray(noise, "F").resize(size, Image.BICUBIC))
            y = rng.integers(margin, field.shape[0] - height - margin + 1)
            x = rng.integers(margin, field.shape[1] - width - margin + 1)
            hole = field[y:y + height, x:x + width] < self.threshold
            if self.min_fraction < hole.mean() < self.max_fraction:
                return hole
        raise RuntimeError(f"{type(self).__name__}: no {height}x{width} window with a hole fraction in "
                           f"({self.min_fraction}, {self.max_fraction}) after {self.max_tries} tries")


@dataclasses.dataclass(frozen=True)
class BoxHoles:
    """GLCIC's training holes: rectangles inside a random ``area``² square (module docstring).

    Attributes:
      area: side of the square the holes lie in (the local discriminator's input, 128 for Places2); capped
        by the image.
      min_size, max_size: rectangle sides, each U{min_size..max_size} (inclusive), capped by ``area``.
      max_holes: rectangles per mask, U{1..max_holes} (otenim's default 1).
    """

    area: int = 128
    min_size: int = 96
    max_size: int = 128
    max_holes: int = 1

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("area", "min_size", "max_size", "max_holes"):
            value = getattr(self, field)
            require(name, field, is_int(value) and value >= 1, "an int >= 1", value)
        require(name, "min_size", self.min_size <= self.max_size, f"<= max_size ({self.max_size})", self.min_size)
        require(name, "max_size", self.max_size <= self.area, f"<= area ({self.area})", self.max_size)

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        height, width = check_call(type(self).__name__, rng, height, width)
        area_h, area_w = min(self.area, height), min(self.area, width)
        ay = rng.integers(0, height - area_h + 1)
        ax = rng.integers(0, width - area_w + 1)
        mask = np.zeros((height, width), bool)
        for _ in range(rng.integers(1, self.max_holes + 1)):
            h = rng.integers(min(self.min_size, area_h), min(self.max_size, area_h) + 1)
            w = rng.integers(min(self.min_size, area_w), min(self.max_size, area_w) + 1)
            y = ay + rng.integers(0, area_h - h + 1)
            x = ax + rng.integers(0, area_w - w + 1)
            mask[y:y + h, x:x + w] = True
        return mask


PRESETS: Mapping[str, Preset] = {
    "context_encoder_center": Preset(lambda p: CenterWithOverlap(**p), dataclass_defaults(CenterWithOverlap)),
    "context_encoder_random": Preset(lambda p: RandomRegion(**p), dataclass_defaults(RandomRegion)),
    "glcic": Preset(lambda p: BoxHoles(**p), dataclass_defaults(BoxHoles)),
}
