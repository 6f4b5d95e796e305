"""Built-in real photographs and a robust image loader.

jaxinpaint must train, demo and test on machines that reach no data hosts, so its default data are real
photographs that already sit inside installed PyPI wheels (data-masks-metrics.md §1.4). The files are located
with ``importlib.util.find_spec`` (which does not import the package and never triggers scikit-image's
download-on-demand fetchers) and read with Pillow.

Photos, credits and licences (W×H; the scikit-image credits are from its ``skimage/data/_fetchers.py``):

* scikit-image, ``skimage/data/``:
  - ``astronaut.png`` 512×512: Eileen Collins, NASA Great Images database; public domain.
  - ``chelsea.png`` 451×300: the cat Chelsea, by Stéfan van der Walt; CC0.
  - ``coffee.png`` 600×400: by Rachel Michetti, courtesy of Pikolo Espresso Bar; CC0. **Held out**
    (demos and evaluation).
  - ``rocket.jpg`` 640×427: Falcon 9 launch carrying DSCOVR, SpaceX (Flickr spacexphotos/16511594820);
    public domain.
  - ``motorcycle_left.png`` 741×500: Middlebury 2014 stereo data set (Scharstein, Hirschmüller, Kitajima,
    Krathwohl, Nesic, Wang, Westling); no licence stated, research use.
* scikit-learn, ``sklearn/datasets/images/`` (both **CC BY 2.0, attribution required**, retrieved by
  Robert Layton in 2011):
  - ``china.jpg`` 640×427: "danielbuechele" on Flickr (photo 6061409035).
  - ``flower.jpg`` 640×427: Flickr user "vultilion" (photo 6056698931); the bundled README names
    danielbuechele but links vultilion's photostream.
* matplotlib, ``mpl-data/sample_data/``:
  - ``grace_hopper.jpg`` 512×600: US Navy portrait of Rear Admiral Grace Hopper; public domain (US
    government work).

CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/) requires the credit above to accompany any
redistribution of ``china.jpg`` / ``flower.jpg`` or of derived images (e.g. inpainting results shown in docs).

``load_image`` turns any Pillow-readable file into float32 (H, W, 3) RGB in [0, 1]. Mode handling:

* EXIF orientation is applied first (``ImageOps.exif_transpose``), so phone photos come out upright.
* ``1``, ``L``, ``P`` (without transparency), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: converted to RGB by
  Pillow (8 bits per channel, divided by 255); grey is replicated to three channels.
* ``I;16*`` (16-bit grey PNG/TIFF): divided by 65535. ``I`` (32-bit int, which is how some encoders store
  16-bit grey): divided by 65535 and clipped, because in practice its values come from 16-bit sources.
  ``F`` (float): taken as already in [0, 1] and clipped.
* 16-bit **RGB** PNGs: Pillow has no 16-bit RGB mode and decodes them to 8 bits per channel, so they load with
  8-bit precision (the range is still right).
* Alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, ``P`` with a transparency entry): **composited over a
  uniform background** (white, ``background=1.0``, by default) rather than dropped. The colour stored under
  fully transparent pixels is undefined (often black, sometimes garbage), so dropping alpha would feed the
  models arbitrary content; compositing gives what a viewer shows on a white page. Pass ``background=None`` to
  drop alpha instead.

Any decoding failure (missing, truncated, corrupt or unsupported file) raises :class:`UnreadableImageError`,
an ``OSError`` whose message names the file; the input pipeline catches it to skip bad files.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import warnings
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageOps


class UnreadableImageError(OSError):
    """An image file could not be opened or decoded (its path is in the message and in ``.path``)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


#: Images with more pixels than this are refused from their header, before any decoding (a 140 KB PNG can
#: declare 144 megapixels and take gigabytes to decode). 50 MP holds any camera photo up to 8K x 6K.
DEFAULT_MAX_PIXELS = 50_000_000
_max_pixels = int(os.environ.get("JAXINPAINT_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def set_max_pixels(limit: int) -> None:
    """Sets the pixel budget of every image and mask reader (default :data:`DEFAULT_MAX_PIXELS`, or the
    ``JAXINPAINT_MAX_PIXELS`` environment variable; the CLIs' ``--max_pixels``)."""
    global _max_pixels
    if int(limit) < 1:
        raise ValueError(f"the pixel budget must be >= 1, got {limit}")
    _max_pixels = int(limit)


def max_pixels() -> int:
    return _max_pixels


def check_pixels(path: str | os.PathLike, width: int, height: int) -> None:
    """Raises :class:`UnreadableImageError` when an image's header declares more pixels than the budget."""
    if width * height > _max_pixels:
        raise UnreadableImageError(path, f"{width}x{height} is {width * height / 1e6:.1f} megapixels, more than the "
                                         f"{_max_pixels / 1e6:g} MP budget (raise it with --max_pixels or "
                                         "JAXINPAINT_MAX_PIXELS if this image is genuine)")


class _Photo(NamedTuple):
    package: str  # import name, located with importlib.util.find_spec
    pip_name: str  # what to `pip install`
    relpath: str  # path inside the package directory


# Order is fixed: the training set's file order (and so the shuffle) depends on it.
_PHOTOS = (
    _Photo("skimage", "scikit-image", "data/astronaut.png"),
    _Photo("skimage", "scikit-image", "data/chelsea.png"),
    _Photo("skimage", "scikit-image", "data/coffee.png"),
    _Photo("skimage", "scikit-image", "data/rocket.jpg"),
    _Photo("skimage", "scikit-image", "data/motorcycle_left.png"),
    _Photo("sklearn", "scikit-learn", "datasets/images/china.jpg"),
    _Photo("sklearn", "scikit-learn", "datasets/images/flower.jpg"),
    _Photo("matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)
HOLDOUT_PHOTO = "coffee.png"
"""File name of the photo kept out of the training split (demos and evaluation use it)."""


def _package_dir(package: str) -> pathlib.Path | None:
    """Directory of an installed package, without importing it (None when it is not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def builtin_photo_paths(split: Literal["train", "holdout", "all"] = "train") -> list[pathlib.Path]:
    """Paths of the real photos shipped inside installed wheels.

    Args:
      split: ``'train'`` (every photo but :data:`HOLDOUT_PHOTO`), ``'holdout'`` (just that one, for demos and
        evaluation, so a model is never shown its own training photo) or ``'all'``.

    Returns:
      The photos found, in a fixed order. Photos of packages that are not installed are skipped with a
      warning, because a partial set is still useful.

    Raises:
      ValueError: unknown ``split``.
      FileNotFoundError: none of the split's photos is installed; the message names the pip packages.
    """
    if split not in ("train", "holdout", "all"):
        raise ValueError(f"builtin_photo_paths: split must be 'train', 'holdout' or 'all', got {split!r}")
    wanted = [
        p for p in _PHOTOS
        if split == "all" or (pathlib.PurePosixPath(p.relpath).name == HOLDOUT_PHOTO) == (split == "holdout")
    ]
    found, missing_packages, missing_files = [], [], []
    for photo in wanted:
        root = _package_dir(photo.package)
        if root is None:
            if photo.pip_name not in missing_packages:
                missing_packages.append(photo.pip_name)
            continue
        path = root / photo.relpath
        if path.is_file():
            found.append(path)
        else:
            missing_files.append(str(path))
    if missing_packages:
        warnings.warn(
            f"built-in photos: package(s) {', '.join(missing_packages)} not installed; their photos are "
            f"skipped (pip install {' '.join(missing_packages)})",
            stacklevel=2,
        )
    if missing_files:
        warnings.warn(f"built-in photos: files missing from installed packages: {missing_files}",
                      stacklevel=2)
    if not found:
        needed = sorted({p.pip_name for p in wanted})
        raise FileNotFoundError(
            f"no built-in photos found for split {split!r}: they ship inside the pip packages "
            f"{', '.join(needed)} (looked for {', '.join(p.relpath for p in wanted)}); "
            f"install them with `pip install {' '.join(needed)}`"
        )
    return found


def _composite(rgb: np.ndarray, alpha: np.ndarray, background: float | None) -> np.ndarray:
    """Blends float RGB over a uniform background with straight (non-premultiplied) alpha in [0, 1]."""
    if background is None:
        return rgb
    a = alpha[..., None]
    return rgb * a + np.float32(background) * (1.0 - a)


def _to_float_rgb(im: Image.Image, background: float | None) -> np.ndarray:
    """Converts a loaded Pillow image of any mode to float32 (H, W, 3) in [0, 1] (module docstring)."""
    mode = im.mode
    if mode.startswith("I;16"):
        grey = np.asarray(im).astype(np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "I":
        grey = np.clip(np.asarray(im).astype(np.float32) / 65535.0, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":
        grey = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "La" or (mode == "L" and "transparency" in im.info):
        im = im.convert("LA")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.float32) / 255.0
    if mode == "L":
        grey = np.asarray(im, dtype=np.float32) / 255.0
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "RGBA":
        arr = np.asarray(im, dtype=np.float32) / 255.0
        return _composite(arr[..., :3], arr[..., 3], background)
    if mode == "LA":
        arr = np.asarray(im, dtype=np.float32) / 255.0
        grey = _composite(arr[..., :1], arr[..., 1], background)
        return np.repeat(grey, 3, axis=-1)
    # 1, CMYK, YCbCr, LAB, HSV, ...: Pillow's own conversion is correct for these.
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def load_image(
    path: str | os.PathLike,
    *,
    background: float | None = 1.0,
    min_short_side: int | None = None,
) -> np.ndarray:
    """Reads an image file as float32 (H, W, 3) RGB in [0, 1], upright.

    Args:
      path: any file Pillow can read (PNG, JPEG, BMP, WebP, TIFF, ...).
      background: grey level that transparent pixels are composited over; ``None`` drops alpha instead.
      min_short_side: lets JPEG files decode at a reduced scale (1/2, 1/4 or 1/8, libjpeg's DCT scaling)
        as long as the short side stays >= this many pixels. The caller is about to resize to that size
        anyway, and decoding a 4000-px photo at 1/8 scale is many times faster. The result is then *not*
        full resolution; other formats ignore it.

    Returns:
      float32 array of shape (H, W, 3), values in [0, 1].

    Raises:
      UnreadableImageError: the file is missing, truncated, corrupt or not an image (the message names it).
    """
    try:
        with Image.open(path) as im:
            if min_short_side is not None and im.format == "JPEG":
                w, h = im.size
                short = min(w, h)
                if short > min_short_side:
                    # draft() picks the largest DCT scale whose output is at least the requested size.
                    want = (-(-w * min_short_side // short), -(-h * min_short_side // short))  # ceil
                    im.draft(None, want)
            check_pixels(path, *im.size)  # the size about to be decoded, from the header
            im.load()
            im = ImageOps.exif_transpose(im)
    except UnreadableImageError:
        raise
    except Exception as e:  # any decoder failure means "unreadable"; Pillow raises many exception types
        raise UnreadableImageError(path, f"{type(e).__name__}: {e}") from e
    if im.width < 1 or im.height < 1:
        raise UnreadableImageError(path, f"empty image ({im.width}x{im.height})")
    return np.ascontiguousarray(_to_float_rgb(im, background), dtype=np.float32)
