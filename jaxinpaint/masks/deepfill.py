"""DeepFill v2's free-form training masks (brush strokes plus a jittered box), written from
data-masks-metrics.md §2.6 (the original is CC BY-NC 4.0), and DeepFill v1's rectangle (the box alone,
systems-more.md §10.7: a 128² box at a uniform position, shrunk by 0-16 px on opposite sides at 256²)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from jaxinpaint.masks.base import (
    Preset,
    as_bool,
    check_call,
    dataclass_defaults,
    disc,
    is_int,
    is_number,
    new_canvas,
    require,
)


@dataclasses.dataclass(frozen=True)
class DeepFillMask:
    """DeepFill v2's free-form training mask: brush strokes ∪ a jittered box (data-masks-metrics.md §2.6).

    Brush: ``randint(min_strokes, max_strokes + 1)`` strokes; each is a polyline of
    ``randint(min_vertices, max_vertices + 1)`` steps from a uniform start, with a per-stroke angle range
    ``mean_angle ± U(0, angle_range)`` (two independent draws), the angle replaced by ``2π - angle`` on even
    steps, step length ``clip(N(r, r // 2), 0, 2r)`` with ``r = sqrt(H² + W²) / 8``, vertices clipped to
    [0, W] × [0, H] and truncated to int, drawn with width ``int(U(min_brush_width, max_brush_width))`` plus
    discs at the vertices. Box: ``box_frac`` of each side at a uniform top-left in
    [margin, dim - margin - box), shrunk at both ends per axis by ``randint(max_delta // 2 + 1)`` with
    ``max_delta = int(max_delta_frac * dim)``: a 96-128 px hole per side at 256².

    Attributes:
      brush: include the brush strokes.
      box: include the box.
    """

    brush: bool = True
    box: bool = True
    min_strokes: int = 1
    max_strokes: int = 3
    min_vertices: int = 4
    max_vertices: int = 11
    mean_angle: float = 2 * math.pi / 5
    angle_range: float = 2 * math.pi / 15
    min_brush_width: float = 12.0
    max_brush_width: float = 40.0
    box_frac: float = 0.5
    max_delta_frac: float = 0.125
    vertical_margin: int = 0
    horizontal_margin: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        require(name, "brush/box", bool(self.brush) or bool(self.box), "at least one True",
                 (self.brush, self.box))
        for lo, hi in (("min_strokes", "max_strokes"), ("min_vertices", "max_vertices")):
            lo_v, hi_v = getattr(self, lo), getattr(self, hi)
            require(name, lo, is_int(lo_v) and lo_v >= 1, "an int >= 1", lo_v)
            require(name, hi, is_int(hi_v) and hi_v >= lo_v, f"an int >= {lo} ({lo_v})", hi_v)
        require(name, "min_brush_width", is_number(self.min_brush_width) and self.min_brush_width >= 1,
                 "a number >= 1", self.min_brush_width)
        require(name, "max_brush_width",
                 is_number(self.max_brush_width) and self.max_brush_width >= self.min_brush_width,
                 f"a number >= min_brush_width ({self.min_brush_width})", self.max_brush_width)
        require(name, "box_frac", is_number(self.box_frac) and 0 < self.box_frac <= 1, "a number in (0, 1]",
                 self.box_frac)
        require(name, "max_delta_frac", is_number(self.max_delta_frac) and 0 <= self.max_delta_frac <= 1,
                 "a number in [0, 1]", self.max_delta_frac)
        for field in ("vertical_margin", "horizontal_margin", "mean_angle", "angle_range"):
            value = getattr(self, field)
            require(name, field, is_number(value) and value >= 0, "a number >= 0", value)

    def _draw_brush(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        image, draw = new_canvas(height, width)
        avg_radius = math.sqrt(height * height + width * width) / 8
        for _ in range(int(rng.integers(self.min_strokes, self.max_strokes + 1))):
            n_steps = int(rng.integers(self.min_vertices, self.max_vertices + 1))
            angle_min = self.mean_angle - rng.uniform(0, self.angle_range)
            angle_max = self.mean_angle + rng.uniform(0, self.angle_range)
            angles = rng.uniform(angle_min, angle_max, size=n_steps)
            angles[::2] = 2 * math.pi - angles[::2]
            x, y = int(rng.integers(width)), int(rng.integers(height))
            radii = np.clip(rng.normal(avg_radius, avg_radius // 2, size=n_steps), 0, 2 * avg_radius)
            dx, dy = radii * np.cos(angles), radii * np.sin(angles)
            vertices = [(x, y)]
            for k in range(n_steps):
                x = int(min(max(x + dx[k], 0.0), float(width)))
                y = int(min(max(y + dy[k], 0.0), float(height)))
                vertices.append((x, y))
            brush_width = int(rng.uniform(self.min_brush_width, self.max_brush_width))
            draw.line(vertices, fill=1, width=brush_width)
            for vx, vy in vertices:
                disc(draw, vx, vy, brush_width // 2)
        return as_bool(image)

    def _draw_box(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), bool)
        spans = []
        for dim, margin in ((height, self.vertical_margin), (width, self.horizontal_margin)):
            box = max(1, int(self.box_frac * dim))
            margin = min(int(margin), max(0, (dim - box) // 2))
            start = int(rng.integers(margin, max(dim - margin - box, margin + 1)))
            spans.append((start, box, dim))
        for k, (start, box, dim) in enumerate(spans):
            delta = int(rng.integers(int(self.max_delta_frac * dim) // 2 + 1))
            spans[k] = (start + delta, start + box - delta)
        (top, bottom), (left, right) = spans
        mask[top:bottom, left:right] = True
        return mask

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Draws one mask (box first, then brush); see the class docstring for the distribution."""
        height, width = check_call(type(self).__name__, rng, height, width)
        mask = np.zeros((height, width), bool)
        if self.box:
            mask |= self._draw_box(rng, height, width)
        if self.brush:
            mask |= self._draw_brush(rng, height, width)
        return mask


_BOX_FIELDS = ("box_frac", "max_delta_frac", "vertical_margin", "horizontal_margin")

PRESETS: Mapping[str, Preset] = {
    "deepfill_v2": Preset(lambda p: DeepFillMask(**p), dataclass_defaults(DeepFillMask)),
    # DeepFill v1's rectangle (v1.0.0 ``bbox2mask``, which v2 reuses): the box alone, no brush.
    "deepfill_v1": Preset(lambda p: DeepFillMask(brush=False, **p),
                          {k: v for k, v in dataclass_defaults(DeepFillMask).items() if k in _BOX_FIELDS}),
}
