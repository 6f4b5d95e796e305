"""Greyscale and Canny edge maps for the structure-guided systems (EdgeConnect, CTSDG), computed on the host
with scikit-image, the library both originals use (so the maps equal theirs on the same inputs).

Both functions work on one example (numpy) and are deterministic, so they run in the input pipeline's worker
threads (``System.prepare_example``) without affecting exact resume.
"""

from __future__ import annotations

import numpy as np


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB, uint8 or float in [0, 1] -> (H, W) float64 in [0, 1]: ``skimage.color.rgb2gray``."""
    from skimage.color import rgb2gray

    return rgb2gray(np.asarray(image))


def canny(grey_image: np.ndarray, sigma: float, mask: np.ndarray | None = None) -> np.ndarray:
    """``skimage.feature.canny(grey, sigma=sigma, mask=mask)`` as float32 0/1 (H, W).

    Args:
      grey_image: (H, W) in [0, 1].
      sigma: the Gaussian's standard deviation (EdgeConnect and CTSDG use 2).
      mask: optional (H, W) bool, True where edges may be found (EdgeConnect's test mode passes the known
        region, so no edge is found inside the hole).
    """
    from skimage.feature import canny as sk_canny

    if sigma <= 0:
        return np.zeros(np.shape(grey_image), np.float32)
    return sk_canny(np.asarray(grey_image, np.float64), sigma=float(sigma),
                    mask=None if mask is None else np.asarray(mask, bool)).astype(np.float32)
