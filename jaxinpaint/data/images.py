"""Reading images and masks the same way everywhere: the training data, ``predict``, ``evaluate``,
``make_eval_set`` and the FID folder statistics.

* images: ``jaxinpaint.data.photos.load_image`` decodes any mode and bit depth with EXIF orientation (grey
  replicated, alpha over white, 16 bit rounded to 8); :func:`load_rgb_uint8` gives uint8 RGB;
* masks: :func:`load_mask` reads any mode with EXIF orientation; a pixel is a hole when any colour channel is
  > 0 (LaMa's binarisation); alpha is ignored;
* folders: :func:`list_images` (recursive, sorted, hidden files skipped) and LaMa's evaluation-set pairing
  (:func:`find_pairs`: ``x.png`` + ``x_mask000.png``).
"""

from __future__ import annotations

import os
import pathlib
import re
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from jaxinpaint.data import photos
from jaxinpaint.masks import IMAGE_EXTENSIONS

#: Mask files of a LaMa-style evaluation set: ``<image stem>_mask<digits>.png``.
MASK_FILE = re.compile(r"_mask\d*\.png$", re.IGNORECASE)
_EXIF_ORIENTATION = 0x0112
# Mask modes read as they are; other modes (CMYK, YCbCr, ...) go through Pillow's RGB conversion first.
_NATIVE_MASK_MODES = ("1", "L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F")


def sample_rng(seed: int, key: str) -> np.random.Generator:
    """The random stream of one sample: depends only on the seed and the sample's key (e.g. its path)."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


def list_images(root: str | os.PathLike, *, exclude: Sequence[str | os.PathLike] = (),
                skip_masks: bool = True) -> list[pathlib.Path]:
    """Image files under ``root`` (recursive, sorted by relative path, any common extension, any case).

    Hidden files/folders are skipped; so are ``*_mask<N>.png`` files when ``skip_masks`` (they are masks of
    an evaluation set, not photos); folders in ``exclude`` (e.g. an output folder inside the input) too.

    Raises:
      FileNotFoundError: ``root`` is not a folder, or holds no image file (the message lists the
        extensions searched).
    """
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {str(root)!r} does not exist or is not a folder")
    excluded = {os.path.realpath(e) for e in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if os.path.realpath(dirpath) in excluded:
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if skip_masks and MASK_FILE.search(name):
                continue
            found.append(pathlib.Path(dirpath) / name)
    if not found:
        raise FileNotFoundError(
            f"no image files under {str(root)!r} (searched recursively for "
            f"{', '.join('*' + e for e in IMAGE_EXTENSIONS)}, any case; hidden files"
            f"{' and *_mask<N>.png' if skip_masks else ''} ignored)")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """BICUBIC resize so that the short side is ``size`` (long side rounded), as gen_mask_dataset.py."""
    factor = size / min(image.size)
    out = tuple(int(v) for v in np.round(np.array(image.size) * factor))
    return image if out == image.size else image.resize(out, resample=Image.Resampling.BICUBIC)


def load_rgb_uint8(path: str | os.PathLike, size: int = 0) -> np.ndarray:
    """An image file as uint8 (H, W, 3); with ``size > 0``, short side resized to it, centre-cropped square.

    Decoding goes through ``jaxinpaint.photos.load_image`` (EXIF orientation, 16-bit and alpha handled).

    Raises:
      photos.UnreadableImageError: the file cannot be decoded (the message names it).
    """
    return resize_center_crop(_to_uint8(photos.load_image(path)), size)


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3): BICUBIC short-side resize, then the centre square; size <= 0 keeps
    the image as it is."""
    if size <= 0:
        return image
    pil = resize_short_side(Image.fromarray(image), size)
    w, h = pil.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)))


class EvalPair(NamedTuple):
    """One image/mask pair of an evaluation set; ``name`` is the mask's relative path without extension."""

    image: pathlib.Path
    mask: pathlib.Path
    name: str


def find_pairs(root: str | os.PathLike) -> list[EvalPair]:
    """Image/mask pairs of a LaMa-style evaluation set (``x.png`` + ``x_mask000.png``), sorted by mask path.

    The image of ``dir/x_mask000.png`` is ``dir/x.png`` (LaMa: ``mask_path.rsplit('_mask', 1)[0] + '.png'``);
    other common extensions are accepted when no ``.png`` exists.

    Returns:
      the pairs; an empty list when ``root`` holds no mask file (it is then a plain image folder).

    Raises:
      FileNotFoundError: a mask has no image next to it (the message names both).
    """
    root = pathlib.Path(root).expanduser()
    mask_files = [p for p in list_images(root, skip_masks=False) if MASK_FILE.search(p.name)]
    pairs = []
    for mask in mask_files:
        stem = str(mask).rsplit("_mask", 1)[0]
        candidates = [pathlib.Path(stem + ext) for ext in (".png",) + tuple(e for e in IMAGE_EXTENSIONS
                                                                           if e != ".png")]
        candidates += [pathlib.Path(stem + ext.upper()) for ext in IMAGE_EXTENSIONS]
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            raise FileNotFoundError(f"evaluation set {str(root)!r}: mask {str(mask)!r} has no image "
                                    f"{os.path.basename(stem)}.png next to it (LaMa's naming: "
                                    f"<name>.png + <name>_mask000.png)")
        rel = mask.relative_to(root).as_posix()
        pairs.append(EvalPair(image, mask, rel[:-len(mask.suffix)]))
    return pairs


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file as (H, W) bool, True = hole: any colour channel > 0, alpha ignored, EXIF orientation applied.

    Raises:
      photos.UnreadableImageError: the file is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except Exception as e:  # Pillow raises many exception types for bad files
        raise photos.UnreadableImageError(str(path), f"{type(e).__name__}: {e}") from e
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif im.mode not in _NATIVE_MASK_MODES and not im.mode.startswith("I;16"):
        im = im.convert("RGB")
    arr = np.asarray(im)
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        arr = arr[..., :-1]
    hole = arr > 0
    return hole.any(axis=-1) if hole.ndim == 3 else hole


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image after EXIF orientation, from its header only (no decoding)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):  # transposed or rotated by 90 degrees
                w, h = h, w
    except Exception as e:
        raise photos.UnreadableImageError(str(path), f"{type(e).__name__}: {e}") from e
    return h, w
