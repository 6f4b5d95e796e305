"""CTSDG's greyscale and Canny inputs, computed on the host (``System.prepare_example``), with the original's
uint8 wrap as an option (systems-more.md §11.6; ``utils/canny.py``, ``datasets/dataset.py``).

The original calls ``image_to_edge(image, sigma=2)`` on the *normalised* tensor ``v`` in [-1, 1]:
``ToPILImage`` multiplies by 255 and casts to uint8, so negative values wrap around (C's float-to-uint8
conversion on x86: ``trunc(255·v) mod 256``; -1 -> 1, -0.5 -> 129, 0 -> 0, 0.5 -> 127, 1 -> 255). Every
channel therefore jumps from 255 to 0 at mid-grey, Canny finds false edges along that contour, and the grey
image given to the generator and the discriminator is distorted the same way. Then ``gray =
skimage.color.rgb2gray(uint8)``, ``edge = skimage.feature.canny(gray, sigma=2)`` (default thresholds, no
mask), and ``gray`` becomes float32 (PIL mode 'F').

The released weights were trained on that input, so ``uint8_wrap=True`` (``config.inference.uint8_wrap``)
reproduces it exactly; ``False`` is the corrected input: grey and edges of the [0, 1] image itself, for
models trained from scratch. Both run Canny on the whole image, the hole included, as the original does in
training and in ``test.py`` (the network sees ``edge·m`` and ``grey·m``; the discriminator the full maps); at
inference, whatever the hole holds can therefore move edges within a few σ of its border.
"""

from __future__ import annotations

import numpy as np

from jaxinpaint.data import edges


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) image as 8-bit values: uint8 as it is, floats in [0, 1] (the pipeline's k/255) rounded."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"ctsdg inputs: image must be uint8 or float in [0, 1], got {image.dtype}")
    return np.clip(np.round(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def normalise(image_uint8: np.ndarray) -> np.ndarray:
    """``Normalize(0.5, 0.5)(ToTensor(image))`` in float32, as torchvision computes it: [-1, 1]."""
    return (image_uint8.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)


def wrapped_uint8(image_uint8: np.ndarray) -> np.ndarray:
    """What ``ToPILImage`` makes of the normalised tensor: ``uint8(trunc(255·v) mod 256)``, v in [-1, 1]."""
    scaled = normalise(image_uint8) * np.float32(255.0)
    return np.mod(np.trunc(scaled).astype(np.int64), 256).astype(np.uint8)


def grey_and_edges(image: np.ndarray, *, uint8_wrap: bool, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``(grey, edge)`` float32 (H, W, 1) of an (H, W, 3) image (uint8, or float in [0, 1]).

    Args:
      image: RGB.
      uint8_wrap: the original's wrapped input (see the module docstring), or the corrected one.
      sigma: Canny's Gaussian (2 in the original).
    """
    if np.ndim(image) != 3 or np.shape(image)[-1] != 3:
        raise ValueError(f"ctsdg inputs: image must be (H, W, 3) RGB, got shape {np.shape(image)}")
    pixels = to_uint8(image)
    grey = edges.grey(wrapped_uint8(pixels) if uint8_wrap else pixels)
    edge = edges.canny(grey, sigma)
    return grey.astype(np.float32)[..., None], edge[..., None]


def prepare_example(example: dict, config, *, train: bool) -> dict:
    """Adds ``'grey'`` and ``'edge'`` (H, W, 1) to an example, per ``config.inference`` (``uint8_wrap``,
    ``canny_sigma``): the same in training and at inference, so a model always sees what it was trained on."""
    del train
    cfg = config.inference
    grey, edge = grey_and_edges(example["image"], uint8_wrap=bool(cfg.get("uint8_wrap", True)),
                                sigma=float(cfg.get("canny_sigma", 2.0)))
    return {**example, "grey": grey, "edge": edge}
