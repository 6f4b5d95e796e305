"""The training evaluator: metrics of the composite over the fixed held-out set, every ``eval_every_steps``.

The same images and masks every time (``jaxinpaint.data.eval_batches``): PSNR/SSIM/L1 always (in total and
SSIM per LaMa 10% hole-area bucket, ``eval/ssim_area_10-20``...); LPIPS, FID and LaMa's ``ssim_fid100_f1`` /
``lpips_fid100_f1`` when their weights are configured (``config.eval_lpips_weights``,
``config.eval_fid_weights``, local files). The command-line evaluation (``jaxinpaint evaluate``) uses the
same metric functions on saved images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxinpaint.data import pipeline as data_lib
from jaxinpaint.evaluation import metrics as metrics_lib


def make_eval_fn(predict: Callable, with_images: bool = False) -> Callable:
    """``evaluate(state, batch) -> per-example metrics`` of the composite (what users get), eval mode.

    Args:
      predict: ``predict(state, batch) -> {'pred', 'composite', ...}`` (the trainer's).
      with_images: also return the composites and targets (LPIPS and FID run on the host).
    """

    def evaluate(state, batch):
        out = predict(state, batch)
        comp, image = out["composite"], batch["image"]
        result = {"psnr": metrics_lib.psnr(comp, image), "ssim": metrics_lib.ssim(comp, image),
                  "l1": metrics_lib.mae(comp, image), "hole_area": metrics_lib.hole_area(batch["mask"]),
                  "valid": batch["_valid"]}
        if with_images:
            result.update(composite=comp, image=image)
        return result

    return evaluate


def load_metric_networks(config) -> dict[str, Any]:
    """LPIPS / FID networks from the local files named in the config (or none)."""
    nets = {}
    if config.eval_lpips_weights:
        from jaxinpaint.evaluation import lpips

        nets["lpips"] = lpips.load_variables(config.eval_lpips_weights)
    if config.eval_fid_weights:
        from jaxinpaint.backbones import inception

        nets["fid"] = inception.load(config.eval_fid_weights)
    return nets


def run(config, evaluate, state, data_sharding, process_index: int, process_count: int,
        nets: dict[str, Any] | None = None, prepare: Callable | None = None) -> dict[str, float]:
    """Evaluates ``state`` on the held-out set; returns ``{'eval/<metric>': value}``."""
    nets = nets or {}
    per_example = {"psnr": [], "ssim": [], "l1": [], "hole_area": []}
    if "lpips" in nets:
        per_example["lpips"] = []
    real_features, fake_features = [], []
    for local in data_lib.eval_batches(config.input, seed=config.seed, batch_size=config.input.batch_size,
                                       num_examples=config.eval_num_examples, process_index=process_index,
                                       process_count=process_count, prepare=prepare):
        batch = data_lib.make_global_batch(local, data_sharding)
        values = jax.device_get(evaluate(state, batch))  # replicated outputs: every process gets every example
        keep = np.asarray(values["valid"]) > 0
        if "lpips" in nets:
            from jaxinpaint.evaluation import lpips

            values["lpips"] = np.asarray(lpips.lpips(values["composite"], values["image"], nets["lpips"]))
        if "fid" in nets:
            from jaxinpaint.evaluation import fid

            model, variables = nets["fid"]
            fake_features.append(fid.inception_features(values["composite"][keep], model, variables))
            real_features.append(fid.inception_features(values["image"][keep], model, variables))
        for k in per_example:
            per_example[k].append(np.asarray(values[k])[keep])
    values = {k: np.concatenate(v) for k, v in per_example.items()}
    finite_psnr = values["psnr"][np.isfinite(values["psnr"])]
    out = {"eval/psnr": float(np.mean(finite_psnr)) if finite_psnr.size else float("nan"),
           "eval/ssim": float(np.mean(values["ssim"])), "eval/l1": float(np.mean(values["l1"])),
           "eval/num_examples": float(values["ssim"].size)}
    buckets = metrics_lib.lama_bucket(values["hole_area"])
    names = metrics_lib.lama_bucket_names()
    for b in np.unique(buckets):
        out[f"eval/ssim_area_{names[b].rstrip('%')}"] = float(np.mean(values["ssim"][buckets == b]))
    if "lpips" in values:
        out["eval/lpips"] = float(np.mean(values["lpips"]))
    if real_features:
        from jaxinpaint.evaluation import fid

        out["eval/fid"] = fid.fid_from_features(np.concatenate(real_features), np.concatenate(fake_features))
        out["eval/ssim_fid100_f1"] = metrics_lib.ssim_fid100_f1(out["eval/ssim"], out["eval/fid"])
        if "eval/lpips" in out:
            out["eval/lpips_fid100_f1"] = metrics_lib.lpips_fid100_f1(out["eval/lpips"], out["eval/fid"])
    return out
