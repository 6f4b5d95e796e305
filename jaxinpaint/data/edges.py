"""Greyscale and Canny edge maps for the structure-guided systems (EdgeConnect, CTSDG), computed on the host
with scikit-image, the library both originals use (so the maps equal theirs on the same inputs).

Every function works on one example (numpy) and is deterministic, so they run in the input pipeline's worker
threads (``System.prepare_example``) and at inference without affecting exact resume.

A system that needs these inputs returns :func:`structure_inputs` from its ``prepare_example``; the batch then
carries ``'grey'`` and ``'edge'`` (``(B, H, W, 1)`` float32) beside ``'image'`` and ``'mask'``.
"""

from __future__ import annotations

import numpy as np


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB, uint8 or float in [0, 1] -> (H, W) float64 in [0, 1]: ``skimage.color.rgb2gray``.

    Rec. 709 luma (0.2125 R + 0.7154 G + 0.0721 B), computed in float64 as the originals do on their uint8
    images; a float32 image of 8-bit values gives the uint8 image's grey to within 1e-8.
    """
    from skimage.color import rgb2gray

    image = np.asarray(image)
    return rgb2gray(image if image.dtype == np.uint8 else image.astype(np.float64))


def canny(grey_image: np.ndarray, sigma: float, mask: np.ndarray | None = None) -> np.ndarray:
    """``skimage.feature.canny(grey, sigma=sigma, mask=mask)`` as float32 0/1 (H, W).

    Args:
      grey_image: (H, W) in [0, 1].
      sigma: the Gaussian's standard deviation (EdgeConnect and CTSDG use 2); ``sigma <= 0`` gives no edges
        (EdgeConnect's ``SIGMA=-1``).
      mask: optional (H, W) bool, True where edges may be found (EdgeConnect's test mode passes the known
        region, so no edge is found inside the hole). scikit-image zeroes the pixels outside the mask before
        smoothing and renormalises by the smoothed mask, so the hole's content never reaches the edges.
    """
    from skimage.feature import canny as sk_canny

    if sigma <= 0:
        return np.zeros(np.shape(grey_image), np.float32)
    return sk_canny(np.asarray(grey_image, np.float64), sigma=float(sigma),
                    mask=None if mask is None else np.asarray(mask, bool)).astype(np.float32)


def structure_inputs(image: np.ndarray, hole: np.ndarray | None, *, sigma: float) -> dict[str, np.ndarray]:
    """The greyscale image and its Canny edges of one example, as a batch carries them.

    Args:
      image: (H, W, 3) RGB in [0, 1] (or uint8).
      hole: (H, W) or (H, W, 1), non-zero = hole: edges are then found only in the known region (EdgeConnect's
        test mode, ``canny(grey, sigma, mask=1 - hole)``); ``None`` finds them in the whole image
        (EdgeConnect's training mode, where the edges the edge generator must reproduce lie inside the hole).
      sigma: Canny's Gaussian standard deviation.

    Returns:
      ``{'grey': (H, W, 1) float32, 'edge': (H, W, 1) float32 0/1}``; the grey map is of the whole image.
    """
    g = grey(image)
    known = None
    if hole is not None:
        hole = np.asarray(hole)
        known = (hole.reshape(hole.shape[:2]) == 0)
    return {"grey": g.astype(np.float32)[..., None], "edge": canny(g, sigma, known)[..., None]}
