"""Training augmentations of the input pipeline: LaMa's resize-and-crop and its 'distortions' variant (the
details and the deliberate differences from LaMa are in ``pipeline``'s docstring). Pure numpy/Pillow functions
of an image and parameters drawn from a seeded generator, so every example is reproducible.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image



# ----------------------------------------------------------------------------------------------------------
# Augmentation: parameters are drawn first (in a fixed order), then applied to the decoded image.
# ----------------------------------------------------------------------------------------------------------


class CropParams(NamedTuple):
    short_side: int  # short side after resizing
    fy: float  # crop position as a fraction in [0, 1) of the spare room (ignored when center)
    fx: float
    flip: bool
    center: bool  # centre crop (evaluation)


def crop_offset(frac: float, room: int, center: bool) -> int:
    """Top/left offset of the crop inside a dimension with ``room`` spare pixels."""
    if center:
        return room // 2
    return min(int(frac * (room + 1)), room)


def sample_lama(rng: np.random.Generator, size: int, short_side_range: tuple[float, float]) -> CropParams:
    scale = rng.uniform(float(short_side_range[0]), float(short_side_range[1]))
    fy, fx, flip = rng.random(), rng.random(), rng.random() < 0.5
    return CropParams(max(size, int(round(scale * size))), fy, fx, bool(flip), False)


def resize_crop(img: np.ndarray, p: CropParams, size: int) -> np.ndarray:
    """Resize so the short side is ``p.short_side``, crop ``size`` square, optional flip; one resampling."""
    h, w = img.shape[:2]
    f = p.short_side / min(h, w)
    hs, ws = max(size, int(round(h * f))), max(size, int(round(w * f)))
    oy, ox = crop_offset(p.fy, hs - size, p.center), crop_offset(p.fx, ws - size, p.center)
    if (hs, ws) == (h, w):  # already at the target scale: a plain crop, no resampling
        out = img[oy:oy + size, ox:ox + size]
    else:
        sy, sx = h / hs, w / ws
        box = (ox * sx, oy * sy, (ox + size) * sx, (oy + size) * sy)
        # Pillow's float ('F') mode keeps 16-bit precision; resize(box=...) resamples only the crop.
        out = np.stack([
            np.asarray(Image.fromarray(img[..., c]).resize((size, size), Image.Resampling.BICUBIC, box=box))
            for c in range(3)
        ], axis=-1)
        out = np.clip(out, 0.0, 1.0)
    if p.flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


class DistortParams(NamedTuple):
    perspective: bool
    corners: np.ndarray  # (4, 2) relative inward corner offsets (x, y)
    affine: bool
    scale: float
    rotate_deg: float
    shear_deg: float
    optical: bool
    optical_k: float
    fy: float
    fx: float
    flip: bool
    clahe: bool
    clahe_clip: float
    brightness_contrast: bool
    contrast: float
    brightness: float
    hsv: bool
    hsv_shift: np.ndarray  # (hue, sat, val) in cv2 uint8 units


def sample_distortions(rng: np.random.Generator) -> DistortParams:
    # Every value is drawn whether or not its step fires, so the stream layout never depends on coin flips.
    persp = rng.random() < 0.5
    sigma = rng.uniform(0.0, 0.06)
    corners = np.mod(np.abs(rng.normal(0.0, 1.0, size=(4, 2)) * sigma), 1.0)
    affine = rng.random() < 0.5
    scale, rotate, shear = rng.uniform(0.7, 1.3), rng.uniform(-40.0, 40.0), rng.uniform(-0.1, 0.1)
    optical, k = rng.random() < 0.5, rng.uniform(-0.05, 0.05)
    fy, fx, flip = rng.random(), rng.random(), rng.random() < 0.5
    clahe, clip = rng.random() < 0.5, rng.uniform(1.0, 4.0)
    bc, contrast, brightness = rng.random() < 0.5, 1.0 + rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2)
    hsv, shifts = rng.random() < 0.5, rng.uniform([-5.0, -30.0, -5.0], [5.0, 30.0, 5.0])
    return DistortParams(bool(persp), corners, bool(affine), scale, rotate, shear, bool(optical), k, fy, fx,
                          bool(flip), bool(clahe), clip, bool(bc), contrast, brightness, bool(hsv), shifts)


def fold(coord: np.ndarray, n: int) -> np.ndarray:
    """Reflect-101 border (cv2 BORDER_REFLECT_101, numpy 'reflect') on continuous pixel coordinates."""
    if n == 1:
        return np.zeros_like(coord)
    period = 2 * (n - 1)
    c = np.mod(np.abs(coord), period)
    return np.where(c > n - 1, period - c, c)


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 projective map taking the four (x, y) points ``src`` to ``dst``."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    h = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Samples ``img`` (H, W, C) at in-range float coordinates."""
    h, w, c = img.shape
    y0 = np.clip(np.floor(ys).astype(np.intp), 0, max(h - 2, 0))
    x0 = np.clip(np.floor(xs).astype(np.intp), 0, max(w - 2, 0))
    wy = np.clip(ys - y0, 0.0, 1.0).astype(np.float32)[..., None]
    wx = np.clip(xs - x0, 0.0, 1.0).astype(np.float32)[..., None]
    flat = img.reshape(-1, c)
    i00 = y0 * w + x0  # flat gathers are much faster than 2-D fancy indexing
    dy, dx = (w if h > 1 else 0), (1 if w > 1 else 0)
    top = flat[i00] * (1 - wx) + flat[i00 + dx] * wx
    bottom = flat[i00 + dy] * (1 - wx) + flat[i00 + dy + dx] * wx
    return top * (1 - wy) + bottom * wy


def shift_hsv(rgb: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shifts hue (cyclic), saturation and value, each in [0, 1] units; float32 RGB in and out.

    Written out in numpy on separate channel planes because skimage's rgb2hsv/hsv2rgb take ~20 ms at 256²
    (more than the rest of the augmentation) and numpy reductions over a size-3 last axis are slow.
    """
    f32 = np.float32
    r, g, b = (np.ascontiguousarray(rgb[..., i], dtype=f32) for i in range(3))
    v = np.maximum(np.maximum(r, g), b)
    delta = v - np.minimum(np.minimum(r, g), b)
    safe = np.where(delta > 0, delta, f32(1.0))
    hue = np.where(v == r, (g - b) / safe,
                   np.where(v == g, f32(2.0) + (b - r) / safe, f32(4.0) + (r - g) / safe))
    hue = np.where(delta > 0, hue, f32(0.0)) * f32(1.0 / 6.0)
    sat = np.where(v > 0, delta / np.where(v > 0, v, f32(1.0)), f32(0.0))
    hue6 = np.mod(hue + f32(shift[0]), f32(1.0)) * f32(6.0)
    chroma = np.clip(sat + f32(shift[1]), 0.0, 1.0)
    v = np.clip(v + f32(shift[2]), 0.0, 1.0)
    chroma *= v
    # HSV -> RGB: channel n in (5, 3, 1) is v - v*s*clip(min(k, 4 - k), 0, 1), k = (n + 6*hue) mod 6.
    out = []
    for n in (5.0, 3.0, 1.0):
        k = np.mod(hue6 + f32(n), f32(6.0))
        out.append(v - chroma * np.clip(np.minimum(k, f32(4.0) - k), 0.0, 1.0))
    return np.stack(out, axis=-1)


def distort(img: np.ndarray, p: DistortParams, size: int) -> np.ndarray:
    """LaMa's 'distortions' variant (see the module docstring), resampling the source once."""
    h0, w0 = img.shape[:2]
    hp, wp = max(h0, size), max(w0, size)  # PadIfNeeded
    top, left = (hp - h0) // 2, (wp - w0) // 2
    oy, ox = crop_offset(p.fy, hp - size, False), crop_offset(p.fx, wp - size, False)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    # Walk backwards from output pixels to source coordinates: flip, crop, optical, pad, affine, perspective.
    if p.flip:
        xs = (size - 1) - xs
    ys, xs = ys + oy, xs + ox
    if p.optical:  # cv2.initUndistortRectifyMap with f = (W, H), c = (W/2, H/2), k1 = k2 = k
        cy, cx = hp * 0.5, wp * 0.5
        u, v = (xs - cx) / wp, (ys - cy) / hp
        r2 = u * u + v * v
        radial = 1.0 + p.optical_k * r2 + p.optical_k * r2 * r2
        xs, ys = u * radial * wp + cx, v * radial * hp + cy
    ys, xs = fold(ys, hp) - top, fold(xs, wp) - left
    ys, xs = fold(ys, h0), fold(xs, w0)
    if p.affine:
        t, sh = np.deg2rad(p.rotate_deg), np.tan(np.deg2rad(p.shear_deg))
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        fwd = rot @ np.array([[1.0, sh], [0.0, 1.0]]) @ np.diag([p.scale, p.scale])
        inv = np.linalg.inv(fwd)
        cx, cy = (w0 - 1) / 2, (h0 - 1) / 2
        dx, dy = xs - cx, ys - cy
        xs, ys = inv[0, 0] * dx + inv[0, 1] * dy + cx, inv[1, 0] * dx + inv[1, 1] * dy + cy
        ys, xs = fold(ys, h0), fold(xs, w0)
    if p.perspective:  # output rectangle corners -> jittered inner quad of the source
        wm, hm = max(w0 - 1, 1), max(h0 - 1, 1)
        rect = np.array([[0, 0], [wm, 0], [wm, hm], [0, hm]], np.float64)
        j = p.corners
        quad = np.array([[j[0, 0], j[0, 1]], [1 - j[1, 0], j[1, 1]], [1 - j[2, 0], 1 - j[2, 1]],
                         [j[3, 0], 1 - j[3, 1]]]) * [wm, hm]
        hom = homography(rect, quad)
        den = hom[2, 0] * xs + hom[2, 1] * ys + hom[2, 2]
        xs, ys = ((hom[0, 0] * xs + hom[0, 1] * ys + hom[0, 2]) / den,
                  (hom[1, 0] * xs + hom[1, 1] * ys + hom[1, 2]) / den)
        ys, xs = np.clip(ys, 0, h0 - 1), np.clip(xs, 0, w0 - 1)
    out = bilinear(img, ys, xs)
    if p.clahe:
        try:
            from skimage import exposure  # pylint: disable=import-outside-toplevel
        except ImportError as e:
            raise ImportError("input.augment='distortions' needs scikit-image (pip install scikit-image)"
                              ) from e
        out = exposure.equalize_adapthist(out, clip_limit=p.clahe_clip / 256.0, nbins=256)
    if p.brightness_contrast:
        out = np.clip(out * p.contrast + p.brightness, 0.0, 1.0)
    if p.hsv:  # cv2 uint8 units: hue in [0, 180), saturation and value in [0, 255]
        out = shift_hsv(out.astype(np.float32), p.hsv_shift / np.array([180.0, 255.0, 255.0]))
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
