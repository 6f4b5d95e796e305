"""Torch7 ``image.scale`` (bilinear) and ``image.rotate`` (bilinear) in numpy, as MSNPS calls them.

Read in ``torch/image`` (``generic/image.c``: ``Main_scaleLinear_rowcol``, ``Main_scaleBilinear``,
``Main_rotateBilinear``; ``init.lua``: ``scale``, ``rotate``); MSNPS resizes every image with them (the
content pass, the pyramid, the upscaled starting image of each scale, the scaled texture images) and rotates
the texture images with the latter. They are not the half-pixel bilinear of PyTorch or ``jax.image``:

* **scale**, per axis, rows (width) first then columns: *enlarging* interpolates with the corners aligned,
  position ``d * (n_src - 1) / (n_dst - 1)``, the last output pixel copying the last input pixel;
  *shrinking* averages: output pixel ``d`` is the mean of the input over ``[d * s, (d + 1) * s)`` with
  ``s = n_src / n_dst``, fractional pixels at both ends weighted by their overlap; equal sizes copy. Both are
  linear per axis, so they are applied here as two (n_dst, n_src) matrices. ``image.scale(img, MAX)`` sets
  the longer side to MAX and the other to ``side * MAX / longer``, truncated by the tensor constructor.
* **rotate** (bilinear): output pixel (i, j) samples the input at ``(cos t (i - xc) - sin t (j - yc),
  cos t (j - yc) + sin t (i - xc))`` with ``xc = W / 2``, ``yc = H / 2``: the integer parts are floored, then
  ``trunc(xc)``, ``trunc(yc)`` added (for odd sides a half-pixel shift), and a pixel whose 2×2 neighbourhood
  leaves the image is 0. So even a rotation by 0 zeroes the last row and column of an even-sized image, and
  MSNPS's unrotated texture images carry that zero border (it rotates by ``0 * step`` too).

Computed in float32 where the C code uses ``float``; results agree with a float loop to rounding.
"""

from __future__ import annotations

import math

import numpy as np


def _axis_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """(n_dst, n_src) weights of ``Main_scaleLinear_rowcol`` along one axis."""
    m = np.zeros((n_dst, n_src), np.float64)
    if n_dst == n_src:
        return np.eye(n_dst, dtype=np.float32)
    if n_dst > n_src:
        if n_src == 1:
            m[:, 0] = 1.0
            return m.astype(np.float32)
        scale = np.float32(n_src - 1) / np.float32(n_dst - 1)
        for d in range(n_dst - 1):
            pos = np.float32(d) * scale
            i = int(pos)
            f = float(pos - np.float32(i))
            m[d, i] += 1.0 - f
            m[d, i + 1] += f
        m[n_dst - 1, n_src - 1] = 1.0
        return m.astype(np.float32)
    scale = np.float32(n_src) / np.float32(n_dst)
    i0, f0 = 0, 0.0
    for d in range(n_dst):
        pos = np.float32(d + 1) * scale
        i1 = int(pos)
        f1 = float(pos - np.float32(i1))
        row = np.zeros(n_src, np.float64)
        row[i0] += 1.0 - f0
        row[i0 + 1:i1] += 1.0
        if i1 < n_src:
            row[i1] += f1
        m[d] = row / row.sum()
        i0, f0 = i1, f1
    return m.astype(np.float32)


def scale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image.scale(img, width, height, 'bilinear')`` of (..., H, W, C) to ``size`` = (height, width)."""
    image = np.asarray(image, np.float32)
    h, w = image.shape[-3:-1]
    mh, mw = _axis_matrix(h, int(size[0])), _axis_matrix(w, int(size[1]))
    rows = np.einsum("qw,...hwc->...hqc", mw, image)
    return np.einsum("ph,...hqc->...pqc", mh, rows).astype(np.float32)


def scale_longer_side(image: np.ndarray, longer: int) -> np.ndarray:
    """``image.scale(img, MAX, 'bilinear')`` of (H, W, C): the longer side becomes ``longer``."""
    h, w = image.shape[:2]
    top = max(h, w)
    return scale(image, (max(1, int(h * longer / top)), max(1, int(w * longer / top))))


def rotate(image: np.ndarray, theta: float) -> np.ndarray:
    """``image.rotate(img, theta, 'bilinear')`` of (H, W, C) (module docstring)."""
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    xc, yc = np.float32(w / 2.0), np.float32(h / 2.0)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    jd, id_ = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    ri = c * (id_ - xc) - s * (jd - yc)
    rj = c * (jd - yc) + s * (id_ - xc)
    i0, j0 = np.floor(ri).astype(np.int64), np.floor(rj).astype(np.int64)
    wi, wj = (ri - i0)[..., None], (rj - j0)[..., None]
    i0, j0 = i0 + int(xc), j0 + int(yc)
    i1, j1 = i0 + 1, j0 + 1
    inside = (i1 <= w - 1) & (j1 <= h - 1) & (i0 >= 0) & (j0 >= 0)
    ci0, ci1 = np.clip(i0, 0, w - 1), np.clip(i1, 0, w - 1)
    cj0, cj1 = np.clip(j0, 0, h - 1), np.clip(j1, 0, h - 1)
    out = ((1 - wi) * (1 - wj) * image[cj0, ci0] + wi * (1 - wj) * image[cj0, ci1]
           + (1 - wi) * wj * image[cj1, ci0] + wi * wj * image[cj1, ci1])
    return np.where(inside[..., None], out, 0.0).astype(np.float32)


__all__ = ["rotate", "scale", "scale_longer_side"]
