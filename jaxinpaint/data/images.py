"""Reading images and masks the same way everywhere: the training data, ``predict``, ``evaluate``,
``make_eval_set`` and the FID folder statistics.

* images: ``jaxinpaint.data.photos.load_image`` decodes any mode and bit depth with EXIF orientation (grey
  replicated, alpha over white, 16 bit rounded to 8); :func:`load_rgb_uint8` gives uint8 RGB;
* masks: :func:`load_mask` reads any mode with EXIF orientation; a pixel is a hole when any colour channel is
  > 0 (LaMa's binarisation); alpha is ignored;
* folders: :func:`walk_files` (the one folder walk: each real file once, directory loops never followed,
  broken links reported), :func:`list_images` (recursive, sorted, hidden files skipped) and LaMa's
  evaluation-set pairing (:func:`find_pairs`: ``x.png`` + ``x_mask000.png``);
* a pixel budget (``photos.max_pixels()``, 50 MP by default) checked from the header before decoding, in
  every reader here.
"""

from __future__ import annotations

import os
import pathlib
import re
import zlib
from collections.abc import Sequence
import logging
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from jaxinpaint.data import photos
from jaxinpaint.masks import IMAGE_EXTENSIONS

log = logging.getLogger("jaxinpaint.data")

#: Mask files of a LaMa-style evaluation set: ``<image stem>_mask<digits>.png``.
MASK_FILE = re.compile(r"_mask\d*\.png$", re.IGNORECASE)
_EXIF_ORIENTATION = 0x0112
# Mask modes read as they are; other modes (CMYK, YCbCr, ...) go through Pillow's RGB conversion first.
_NATIVE_MASK_MODES = ("1", "L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F")


def sample_rng(seed: int, key: str) -> np.random.Generator:
    """The random stream of one sample: depends only on the seed and the sample's key (e.g. its path)."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


class Walk(NamedTuple):
    """What :func:`walk_files` found: ``files`` as sorted ``(relative posix path, path)``; ``broken`` symbolic
    links (their targets do not exist) as paths."""

    files: list[tuple[str, str]]
    broken: list[str]


def walk_files(root: str | os.PathLike, *, exclude: Sequence[str | os.PathLike] = ()) -> Walk:
    """Every regular file under ``root``, recursively, following directory symlinks but entering each real
    directory once and listing each real file once (a symlink loop, or two links to one folder, would
    otherwise repeat files dozens of times or never end). Hidden names and the folders in ``exclude`` are
    skipped. The order is sorted by relative path, so it is the same on every machine; of several paths to
    one file, the first in that order is kept.
    """
    root = os.fspath(os.path.expanduser(root))
    excluded = {os.path.realpath(e) for e in exclude}
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    files: list[tuple[str, str]] = []
    broken: list[str] = []
    stack = [("", root)]
    while stack:
        rel_dir, directory = stack.pop()
        try:
            info = os.stat(directory)
            if (info.st_dev, info.st_ino) in seen_dirs or os.path.realpath(directory) in excluded:
                continue
            seen_dirs.add((info.st_dev, info.st_ino))
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            log.warning("cannot list %s (%s); skipped", directory, e)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}{entry.name}"
            try:
                if entry.is_dir():
                    subdirs.append((rel + "/", entry.path))
                elif entry.is_file():
                    st_ = entry.stat()
                    if (st_.st_dev, st_.st_ino) not in seen_files:
                        seen_files.add((st_.st_dev, st_.st_ino))
                        files.append((rel, entry.path))
                elif entry.is_symlink():
                    broken.append(entry.path)
            except OSError:  # a link whose target vanished meanwhile, a permission problem...
                broken.append(entry.path)
        stack.extend(reversed(subdirs))
    return Walk(sorted(files), sorted(broken))


def list_images(root: str | os.PathLike, *, exclude: Sequence[str | os.PathLike] = (),
                skip_masks: bool = True) -> list[pathlib.Path]:
    """Image files under ``root`` (recursive, sorted by relative path, any common extension, any case).

    Walked with :func:`walk_files` (each real file once, no directory loop followed); hidden files/folders
    are skipped; so are ``*_mask<N>.png`` files when ``skip_masks`` (they are masks of an evaluation set, not
    photos); folders in ``exclude`` (e.g. an output folder inside the input) too. Broken symbolic links are
    reported in a warning, not dropped silently.

    Raises:
      FileNotFoundError: ``root`` is not a folder, or holds no image file (the message lists the
        extensions searched).
    """
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {str(root)!r} does not exist or is not a folder")
    walk = walk_files(root, exclude=exclude)
    if walk.broken:
        log.warning("%d broken symbolic link(s) under %s skipped: %s", len(walk.broken), root,
                    ", ".join(walk.broken[:5]) + (" ..." if len(walk.broken) > 5 else ""))
    found = [pathlib.Path(path) for rel, path in walk.files
             if rel.lower().endswith(IMAGE_EXTENSIONS) and not (skip_masks and MASK_FILE.search(rel))]
    if not found:
        raise FileNotFoundError(
            f"no image files under {str(root)!r} (searched recursively for "
            f"{', '.join('*' + e for e in IMAGE_EXTENSIONS)}, any case; hidden files"
            f"{' and *_mask<N>.png' if skip_masks else ''} ignored)")
    return found


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


def load_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as (H, W) bool, True = hole: any colour channel > 0, alpha ignored, EXIF orientation applied.

    Args:
      path: the mask file.
      shape: the (H, W) of the image it belongs to; a mask of another size is an error naming both
        (never silently resized: a resized mask is not the mask that was drawn).

    Raises:
      photos.UnreadableImageError: the file is missing, cannot be decoded, exceeds the pixel budget, has the
        wrong size, or draws its hole only in the alpha channel (colour all black, alpha varying: such a mask
        would otherwise silently mark no pixel).
    """
    try:
        with Image.open(path) as im:
            photos.check_pixels(path, *im.size)
            im.load()
            im = ImageOps.exif_transpose(im)
    except photos.UnreadableImageError:
        raise
    except Exception as e:  # Pillow raises many exception types for bad files
        raise photos.UnreadableImageError(str(path), f"{type(e).__name__}: {e}") from e
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif im.mode not in _NATIVE_MASK_MODES and not im.mode.startswith("I;16"):
        im = im.convert("RGB")
    arr = np.asarray(im)
    alpha = None
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        arr, alpha = arr[..., :-1], arr[..., -1]
    hole = arr > 0
    hole = hole.any(axis=-1) if hole.ndim == 3 else hole
    if alpha is not None and not hole.any() and alpha.min() != alpha.max():
        raise photos.UnreadableImageError(
            str(path), "the mask is black in every colour channel and draws its shape only in the alpha channel; "
                       "holes are read from the colour channels (any value > 0 = hole): save the mask as "
                       "white-on-black (or flatten it onto black)")
    if shape is not None and hole.shape != tuple(shape):
        raise photos.UnreadableImageError(str(path), f"the mask is {hole.shape[1]}x{hole.shape[0]} but its image is "
                                                     f"{shape[1]}x{shape[0]} (W x H); masks are never resized")
    return hole


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image after EXIF orientation, from its header only (no decoding); the pixel budget is
    checked here too, so an oversized image is refused before anything is decoded."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            photos.check_pixels(path, w, h)
            if im.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):  # transposed or rotated by 90 degrees
                w, h = h, w
    except photos.UnreadableImageError:
        raise
    except Exception as e:
        raise photos.UnreadableImageError(str(path), f"{type(e).__name__}: {e}") from e
    return h, w
