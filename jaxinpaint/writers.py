"""Metric writers, image grids and a progress reporter for training, without TensorFlow.

The writers follow the method names of CLU's ``metric_writers`` (``write_scalars``, ``write_images``,
``write_texts``, ``write_hparams``, ``flush``, ``close``), so trainer code reads like the Flax / big_vision
examples. CLU's own TensorBoard writer imports TensorFlow, which jaxinpaint does not depend on, hence this
small re-implementation:

* ``JsonlWriter``: one JSON object per ``write_scalars`` call, the durable, greppable record of a run;
* ``TensorBoardWriter``: scalars, images, texts and hparams through tensorboardX (optional dependency);
* ``PngWriter``: each image batch tiled into one PNG, ``<dir>/<name>_<step:08d>.png``;
* ``LoggingWriter``: plain log lines;
* ``MultiWriter``: fans out to several writers; ``create_default_writer`` builds the usual set.

``image_grid`` builds the [masked input | mask | prediction | composite | target] sample grids, and
``ProgressReporter`` prints a tqdm bar or plain "step 120/1000 | 3.2 steps/s | ..." log lines.

All writers run on the host: pass numpy values or jax arrays already fetched with ``jax.device_get``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TextIO, runtime_checkable

import numpy as np

__all__ = [
    "JsonlWriter",
    "LoggingWriter",
    "MetricWriter",
    "MultiWriter",
    "PngWriter",
    "ProgressReporter",
    "TensorBoardWriter",
    "as_uint8_images",
    "create_default_writer",
    "image_grid",
    "read_jsonl",
    "tile_images",
]

_LOGGER = logging.getLogger(__name__)

# Strict JSON has no NaN / Infinity literals, so non-finite scalars are written as these strings.
_NONFINITE_TO_STR = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_STR_TO_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@runtime_checkable
class MetricWriter(Protocol):
    """What the trainer and evaluators write to; the method names are CLU's ``MetricWriter``'s."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes scalar values (python/numpy/jax scalars) for one step."""

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Writes image batches [N, H, W, C] (float in [0, 1] or uint8) for one step."""

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """Writes text values for one step."""

    def write_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Writes the run's hyperparameters (e.g. a config) and the names of its final metrics (scalars already
        written under those names), which TensorBoard's HParams view shows beside them."""

    def flush(self) -> None:
        """Makes everything written so far durable / visible."""

    def close(self) -> None:
        """Flushes and releases resources; the writer must not be used afterwards."""


# ----------------------------------------------------------------------------------------------------
# Value conversion.
# ----------------------------------------------------------------------------------------------------


def _check_step(step: Any) -> int:
    """Steps are non-negative integers (numpy / 0-d jax integers accepted)."""
    arr = np.asarray(step)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer) or int(arr) < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return int(arr)


def _to_float(name: str, value: Any) -> float:
    """Converts one scalar (python, numpy or a 1-element jax/numpy array) to a python float."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # e.g. an object numpy cannot interpret
        raise ValueError(f"scalar {name!r}: cannot convert {type(value).__name__} to a number") from exc
    if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(
            f"scalar {name!r}: expected a single number, got a {arr.dtype} array of shape {arr.shape}"
        )
    return float(arr.reshape(()))


def as_uint8_images(name: str, images: Any) -> np.ndarray:
    """Converts an image batch to uint8 [N, H, W, C], C in {1, 3, 4}.

    Accepts [N, H, W, C] or a single [H, W, C] image; float values are taken to be in [0, 1] (clipped,
    NaN shown as 0, so that a diverging model still produces a viewable grid), bool as 0/255, integer
    types as 0..255.

    Args:
      name: the image's name, used in error messages.
      images: the array.
    """
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4) or 0 in arr.shape:
        raise ValueError(
            f"image {name!r}: expected [N, H, W, C] or [H, W, C] with C in (1, 3, 4), got shape {arr.shape}"
        )
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr, 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"image {name!r}: unsupported dtype {arr.dtype}")


# ----------------------------------------------------------------------------------------------------
# Grids.
# ----------------------------------------------------------------------------------------------------


def tile_images(images: np.ndarray, *, ncols: int | None = None, separator: int = 2,
                separator_value: int = 255) -> np.ndarray:
    """Tiles a batch [N, H, W, C] into one near-square uint8 image [H', W', C] (a single image as is).

    Args:
      images: image batch, any dtype accepted by ``as_uint8_images``.
      ncols: number of tile columns; default ``ceil(sqrt(N))``.
      separator: gap in pixels between tiles.
      separator_value: uint8 value of the gap and of unused cells.
    """
    arr = as_uint8_images("tile_images", images)
    n, h, w, c = arr.shape
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    if ncols < 1 or separator < 0:
        raise ValueError(f"tile_images: ncols must be >= 1 and separator >= 0, got {ncols} and {separator}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * h + (nrows - 1) * separator, ncols * w + (ncols - 1) * separator, c),
                  separator_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = r * (h + separator), col * (w + separator)
        out[y:y + h, x:x + w] = arr[i]
    return out


def _label_band(labels: Sequence[str], cell_width: int, stride: int, width: int, background: int) -> np.ndarray:
    """A uint8 [h, width, 3] strip with ``labels[k]`` centred over the column starting at ``k * stride``.

    Pillow's bundled font (no font file needed), shrunk to fit the narrowest column, then cut with an ellipsis.
    """
    from PIL import Image, ImageDraw, ImageFont

    def font(size):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType: the fixed bitmap font
            return ImageFont.load_default()

    size = max(8, min(14, cell_width // 6))
    while size > 8 and max(font(size).getlength(t) for t in labels) > cell_width - 4:
        size -= 1
    face = font(size)
    height = size + 8
    band = Image.new("RGB", (width, height), (background,) * 3)
    draw = ImageDraw.Draw(band)
    ink = (0, 0, 0) if background > 127 else (255, 255, 255)
    for k, text in enumerate(labels):
        while len(text) > 1 and face.getlength(text) > cell_width - 4:
            text = text[:-2] + "…"
        x = k * stride + (cell_width - face.getlength(text)) / 2
        draw.text((x, (height - size) / 2 - 1), text, fill=ink, font=face)
    return np.asarray(band)


def image_grid(columns: Sequence[np.ndarray], *, separator: int = 2, separator_value: int = 255,
               max_rows: int | None = None, labels: Sequence[str] | None = None) -> np.ndarray:
    """Builds a sample grid with one row per example and the given columns, as uint8 [H', W', 3].

    The trainer's periodic grids use columns ``[masked input | mask | prediction | composite | target]``,
    labelled so. Masks ([N, H, W, 1] or [N, H, W]) are shown as 3-channel grey images (white = hole).

    Args:
      columns: arrays [N, H, W, 3], [N, H, W, 1] or [N, H, W], float in [0, 1], bool or uint8, all with
        the same N, H and W.
      separator: width in pixels of the lines between cells.
      separator_value: uint8 grey level of those lines.
      max_rows: show at most this many examples.
      labels: one title per column, written in a band above the grid.

    Returns:
      uint8 array of shape ``(R*H + (R-1)*separator, K*W + (K-1)*separator, 3)`` with R rows and K columns
      (plus the label band's height on top when ``labels`` are given).
    """
    if labels is not None and len(labels) != len(columns):
        raise ValueError(f"image_grid: {len(labels)} labels for {len(columns)} columns")
    if not columns:
        raise ValueError("image_grid: at least one column is needed")
    cells = []
    for k, col in enumerate(columns):
        arr = np.asarray(col)
        if arr.ndim == 3:  # [N, H, W] mask
            arr = arr[..., None]
        if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
            raise ValueError(f"image_grid: column {k} must be [N, H, W, 3], [N, H, W, 1] or [N, H, W], "
                             f"got shape {np.shape(col)}")
        arr = as_uint8_images(f"column {k}", arr)
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        if cells and arr.shape[:3] != cells[0].shape[:3]:
            raise ValueError(f"image_grid: column {k} has N, H, W = {arr.shape[:3]}, but column 0 has "
                             f"{cells[0].shape[:3]}")
        cells.append(arr)
    n, h, w, _ = cells[0].shape
    rows = n if max_rows is None else max(1, min(n, max_rows))
    ncols = len(cells)
    out = np.full((rows * h + (rows - 1) * separator, ncols * w + (ncols - 1) * separator, 3),
                  separator_value, np.uint8)
    for r in range(rows):
        for k, arr in enumerate(cells):
            y, x = r * (h + separator), k * (w + separator)
            out[y:y + h, x:x + w] = arr[r]
    if labels is not None:
        out = np.concatenate([_label_band(labels, w, w + separator, out.shape[1], separator_value), out], axis=0)
    return out


# ----------------------------------------------------------------------------------------------------
# Writers.
# ----------------------------------------------------------------------------------------------------


class _BaseWriter:
    """No-op defaults, so each backend implements only what it stores; usable as a context manager."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Ignored by this backend."""

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Ignored by this backend."""

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """Ignored by this backend."""

    def write_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Ignored by this backend."""

    def flush(self) -> None:
        """Nothing buffered by default."""

    def close(self) -> None:
        """Nothing to release by default."""
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _json_value(value: float) -> float | str:
    return value if math.isfinite(value) else _NONFINITE_TO_STR[repr(value)]


def _parse_jsonl_line(line: str) -> dict[str, Any]:
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if not isinstance(record.get("step"), int):
        raise ValueError("no integer 'step' field")
    return {k: _STR_TO_NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()}


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a ``JsonlWriter`` file back, turning "NaN" / "Infinity" / "-Infinity" into floats.

    A malformed *last* line (a write cut short by a crash) is skipped with a warning; a malformed line
    elsewhere raises ValueError naming the file and line.
    """
    path = pathlib.Path(path)
    lines = path.read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(_parse_jsonl_line(line))
        except ValueError as exc:
            if i == len(lines) - 1:
                _LOGGER.warning("%s:%d: skipping truncated last line (%s)", path, i + 1, exc)
                continue
            raise ValueError(f"{path}:{i + 1}: bad metrics line ({exc}): {line[:80]!r}") from exc
    return records


class JsonlWriter(_BaseWriter):
    """Appends one JSON object per ``write_scalars`` call: ``{"step": s, "name": value, ...}``.

    Values are written as JSON floats. Non-finite values are written as the strings ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"``: Python's ``json`` would emit bare ``NaN`` tokens, which are not
    valid JSON and break strict readers (jq, JavaScript, pandas with the C parser), while the strings keep
    every line strictly valid; ``read_jsonl`` converts them back. Images, texts and hparams are not stored
    here (the PNG and TensorBoard writers and the checkpointed config keep them).

    On resume, lines written after the restored checkpoint's step would duplicate the steps the run is
    about to redo: ``truncate_after(step)`` (or ``resume_step=``) drops them, so the file ends up as if
    the run had never been interrupted.
    """

    def __init__(self, path: str | os.PathLike, *, resume_step: int | None = None):
        """Opens (lazily) ``path`` for appending; with ``resume_step``, first drops lines after that step."""
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = None
        if resume_step is not None:
            self.truncate_after(resume_step)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Appends one line with the step and all scalars, flushed immediately (a crash loses nothing)."""
        step = _check_step(step)
        if "step" in scalars:
            raise ValueError(f"{self.path}: 'step' is reserved for the step number, not a scalar name")
        record: dict[str, Any] = {"step": step}
        for name, value in scalars.items():
            record[str(name)] = _json_value(_to_float(name, value))
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def truncate_after(self, step: int) -> int:
        """Drops every line whose step is greater than ``step``; returns how many lines were dropped.

        The file is rewritten atomically (temporary file + rename), so a crash during truncation leaves
        either the old or the new file. A truncated last line is dropped too.
        """
        step = _check_step(step)
        self._close_file()
        if not self.path.exists():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = _parse_jsonl_line(line)
            except ValueError as exc:
                if i == len(lines) - 1:
                    continue  # a write cut short by the crash we are resuming from
                raise ValueError(f"{self.path}:{i + 1}: bad metrics line ({exc}): {line[:80]!r}") from exc
            if record["step"] <= step:
                kept.append(line)
        dropped = len([ln for ln in lines if ln.strip()]) - len(kept)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        return dropped

    def flush(self) -> None:
        """Lines are flushed as they are written; this also asks the OS to persist them."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Flushes and closes the file (a later write reopens it)."""
        self.flush()
        self._close_file()


def _flatten_hparams(hparams: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested mappings become dotted keys; values TensorBoard cannot show (lists, None...) become strings."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in hparams.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten_hparams(value, prefix=f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif isinstance(value, (np.generic,)) and np.ndim(value) == 0:
            flat[name] = value.item()
        else:
            flat[name] = str(value)
    return flat


class TensorBoardWriter(_BaseWriter):
    """TensorBoard event files through tensorboardX, which needs neither TensorFlow nor torch.

    ``purge_step`` (set to ``resume_step + 1`` when resuming) tells TensorBoard to discard events of the
    interrupted run with a step at or after it, mirroring ``JsonlWriter.truncate_after``.
    """

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None, flush_secs: int = 30):
        """Creates the event file in ``logdir``; raises ImportError if tensorboardX is not installed."""
        try:
            import tensorboardX
        except ImportError as exc:
            raise ImportError(
                "TensorBoardWriter needs tensorboardX (pip install tensorboardX==2.6.5); "
                "use create_default_writer(..., tensorboard=False) to run without it"
            ) from exc
        self.logdir = pathlib.Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = tensorboardX.SummaryWriter(
            logdir=str(self.logdir), purge_step=purge_step, flush_secs=flush_secs
        )

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """One ``add_scalar`` per value."""
        step = _check_step(step)
        for name, value in scalars.items():
            self._writer.add_scalar(str(name), _to_float(name, value), global_step=step)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """One image series per name; single-channel images are shown as grey RGB."""
        step = _check_step(step)
        for name, value in images.items():
            arr = as_uint8_images(name, value)
            if arr.shape[-1] == 1:
                arr = np.repeat(arr, 3, axis=-1)
            self._writer.add_images(str(name), arr, global_step=step, dataformats="NHWC")

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """One ``add_text`` per value."""
        step = _check_step(step)
        for name, text in texts.items():
            self._writer.add_text(str(name), str(text), global_step=step)

    def write_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Writes an HParams-plugin session into this run (tensorboardX's ``add_hparams`` would open a
        separate, timestamp-named run instead). Numbers and booleans stay typed, so the HParams view can sort
        and plot them; ``metrics`` names the scalars of this run the view shows per session (their last
        values), e.g. the final losses and evaluation results."""
        from tensorboardX.summary import hparams as hparams_summary

        for summary in hparams_summary(_flatten_hparams(hparams), {str(k): 0.0 for k in (metrics or {})}):
            self._writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        """Writes pending events to disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._writer.close()


def _safe_filename(name: str) -> str:
    """'train/samples grid' -> 'train_samples_grid': metric names may contain '/' and spaces."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.")
    return safe or "image"


class PngWriter(_BaseWriter):
    """Writes each image batch as one tiled PNG: ``<directory>/<name>_<step:08d>.png``.

    PNGs are always written, even with TensorBoard, because they can be viewed anywhere and compared
    across runs without a TensorBoard server. Only images are stored.
    """

    def __init__(self, directory: str | os.PathLike, *, separator: int = 2):
        """Creates ``directory``; ``separator`` is the gap in pixels between tiled images."""
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._separator = separator

    def path_for(self, name: str, step: int) -> pathlib.Path:
        """Where the image ``name`` of ``step`` is (or will be) written."""
        return self.directory / f"{_safe_filename(name)}_{_check_step(step):08d}.png"

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Tiles each batch (a single image, e.g. an ``image_grid``, is written as is) into one PNG."""
        from PIL import Image

        step = _check_step(step)
        for name, value in images.items():
            grid = tile_images(as_uint8_images(name, value), separator=self._separator)
            # uint8 [H, W] / [H, W, 3] / [H, W, 4] map to Pillow's L / RGB / RGBA modes.
            pixels = grid[..., 0] if grid.shape[-1] == 1 else grid
            path = self.path_for(name, step)
            tmp = path.with_name(path.name + ".tmp")
            Image.fromarray(pixels).save(tmp, format="PNG")
            os.replace(tmp, path)  # readers never see a half-written PNG


class LoggingWriter(_BaseWriter):
    """Writes everything as log lines (absl logging forwards to the same ``logging`` machinery)."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO):
        """Logs to ``logger`` (default: this module's) at ``level``."""
        self._logger = logger or _LOGGER
        self._level = level

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """``[step] a=1.23, b=4.5``."""
        step = _check_step(step)
        values = ", ".join(f"{k}={_to_float(k, v):.6g}" for k, v in scalars.items())
        self._logger.log(self._level, "[%d] %s", step, values)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Only the shapes: images do not belong in a log."""
        step = _check_step(step)
        shapes = ", ".join(f"{k}={np.shape(v)}" for k, v in images.items())
        self._logger.log(self._level, "[%d] images: %s", step, shapes)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """One line per text."""
        step = _check_step(step)
        for name, text in texts.items():
            self._logger.log(self._level, "[%d] %s: %s", step, name, text)

    def write_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """One line with the flattened hyperparameters."""
        self._logger.log(self._level, "hparams: %s", _flatten_hparams(hparams))


class MultiWriter(_BaseWriter):
    """Sends every call to each of several writers, in order."""

    def __init__(self, writers: Iterable[MetricWriter]):
        """Keeps the given writers; closing the MultiWriter closes them all."""
        self.writers: list[MetricWriter] = list(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Forwards to every writer."""
        for w in self.writers:
            w.write_scalars(step, scalars)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Forwards to every writer."""
        for w in self.writers:
            w.write_images(step, images)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """Forwards to every writer."""
        for w in self.writers:
            w.write_texts(step, texts)

    def write_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Forwards to every writer."""
        for w in self.writers:
            w.write_hparams(hparams, metrics)

    def flush(self) -> None:
        """Flushes every writer."""
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        """Closes every writer."""
        for w in self.writers:
            w.close()


def create_default_writer(workdir: str | os.PathLike, *, process_index: int = 0, tensorboard: bool = True,
                          resume_step: int | None = None, log: bool = True) -> MultiWriter:
    """The writer set a training run uses, like CLU's ``create_default_writer``.

    Process 0 logs and writes ``<workdir>/metrics.jsonl``, ``<workdir>/images/*.png`` and, when
    ``tensorboard`` is true and tensorboardX is installed, event files in ``<workdir>/tensorboard``
    (a warning is logged when it is missing). Other processes only log, so that a multi-host run does not
    write the same files several times.

    Args:
      workdir: the run's directory.
      process_index: ``jax.process_index()`` of the caller.
      tensorboard: whether to write TensorBoard event files.
      resume_step: the step of the restored checkpoint when resuming; JSONL lines and TensorBoard events
        written after it by the interrupted run are dropped.
      log: also log everything written (off in the trainer, whose progress reporter prints each report once).
    """
    writers: list[MetricWriter] = [LoggingWriter()] if log else []
    if process_index == 0:
        workdir = pathlib.Path(workdir)
        writers.append(JsonlWriter(workdir / "metrics.jsonl", resume_step=resume_step))
        writers.append(PngWriter(workdir / "images"))
        if tensorboard:
            purge_step = None if resume_step is None else resume_step + 1
            try:
                writers.append(TensorBoardWriter(workdir / "tensorboard", purge_step=purge_step))
            except ImportError as exc:
                _LOGGER.warning("not writing TensorBoard logs: %s", exc)
    return MultiWriter(writers)


# ----------------------------------------------------------------------------------------------------
# Progress.
# ----------------------------------------------------------------------------------------------------


def format_duration(secs: float) -> str:
    """35s, 4m35s, 2h05m, 1d03h: short enough for a log line, precise enough for an ETA."""
    if not math.isfinite(secs):
        return "?"
    secs = max(0, int(round(secs)))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h"


def _format_rate(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _is_interactive(stream: TextIO) -> bool:
    """A bar only makes sense on a terminal and outside CI (CI logs keep every carriage-return frame)."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not ci


class ProgressReporter:
    """Reports training progress: a tqdm bar on a terminal, plain log lines otherwise.

    Call ``report(step, scalars)`` after each step, where ``step`` counts completed steps (1-based, so
    the last call has ``step == total_steps``). The first call marks the end of the first step, which
    includes compilation: its duration (measured from construction) is reported separately and excluded
    from every rate. Later reports are due every ``every_steps`` steps and/or ``every_secs`` seconds
    (whichever comes first) and at the last step; a due report prints e.g.

        step 120/1000 | 3.2 steps/s | 25.6 img/s | ETA 4m35s | elapsed 41s | loss_g 1.234 | loss_d 0.6931

    where the rates are measured over the steps since the previous report and ``img/s`` is
    ``batch_size * steps/s``. ``report`` returns ``{"perf/steps_per_sec": ..., "perf/img_per_sec": ...}``
    when a report was due (else ``{}``), ready for ``writer.write_scalars``.

    ``scalars`` are converted with ``float()``; pass them only on steps where they were fetched from the
    device anyway, since converting a jax array blocks until the step has finished.
    """

    def __init__(self, total_steps: int, *, batch_size: int, start_step: int = 0,
                 every_secs: float | None = 60.0, every_steps: int | None = None,
                 interactive: bool | None = None, keys: Sequence[str] | None = None,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        """Sets up the reporter.

        Args:
          total_steps: the step count at which training ends.
          batch_size: global batch size, for img/s.
          start_step: steps already done (when resuming).
          every_secs: report at least this often (None: no time trigger).
          every_steps: report every this many steps (None: no step trigger). With both None, every
            call reports.
          interactive: force the tqdm bar (True) or log lines (False); default: bar iff ``stream`` is a
            TTY and the CI environment variable is not set.
          keys: which scalars to show (default: all given, except ``perf/*``).
          stream: where to print (default ``sys.stdout`` at construction).
          clock: time source in seconds, injectable for tests.
        """
        if total_steps < 1 or batch_size < 1 or not 0 <= start_step <= total_steps:
            raise ValueError(f"ProgressReporter: need total_steps >= 1, batch_size >= 1 and 0 <= start_step "
                             f"<= total_steps, got {total_steps}, {batch_size}, {start_step}")
        self.total_steps = int(total_steps)
        self.batch_size = int(batch_size)
        self.every_secs = every_secs
        self.every_steps = every_steps
        self.keys = None if keys is None else list(keys)
        self._stream = stream if stream is not None else sys.stdout
        self.interactive = _is_interactive(self._stream) if interactive is None else bool(interactive)
        self._clock = clock
        self._t_start = clock()
        self._start_step = int(start_step)
        self._last_step: int | None = None  # step of the previous report (None until the first step)
        self._last_time = 0.0
        self.first_step_secs: float | None = None
        self._bar = None
        self._bar_rate: list[str] = []
        self._bar_scalars: list[str] = []
        if self.interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total_steps, initial=self._start_step, unit="step",
                             file=self._stream, dynamic_ncols=True)

    def _scalar_text(self, scalars: Mapping[str, Any] | None) -> list[str]:
        if not scalars:
            return []
        names = self.keys if self.keys is not None else [k for k in scalars if not k.startswith("perf/")]
        return [f"{k} {_to_float(k, scalars[k]):.4g}" for k in names if k in scalars]

    def _emit(self, parts: list[str]) -> None:
        print(" | ".join(parts), file=self._stream, flush=True)

    def report(self, step: int, scalars: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Records that ``step`` steps are done; prints when due and returns the perf scalars then."""
        step = _check_step(step)
        now = self._clock()
        elapsed = now - self._t_start
        if self._bar is not None:
            self._bar.update(max(0, step - self._bar.n))
            if scalars:
                self._bar_scalars = self._scalar_text(scalars)
                self._bar.set_postfix_str(", ".join(self._bar_rate + self._bar_scalars), refresh=False)
        if self._last_step is None:  # end of the first step: compilation time, no rate yet
            self._last_step, self._last_time = step, now
            self.first_step_secs = elapsed
            parts = [f"step {step}/{self.total_steps}", f"first step {elapsed:.1f}s (includes compilation)"]
            if self._bar is None:
                self._emit(parts + self._scalar_text(scalars))
            else:  # above the bar, which shows rates only from now on
                self._bar.write(" | ".join(parts), file=self._stream)
            return {}
        steps_since = step - self._last_step
        secs_since = now - self._last_time
        due = (
            step >= self.total_steps
            or (self.every_steps is None and self.every_secs is None)
            or (self.every_steps is not None and steps_since >= self.every_steps)
            or (self.every_secs is not None and secs_since >= self.every_secs)
        )
        if not due or steps_since <= 0:
            return {}
        steps_per_sec = steps_since / secs_since if secs_since > 0 else math.inf
        img_per_sec = steps_per_sec * self.batch_size
        eta = (self.total_steps - step) / steps_per_sec if steps_per_sec > 0 else math.inf
        self._last_step, self._last_time = step, now
        if self._bar is None:
            self._emit([f"step {step}/{self.total_steps}", f"{_format_rate(steps_per_sec)} steps/s",
                        f"{_format_rate(img_per_sec)} img/s", f"ETA {format_duration(eta)}",
                        f"elapsed {format_duration(elapsed)}"] + self._scalar_text(scalars))
        else:  # tqdm shows steps/s and the ETA itself; add img/s (excluding compilation) to the postfix
            self._bar_rate = [f"{_format_rate(img_per_sec)} img/s"]
            self._bar.set_postfix_str(", ".join(self._bar_rate + self._bar_scalars), refresh=True)
        return {"perf/steps_per_sec": steps_per_sec, "perf/img_per_sec": img_per_sec}

    def close(self) -> None:
        """Closes the bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
