"""Training and evaluation input pipeline: images from a source, LaMa-style augmentation, online masks.

A batch is ``{'image': f32[b, H, W, 3] in [0, 1], 'mask': f32[b, H, W, 1]}``, 1 = hole, where ``b`` is the
per-process (local) batch; :func:`make_global_batch` turns it into sharded global ``jax.Array``s.

Sources (``config.source``):

* ``'builtin'``: the real photos inside installed wheels (:mod:`jaxinpaint.photos`); train = 7 photos, eval =
  the held-out ``coffee.png``. Works offline on any machine; meant for smoke runs, demos and tests.
* ``'folder'``: LaMa's layout. Train reads ``<folder>/train/**/*`` when ``<folder>/train`` exists, else
  ``<folder>/**/*`` (recursive, following directory symlinks, skipping hidden files and directories, and
  skipping the eval directory when it lies inside). Eval reads ``eval_folder`` if set, else
  ``<folder>/val``. Extensions ``.jpg .jpeg .png .bmp .webp .tif .tiff``, case-insensitive (LaMa itself
  reads only ``*.jpg``). ``*_mask<digits>.png`` files (LaMa's eval mask pairs) are not images and are left
  out. Files are sorted by relative path, so the order (and hence the shuffle) is the same on every machine.
* ``'tfds'``: ``tfds.data_source(tfds_name, split=..., data_dir=tfds_data_dir, download=False)``: random
  access to an **array_record** build, decoded with PIL; no TensorFlow needed. Nothing is ever downloaded: a
  missing build raises an error that shows how to prepare it. (There is no ``manual_dir`` field because
  the pipeline never builds a dataset; the error message shows where a manual_dir goes.)

Augmentation (``config.augment``; the crop is always ``image_size`` square):

* ``'lama'``: resize so the short side is ``U(short_side_range) * image_size`` (bicubic, antialiased;
  smaller images are upscaled), random crop, horizontal flip with p 0.5. The resize and crop are a single
  Pillow ``resize(box=...)``, and JPEGs are decoded at a reduced DCT scale when that still covers the target
  (``photos.load_image(min_short_side=...)``), so the cost barely grows with the source size. LaMa's own
  'default' variant scales the *source* by 0.8-1.2; on Places-large (short side 512) with 256 crops that
  corresponds to ``short_side_range=(1.6, 2.4)``.
* ``'distortions'``: LaMa's ``transform_variant: distortions`` (``saicinpainting/training/data/
  datasets.py``), at the source resolution, in LaMa's order, each step with LaMa's probability:
  perspective (p 0.5; imgaug ``PerspectiveTransform(scale=(0, 0.06), keep_size=True)``, replicate border);
  affine (p 0.5; scale 0.7-1.3, rotate ±40°, shear ±0.1 **degrees** as imgaug reads it, i.e. negligible;
  reflect border); ``PadIfNeeded`` to ``image_size`` (centred, reflect-101); ``OpticalDistortion`` (p 0.5;
  cv2's radial model with k1 = k2 = U(-0.05, 0.05); albumentations' shift is ``round(U(-0.05, 0.05))``,
  always 0); random crop; horizontal flip (p 0.5); CLAHE (p 0.5; clip U(1, 4) in cv2 units, 8x8 tiles);
  brightness and contrast ±0.2 (p 0.5); HSV shifts hue ±5, sat ±30, val ±5 in cv2 uint8 units (p 0.5).
  Deliberate differences from LaMa: the geometric steps are composed into one coordinate map and the
  source is resampled **once** (bilinear), only at the crop's pixels (LaMa resamples three times at full
  size: slower and blurrier), with the same border modes folded analytically; CLAHE is
  ``skimage.exposure.equalize_adapthist`` on the HSV value channel (cv2 equalises LAB lightness) with clip
  U(1, 4)/256 (the same limit in skimage's normalised units); the colour steps run on float32, not uint8.
* ``'none'``: resize the short side to ``image_size`` and centre-crop; deterministic (evaluation uses it).

Masks come from ``jaxinpaint.masks.get(config.mask.name, **config.mask.kwargs)`` at the crop size.
``mask.per_batch=True`` shares one mask across the whole global batch, as DeepFill v2 trains.

Determinism and exact resume: the local batch is a pure function of ``(seed, step, process_index)``.
Global example ``i`` of step ``s`` sits at position ``s * batch_size + i`` of an endless stream; epoch ``e``
visits the files in ``default_rng([seed, 0, e]).permutation(N)``. Each example's augmentation draws from
``default_rng([seed, 1, s, i])`` and its mask from ``default_rng([seed, 2, s, i])`` (a shared batch mask
from ``default_rng([seed, 3, s])``), so neither depends on the process count, the thread schedule, the
source or the augmentation choice. Process ``p`` of ``P`` computes global examples ``[p*b, (p+1)*b)``,
``b = batch_size // P``, and decodes only those files. Resuming at step ``s`` needs nothing but ``s``.

Unreadable files (corrupt, truncated, not an image) are found **lazily**: listing Places' 1.8 M files takes
seconds, but decoding them all up front would take hours, so start-up only lists. A file that fails is
logged once (with a running count), recorded in ``InputPipeline.skipped`` and replaced by the next dataset
index (``k+1``, ``k+2``, ... mod N), which keeps batches deterministic; later visits skip it without
re-reading. ``close()`` logs a summary. A source with no files, or whose files all fail, raises
:class:`EmptyDatasetError` naming what was looked for.

Parallelism: plain ``concurrent.futures`` threads, one task per example; Pillow decoding and resizing and
most numpy work release the GIL. grain is not needed: its multiprocessing adds start-up cost and absl-flag
requirements for no gain at these rates.

Performance, measured on the project's 2-core CPU machine while other jobs shared it (load average 3-5, so
extra threads could not show a speed-up): built-in photos, 256² crops, batch 16, ``lama_train`` masks,
images/s of ``local_batch`` (medians of 3 runs of 6 batches, two sessions):

=============  =============  =============  =============
augment        num_workers 0  num_workers 1  num_workers 2
=============  =============  =============  =============
lama           137-141        149            135-146
none           122-131        113-144        79-115
distortions    40-42          29-43          25-40
=============  =============  =============  =============

About 7 ms per 'lama' example, most of it PNG decoding (the JPEGs decode at reduced scale); 'distortions'
costs ~25-35 ms (full-size decode, CLAHE ~20 ms when drawn). Either is far above what a 2-core CPU trains
on (Big-LaMa needs ~1.6 s per 256² image on a 2-core CPU); on accelerator hosts raise ``num_workers``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import importlib
import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from ml_collections import config_dict

from jaxinpaint.data import augment as aug
from jaxinpaint.data import sources
from jaxinpaint.data.sources import IMAGE_EXTENSIONS, EmptyDatasetError  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

SOURCES = ("builtin", "folder", "tfds")
AUGMENTS = ("lama", "distortions", "none")

# Tags that keep the random streams apart (first element after the seed of every SeedSequence entropy list).
_TAG_PERM, _TAG_AUG, _TAG_MASK, _TAG_BATCH_MASK, _TAG_EVAL_ORDER, _TAG_EVAL_MASK = range(6)


def default_input_config() -> ml_collections.ConfigDict:
    """Defaults of the ``input`` config section; experiment configs start from this and override fields.

    Returns:
      A ConfigDict whose every field has a typed default (optional strings are placeholders), so command-line
      overrides such as ``--config.input.folder=/data/places`` work on a locked config.
    """
    c = ml_collections.ConfigDict()
    c.source = "builtin"  # 'builtin' | 'folder' | 'tfds'
    c.folder = config_dict.placeholder(str)  # LaMa layout root (see the module docstring)
    c.eval_folder = config_dict.placeholder(str)  # default: <folder>/val
    c.tfds_name = config_dict.placeholder(str)  # e.g. 'places365_small', 'celeb_a_hq/256'
    c.tfds_split = "train"
    c.tfds_eval_split = "validation"
    c.tfds_data_dir = config_dict.placeholder(str)  # default: TFDS_DATA_DIR or ~/tensorflow_datasets
    c.tfds_image_key = "image"
    c.image_size = 256  # square crop size
    c.augment = "lama"  # 'lama' | 'distortions' | 'none'
    c.short_side_range = (1.0, 2.0)  # 'lama': short side after resize, in multiples of image_size
    c.batch_size = 8  # GLOBAL batch size
    c.mask = ml_collections.ConfigDict({"name": "lama_train", "kwargs": ml_collections.ConfigDict(),
                                        "per_batch": False})
    # Evaluation masks; name None means "same as mask" (name and kwargs).
    c.eval_mask = ml_collections.ConfigDict({"name": config_dict.placeholder(str),
                                             "kwargs": ml_collections.ConfigDict()})
    c.num_workers = 2  # decoding/augmentation threads; 0 = in the calling thread
    c.prefetch = 2  # batches computed ahead by iterate()
    return c


# ----------------------------------------------------------------------------------------------------------
# Config checks.
# ----------------------------------------------------------------------------------------------------------


def _get(config: Any, name: str) -> Any:
    try:
        return config[name]
    except (KeyError, AttributeError, TypeError):
        raise ValueError(f"input config has no field {name!r}; start from data.default_input_config()"
                         ) from None


def _validate(config: Any) -> None:
    """Raises ValueError naming the offending ``input.<field>`` for anything that cannot work."""
    source = _get(config, "source")
    if source not in SOURCES:
        raise ValueError(f"input.source must be one of {SOURCES}, got {source!r}")
    if source == "folder" and not _get(config, "folder"):
        raise ValueError("input.folder must be set when input.source='folder'")
    if source == "tfds" and not _get(config, "tfds_name"):
        raise ValueError("input.tfds_name must be set when input.source='tfds' (e.g. 'places365_small')")
    size = _get(config, "image_size")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"input.image_size must be a positive int, got {size!r}")
    augment = _get(config, "augment")
    if augment not in AUGMENTS:
        raise ValueError(f"input.augment must be one of {AUGMENTS}, got {augment!r}")
    rng = _get(config, "short_side_range")
    if len(tuple(rng)) != 2 or not 1.0 <= float(rng[0]) <= float(rng[1]):
        raise ValueError(f"input.short_side_range must be (lo, hi) with 1 <= lo <= hi (multiples of "
                         f"input.image_size), got {tuple(rng)!r}")
    if int(_get(config, "batch_size")) < 1:
        raise ValueError(f"input.batch_size must be >= 1, got {_get(config, 'batch_size')!r}")
    for name in ("num_workers", "prefetch"):
        if int(_get(config, name)) < 0:
            raise ValueError(f"input.{name} must be >= 0, got {_get(config, name)!r}")


def _check_process(seed: int, process_index: int, process_count: int, batch_size: int, what: str) -> int:
    """Validates the process split; returns the per-process batch size."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int (it seeds numpy SeedSequences), got {seed!r}")
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, {process_count}")
    if batch_size % process_count:
        raise ValueError(f"{what}={batch_size} is not divisible by process_count={process_count}: every "
                         f"process must get the same number of examples")
    return batch_size // process_count


def _to_dict(kwargs: Any) -> dict:
    if kwargs is None:
        return {}
    if hasattr(kwargs, "to_dict"):
        return kwargs.to_dict()
    return dict(kwargs)


MaskFn = Callable[[np.random.Generator, int, int], np.ndarray]


def _mask_generator(name: str, kwargs: Any, field: str) -> MaskFn:
    """Resolves a mask generator through ``jaxinpaint.masks.get``, naming the config field on failure."""
    masks = importlib.import_module("jaxinpaint.masks")
    try:
        return masks.get(name, **_to_dict(kwargs))
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from e


def _make_mask(gen: Callable, rng: np.random.Generator, size: int) -> np.ndarray:
    m = np.asarray(gen(rng, size, size))
    if m.shape != (size, size):
        raise ValueError(f"mask generator returned shape {m.shape}, expected ({size}, {size})")
    return m.astype(np.float32)[..., None]


# ----------------------------------------------------------------------------------------------------------
# Sources: random access to N images by index.
# ----------------------------------------------------------------------------------------------------------




def _example_image(reader: sources.Reader, index: int, augment: str, rng: np.random.Generator | None, size: int,
                   short_side_range: tuple[float, float]) -> np.ndarray:
    """Draws the augmentation parameters, loads dataset image ``index`` (or its replacement), applies them."""
    if augment == "lama":
        params = aug.sample_lama(rng, size, short_side_range)
        return aug.resize_crop(reader.load(index, params.short_side), params, size)
    if augment == "distortions":
        params = aug.sample_distortions(rng)
        return aug.distort(reader.load(index, None), params, size)
    params = aug.CropParams(size, 0.5, 0.5, False, True)
    return aug.resize_crop(reader.load(index, size), params, size)


def _done_future(fn: Callable, *args) -> concurrent.futures.Future:
    """Runs ``fn`` now and wraps the outcome in a finished Future (num_workers=0)."""
    fut: concurrent.futures.Future = concurrent.futures.Future()
    try:
        fut.set_result(fn(*args))
    except Exception as e:  # re-raised by .result(), as with a real pool
        fut.set_exception(e)
    return fut


# ----------------------------------------------------------------------------------------------------------
# The pipeline.
# ----------------------------------------------------------------------------------------------------------


class InputPipeline:
    """Per-process training batches as a pure function of ``(seed, step, process_index)``.

    Attributes:
      num_examples: number of files/records in the split (before skipping unreadable ones).
      local_batch_size: ``batch_size // process_count``.
      skipped: copy of ``{file: reason}`` for the unreadable files met so far by this process.
    """

    def __init__(self, config: Any, *, seed: int, process_index: int = 0, process_count: int = 1,
                 split: str = "train", prepare: Callable[[dict], dict] | None = None):
        """Lists the source (no decoding) and resolves the mask generator.

        Args:
          config: the ``input`` ConfigDict (see :func:`default_input_config`).
          seed: non-negative int; with the step it fixes every example, augmentation and mask.
          process_index: this process (``jax.process_index()``).
          process_count: number of processes (``jax.process_count()``); must divide ``config.batch_size``.
          split: ``'train'`` or ``'eval'`` (random crops of the eval split, e.g. for visual checks).
          prepare: the system's per-example preparation, ``{'image', 'mask'} -> dict`` (numpy; adds inputs
            such as edges or a hole's box); runs in the worker threads after the mask is drawn.

        Raises:
          ValueError: a bad config field (named in the message) or process split.
          EmptyDatasetError: the source holds no image file.
        """
        _validate(config)
        self._size = int(config.image_size)
        self._global_batch = int(config.batch_size)
        self.local_batch_size = _check_process(seed, process_index, process_count, self._global_batch,
                                               "input.batch_size")
        self._seed = int(seed)
        self._offset = process_index * self.local_batch_size
        self._augment = config.augment
        self._short_side_range = tuple(float(v) for v in config.short_side_range)
        self._per_batch = bool(config.mask.per_batch)
        self._mask_gen = _mask_generator(config.mask.name, config.mask.kwargs, "input.mask")
        self._num_workers = int(config.num_workers)
        self._prefetch = int(config.prefetch)
        self._reader = sources.Reader(sources.open_source(config, split))
        self.num_examples = len(self._reader.source)
        self._perm_lock = threading.Lock()
        self._perms: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None
        self._prepare = prepare

    @property
    def skipped(self) -> dict[str, str]:
        return dict(self._reader.skipped)

    def _permutation(self, epoch: int) -> np.ndarray:
        with self._perm_lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = np.random.default_rng([self._seed, _TAG_PERM, epoch]).permutation(self.num_examples)
                self._perms[epoch] = perm
                while len(self._perms) > 4:  # a batch can straddle epochs; keep a few
                    self._perms.popitem(last=False)
            return perm

    def _example(self, step: int, gi: int, sub: int = 0, per_step: int = 1
                 ) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
        """Global example ``gi`` of batch ``sub`` of ``step``: (image (H, W, 3), mask (H, W, 1) or None when
        per-batch). With one batch per step (``per_step == 1``) the stream is the historical one; a step
        that consumes several batches (n critic steps on fresh data) takes the next ``per_step`` positions."""
        epoch, pos = divmod((step * per_step + sub) * self._global_batch + gi, self.num_examples)
        index = int(self._permutation(epoch)[pos])
        tail = [] if per_step == 1 else [sub]
        rng = np.random.default_rng([self._seed, _TAG_AUG, step, gi, *tail])
        image = _example_image(self._reader, index, self._augment, rng, self._size, self._short_side_range)
        mask = None
        if not self._per_batch:
            mask_rng = np.random.default_rng([self._seed, _TAG_MASK, step, gi, *tail])
            mask = _make_mask(self._mask_gen, mask_rng, self._size)
            return image, mask, (self._prepare({"image": image, "mask": mask}) if self._prepare else None)
        return image, mask, None

    def _get_pool(self) -> concurrent.futures.ThreadPoolExecutor | None:
        if self._num_workers and self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._num_workers,
                                                               thread_name_prefix="jaxinpaint-data")
            self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def _submit(self, step: int, sub: int = 0, per_step: int = 1) -> list[concurrent.futures.Future]:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        pool = self._get_pool()
        gis = range(self._offset, self._offset + self.local_batch_size)
        if pool is None:
            return [_done_future(self._example, step, gi, sub, per_step) for gi in gis]
        return [pool.submit(self._example, step, gi, sub, per_step) for gi in gis]

    def _collect(self, step: int, futures: list[concurrent.futures.Future], sub: int = 0,
                 per_step: int = 1) -> dict[str, np.ndarray]:
        results = [f.result() for f in futures]
        images = np.stack([r[0] for r in results])
        if self._per_batch:
            tail = [] if per_step == 1 else [sub]
            mask = _make_mask(self._mask_gen, np.random.default_rng([self._seed, _TAG_BATCH_MASK, step, *tail]),
                              self._size)
            masks = np.repeat(mask[None], len(results), axis=0)
            extras = ([self._prepare({"image": im, "mask": mask}) for im in images] if self._prepare else None)
        else:
            masks = np.stack([r[1] for r in results])
            extras = [r[2] for r in results] if self._prepare else None
        batch = {"image": images, "mask": masks}
        if extras:
            for key in extras[0]:
                if key not in batch:
                    batch[key] = np.stack([e[key] for e in extras])
        return batch

    def local_batch(self, step: int, batches_per_step: int = 1) -> dict[str, np.ndarray]:
        """This process's share of global batch ``step``.

        Returns:
          ``{'image': f32[b, H, W, 3] in [0, 1], 'mask': f32[b, H, W, 1], ...prepared keys}``, 1 = hole,
          ``b = local_batch_size``; with ``batches_per_step > 1`` every array gets a leading axis of that
          many batches.
        """
        if batches_per_step == 1:
            return self._collect(step, self._submit(step))
        parts = [self._collect(step, self._submit(step, k, batches_per_step), k, batches_per_step)
                 for k in range(batches_per_step)]
        return {key: np.stack([p[key] for p in parts]) for key in parts[0]}

    def iterate(self, start_step: int = 0, *, batches_per_step: int = 1
                ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yields ``(step, local_batch(step))`` for ``start_step, start_step + 1, ...`` forever.

        ``config.prefetch`` steps are computed ahead on the worker threads. The batches equal
        :meth:`local_batch`'s, so resuming at any step is exact. Closing the generator cancels the work ahead.
        """
        k = int(batches_per_step)
        pending: collections.deque = collections.deque()
        next_step = start_step
        try:
            while True:
                while len(pending) <= self._prefetch:
                    pending.append((next_step, [self._submit(next_step, j, k) for j in range(k)]))
                    next_step += 1
                step, futures = pending.popleft()
                parts = [self._collect(step, f, j, k) for j, f in enumerate(futures)]
                if k == 1:
                    yield step, parts[0]
                else:
                    yield step, {key: np.stack([p[key] for p in parts]) for key in parts[0]}
        finally:
            for _, futures in pending:
                for fs in futures:
                    for f in fs:
                        f.cancel()

    def close(self) -> None:
        """Stops the worker threads and logs the summary of skipped files."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            if self._finalizer is not None:
                self._finalizer.detach()
        self._reader.log_summary()

    def __enter__(self) -> InputPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_global_batch(local_batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict:
    """Assembles each process's local batch into global arrays sharded along the batch axis.

    Args:
      local_batch: a dict of numpy arrays with the local batch as leading axis (from ``local_batch``,
        ``iterate`` or ``eval_batches``).
      sharding: e.g. ``NamedSharding(mesh, P(('data', 'fsdp')))``; used for every leaf (its spec names only
        the leading axis, so it fits leaves of any rank).

    Returns:
      The same keys, as ``jax.Array``s of global batch size (``jax.make_array_from_process_local_data``).
    """
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}


def eval_batches(config: Any, *, seed: int, batch_size: int, num_examples: int | None = None,
                 process_index: int = 0, process_count: int = 1, prepare: Callable[[dict], dict] | None = None,
                 split: str = "eval") -> Iterator[dict[str, np.ndarray]]:
    """Fixed evaluation batches of the held-out split (``split='train'``: of the training split, for image
    grids when there is no held-out one), padded so every process sees the same shapes.

    Example ``k`` is eval file ``order[k % N]`` (``order`` a permutation fixed by ``seed``), resized and
    centre-cropped (augmentation 'none'), with a mask from ``default_rng([seed, 5, k])`` drawn by
    ``config.eval_mask`` (or ``config.mask`` when its name is None; ``per_batch`` is ignored). So the same
    seed gives the same examples and masks for any process count or batch size.

    Args:
      config: the ``input`` ConfigDict.
      seed: fixes the file order and the masks.
      batch_size: GLOBAL eval batch size; must be divisible by ``process_count``.
      num_examples: how many examples; default all N eval files. A value above N cycles through the files
        again with new masks (useful with the single built-in holdout photo).
      process_index, process_count: this process and their number.
      prepare: the system's per-example preparation (inference mode), as for :class:`InputPipeline`.

    Yields:
      ``{'image', 'mask', '_valid'}`` with local batch ``b``; ``_valid`` is f32[b], 0 for the padding rows of
      the last batch (their image and mask are zeros) so metrics can drop them (big_vision's ``_mask`` idea).
    """
    _validate(config)
    local = _check_process(seed, process_index, process_count, batch_size, "eval batch_size")
    size = int(config.image_size)
    if config.eval_mask.name:
        gen = _mask_generator(config.eval_mask.name, config.eval_mask.kwargs, "input.eval_mask")
    else:
        gen = _mask_generator(config.mask.name, config.mask.kwargs, "input.mask")
    reader = sources.Reader(sources.open_source(config, split))
    n_files = len(reader.source)
    total = n_files if num_examples is None else int(num_examples)
    if total < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    order = np.random.default_rng([int(seed), _TAG_EVAL_ORDER]).permutation(n_files)

    def example(k: int) -> dict[str, np.ndarray]:
        image = _example_image(reader, int(order[k % n_files]), "none", None, size, (1.0, 1.0))
        ex = {"image": image, "mask": _make_mask(gen, np.random.default_rng([int(seed), _TAG_EVAL_MASK, k]), size)}
        return {**prepare(dict(ex)), **ex} if prepare else ex

    # Everything above runs (and fails) at call time; the generator below only computes batches.
    rows = [[j * batch_size + process_index * local + i for i in range(local)]
            for j in range(math.ceil(total / batch_size))]
    return _eval_iterator(example, rows, total, size, int(config.num_workers), int(config.prefetch), reader)


def _eval_iterator(example: Callable, rows: list[list[int]], total: int, size: int, workers: int,
                   prefetch: int, reader: sources.Reader) -> Iterator[dict[str, np.ndarray]]:
    """Yields the batches ``rows`` (lists of example numbers; >= total is padding), computed ahead."""
    pool = (concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="jaxinpaint-eval")
            if workers else None)

    def submit(ks: list[int]) -> list[concurrent.futures.Future | None]:
        run = _done_future if pool is None else pool.submit
        return [run(example, k) if k < total else None for k in ks]

    pending: collections.deque = collections.deque()
    try:
        next_row = 0
        for _ in rows:
            while next_row < len(rows) and len(pending) <= prefetch:
                pending.append(submit(rows[next_row]))
                next_row += 1
            futures = pending.popleft()
            examples = [f.result() if f is not None else None for f in futures]
            template = next(e for e in examples if e is not None) if any(e is not None for e in examples) else {
                "image": np.zeros((size, size, 3), np.float32), "mask": np.zeros((size, size, 1), np.float32)}
            batch = {k: np.zeros((len(futures), *np.shape(v)), np.asarray(v).dtype) for k, v in template.items()}
            valid = np.zeros((len(futures),), np.float32)
            for i, e in enumerate(examples):
                if e is not None:
                    for k, v in e.items():
                        batch[k][i] = v
                    valid[i] = 1.0
            yield {**batch, "_valid": valid}
    finally:
        for futures in pending:
            for f in futures:
                if f is not None:
                    f.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        reader.log_summary()
