"""The local patch around a hole: where it is (host side, per example) and cutting it out (in the losses).

DeepFill v1's local critic and its spatially discounted L1 look at a fixed-size box around the hole (128² at
256², "the bbox", larger than the hole it was shrunk to), Shift-Net's critic and hole losses at the 120² hole of
its centre and ``rect`` masks. The masks only carry the hole, so the box is recovered from it:
:func:`box_around_hole` centres a ``size`` box on the hole's bounding box. For DeepFill v1's masks this is the
original bbox exactly (its hole is the bbox shrunk by the same amount on opposite sides), for Shift-Net's
square holes it is the hole itself; for any other mask (evaluation, user masks) it is a box of the same size
on the hole, clipped to the image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def box_around_hole(mask: np.ndarray, size: int) -> np.ndarray:
    """``(top, left)`` int32 of the ``size`` × ``size`` box centred on the hole's bounding box, inside the image.

    Args:
      mask: (H, W) or (H, W, 1), non-zero = hole.
      size: the box side (at most min(H, W)).

    Returns:
      int32[2]; a mask without a hole gives the centred box.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"box_around_hole: mask must be (H, W) or (H, W, 1), got shape {mask.shape}")
    height, width = mask.shape
    if not 1 <= size <= min(height, width):
        raise ValueError(f"box_around_hole: a {size}-pixel box does not fit a {height}x{width} image")
    rows, cols = np.nonzero(mask)
    corner = []
    for coords, extent in ((rows, height), (cols, width)):
        lo, hi = (int(coords.min()), int(coords.max()) + 1) if coords.size else (0, extent)
        start = (lo + hi - size) // 2  # exact for holes shrunk symmetrically from a size-wide box
        corner.append(min(max(start, 0), extent - size))
    return np.asarray(corner, np.int32)


def crop(images: jax.Array, boxes: jax.Array, size: int) -> jax.Array:
    """The ``size`` × ``size`` patch of every image at its ``(top, left)`` (a traced gather, static size).

    Args:
      images: (B, H, W, C).
      boxes: (B, 2) int ``(top, left)`` from :func:`box_around_hole`.
      size: the patch side.

    Returns:
      (B, size, size, C).
    """
    if boxes.ndim != 2 or boxes.shape != (images.shape[0], 2):
        raise ValueError(f"crop: boxes must be (B, 2) = (top, left) for {images.shape[0]} images, got {boxes.shape}")

    def one(image, box):
        return jax.lax.dynamic_slice(image, (box[0], box[1], 0), (size, size, image.shape[-1]))

    return jax.vmap(one)(images, jnp.asarray(boxes, jnp.int32))
