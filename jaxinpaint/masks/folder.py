"""Masks read from a folder of mask images (NVIDIA's irregular masks, LaMa's segmentation masks...)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from jaxinpaint.masks.base import IMAGE_EXTENSIONS, Preset, check_call, is_number


class FolderMasks:
    """Masks read from image files under ``root`` (recursive), picked with the caller's rng.

    Each call picks one file uniformly (the file list is sorted, so a seed fixes the choice), reads it as
    8-bit grey, binarises it with ``value > threshold * 255``, resizes it with nearest neighbour to
    (height, width) and inverts it when ``invert`` is set (the NVIDIA irregular-mask set uses 1 = valid,
    so read it with ``invert=True``).
    """

    def __init__(self, root: str | pathlib.Path, *, threshold: float = 0.5, invert: bool = False) -> None:
        """Scans ``root`` once.

        Args:
          root: folder holding mask images (searched recursively for :data:`IMAGE_EXTENSIONS`).
          threshold: fraction of 255 above which a pixel counts as hole (before inversion).
          invert: complement the binarised mask (for sets where white = valid).

        Raises:
          FileNotFoundError: ``root`` is not a folder, or holds no image file.
          ValueError: ``threshold`` is outside [0, 1].
        """
        self.root = pathlib.Path(root)
        if not is_number(threshold) or not 0 <= threshold <= 1:
            raise ValueError(f"FolderMasks.threshold must be a number in [0, 1], got {threshold!r}")
        self.threshold = float(threshold)
        self.invert = bool(invert)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"FolderMasks: mask folder {str(self.root)!r} does not exist or is not a folder"
            )
        files = [p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        if not files:
            raise FileNotFoundError(
                f"FolderMasks: mask folder {str(self.root)!r} holds no image files (searched recursively for "
                f"extensions {', '.join(IMAGE_EXTENSIONS)}, case-insensitive)"
            )
        files.sort(key=lambda p: p.relative_to(self.root).as_posix())
        self.files: tuple[pathlib.Path, ...] = tuple(files)

    def __repr__(self) -> str:
        return (f"FolderMasks(root={str(self.root)!r}, threshold={self.threshold}, invert={self.invert}, "
                f"files={len(self.files)})")

    def load(self, path: str | pathlib.Path, height: int, width: int) -> np.ndarray:
        """Reads one mask file as a bool (height, width) hole mask (useful for fixed evaluation pairs)."""
        try:
            with Image.open(path) as image:
                grey = np.asarray(image.convert("L"))
        except (OSError, ValueError) as err:
            raise ValueError(f"FolderMasks: cannot read mask image {str(path)!r}: {err}") from err
        binary = grey > self.threshold * 255
        if binary.shape != (height, width):
            small = Image.fromarray(binary.astype(np.uint8))
            resized = small.resize((width, height), Image.Resampling.NEAREST)
            binary = np.asarray(resized) > 0
        return ~binary if self.invert else binary

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Picks a file with ``rng`` and returns its mask at (height, width)."""
        height, width = check_call("FolderMasks", rng, height, width)
        return self.load(self.files[int(rng.integers(len(self.files)))], height, width)


def _folder(p: Mapping[str, Any]) -> FolderMasks:
    if p["root"] is None:
        raise ValueError(
            "masks.get('folder'): the root= override (the folder holding mask images) is required"
        )
    return FolderMasks(p["root"], threshold=p["threshold"], invert=p["invert"])


PRESETS: Mapping[str, Preset] = {
    "folder": Preset(_folder, {"root": None, "threshold": 0.5, "invert": False}),
}
