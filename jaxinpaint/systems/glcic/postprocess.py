"""GLCIC's optional post-processing (official ``inpaint.lua --postproc``, ``:89-117``), host-side with OpenCV.

1. ``dst = cv2.inpaint(out, M·255, 1, INPAINT_TELEA)``: Telea's fast marching fills the hole from its border;
2. ``cv2.seamlessClone(src=out, dst=dst, mask=M·255, p, NORMAL_CLONE)``: Poisson blending of the network's
   fill into that, centred on the hole's bounding box, ``p = (⌊(c_min + c_max)/2⌋, ⌊(r_min + r_max)/2⌋)``
   (0-based, inclusive ends).

``out`` is the completed (composited) image, 8-bit, in OpenCV's BGR order as ``utils.lua`` swaps it. It runs
on the host (never reimplemented in JAX: the result depends on OpenCV's internals, systems-more.md §3.11);
:func:`postprocess_batch` is what ``jax.pure_callback`` calls inside GLCIC's ``predict``. Only hole pixels
are kept from the result: OpenCV's blend also touches known pixels near the hole, and jaxinpaint returns known
pixels unchanged. Holes OpenCV cannot blend (a few pixels) keep the network's fill, with a warning.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - opencv is a declared dependency
        raise ImportError("GLCIC's post-processing needs OpenCV: pip install opencv-python-headless") from err
    return cv2


def blend_center(hole: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` centre of the hole's bounding box as ``inpaint.lua:93-109`` computes it."""
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    return int((cols[0] + cols[-1]) // 2), int((rows[0] + rows[-1]) // 2)


def postprocess(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Telea fill then Poisson blending of ``image`` (H, W, 3 uint8 RGB) inside ``hole`` (H, W bool).

    Returns uint8 RGB equal to ``image`` outside the hole.
    """
    cv2 = _cv2()
    image = np.ascontiguousarray(image, np.uint8)
    hole = np.asarray(hole, bool)
    if not hole.any():
        return image.copy()
    bgr = np.ascontiguousarray(image[..., ::-1])
    mask = hole.astype(np.uint8) * 255
    dst = cv2.inpaint(bgr, mask, 1, cv2.INPAINT_TELEA)
    try:
        blended = cv2.seamlessClone(bgr, dst, mask, blend_center(hole), cv2.NORMAL_CLONE)
    except cv2.error as err:
        log.warning("GLCIC post-processing: OpenCV could not blend this %d-pixel hole (%s); keeping the network's "
                    "fill", int(hole.sum()), str(err).strip().splitlines()[-1])
        return image.copy()
    return np.where(hole[..., None], blended[..., ::-1], image)


def postprocess_batch(images: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """:func:`postprocess` on (N, H, W, 3) float images in [0, 1] and (N, H, W, 1) masks, for ``pure_callback``.

    The float images are rounded to 8 bits (so the known pixels of a uint8 input come back exactly) and the
    results returned at the centres of their 8-bit bins, ``(v + 0.5)/255``, so that writing them as uint8
    (``uint8(clip(x·255))``) gives exactly ``v``.
    """
    images, holes = np.asarray(images), np.asarray(holes)
    out = np.empty(images.shape, np.float32)
    for i in range(images.shape[0]):
        u8 = np.round(np.clip(images[i], 0.0, 1.0) * 255.0).astype(np.uint8)
        out[i] = (postprocess(u8, holes[i, ..., 0] > 0.5).astype(np.float32) + 0.5) / 255.0
    return out
