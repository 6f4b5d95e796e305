"""Image sources of the input pipeline: LaMa-layout folders, TFDS (``tfds.data_source``, no TensorFlow), the
built-in photos; and the reader that skips unreadable files deterministically (see ``pipeline``'s docstring).
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import threading
from typing import Any

import numpy as np

from jaxinpaint.data import photos

logger = logging.getLogger("jaxinpaint.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_MASK_FILE = re.compile(r"_mask\d*\.png$", re.IGNORECASE)


class EmptyDatasetError(ValueError):
    """The configured source holds no usable image (none found, or every one unreadable)."""


def list_image_files(root: pathlib.Path, exclude: tuple[pathlib.Path, ...] = ()) -> list[str]:
    """Sorted image paths under ``root`` (recursive; ``images.walk_files``: each real file once, no directory
    loop followed); str, not Path, to stay small for millions of files."""
    from jaxinpaint.data import images  # the one folder walk

    walk = images.walk_files(root, exclude=exclude)
    if walk.broken:
        logger.warning("%d broken symbolic link(s) under %s skipped: %s", len(walk.broken), root,
                       ", ".join(walk.broken[:5]))
    return [path for rel, path in walk.files
            if rel.lower().endswith(IMAGE_EXTENSIONS) and not _MASK_FILE.search(rel.rsplit("/", 1)[-1])]


class FileSource:
    """Images from a list of files."""

    def __init__(self, paths: list[str], description: str):
        self.paths = paths
        self.description = description

    def __len__(self) -> int:
        return len(self.paths)

    def key(self, index: int) -> str:
        return self.paths[index]

    def load(self, index: int, min_short_side: int | None) -> np.ndarray:
        return photos.load_image(self.paths[index], min_short_side=min_short_side)


def array_to_rgb(arr: np.ndarray, where: str) -> np.ndarray:
    """A decoded uint8/uint16/float array (H, W[, C]) as float32 (H, W, 3) in [0, 1]."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise photos.UnreadableImageError(where, f"expected an (H, W, C) image, C in 1..4, got {arr.shape}")
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        x = arr.astype(np.float32) / 65535.0
    else:
        x = np.clip(arr.astype(np.float32), 0.0, 1.0)
    if x.shape[-1] in (2, 4):  # composite alpha over white, like photos.load_image
        a = x[..., -1:]
        x = x[..., :-1] * a + (1.0 - a)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


def tfds_prepare_hint(name: str, data_dir: str | None) -> str:
    """How to build a TFDS dataset in the format ``tfds.data_source`` reads (shown when it is missing)."""
    data_dir = data_dir or "~/tensorflow_datasets"
    return (
        "jaxinpaint never downloads. Prepare the dataset once, on a machine that can reach the data; "
        "TensorFlow is not needed:\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{data_dir}')"
        ".download_and_prepare(file_format='array_record')\"\n"
        "Manual datasets (celeb_a_hq, imagenet2012) also need download_config=tfds.download.DownloadConfig("
        "manual_dir=<folder with the archives>). Where TensorFlow is installed (the tfds CLI imports it) "
        f"the same is: tfds build {name} --file_format=array_record --data_dir={data_dir} [--manual_dir=...]"
    )


class TfdsSource:
    """Images from a prepared (array_record) TFDS dataset, read without TensorFlow."""

    def __init__(self, name: str, split: str, data_dir: str | None, image_key: str, split_field: str):
        try:
            import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
        except ImportError as e:
            raise ImportError("input.source='tfds' needs tensorflow-datasets (pip install "
                              "tensorflow-datasets; TensorFlow itself is not needed)") from e
        where = data_dir or "TFDS's default data_dir (TFDS_DATA_DIR or ~/tensorflow_datasets)"
        try:
            self._src = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except tfds.core.registered.DatasetNotFoundError as e:
            first_line = str(e).splitlines()[0]
            raise ValueError(f"input.tfds_name={name!r}: no such TFDS dataset ({first_line})") from e
        except Exception as e:  # TFDS reports a missing build with many exception types
            if isinstance(e, ValueError) and "unknown split" in str(e).lower():
                raise ValueError(f"{split_field}={split!r} for TFDS dataset {name!r}: {e}") from e
            raise EmptyDatasetError(
                f"TFDS dataset {name!r}, split {split!r} ({split_field}) is not available as array_record "
                f"under {where}: {type(e).__name__}: {e}\n{tfds_prepare_hint(name, data_dir)}") from e
        features = getattr(getattr(self._src, "dataset_info", None), "features", None)
        if features is not None and image_key not in features:
            raise ValueError(f"input.tfds_image_key={image_key!r} is not a feature of TFDS dataset {name!r}; "
                             f"features: {sorted(features.keys())}")
        self._key = image_key
        self._name = f"{name}[{split}]"
        self.description = f"TFDS dataset {name!r} split {split!r} under {where}"

    def __len__(self) -> int:
        return len(self._src)

    def key(self, index: int) -> str:
        return f"{self._name}#{index}"

    def load(self, index: int, min_short_side: int | None) -> np.ndarray:
        del min_short_side  # TFDS decodes the full image itself
        try:
            example = self._src[index]
        except Exception as e:  # a corrupt record can fail in many ways inside TFDS
            raise photos.UnreadableImageError(self.key(index), f"{type(e).__name__}: {e}") from e
        return array_to_rgb(example[self._key], self.key(index))


def has_split(config: Any, split: str) -> bool:
    """Whether ``open_source(config, split)`` would find a source (a folder's eval split may be absent)."""
    if config.source != "folder" or split == "train":
        return True
    eval_dir = config.eval_folder or os.path.join(os.path.expanduser(config.folder), "val")
    return os.path.isdir(os.path.expanduser(eval_dir))


def open_source(config: Any, split: str):
    """The source for ``split`` ('train' or 'eval'); raises EmptyDatasetError when it holds no file."""
    source = config.source
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if source == "builtin":
        paths = photos.builtin_photo_paths("train" if split == "train" else "holdout")
        return FileSource([str(p) for p in paths], f"built-in photos ({split})")
    if source == "tfds":
        tfds_split = config.tfds_split if split == "train" else config.tfds_eval_split
        field = "input.tfds_split" if split == "train" else "input.tfds_eval_split"
        src = TfdsSource(config.tfds_name, tfds_split, config.tfds_data_dir, config.tfds_image_key, field)
        if len(src) == 0:
            raise EmptyDatasetError(f"{src.description} holds no examples")
        return src
    folder = pathlib.Path(os.path.expanduser(config.folder))
    if not folder.is_dir():
        raise EmptyDatasetError(f"input.folder={str(folder)!r} is not a directory")
    eval_dir = pathlib.Path(os.path.expanduser(config.eval_folder)) if config.eval_folder else folder / "val"
    if split == "train":
        root = folder / "train" if (folder / "train").is_dir() else folder
        exclude = (eval_dir,) if eval_dir.is_dir() else ()
    else:
        if not eval_dir.is_dir():
            raise EmptyDatasetError(f"no eval images: {str(eval_dir)!r} is not a directory (create "
                                    f"<input.folder>/val or set input.eval_folder)")
        root, exclude = eval_dir, ()
    paths = list_image_files(root, exclude)
    if not paths:
        raise EmptyDatasetError(
            f"no image files under {str(root)!r} (searched recursively for "
            f"{', '.join('*' + e for e in IMAGE_EXTENSIONS)}, case-insensitive; hidden files and "
            f"*_mask<N>.png are ignored)")
    return FileSource(paths, f"folder {str(root)!r}")


class Reader:
    """Loads by dataset index, replacing unreadable files by the next index (deterministically)."""

    def __init__(self, source):
        self.source = source
        self.skipped: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self, index: int, min_short_side: int | None) -> np.ndarray:
        n = len(self.source)
        for attempt in range(n):
            j = (index + attempt) % n
            key = self.source.key(j)
            if key in self.skipped:
                continue
            try:
                return self.source.load(j, min_short_side)
            except photos.UnreadableImageError as e:
                with self._lock:
                    if key not in self.skipped:
                        self.skipped[key] = e.reason
                        logger.warning("skipping unreadable image %s (%s); %d of %d file(s) skipped so far",
                                       key, e.reason, len(self.skipped), n)
        raise EmptyDatasetError(f"all {n} images of {self.source.description} are unreadable "
                                f"(first: {next(iter(self.skipped.items()), ('?', '?'))})")

    def log_summary(self) -> None:
        if self.skipped:
            names = sorted(self.skipped)
            shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
            logger.warning("%d of %d image(s) of %s were unreadable and skipped: %s", len(names),
                           len(self.source), self.source.description, shown)
