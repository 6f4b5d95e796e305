"""Host-side inference helpers shared by every inpainter: input normalisation, padding, compositing.

What users pass (PIL images or numpy arrays; uint8 or float in [0, 1]; RGB, grey or RGBA; masks with any
non-zero value as hole) is turned into float32 RGB in [0, 1] and boolean holes here, and the model's
prediction is turned back into the kind the user gave. Pixels outside the hole are always copied from the
input, so they are byte-identical to it; inside, a uint8 result holds LaMa's ``uint8(clip(pred * 255))``
(truncation, as LaMa's predict writes it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image


class InputError(ValueError):
    """An image or mask the inpainters cannot take (the message says which argument and why)."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """How an input image came in, so the result goes back the same way."""

    pil: bool
    pil_mode: str | None
    dtype: Any  # numpy dtype of the image (uint8 or a float type)
    channels: int  # 1 (grey), 3 (RGB) or 4 (RGBA)
    squeeze: bool  # grey given as (H, W) rather than (H, W, 1)


def _pil_to_array(image: Image.Image) -> tuple[np.ndarray, str]:
    mode = image.mode
    if mode in ("L", "RGB", "RGBA", "LA"):
        arr = np.asarray(image)
    elif mode in ("P", "PA"):
        image = image.convert("RGBA" if ("transparency" in image.info or mode == "PA") else "RGB")
        mode, arr = image.mode, np.asarray(image)
    elif mode == "1":
        mode, arr = "L", np.asarray(image.convert("L"))
    elif mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image, dtype=np.float64)
        arr = np.round(np.clip(arr, 0, 65535) / 65535.0 * 255.0).astype(np.uint8)
        mode = "L"
    else:  # CMYK, YCbCr, HSV, F...
        image = image.convert("RGB")
        mode, arr = "RGB", np.asarray(image)
    if mode == "LA":
        arr = np.stack([arr[..., 0], arr[..., 0], arr[..., 0], arr[..., 1]], axis=-1)
        mode = "RGBA-from-LA"
    return arr, mode


def as_image(image: Any, *, what: str = "image") -> tuple[np.ndarray, Kind]:
    """``(H, W, C)`` array (C = 1, 3 or 4; uint8 or float in [0, 1]) and how it came in."""
    if isinstance(image, Image.Image):
        arr, mode = _pil_to_array(image)
        pil, squeeze = True, False
    else:
        arr, mode, pil = np.asarray(image), None, False
        squeeze = arr.ndim == 2
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise InputError(f"{what}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) pixels, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{what}: empty image of shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{what}: float pixels must be finite (found NaN or inf)")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{what}: float pixels must lie in [0, 1], got values in [{lo:g}, {hi:g}] (divide "
                             "0..255 data by 255, or pass it as uint8)")
    elif arr.dtype != np.uint8:
        raise InputError(f"{what}: pixels must be uint8 or float in [0, 1], got {arr.dtype} (convert 16-bit data "
                         "to float in [0, 1])")
    return arr, Kind(pil=pil, pil_mode=mode, dtype=arr.dtype, channels=arr.shape[-1], squeeze=squeeze)


def as_hole(mask: Any, shape: tuple[int, int], *, what: str = "mask") -> np.ndarray:
    """``(H, W)`` bool, True = hole: any non-zero value (any colour channel; a PIL mask's alpha is ignored)."""
    if isinstance(mask, Image.Image):
        if mask.mode in ("P", "PA"):
            mask = mask.convert("RGBA")
        elif mask.mode == "1":
            mask = mask.convert("L")
        arr = np.asarray(mask)
        if mask.mode in ("LA", "RGBA", "La", "RGBa"):
            arr = arr[..., :-1]
    else:
        arr = np.asarray(mask)
    if arr.ndim == 3:
        if arr.shape[-1] not in (1, 3, 4) and not isinstance(mask, Image.Image):
            raise InputError(f"{what}: expected (H, W) or (H, W, 1) values, got shape {arr.shape}")
        arr = arr.any(axis=-1) if arr.dtype == np.bool_ else (arr != 0).any(axis=-1)
    elif arr.ndim != 2:
        raise InputError(f"{what}: expected (H, W) or (H, W, 1) values, got shape {arr.shape}")
    if arr.shape != tuple(shape):
        raise InputError(f"{what}: {arr.shape[1]}x{arr.shape[0]} does not match the image's {shape[1]}x{shape[0]} "
                         "(W x H)")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError(f"{what}: values must be finite")
    return arr != 0


def to_rgb_float(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8/float -> (H, W, 3) float32 in [0, 1] (grey replicated, alpha dropped)."""
    x = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x[..., :3])


def pad_to_modulo(array: np.ndarray, modulo: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Pads two axes at the end to multiples of ``modulo`` with numpy 'symmetric', as LaMa's
    ``pad_img_to_modulo``."""
    pad = [(0, 0)] * array.ndim
    for ax in axes:
        pad[ax] = (0, (-array.shape[ax]) % modulo)
    return np.pad(array, pad, mode="symmetric")


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def finish(original: np.ndarray, kind: Kind, pred: np.ndarray, hole: np.ndarray) -> Any:
    """The result in the kind of the input: ``original`` outside the hole, ``pred`` (H, W, 3 in [0, 1]) inside."""
    h3 = hole[..., None]
    if kind.dtype == np.uint8:
        filled = np.clip(pred * 255.0, 0, 255).astype(np.uint8)  # LaMa's truncating conversion
        if kind.channels == 1:
            filled = np.asarray(Image.fromarray(filled, "RGB").convert("L"))[..., None]
    else:
        filled = np.clip(pred, 0.0, 1.0)
        if kind.channels == 1:
            filled = (filled @ _LUMA)[..., None]
        filled = filled.astype(kind.dtype)
    out = original.copy()
    c = min(kind.channels, 3)
    out[..., :c] = np.where(h3, filled[..., :c], original[..., :c])
    if kind.pil:
        if kind.pil_mode == "RGBA-from-LA":
            grey = np.asarray(Image.fromarray(np.ascontiguousarray(out[..., :3]), "RGB").convert("L"))
            grey = np.where(hole, grey, original[..., 0])
            return Image.fromarray(np.stack([grey, out[..., 3]], axis=-1), "LA")
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[kind.channels]
        return Image.fromarray(out[..., 0] if kind.channels == 1 else out, mode)
    return out[..., 0] if kind.squeeze else out


def split_batch(images: Any, masks: Any) -> tuple[list, list, bool]:
    """``(images, masks, batched)``: a list/tuple or a 4-D array is a batch; anything else one image."""
    def is_batch(x):
        return isinstance(x, (list, tuple)) or (isinstance(x, np.ndarray) and x.ndim == 4)

    if is_batch(images):
        images = list(images)
        if not is_batch(masks):
            raise InputError("a batch of images needs a batch of masks (a list, or an (N, H, W[, 1]) array)")
        masks = list(masks) if isinstance(masks, (list, tuple)) else list(np.asarray(masks))
        if len(images) != len(masks):
            raise InputError(f"{len(images)} images but {len(masks)} masks")
        if not images:
            raise InputError("empty batch")
        return images, masks, True
    return [images], [masks], False


def group_by_shape(shapes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(shapes):
        groups.setdefault(tuple(s), []).append(i)
    return groups


# ------------------------------------------------------------------------------------------------------------
# Large photos: IOPaint's "HD strategies".
# ------------------------------------------------------------------------------------------------------------

HD_MODES = ("original", "crop", "resize")


@dataclasses.dataclass(frozen=True)
class HDStrategy:
    """How a photo larger than the model was trained for is inpainted (IOPaint's ``hd_strategy``).

    * ``'original'``: the whole photo at its own size (LaMa's ``predict.py``; the default of the API and
      ``predict``);
    * ``'crop'``: when the long side exceeds ``crop_trigger``, each group of holes is inpainted on a crop of
      the photo around it, ``crop_margin`` pixels of context on every side (shifted inwards at the borders,
      as IOPaint does), and only that group's hole pixels are pasted back. Holes whose crops would overlap
      share one crop. Crop sides are rounded up to multiples of ``crop_round`` (within the photo) so that
      strokes of similar sizes reuse one compiled program;
    * ``'resize'``: when the long side exceeds ``resize_limit``, the photo is inpainted at a copy whose long
      side is ``resize_limit`` (bicubic; a pixel is a hole in the copy when any of its area is) and the
      result is scaled back (bicubic) and pasted into the hole only.

    IOPaint's defaults: trigger 800, margin 128, resize limit 1280. Pixels outside the hole are the input's,
    byte for byte, whatever the strategy.
    """

    mode: str = "original"
    crop_trigger: int = 800
    crop_margin: int = 128
    resize_limit: int = 1280
    crop_round: int = 64

    def __post_init__(self):
        if self.mode not in HD_MODES:
            raise InputError(f"hd_strategy: unknown mode {self.mode!r}; choose one of {', '.join(HD_MODES)}")
        for name in ("crop_trigger", "crop_margin", "resize_limit", "crop_round"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < (0 if name == "crop_margin" else 1):
                sign = "non-negative" if name == "crop_margin" else "positive"
                raise InputError(f"hd_strategy: {name} must be a {sign} integer, got {value!r}")

    @classmethod
    def of(cls, value: Any) -> HDStrategy:
        """An ``HDStrategy`` from itself, ``None`` (original), a mode name or a dict of fields."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(mode=value.lower())
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise InputError(f"hd_strategy: unknown field(s) {unknown}")
            return cls(**value)
        raise InputError(f"hd_strategy: expected a mode name ({', '.join(HD_MODES)}), a dict or an HDStrategy, got "
                         f"{type(value).__name__}")


def crop_windows(hole: np.ndarray, margin: int, round_to: int = 1
                 ) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """``[((top, bottom, left, right), pixels), ...]``: one crop window per group of holes, and the hole pixels
    (a bool (H, W) map) that the group's result fills.

    Holes are 8-connected components; each gets a window of its bounding box plus ``margin`` on every side,
    centred on the box and shifted back inside the image at the borders (IOPaint's ``_crop_box``), sides rounded
    up to ``round_to``. Components whose windows overlap are merged (their union box gets one window), so no
    pixel is filled twice and every fill sees its whole hole.
    """
    import scipy.ndimage

    h, w = hole.shape
    labels, n = scipy.ndimage.label(hole, structure=np.ones((3, 3), bool))
    boxes = [(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in scipy.ndimage.find_objects(labels)]
    groups = [[i + 1] for i in range(n)]

    def window(box):
        top, bottom, left, right = box
        out = []
        for lo, hi, size in ((top, bottom, h), (left, right, w)):
            side = min(size, -(-(hi - lo + 2 * margin) // round_to) * round_to)
            start = min(max((lo + hi) // 2 - side // 2, 0), size - side)
            out += [start, start + side]
        return tuple(out)

    def overlap(a, b):
        return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]

    merged = True
    while merged:  # union boxes until no two windows overlap
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if overlap(window(boxes[i]), window(boxes[j])):
                    a, b = boxes[i], boxes.pop(j)
                    boxes[i] = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))
                    groups[i] += groups.pop(j)
                    merged = True
                    break
            if merged:
                break
    return [(window(box), np.isin(labels, group)) for box, group in zip(boxes, groups)]


def _resize_float(x: np.ndarray, size: tuple[int, int], resample=Image.Resampling.BICUBIC) -> np.ndarray:
    """(H, W, C) float32 -> (size[0], size[1], C), channel by channel through Pillow's float mode."""
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c]), "F").resize((size[1], size[0]), resample))
              for c in range(x.shape[-1])]
    return np.stack(planes, axis=-1)


def hd_predict(predict, rgb: np.ndarray, hole: np.ndarray, strategy: HDStrategy) -> np.ndarray:
    """The prediction (H, W, 3) for one photo under ``strategy``; ``predict(images, holes)`` works on batches of
    any size ((N, h, w, 3) float, (N, h, w) bool). Only the hole of the result is meaningful: callers paste it
    into the input (:func:`finish`)."""
    h, w = hole.shape
    if strategy.mode == "crop" and max(h, w) > strategy.crop_trigger and hole.any():
        out = rgb.copy()
        for (top, bottom, left, right), pixels in crop_windows(hole, strategy.crop_margin, strategy.crop_round):
            window = np.s_[top:bottom, left:right]
            pred = predict(rgb[window][None], hole[window][None])[0]
            out[window][pixels[window]] = pred[pixels[window]]
        return out
    if strategy.mode == "resize" and max(h, w) > strategy.resize_limit:
        scale = strategy.resize_limit / max(h, w)
        small = (max(1, round(h * scale)), max(1, round(w * scale)))
        small_rgb = np.clip(_resize_float(rgb, small), 0.0, 1.0)
        small_hole = _resize_float(hole[..., None].astype(np.float32), small, Image.Resampling.BOX)[..., 0] > 0
        pred = predict(small_rgb[None], small_hole[None])[0]
        return np.clip(_resize_float(pred.astype(np.float32), (h, w)), 0.0, 1.0)
    return predict(rgb[None], hole[None])[0]
