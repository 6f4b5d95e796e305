"""Shared pieces of the mask generators: the generator type, argument checks, rasterisation helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

MaskGenerator = Callable[[np.random.Generator, int, int], np.ndarray]
"""``gen(rng, height, width) -> bool[height, width]`` (True = hole)."""

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""File suffixes (case-insensitive) that :class:`FolderMasks` treats as mask images."""


class Preset(NamedTuple):
    """A named generator: ``build(params)`` with flat ``defaults`` that ``masks.get`` overrides by keyword."""

    build: Callable[[Mapping[str, Any]], MaskGenerator]
    defaults: Mapping[str, Any]


def dataclass_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_call(owner: str, rng: Any, height: Any, width: Any) -> tuple[int, int]:
    """Validates the common call arguments, so misuse fails with a message instead of deep in numpy."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{owner}: rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng)!r}"
        )
    for field, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{owner}: {field} must be a positive int, got {value!r}")
    return int(height), int(width)


def require(owner: str, field: str, ok: bool, what: str, value: Any) -> None:
    """Raises a ValueError naming the generator field and the constraint it breaks."""
    if not ok:
        raise ValueError(f"{owner}.{field} must be {what}, got {value!r}")


def new_canvas(height: int, width: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """An all-zero 8-bit canvas to rasterise strokes into with PIL (C speed, no per-pixel Python)."""
    image = Image.new("L", (width, height), 0)
    return image, ImageDraw.Draw(image)


def as_bool(image: Image.Image) -> np.ndarray:
    return np.asarray(image) > 0


def disc(draw: ImageDraw.ImageDraw, x: float, y: float, radius: int) -> None:
    """Filled disc spanning ``2 * radius + 1`` pixels, like ``cv2.circle(..., thickness=-1)``."""
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=1)


def cv2_like_line(
    draw: ImageDraw.ImageDraw, p0: tuple[int, int], p1: tuple[int, int], thickness: int
) -> None:
    """Emulates ``cv2.line(mask, p0, p1, 1, thickness)`` (8-connected, round caps) with PIL.

    cv2 fills the segment with half-width ``(t + 1) // 2`` (boundary pixels included) and adds discs of
    radius ``(t + 1) // 2`` at both ends; a PIL line of width ``2r + 1`` plus the same discs matches its area
    to within ~0.1 % on average (module docstring).
    """
    radius = (thickness + 1) // 2
    draw.line((p0, p1), fill=1, width=2 * radius + 1)
    disc(draw, p0[0], p0[1], radius)
    disc(draw, p1[0], p1[1], radius)
