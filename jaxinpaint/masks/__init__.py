"""Seeded numpy mask generators: LaMa's training/evaluation masks, DeepFill v2 strokes, boxes, mask folders.

Layout: one module per family (``lama``, ``deepfill``, ``boxes``, ``folder``, ``classic`` (Context Encoder,
GLCIC), ``shift_net``), each with a ``PRESETS`` table; this package merges them into the one registry behind
:func:`get` and :func:`names`.

Every generator is a small, picklable object called as ``gen(rng, height, width)`` with a
``np.random.Generator``; it returns a bool array ``(height, width)`` with True = hole. The output depends
only on the generator's parameters and the rng state, so evaluation masks are fixed by a seed and grain
workers can pickle the generators. Bit-exact parity with LaMa's global ``np.random`` stream is *not* a goal
(random numbers are drawn in vectorised blocks); the distributions are LaMa's (see
``shared/docs/data-masks-metrics.md`` §2).

Public entry points::

    gen = jaxinpaint.masks.get('lama_train')          # or get('lama_thick_256', max_width=50)
    hole = gen(np.random.default_rng(0), 256, 256)     # bool (256, 256)
    jaxinpaint.masks.names()                           # every preset name
    batch = jaxinpaint.masks.sample_batch(gen, rng, 8, 256, 256)   # float32 (8, 256, 256, 1)

LaMa's parameters are in pixels. The evaluation presets draw with the short side at 256/512 and resize to
the requested size (``out_min_size``, as LaMa's dataset tool resizes images), so 64 px test images get the
evaluation sets' area distribution. The training mixes draw at the requested size, like LaMa's training on
256 crops; at 64 px ``lama_train`` covers ~65 % on average, so tiny smoke configs may pass
``get('lama_train', out_min_size=256)`` to keep the 256-px distribution.

Faithful LaMa quirks (``saicinpainting/training/data/masks.py``):
  * irregular stroke count is ``randint(min_times, max_times + 2)``: ``RandomIrregularMaskGenerator`` passes
    ``max_times = min_times + 1 + (max_times - min_times)``, so the count is in [min_times, max_times + 1];
  * the angle is ``0.01 + randint(max_angle)`` radians and becomes ``2 * 3.1415926 - angle`` on every *even
    stroke* index (not segment index); x moves by ``len * sin`` and y by ``len * cos``; segment ends are
    truncated to int and clipped to [0, W] / [0, H] (not W - 1 / H - 1);
  * boxes: ``bbox_max = min(bbox_max_size + 1, H - 2 margin, W - 2 margin)`` so sizes are
    [bbox_min_size, bbox_max_size] inclusive unless capped by the canvas; box count [min_times, max_times]
    (no off-by-one for boxes); boxes may overlap;
  * mixed generator: probabilities renormalised over the non-zero ones, one generator per sample, optional
    inversion with ``invert_proba``.

Deliberate differences from LaMa (documented, small):
  * Rasterisation has no cv2. ``cv2.line(thickness=t)`` fills a band of half-width ``(t + 1) // 2`` with
    round caps of radius ``(t + 1) // 2``; it is emulated with ``PIL.ImageDraw.line(width=2r + 1)`` plus
    filled discs of radius ``r = (t + 1) // 2`` at both ends. Against real cv2 (opencv-python-headless
    5.0.0, 400 random 256² segments with t in [5, 105)) the mean IoU is 0.979 and the mean relative area
    difference +0.06 %; a plain ``width=t`` PIL line with ``t``-diameter discs would be 3.5 % too thin on
    average. Whole masks drawn from identical random parameters with this emulation and with cv2 (300
    each at 256²) agree with mean IoU 0.992 for lama_train-like strokes and 0.962 for thin_256-like
    strokes (edge pixels), hole fraction +0.002 on average (at most 0.0064).
  * SQUARE draw method: LaMa slices ``mask[y - r:y + r, x - r:x + r]``, which wraps or vanishes when the
    square touches the top/left border (negative start index); here the square is clipped to the canvas.
  * Boxes on canvases too small for the configured sizes (LaMa raises ``low >= high``): the margin shrinks
    to ``(min(H, W) - 1) // 2`` at most and the size range collapses to what fits, so the tiny 32-64 px
    smoke configs still get boxes. Canvases large enough for the configured sizes behave exactly as LaMa.
  * Evaluation presets (``lama_{thin,medium,thick}_{256,512}``): LaMa's ``bin/gen_mask_dataset.py`` draws
    ``variants_n = 5`` masks per image, drops those with area > ``max_tamper_area = 0.5`` and keeps one
    survivor at random; when none survives it re-attempts with 5 fresh variants, up to ``n_max = 10``
    times, and then raises. Here the first surviving variant is returned (the same distribution, because
    variants are i.i.d.), at most ``variants_n * max_attempts`` draws are made, and then RuntimeError is
    raised. LaMa generates the masks on the short-side-resized image and then takes a random square crop;
    here the mask is drawn with its short side at ``out_min_size`` (:class:`RescaledMask`), i.e. at
    (height, width) itself for a square 256/512 canvas, and resized (nearest) otherwise, without the crop.
    So small test images get masks with the evaluation sets' area distribution.
  * ``LinearRamp`` (unused by every released LaMa config) is not implemented; the "segmentation" generator
    needs detectron2 weights, so use a mask folder (:class:`FolderMasks`) of pre-made masks instead.
  * Outpainting: LaMa quantises the left/right pad fraction with the image *height* and the top/bottom one
    with the *width* (``get_padding(size=...)`` is swapped); here each side uses its own dimension.
    ``is_fixed_randomness`` (seeding from an image hash) is left to the caller's rng.
  * "Dumb" masks: LaMa indexes ``mask[x1:x2, y1:y2]`` with x drawn from the width (H and W swapped); here
    rows come from the height and columns from the width (identical on square canvases).
  * DeepFill v2 (written from the description in data-masks-metrics.md §2.6, not from its CC BY-NC code):
    its ``h, w = mask.size`` swaps H and W; here the axes are the right way round (identical when square).
    Its random flips are no-ops upstream and are omitted. The box size and jitter scale with the canvas
    (half of each side, delta up to 1/8 of each side: 128 and 32 at 256²). Upstream the mask is drawn once
    per *batch* and shared by all samples; that is the caller's choice (call the generator once per batch).

Measured hole-area statistics (``python -m jaxinpaint.masks --n 1000``, numpy ``default_rng(0)``, square
canvas) against the doc's table (§2.4, a different reimplementation; loose targets only)::

    generator            size  mean  median  p10   p90   max  | doc: mean median  p10   p90
    lama_train            256  .350   .320  .099  .652  .950 |      .354  .316  .104  .662
    lama_thin_256         256  .291   .299  .097  .456  .498 |      .288  .302  .099  .455
    lama_medium_256       256  .234   .261  .033  .395  .499 |      .242  .267  .036  .392
    lama_thick_256        256  .267   .262  .093  .447  .500 |      .273  .276  .099  .446
    lama_thin_512         512  .287   .299  .091  .458  .500 |      .292  .301  .102  .456
    lama_medium_512       512  .278   .301  .073  .459  .499 |      .279  .304  .070  .458
    lama_thick_512        512  .262   .264  .076  .440  .500 |      .257  .261  .068  .445
    deepfill_v2 (brush)   256  .155   .148  .050  .268  .398 |      .154    -   .048  .263
    deepfill_v2           256  .312   .309  .223  .401  .547 |      .308  .299  .221  .402 (max .548)

Speed (2-core CPU, one mask): lama_train 0.17 ms, lama_thick_256 0.4 ms, lama_thin_256 0.9 ms (up to 51
strokes), lama_thick_512 1.2 ms, deepfill_v2 0.2 ms.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxinpaint.masks import boxes, classic, deepfill, folder, lama, shift_net
from jaxinpaint.masks.base import IMAGE_EXTENSIONS, MaskGenerator, Preset
from jaxinpaint.masks.boxes import CenterBox
from jaxinpaint.masks.deepfill import DeepFillMask
from jaxinpaint.masks.folder import FolderMasks
from jaxinpaint.masks.lama import (
    BoxMask,
    DumbMask,
    FilteredMask,
    IrregularMask,
    MixedMask,
    OutpaintingMask,
    RescaledMask,
    SuperresMask,
)

__all__ = [
    "MaskGenerator",
    "IrregularMask",
    "BoxMask",
    "MixedMask",
    "FilteredMask",
    "RescaledMask",
    "DeepFillMask",
    "CenterBox",
    "OutpaintingMask",
    "SuperresMask",
    "DumbMask",
    "FolderMasks",
    "IMAGE_EXTENSIONS",
    "get",
    "names",
    "sample_batch",
    "hole_ratio_stats",
]

# ----------------------------------------------------------------------------------------------------------
# The registry: every family module contributes its named presets.
# ----------------------------------------------------------------------------------------------------------


def _merge(*families: Mapping[str, Preset]) -> Mapping[str, Preset]:
    merged: dict[str, Preset] = {}
    for family in families:
        for name, preset in family.items():
            if name in merged:
                raise RuntimeError(f"mask preset {name!r} is defined twice")
            merged[name] = preset
    return types.MappingProxyType(merged)


_PRESETS: Mapping[str, Preset] = _merge(
    lama.PRESETS,
    deepfill.PRESETS,
    boxes.PRESETS,
    folder.PRESETS,
    classic.PRESETS,
    shift_net.PRESETS,
)

def names() -> list[str]:
    """Every name :func:`get` accepts, sorted."""
    return sorted(_PRESETS)


def get(name: str, **overrides: Any) -> MaskGenerator:
    """Returns the named mask generator, with preset parameters overridden by keyword.

    Parameter names are flat. The LaMa mixed presets (``lama_train``, ``lama_thin_bb``, ``lama_*_256``,
    ``lama_*_512``) take the irregular parameters under LaMa's names (``max_angle``, ``max_len``,
    ``max_width``, ``min_times``, ``max_times``, ``draw_method``), the box parameters as ``margin``,
    ``bbox_min_size``, ``bbox_max_size``, ``box_min_times``, ``box_max_times``, the mixing parameters
    ``irregular_proba``, ``box_proba``, ``invert_proba``, ``out_min_size`` (draw with the short side at this
    size, then resize to the requested one: 256/512 for the evaluation presets as in LaMa's dataset tool,
    None = draw at the requested size for the training mixes, as LaMa's training does), and for the
    evaluation presets ``variants_n``, ``max_tamper_area``, ``max_attempts``. Other presets take their
    class's fields; ``folder`` takes ``root`` (required), ``threshold`` and ``invert``.

    Args:
      name: one of :func:`names`.
      **overrides: parameters to change, e.g. ``get('lama_train', irregular_proba=0.0)``.

    Returns:
      ``gen(rng, height, width) -> bool[height, width]`` (True = hole), deterministic given the rng state.

    Raises:
      ValueError: unknown name, unknown override name, or an invalid parameter value.
    """
    preset = _PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown mask generator {name!r}; valid names: {', '.join(names())}")
    unknown = sorted(set(overrides) - set(preset.defaults))
    if unknown:
        valid = ", ".join(sorted(preset.defaults)) or "(none: this generator has no parameters)"
        raise ValueError(f"masks.get({name!r}): unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
    params = {**preset.defaults, **overrides}
    try:
        return preset.build(params)
    except ValueError as err:
        raise ValueError(f"masks.get({name!r}): {err}") from err


def sample_batch(gen: MaskGenerator, rng: np.random.Generator, batch_size: int, height: int,
                 width: int) -> np.ndarray:
    """Draws ``batch_size`` masks into the model-facing layout: float32 ``(N, H, W, 1)``, 1 = hole."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"sample_batch: batch_size must be a positive int, got {batch_size!r}")
    return np.stack([gen(rng, height, width) for _ in range(batch_size)]).astype(np.float32)[..., None]


# ----------------------------------------------------------------------------------------------------------
# Statistics script: python -m jaxinpaint.masks [--n 1000] [--seed 0] [NAME ...]
# ----------------------------------------------------------------------------------------------------------

_STATS_DEFAULT = (
    ("lama_train", 256, {}), ("lama_thin_256", 256, {}), ("lama_medium_256", 256, {}),
    ("lama_thick_256", 256, {}), ("lama_thin_512", 512, {}), ("lama_medium_512", 512, {}),
    ("lama_thick_512", 512, {}), ("deepfill_v2", 256, {"box": False}), ("deepfill_v2", 256, {}),
)


def hole_ratio_stats(
    gen: MaskGenerator, size: int | tuple[int, int], n: int, seed: int = 0
) -> dict[str, float]:
    """Mean/median/p10/p90/max hole fraction of ``n`` masks drawn from ``default_rng(seed)``."""
    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    rng = np.random.default_rng(seed)
    ratios = np.array([gen(rng, height, width).mean() for _ in range(n)])
    return dict(mean=float(ratios.mean()), median=float(np.median(ratios)),
                p10=float(np.percentile(ratios, 10)), p90=float(np.percentile(ratios, 90)),
                max=float(ratios.max()))


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Hole-area statistics of jaxinpaint's mask generators.")
    parser.add_argument("names", nargs="*", help="generator names (default: the doc's table)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="canvas side for names given explicitly")
    args = parser.parse_args(argv)
    rows = [(name, args.size, {}) for name in args.names] if args.names else _STATS_DEFAULT
    print(f"{'generator':<22}{'size':>5}{'mean':>7}{'median':>8}{'p10':>7}{'p90':>7}{'max':>7}")
    for name, size, kw in rows:
        s = hole_ratio_stats(get(name, **kw), size, args.n, args.seed)
        label = name + (" (brush)" if kw.get("box") is False else "")
        print(f"{label:<22}{size:>5}{s['mean']:>7.3f}{s['median']:>8.3f}{s['p10']:>7.3f}{s['p90']:>7.3f}"
              f"{s['max']:>7.3f}")
