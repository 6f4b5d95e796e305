"""LaMa's mask generators (``saicinpainting/training/data/masks.py``): irregular strokes, boxes, their mixes,
the evaluation presets with the > 50 % filter, outpainting, super-resolution and "dumb" masks.

The faithful quirks and the deliberate differences are listed in ``jaxinpaint.masks``' docstring.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxinpaint.masks.base import (
    MaskGenerator,
    Preset,
    as_bool,
    check_call,
    cv2_like_line,
    dataclass_defaults,
    disc,
    is_int,
    is_number,
    new_canvas,
    require,
)

_LAMA_PI = 3.1415926  # LaMa's literal, used for the even-stroke angle flip.
_DRAW_METHODS = ("line", "circle", "square")


@dataclasses.dataclass(frozen=True)
class IrregularMask:
    """LaMa's random irregular strokes (``make_random_irregular_mask`` via ``RandomIrregularMaskGenerator``).

    Attributes:
      max_angle: angles are ``0.01 + randint(max_angle)`` radians.
      max_len: segment length is ``10 + randint(max_len)`` pixels.
      max_width: brush width is ``5 + randint(max_width)`` pixels.
      min_times: fewest strokes.
      max_times: LaMa's nominal most strokes; the effective maximum is ``max_times + 1`` (module docstring),
        so ``max_times = min_times - 1`` gives exactly ``min_times`` strokes.
      draw_method: 'line' (thick segments, LaMa's default), 'circle' (a disc of radius = width at each
        segment start) or 'square' (a square of side ``2 * (width // 2)`` at each segment start).
    """

    max_angle: int = 4
    max_len: int = 60
    max_width: int = 20
    min_times: int = 0
    max_times: int = 10
    draw_method: str = "line"

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("max_angle", "max_len", "max_width"):
            value = getattr(self, field)
            require(name, field, is_int(value) and value >= 1, "an int >= 1", value)
        require(name, "min_times", is_int(self.min_times) and self.min_times >= 0, "an int >= 0",
                 self.min_times)
        # The effective count is [min_times, max_times + 1], so max_times = min_times - 1 is still valid
        # (exactly min_times strokes); anything lower would make LaMa's randint raise.
        require(name, "max_times", is_int(self.max_times) and self.max_times >= self.min_times - 1,
                 f"an int >= min_times - 1 ({self.min_times - 1}; strokes are in [min_times, max_times + 1])",
                 self.max_times)
        require(name, "draw_method", self.draw_method in _DRAW_METHODS, f"one of {_DRAW_METHODS}",
                 self.draw_method)

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Draws one mask; see the class docstring for the distribution."""
        height, width = check_call(type(self).__name__, rng, height, width)
        image, draw = new_canvas(height, width)
        times = int(rng.integers(self.min_times, self.max_times + 2))  # LaMa's off-by-one, on purpose.
        if times == 0:
            return as_bool(image)
        # Per stroke: start x, start y, number of segments - 1. Per segment: angle, length, width draws.
        starts = rng.integers(0, (width, height, 5), size=(times, 3))
        segs = rng.integers(0, (self.max_angle, self.max_len, self.max_width), size=(times, 5, 3))
        for i in range(times):
            x, y = int(starts[i, 0]), int(starts[i, 1])
            n_segments = 1 + int(starts[i, 2])
            angles = 0.01 + segs[i, :n_segments, 0]
            if i % 2 == 0:
                angles = 2 * _LAMA_PI - angles
            lengths = 10 + segs[i, :n_segments, 1]
            brush_widths = 5 + segs[i, :n_segments, 2]
            dx = lengths * np.sin(angles)
            dy = lengths * np.cos(angles)
            for j in range(n_segments):
                # int() truncates toward zero like LaMa's astype(np.int32); then clip to [0, W] / [0, H].
                end_x = min(max(int(x + dx[j]), 0), width)
                end_y = min(max(int(y + dy[j]), 0), height)
                brush = int(brush_widths[j])
                if self.draw_method == "line":
                    cv2_like_line(draw, (x, y), (end_x, end_y), brush)
                elif self.draw_method == "circle":
                    disc(draw, x, y, brush)
                else:  # square, side 2 * (brush // 2), clipped to the canvas (LaMa's slice may wrap).
                    half = brush // 2
                    if half > 0:
                        draw.rectangle((x - half, y - half, x + half - 1, y + half - 1), fill=1)
                x, y = end_x, end_y
        return as_bool(image)


@dataclasses.dataclass(frozen=True)
class BoxMask:
    """LaMa's random rectangles (``make_random_rectangle_mask`` via ``RandomRectangleMaskGenerator``).

    Attributes:
      margin: boxes keep this many pixels from every border.
      bbox_min_size: smallest box side.
      bbox_max_size: largest box side (inclusive), capped at ``H - 2 margin`` / ``W - 2 margin`` - 1.
      min_times: fewest boxes.
      max_times: most boxes (inclusive).
    """

    margin: int = 10
    bbox_min_size: int = 30
    bbox_max_size: int = 100
    min_times: int = 0
    max_times: int = 3

    def __post_init__(self) -> None:
        name = type(self).__name__
        require(name, "margin", is_int(self.margin) and self.margin >= 0, "an int >= 0", self.margin)
        lo, hi = self.bbox_min_size, self.bbox_max_size
        require(name, "bbox_min_size", is_int(lo) and lo >= 1, "an int >= 1", lo)
        require(name, "bbox_max_size", is_int(hi) and hi >= lo, f"an int >= bbox_min_size ({lo})", hi)
        require(name, "min_times", is_int(self.min_times) and self.min_times >= 0, "an int >= 0",
                 self.min_times)
        require(name, "max_times", is_int(self.max_times) and self.max_times >= self.min_times,
                 f"an int >= min_times ({self.min_times})", self.max_times)

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Draws one mask; see the class docstring for the distribution."""
        height, width = check_call(type(self).__name__, rng, height, width)
        mask = np.zeros((height, width), bool)
        # Tiny-canvas fallback (LaMa would raise): shrink the margin and the size range until a box fits.
        margin = min(self.margin, (min(height, width) - 1) // 2)
        size_hi = min(self.bbox_max_size + 1, height - 2 * margin, width - 2 * margin)  # exclusive
        size_lo = max(1, min(self.bbox_min_size, size_hi - 1))
        size_hi = max(size_hi, size_lo + 1)
        times = int(rng.integers(self.min_times, self.max_times + 1))
        if times == 0:
            return mask
        sizes = rng.integers(size_lo, size_hi, size=(times, 2))  # (box_width, box_height)
        box_w, box_h = sizes[:, 0], sizes[:, 1]
        xs = rng.integers(margin, width - margin - box_w + 1)
        ys = rng.integers(margin, height - margin - box_h + 1)
        for x, y, w, h in zip(xs, ys, box_w, box_h, strict=True):
            mask[y:y + h, x:x + w] = True
        return mask


@dataclasses.dataclass(frozen=True)
class MixedMask:
    """LaMa's ``MixedMaskGenerator``: one generator per sample, drawn with renormalised probabilities.

    Attributes:
      choices: ``((probability, generator), ...)``; entries with probability 0 are dropped (as LaMa does)
        and the rest are renormalised.
      invert_proba: probability of returning the complement of the drawn mask.
    """

    choices: tuple[tuple[float, MaskGenerator], ...]
    invert_proba: float = 0.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        for k, (proba, _) in enumerate(self.choices):
            require(name, f"choices[{k}] probability", is_number(proba) and proba >= 0, "a number >= 0",
                     proba)
        require(name, "choices", any(p > 0 for p, _ in self.choices),
                 "non-empty with at least one probability > 0",
                 tuple(p for p, _ in self.choices))
        require(name, "invert_proba", is_number(self.invert_proba) and 0 <= self.invert_proba <= 1,
                 "a number in [0, 1]", self.invert_proba)

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Picks one generator, draws from it and maybe inverts the result."""
        height, width = check_call(type(self).__name__, rng, height, width)
        live = [(p, g) for p, g in self.choices if p > 0]
        probas = np.array([p for p, _ in live], np.float64)
        kind = int(rng.choice(len(live), p=probas / probas.sum())) if len(live) > 1 else 0
        mask = live[kind][1](rng, height, width)
        if self.invert_proba > 0 and rng.random() < self.invert_proba:
            mask = ~mask
        return mask


@dataclasses.dataclass(frozen=True)
class RescaledMask:
    """Draws ``base`` on a canvas whose short side is ``out_min_size``, then resizes it (nearest) back.

    LaMa's pixel-unit parameters (stroke widths, box sizes) are tuned for one resolution, and
    ``bin/gen_mask_dataset.py`` resizes every image so that its short side is ``out_min_size`` (256/512)
    before drawing masks. Doing the same keeps the hole-area distribution of the evaluation presets when a
    caller asks for another size (e.g. 64 px test images); at a square ``out_min_size`` canvas it is the
    identity.
    """

    base: MaskGenerator
    out_min_size: int

    def __post_init__(self) -> None:
        require(type(self).__name__, "out_min_size", is_int(self.out_min_size) and self.out_min_size >= 1,
                 "an int >= 1 (or None in masks.get to draw at the requested size)", self.out_min_size)

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Draws at the native resolution and resizes to (height, width)."""
        height, width = check_call(type(self).__name__, rng, height, width)
        if min(height, width) == self.out_min_size:
            return self.base(rng, height, width)
        factor = self.out_min_size / min(height, width)
        native = self.base(rng, max(1, round(height * factor)), max(1, round(width * factor)))
        resized = Image.fromarray(native.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(resized) > 0


@dataclasses.dataclass(frozen=True)
class FilteredMask:
    """LaMa's evaluation-set filter (``bin/gen_mask_dataset.py``): reject masks covering too much.

    Attributes:
      base: the generator to filter.
      variants_n: masks drawn per LaMa attempt.
      max_tamper_area: largest accepted hole fraction (inclusive, LaMa drops ``mean > max_tamper_area``).
      max_attempts: LaMa's ``n_max`` re-attempts; after ``variants_n * max_attempts`` rejected draws a
        RuntimeError is raised, as LaMa does.
    """

    base: MaskGenerator
    variants_n: int = 5
    max_tamper_area: float = 0.5
    max_attempts: int = 10

    def __post_init__(self) -> None:
        name = type(self).__name__
        require(name, "variants_n", is_int(self.variants_n) and self.variants_n >= 1, "an int >= 1",
                 self.variants_n)
        require(name, "max_attempts", is_int(self.max_attempts) and self.max_attempts >= 1, "an int >= 1",
                 self.max_attempts)
        require(name, "max_tamper_area", is_number(self.max_tamper_area) and 0 < self.max_tamper_area <= 1,
                 "a number in (0, 1]", self.max_tamper_area)

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Returns the first draw whose hole fraction is at most ``max_tamper_area``."""
        height, width = check_call(type(self).__name__, rng, height, width)
        draws = self.variants_n * self.max_attempts
        for _ in range(draws):
            mask = self.base(rng, height, width)
            if mask.mean() <= self.max_tamper_area:
                return mask
        raise RuntimeError(
            f"FilteredMask: {draws} masks ({self.max_attempts} attempts x {self.variants_n} variants) at "
            f"{height}x{width} all covered more than max_tamper_area={self.max_tamper_area}; "
            f"LaMa's gen_mask_dataset.py gives up here too (raise max_attempts or max_tamper_area)"
        )


@dataclasses.dataclass(frozen=True)
class OutpaintingMask:
    """LaMa's ``OutpaintingMaskGenerator``: bands along the borders, each side with its own probability.

    Each side's band covers ``randint(int(min_padding_percent * n), int(max_padding_percent * n)) / n`` of
    that side's dimension ``n``; when no side was picked, one side is chosen with the renormalised
    probabilities, so at least one band is always present.
    """

    min_padding_percent: float = 0.04
    max_padding_percent: float = 0.25
    left_padding_prob: float = 0.5
    top_padding_prob: float = 0.5
    right_padding_prob: float = 0.5
    bottom_padding_prob: float = 0.5

    def __post_init__(self) -> None:
        name = type(self).__name__
        lo, hi = self.min_padding_percent, self.max_padding_percent
        require(name, "min_padding_percent", is_number(lo) and 0 <= lo <= 1, "a number in [0, 1]", lo)
        require(name, "max_padding_percent", is_number(hi) and lo <= hi <= 1 and hi > 0,
                 "a number in (0, 1] and >= min_padding_percent", hi)
        for field in ("left_padding_prob", "top_padding_prob", "right_padding_prob", "bottom_padding_prob"):
            value = getattr(self, field)
            require(name, field, is_number(value) and 0 <= value <= 1, "a number in [0, 1]", value)
        require(name, "*_padding_prob", sum(self._probs()) > 0, "not all zero", self._probs())

    def _probs(self) -> tuple[float, float, float, float]:
        return (self.left_padding_prob, self.top_padding_prob, self.right_padding_prob,
                self.bottom_padding_prob)

    def _fraction(self, rng: np.random.Generator, size: int) -> float:
        lo = int(self.min_padding_percent * size)
        hi = max(int(self.max_padding_percent * size), lo + 1)
        return int(rng.integers(lo, hi)) / size

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Draws one mask; see the class docstring for the distribution."""
        height, width = check_call(type(self).__name__, rng, height, width)
        fractions = [self._fraction(rng, width), self._fraction(rng, height),
                     self._fraction(rng, width), self._fraction(rng, height)]
        probs = np.array(self._probs(), np.float64)
        applied = rng.random(4) < probs
        if not applied.any():
            applied[int(rng.choice(4, p=probs / probs.sum()))] = True
        mask = np.zeros((height, width), bool)
        left, top, right, bottom = fractions
        if applied[0]:
            mask[:, :int(left * width)] = True
        if applied[1]:
            mask[:int(top * height), :] = True
        if applied[2]:
            mask[:, int((1 - right) * width):] = True
        if applied[3]:
            mask[int((1 - bottom) * height):, :] = True
        return mask


@dataclasses.dataclass(frozen=True)
class SuperresMask:
    """LaMa's ``make_random_superres_mask``: a regular grid of lines (for super-resolution-like holes).

    Per axis: step ``randint(min_step, max_step + 1)``, line width ``randint(min_width, min(step,
    max_width + 1))``, offset ``randint(0, step)``; every ``step``-th row (column) band from the offset on is
    a hole.
    """

    min_step: int = 2
    max_step: int = 4
    min_width: int = 1
    max_width: int = 3

    def __post_init__(self) -> None:
        name = type(self).__name__
        require(name, "min_width", is_int(self.min_width) and self.min_width >= 1, "an int >= 1",
                 self.min_width)
        require(name, "max_width", is_int(self.max_width) and self.max_width >= self.min_width,
                 f"an int >= min_width ({self.min_width})", self.max_width)
        require(name, "min_step", is_int(self.min_step) and self.min_step > self.min_width,
                 f"an int > min_width ({self.min_width})", self.min_step)
        require(name, "max_step", is_int(self.max_step) and self.max_step >= self.min_step,
                 f"an int >= min_step ({self.min_step})", self.max_step)

    def _axis(self, rng: np.random.Generator, n: int) -> np.ndarray:
        step = int(rng.integers(self.min_step, self.max_step + 1))
        line = int(rng.integers(self.min_width, min(step, self.max_width + 1)))
        offset = int(rng.integers(0, step))
        idx = np.arange(n)
        # Equivalent to LaMa's ``mask[offset + d::step] = 1 for d in range(line)``.
        return (idx >= offset) & ((idx - offset) % step < line)

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Draws one mask; see the class docstring for the distribution."""
        height, width = check_call(type(self).__name__, rng, height, width)
        cols = self._axis(rng, width)
        rows = self._axis(rng, height)
        return rows[:, None] | cols[None, :]


@dataclasses.dataclass(frozen=True)
class DumbMask:
    """LaMa's ``DumbAreaMaskGenerator``: one axis-aligned rectangle.

    Attributes:
      is_training: True: each side is ``round(U(sqrt(min_ratio), sqrt(max_ratio)) * dim)`` at a uniform
        position (independently per axis); False: the central square/rectangle with sides
        ``sqrt(default_ratio) * dim``.
    """

    is_training: bool = True
    min_ratio: float = 0.1
    max_ratio: float = 0.35
    default_ratio: float = 0.225

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("min_ratio", "max_ratio", "default_ratio"):
            value = getattr(self, field)
            require(name, field, is_number(value) and 0 < value <= 1, "a number in (0, 1]", value)
        require(name, "max_ratio", self.max_ratio >= self.min_ratio, f">= min_ratio ({self.min_ratio})",
                 self.max_ratio)

    def _span(self, rng: np.random.Generator, dim: int) -> tuple[int, int]:
        if self.is_training:
            lo, hi = math.sqrt(self.min_ratio), math.sqrt(self.max_ratio)
            side = int(np.round((rng.random() * (hi - lo) + lo) * dim))
            start = int(rng.integers(0, max(dim - side, 1)))  # Python's randint(0, dim - side - 1)
            return start, start + side
        half = math.sqrt(self.default_ratio) / 2 * dim
        return int(np.round(dim / 2 - half)), int(np.round(dim / 2 + half))

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Draws one mask; see the class docstring for the distribution."""
        height, width = check_call(type(self).__name__, rng, height, width)
        x1, x2 = self._span(rng, width)
        y1, y2 = self._span(rng, height)
        mask = np.zeros((height, width), bool)
        mask[y1:y2, x1:x2] = True
        return mask


_IRREGULAR_KEYS = ("max_angle", "max_len", "max_width", "min_times", "max_times", "draw_method")
_BOX_KEYS = {"margin": "margin", "bbox_min_size": "bbox_min_size", "bbox_max_size": "bbox_max_size",
             "box_min_times": "min_times", "box_max_times": "max_times"}


def _lama_mixed(p: Mapping[str, Any]) -> MaskGenerator:
    irregular = IrregularMask(**{k: p[k] for k in _IRREGULAR_KEYS})
    box = BoxMask(**{field: p[key] for key, field in _BOX_KEYS.items()})
    mixed = MixedMask(choices=((p["irregular_proba"], irregular), (p["box_proba"], box)),
                      invert_proba=p["invert_proba"])
    return mixed if p["out_min_size"] is None else RescaledMask(mixed, p["out_min_size"])


def _lama_eval(p: Mapping[str, Any]) -> FilteredMask:
    # Filter after the rescale, so the returned mask itself never covers more than max_tamper_area.
    return FilteredMask(_lama_mixed(p), variants_n=p["variants_n"], max_tamper_area=p["max_tamper_area"],
                        max_attempts=p["max_attempts"])


def _mixed_params(irregular: Sequence[int], box: Sequence[int] | None, irregular_proba: float = 1.0,
                  box_proba: float = 1.0) -> dict[str, Any]:
    """Flat parameters of a LaMa mixed generator, in the order of the doc's tables.

    ``irregular`` is (min_times, max_times, max_width, max_len); ``box`` is (margin, bbox_min_size,
    bbox_max_size, min_times, max_times), or None for "no box" (probability 0, LaMa's box defaults kept so
    that ``box_proba`` can still be overridden).
    """
    min_times, max_times, max_width, max_len = irregular
    margin, bbox_min, bbox_max, box_min, box_max = box if box is not None else (10, 30, 100, 0, 3)
    return dict(
        irregular_proba=float(irregular_proba), max_angle=4, max_len=max_len, max_width=max_width,
        min_times=min_times, max_times=max_times, draw_method="line",
        box_proba=float(box_proba if box is not None else 0.0), margin=margin, bbox_min_size=bbox_min,
        bbox_max_size=bbox_max, box_min_times=box_min, box_max_times=box_max, invert_proba=0.0,
        out_min_size=None,
    )


def _eval_params(irregular: Sequence[int], box: Sequence[int] | None, out_min_size: int) -> dict[str, Any]:
    return dict(_mixed_params(irregular, box, box_proba=0.3), variants_n=5, max_tamper_area=0.5,
                max_attempts=10, out_min_size=out_min_size)


_DUMB_DEFAULTS = {k: v for k, v in dataclass_defaults(DumbMask).items() if k != "is_training"}


PRESETS: Mapping[str, Preset] = {
    # LaMa big-lama / lama-fourier training (abl-04-256-mh-dist): irregular or box, 50/50.
    "lama_train": Preset(_lama_mixed, _mixed_params((1, 5, 100, 200), (10, 30, 150, 1, 4))),
    # LaMa abl-02-thin-bb (DeepFill-like): thin irregular or a single box, 50/50.
    "lama_thin_bb": Preset(_lama_mixed, _mixed_params((4, 12, 40, 80), (0, 30, 128, 1, 1))),
    # LaMa evaluation sets (configs/data_gen/random_*.yaml): box proba 0.3 vs irregular 1, <= 50 % area.
    # Drawn with the short side at out_min_size (as gen_mask_dataset.py resizes images), then resized.
    "lama_thin_256": Preset(_lama_eval, _eval_params((4, 50, 10, 40), None, 256)),
    "lama_medium_256": Preset(_lama_eval, _eval_params((4, 5, 50, 100), (0, 10, 50, 1, 5), 256)),
    "lama_thick_256": Preset(_lama_eval, _eval_params((1, 5, 100, 200), (10, 30, 150, 1, 3), 256)),
    "lama_thin_512": Preset(_lama_eval, _eval_params((4, 70, 20, 100), None, 512)),
    "lama_medium_512": Preset(_lama_eval, _eval_params((4, 10, 100, 200), (0, 30, 150, 1, 5), 512)),
    "lama_thick_512": Preset(_lama_eval, _eval_params((1, 5, 250, 450), (10, 30, 300, 1, 4), 512)),
    "outpainting": Preset(lambda p: OutpaintingMask(**p), dataclass_defaults(OutpaintingMask)),
    "superres": Preset(lambda p: SuperresMask(**p), dataclass_defaults(SuperresMask)),
    "lama_dumb_train": Preset(lambda p: DumbMask(is_training=True, **p), _DUMB_DEFAULTS),
    "lama_dumb_eval": Preset(lambda p: DumbMask(is_training=False, **p), _DUMB_DEFAULTS),
}
