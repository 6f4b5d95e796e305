"""Fixed evaluation sets the way LaMa's ``bin/gen_mask_dataset.py`` writes them (``jaxinpaint make_eval_set``;
the procedure and the deliberate differences are in ``jaxinpaint.cli.make_eval_set``'s docstring)."""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np
from PIL import Image

from jaxinpaint import masks
from jaxinpaint.data import photos
from jaxinpaint.data.images import list_images, load_rgb_uint8, resize_short_side, sample_rng

logger = logging.getLogger("jaxinpaint.eval_set")

#: LaMa's ``n_max``: attempts per image before giving up.
MAX_ATTEMPTS = 10


def propose_square_crop(hole: np.ndarray, rng: np.random.Generator, min_overlap: float = 1.0
                        ) -> tuple[int, int, int, int]:
    """LaMa's ``propose_random_square_crop``: a square (side = short side) placed to cover the hole.

    Along the long axis the start is uniform in ``[lo, hi)`` with ``lo = max(0, min(L - S - 1,
    first + extent·min_overlap - S))`` and ``hi = max(lo + 1, min(L - S, first + extent·min_overlap))``
    where ``first``/``extent`` are the hole's first index and extent along that axis. With
    ``min_overlap = 1`` this favours crops that contain the whole hole. An empty hole gets a uniform crop.

    Returns:
      ``(left, top, right, bottom)``.
    """
    height, width = hole.shape
    if height == width:
        return 0, 0, width, height
    long_len, size = (width, height) if height < width else (height, width)
    axis = 0 if height < width else 1  # reduce over rows to get columns when the image is wide
    occupied = np.flatnonzero(hole.any(axis=axis))
    if occupied.size == 0:
        start = int(rng.integers(0, long_len - size + 1))
    else:
        first, extent = int(occupied[0]), int(occupied[-1] - occupied[0])
        lo = max(0, min(long_len - size - 1, first + extent * min_overlap - size))
        hi = max(lo + 1, min(long_len - size, first + extent * min_overlap))
        start = int(rng.integers(int(lo), int(hi)))
    if height < width:
        return start, 0, start + size, height
    return 0, start, width, start + size


def _unfiltered(gen: masks.MaskGenerator) -> masks.MaskGenerator:
    """The preset without its own area filter: LaMa filters after cropping, not on the whole image."""
    return gen.base if isinstance(gen, masks.FilteredMask) else gen


def _default_out_min_size(mask_name: str) -> int:
    return 512 if mask_name.endswith("_512") else 256


def make_one(image: np.ndarray, gen: masks.MaskGenerator, rng: np.random.Generator, *, out_min_size: int,
             variants_n: int = 5, max_tamper_area: float = 0.5) -> tuple[np.ndarray, np.ndarray] | None:
    """One LaMa-style (crop, hole) from a uint8 image, or None when every variant was rejected.

    Args:
      image: uint8 (H, W, 3).
      gen: mask generator (``gen(rng, h, w) -> bool``), applied to the resized full image.
      rng: this image's random stream.
      out_min_size: short side after resizing (the crop's side).
      variants_n: masks drawn per attempt.
      max_tamper_area: largest accepted hole fraction of the crop.

    Returns:
      ``(crop uint8 (S, S, 3), hole bool (S, S))`` or None.
    """
    pil = resize_short_side(Image.fromarray(image), out_min_size)
    full = np.asarray(pil)
    h, w = full.shape[:2]
    kept = []
    for _ in range(variants_n):
        hole = np.asarray(gen(rng, h, w), bool)
        left, top, right, bottom = propose_square_crop(hole, rng)
        hole = hole[top:bottom, left:right]
        if hole.mean() > max_tamper_area or not hole.any():
            continue
        kept.append((full[top:bottom, left:right], hole))
    if not kept:
        return None
    return kept[int(rng.integers(len(kept)))]


def make_eval_set(input_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                  mask_name: str = "lama_thick_256", seed: int = 0, out_min_size: int | None = None,
                  variants_n: int = 5, max_tamper_area: float = 0.5, max_images: int | None = None,
                  overwrite: bool = False) -> dict[str, int]:
    """Writes the evaluation set; returns counts ``{'images', 'written', 'unreadable', 'no_mask'}``.

    Raises:
      FileNotFoundError: the input folder is missing or holds no image.
      FileExistsError: the output already holds an evaluation set and ``overwrite`` is False.
      RuntimeError: no pair at all could be written (all unreadable / all masks rejected).
    """
    input_dir = pathlib.Path(input_dir).expanduser()
    output_dir = pathlib.Path(output_dir).expanduser()
    if output_dir.is_dir() and not overwrite and any(output_dir.rglob("*_mask*.png")):
        raise FileExistsError(f"{str(output_dir)!r} already holds mask files; choose an empty output folder "
                              "or pass --overwrite")
    files = list_images(input_dir, exclude=[output_dir])
    if max_images is not None:
        files = files[:max_images]
    out_min_size = out_min_size or _default_out_min_size(mask_name)
    gen = _unfiltered(masks.get(mask_name))
    counts = {"images": len(files), "written": 0, "unreadable": 0, "no_mask": 0}
    for path in files:
        rel = path.relative_to(input_dir).as_posix()
        try:
            image = load_rgb_uint8(path)
        except photos.UnreadableImageError as err:
            logger.warning("skipping unreadable image %s", err)
            counts["unreadable"] += 1
            continue
        rng = sample_rng(seed, rel)
        result = None
        for _ in range(MAX_ATTEMPTS):
            result = make_one(image, gen, rng, out_min_size=out_min_size, variants_n=variants_n,
                              max_tamper_area=max_tamper_area)
            if result is not None:
                break
        if result is None:
            logger.warning("no mask for %s: %d x %d masks all covered more than %.0f%% of the crop (or none)",
                           rel, MAX_ATTEMPTS, variants_n, 100 * max_tamper_area)
            counts["no_mask"] += 1
            continue
        crop, hole = result
        base = output_dir / (rel[:-len(path.suffix)] + "_crop000")
        base.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(str(base) + ".png")
        Image.fromarray(hole.astype(np.uint8) * 255, mode="L").save(str(base) + "_mask000.png")
        counts["written"] += 1
    if counts["written"] == 0:
        raise RuntimeError(f"no evaluation pair written from {len(files)} image(s) under "
                           f"{str(input_dir)!r}: {counts['unreadable']} unreadable, {counts['no_mask']} "
                           "without an acceptable mask")
    return counts
