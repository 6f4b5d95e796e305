"""MSNPS's texture term: CNNMRF patch matching on VGG-19 relu4_1 (``mylib/mrf.lua``, systems-more.md §5.2).

The original is an ``nn`` module that passes features through unchanged and, on the backward pass, adds its
own gradient; it computes no loss value. The gradient, for each *source* patch (3×3 on the current image's
feature map, sampled with stride 2 plus the last row and column) whose best match has a normalised
cross-correlation ``>= threshold``, adds ``source - matched target`` over the patch's 3×3 footprint, divides
each feature pixel by the number of such footprints covering it (``+ 1e-10``, so uncovered pixels get 0) and
multiplies by the weight (1e-4). That is exactly the gradient of

    L_mrf(F) = weight * 1/2 * sum_p sum_{q in p} (F_q - T_{m(p), q})^2 / (count_q + 1e-10)

with the matches ``m(p)`` and the counts fixed, which :func:`mrf_loss` computes, so the texture loss can be
reported (the original never computes it) and differentiated by JAX.

Matching (:func:`match`): normalised cross-correlation ``<s, t> / (|s| |t|)`` between every sampled source patch
and every target patch (3×3, stride 2 plus the last row/column, from the augmented texture images), argmax
over the targets. The fast version matches **once per scale**, on the scale's starting image, and reuses the
match for all its iterations (``mrf.lua:168``); :func:`match` is called once per scale accordingly. Zero-norm
patches (possible after a ReLU) give 0/0 in the original, a NaN that never passes the confidence test; here a
zero-norm source patch is never confident and a zero-norm target patch is never chosen.

Texture images (:func:`augment`): the texture image at this scale, rotated by ``k * rotation_step`` for
``k in [-num_rotations, num_rotations]`` and cropped to the axis-aligned box inside the rotated image
(``helper.lua::computeBB``), then each rotation scaled so its longer side is ``floor(longer * scale_step^s)``
for ``s in [-num_scales, num_scales]`` (``wrapper:153-176``): 9 images for MSNPS's 1 and 1. Rotation and scaling
are Torch's ``image.rotate``/``image.scale`` (:mod:`jaxinpaint.systems.msnps.torch_image`); the rotation by 0
is applied too, which zeroes the last row and column as in the original.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinpaint.systems.msnps import torch_image

_HI = jax.lax.Precision.HIGHEST


def grid(size: int, patch: int, stride: int) -> np.ndarray:
    """0-based patch origins along one axis: ``0, stride, ...`` plus the last origin ``size - patch``
    (``helper.lua::computegrid`` with ``flag_all``)."""
    if size < patch:
        raise ValueError(f"msnps: a feature map side of {size} is smaller than the patch size {patch} "
                         "(the image is too small for this VGG layer: fewer scales or a larger image)")
    coords = list(range(0, size - patch + 1, stride))
    if coords[-1] < size - patch:
        coords.append(size - patch)
    return np.asarray(coords, np.int32)


def patch_origins(height: int, width: int, patch: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) of every patch origin, row-major (the original's order)."""
    gy, gx = grid(height, patch, stride), grid(width, patch, stride)
    ys, xs = np.meshgrid(gy, gx, indexing="ij")
    return ys.reshape(-1), xs.reshape(-1)


def extract(feat: jax.Array, ys, xs, patch: int) -> jax.Array:
    """Patches (N, patch, patch, C) of ``feat`` (H, W, C) at the origins ``ys``, ``xs``."""
    d = jnp.arange(patch)
    rows = jnp.asarray(ys)[:, None, None] + d[None, :, None]
    cols = jnp.asarray(xs)[:, None, None] + d[None, None, :]
    return feat[rows, cols]


def target_patches(feats, patch: int, stride: int) -> jax.Array:
    """All target patches of a list of feature maps (each (h, w, C)), concatenated in list order."""
    out = []
    for f in feats:
        ys, xs = patch_origins(f.shape[0], f.shape[1], patch, stride)
        out.append(extract(f, ys, xs, patch))
    return jnp.concatenate(out, axis=0)


def match(feat: jax.Array, targets: jax.Array, ys, xs, threshold: float) -> tuple[jax.Array, jax.Array]:
    """Best target for every source patch at (ys, xs): ``(index (N,), confident (N,) bool)``.

    Normalised cross-correlation, argmax over targets (first maximum on ties); ``confident`` is
    ``max >= threshold`` and the source patch has a non-zero norm.
    """
    patch = targets.shape[1]
    src = extract(feat, ys, xs, patch).reshape(len(ys), -1)
    tgt = targets.reshape(targets.shape[0], -1)
    src_norm = jnp.sqrt(jnp.sum(src * src, axis=1))
    tgt_norm = jnp.sqrt(jnp.sum(tgt * tgt, axis=1))
    response = jnp.matmul(src, tgt.T, precision=_HI)
    ncc = response / jnp.where(src_norm > 0, src_norm, 1.0)[:, None] / jnp.where(tgt_norm > 0, tgt_norm, 1.0)
    ncc = jnp.where(tgt_norm[None, :] > 0, ncc, -jnp.inf)
    index = jnp.argmax(ncc, axis=1)
    best = jnp.max(ncc, axis=1)
    return index.astype(jnp.int32), (best >= threshold) & (src_norm > 0)


def coverage_weights(shape: tuple[int, int], ys, xs, patch: int, confident: jax.Array) -> jax.Array:
    """``1 / (count + 1e-10)`` per feature pixel, ``count`` = confident footprints covering it."""
    d = jnp.arange(patch)
    rows = jnp.asarray(ys)[:, None, None] + d[None, :, None]
    cols = jnp.asarray(xs)[:, None, None] + d[None, None, :]
    ones = jnp.broadcast_to(confident.astype(jnp.float32)[:, None, None], rows.shape[:1] + (patch, patch))
    count = jnp.zeros(shape, jnp.float32).at[rows, cols].add(ones)
    return 1.0 / (count + 1e-10)


def mrf_loss(feat: jax.Array, matched: jax.Array, ys, xs, confident: jax.Array, weights: jax.Array,
             strength: float) -> jax.Array:
    """The texture loss whose gradient is ``mrf.lua``'s (module docstring).

    Args:
      feat: (H, W, C) relu4_1 features of the current image.
      matched: (N, k, k, C) the matched target patch of every source patch.
      ys, xs: the source patch origins (N,).
      confident: (N,) bool, the patches that contribute.
      weights: (H, W) from :func:`coverage_weights`.
      strength: the MRF weight (1e-4).
    """
    patch = matched.shape[1]
    src = extract(feat, ys, xs, patch)
    w = extract(weights[..., None], ys, xs, patch)
    sq = jnp.sum(w * (src - matched) ** 2, axis=(1, 2, 3))
    return strength * 0.5 * jnp.sum(jnp.where(confident, sq, 0.0))


# ------------------------------------------------------------------------------------------------------------
# Augmented texture images (host side, numpy).
# ------------------------------------------------------------------------------------------------------------


def _intersect(p1, p2, p3, p4):
    """Intersection of the lines p1-p2 and p3-p4 (as ``helper.lua::computeBB`` writes it)."""
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = p1, p2, p3, p4
    den = (x1 - x2) * (y3 - y4) - (y1 - y2) * (x3 - x4)
    a, b = x1 * y2 - y1 * x2, x3 * y4 - y3 * x4
    return (a * (x3 - x4) - (x1 - x2) * b) / den, (a * (y3 - y4) - (y1 - y2) * b) / den


def rotation_box(width: int, height: int, alpha: float) -> tuple[int, int, int, int]:
    """``computeBB``: the 1-based inclusive box (min_x, min_y, max_x, max_y) inside an image rotated by alpha.

    The box's top edge passes through the point where the rotated top edge crosses the original left edge
    (alpha > 0) or right edge (alpha < 0), and it is symmetric about the centre.
    """
    x0, y0 = width / 2, height / 2
    c, s = math.cos(alpha), math.sin(alpha)

    def rot(x, y):
        return x0 + (x - x0) * c + (y - y0) * s, y0 - (x - x0) * s + (y - y0) * c

    corners = [(1, 1), (width, 1), (width, height), (1, height)]
    r1, r2, r3, r4 = (rot(x, y) for x, y in corners)
    if alpha > 0:
        px, py = _intersect(corners[0], corners[3], r1, r2)
        qx, qy = _intersect((px, py), (px + 1, py), r2, r3)
        box = (width - qx, qy, qx, height - qy)
    elif alpha < 0:
        px, py = _intersect(corners[1], corners[2], r1, r2)
        qx, qy = _intersect((px, py), (px - 1, py), r1, r4)
        box = (qx, qy, width - qx, height - qy)
    else:
        box = (1, 1, width, height)
    return (max(math.floor(box[0]), 1), max(math.floor(box[1]), 1), math.floor(box[2]), math.floor(box[3]))


def augment(image: np.ndarray, *, num_rotations: int, rotation_step: float, num_scales: int,
            scale_step: float) -> list[np.ndarray]:
    """The augmented texture images, rotation-major (``wrapper:153-176``); (H, W, C) float32 each."""
    out = []
    h, w = image.shape[:2]
    for r in range(-num_rotations, num_rotations + 1):
        alpha = rotation_step * r
        rotated = torch_image.rotate(image, alpha)  # also for alpha = 0, as the original (a zero border)
        x0, y0, x1, y1 = rotation_box(w, h, alpha)
        rotated = rotated[y0 - 1:y1, x0 - 1:x1]
        for s in range(-num_scales, num_scales + 1):
            longer = math.floor(max(rotated.shape[:2]) * scale_step ** s)
            out.append(torch_image.scale_longer_side(rotated, longer))
    return out


__all__ = ["augment", "coverage_weights", "extract", "grid", "match", "mrf_loss", "patch_origins", "rotation_box",
           "target_patches"]
