"""FID and KID from Inception features, the feature extractor, and ``python -m jaxinpaint.evaluation.fid``.

* :func:`fid_from_features` follows pytorch-fid's ``calculate_frechet_distance`` (which LaMa uses):
  statistics in float64 (``np.cov`` with ``ddof=1``), ``scipy.linalg.sqrtm(S1 @ S2)``; when the square root
  is not finite, ``eps·I`` (1e-6) is added to both covariances and it is recomputed; an imaginary part
  above 1e-3 on the diagonal raises, a smaller one is dropped.
* :func:`kid_from_features` is the unbiased MMD² with the polynomial kernel ``k(x, y) = (x·y / d + 1)³``,
  averaged over random subsets as torch-fidelity and clean-fid do (100 subsets of at most 1,000 samples,
  drawn without replacement within a subset). It returns the mean and standard deviation over subsets.
* Both warn when a set has fewer than ``min_samples`` (2,048) samples, or refuse with ``strict=True``:
  below the feature dimension the covariance is rank-deficient and FID is strongly biased upwards, so
  numbers from small sets are not comparable with published ones.

Weights are user-supplied (never downloaded): see ``jaxinpaint.backbones.inception``. Command line::

    python -m jaxinpaint.evaluation.fid convert pt_inception-2015-12-05-6726825d.pth inception_fid.npz
    python -m jaxinpaint.evaluation.fid score --weights=inception_fid.npz DIR_A DIR_B [--image_size=256]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import warnings
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

from jaxinpaint.backbones import inception

__all__ = [
    "MIN_SAMPLES",
    "FIDSampleWarning",
    "check_sample_count",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_features",
    "kid_from_features",
]

#: Below this many samples per set FID/KID are flagged (the 2048-d covariance is rank-deficient).
MIN_SAMPLES = 2048


class FIDSampleWarning(UserWarning):
    """A set is too small for FID/KID to be comparable with published numbers."""


def check_sample_count(n: int, *, what: str = "FID", min_samples: int = MIN_SAMPLES,
                       strict: bool = False) -> None:
    """Warns (or raises ValueError when ``strict``) if ``n < min_samples``."""
    if n >= min_samples:
        return
    msg = (f"{what} computed from only {n} samples (< {min_samples}): the 2048-d feature covariance is "
           "rank-deficient and the score is strongly biased; it is not comparable with published numbers "
           "(papers use 2,000-30,000+ images)")
    if strict:
        raise ValueError(msg + "; pass more images or lower min_samples explicitly")
    warnings.warn(msg, FIDSampleWarning, stacklevel=3)


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (num_samples, dim) feature array, got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples to estimate a covariance, got {f.shape[0]}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} contains NaN or inf")
    return f


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of (N, D) features in float64; ``sigma`` is ``np.cov(rowvar=False)`` (ddof 1)."""
    f = _as_features(features, "features")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance ``||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½)`` the way pytorch-fid computes it.

    Raises:
      ValueError: shapes disagree, or ``sqrtm`` leaves an imaginary diagonal component above 1e-3 (a
        numerical failure, typically from degenerate statistics).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"frechet_distance: mean/covariance shapes disagree: {mu1.shape}, {mu2.shape}, "
                         f"{sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # scipy warns about singular products; pytorch-fid (disp=False) stays silent and checks finiteness.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.all(np.isfinite(covmean)):
            # Singular product (e.g. fewer samples than dimensions): regularise as pytorch-fid does.
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: sqrtm has an imaginary component "
                             f"{np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(features1: np.ndarray, features2: np.ndarray, *, eps: float = 1e-6,
                      min_samples: int = MIN_SAMPLES, strict: bool = False) -> float:
    """FID between two sets of (N, D) Inception pool3 features (float64 statistics, pytorch-fid's sqrtm).

    Args:
      features1, features2: feature arrays, e.g. of real and inpainted images; sizes may differ.
      eps: diagonal offset used when the covariance product is singular.
      min_samples: below this many samples in either set, warn (or refuse when ``strict``).
      strict: raise ValueError instead of warning for small sets.
    """
    f1, f2 = _as_features(features1, "features1"), _as_features(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"fid_from_features: feature dims differ ({f1.shape[1]} vs {f2.shape[1]})")
    check_sample_count(min(len(f1), len(f2)), what="FID", min_samples=min_samples, strict=strict)
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    return frechet_distance(mu1, s1, mu2, s2, eps=eps)


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of two equal-size samples with k(a, b) = (a·b / d + 1)³."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid_from_features(features1: np.ndarray, features2: np.ndarray, *, num_subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0, min_samples: int = MIN_SAMPLES,
                      strict: bool = False) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of the unbiased polynomial-kernel MMD² over subsets.

    Each subset takes ``m = min(subset_size, N1, N2)`` samples from each set without replacement
    (torch-fidelity's ``kid_subsets=100, kid_subset_size=1000``; clean-fid's ``num_subsets=100,
    max_subset_size=1000``). KID is unbiased, so identical distributions give ~0 (it can be slightly
    negative), unlike FID.

    Returns:
      ``(kid_mean, kid_std)``.
    """
    f1, f2 = _as_features(features1, "features1"), _as_features(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"kid_from_features: feature dims differ ({f1.shape[1]} vs {f2.shape[1]})")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"kid_from_features: need num_subsets >= 1 and subset_size >= 2, got {num_subsets}, "
                         f"{subset_size}")
    check_sample_count(min(len(f1), len(f2)), what="KID", min_samples=min_samples, strict=strict)
    m = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    values = np.array([
        _polynomial_mmd2(f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)])
        for _ in range(num_subsets)])
    return float(values.mean()), float(values.std())


@functools.lru_cache(maxsize=4)
def _features_fn(model: inception.FIDInceptionV3):
    return jax.jit(model.apply)


def inception_features(images: np.ndarray | jax.Array, model: inception.FIDInceptionV3, variables,
                       *, batch_size: int = 16) -> np.ndarray:
    """(N, 2048) pool3 features of NHWC [0, 1] images, computed in batches (last batch padded).

    Padding the last batch to ``batch_size`` keeps a single compiled shape per image size.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"inception_features: expected (N, H, W, 3) images, got {images.shape}")
    fn = _features_fn(model)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        n = len(chunk)
        if n < batch_size and len(images) > batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
        out.append(np.asarray(fn(variables, jnp.asarray(chunk)))[:n])
    return np.concatenate(out, axis=0) if out else np.zeros((0, inception.FEATURE_DIM), np.float32)


# ----------------------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------------------


def _folder_images(folder: str, size: int) -> Iterable[np.ndarray]:
    """Photos under ``folder`` (sorted, recursive), resized to ``size``² (short side + centre crop).

    Masks of an evaluation set (``x_mask000.png`` next to ``x.png``) are skipped, but predictions named
    after their masks (LaMa's predict output, a folder of ``*_mask000.png`` only) are kept.
    """
    from jaxinpaint.data import images as make_eval_set  # the image-listing/resizing rules evaluate uses too

    paths = make_eval_set.list_images(folder, skip_masks=False)
    stems = {str(p)[:-len(p.suffix)] for p in paths}
    for path in paths:
        if make_eval_set.MASK_FILE.search(path.name) and str(path).rsplit("_mask", 1)[0] in stems:
            continue
        yield make_eval_set.load_rgb_uint8(path, size).astype(np.float32) / 255.0


def _folder_features(folder: str, model, variables, size: int, batch_size: int) -> np.ndarray:
    feats, batch = [], []
    for image in _folder_images(folder, size):
        batch.append(image)
        if len(batch) == batch_size:
            feats.append(inception_features(np.stack(batch), model, variables, batch_size=batch_size))
            batch = []
    if batch:
        feats.append(inception_features(np.stack(batch), model, variables, batch_size=batch_size))
    return np.concatenate(feats)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxinpaint.evaluation.fid", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert pytorch-fid .pth / jax-fid .pickle weights to .npz")
    conv.add_argument("source")
    conv.add_argument("output")
    score = sub.add_parser("score", help="FID and KID between two image folders")
    score.add_argument("dir_a")
    score.add_argument("dir_b")
    score.add_argument("--weights", required=True, help="FID Inception weights (.pth, .pickle or .npz)")
    score.add_argument("--image_size", type=int, default=0,
                       help="resize (short side) and centre-crop to this size first; 0 = as stored")
    score.add_argument("--batch_size", type=int, default=16)
    score.add_argument("--strict", action="store_true",
                       help=f"refuse sets of fewer than {MIN_SAMPLES} images")
    args = parser.parse_args(argv)
    if args.command == "convert":
        try:
            variables = inception.load_variables(args.source)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        inception.save_npz(variables, args.output)
        print(f"wrote {args.output} (width_divisor {inception.width_divisor_of(variables)})")
        return 0
    try:
        model, variables = inception.load(args.weights)
        fa = _folder_features(args.dir_a, model, variables, args.image_size, args.batch_size)
        fb = _folder_features(args.dir_b, model, variables, args.image_size, args.batch_size)
        fid = fid_from_features(fa, fb, strict=args.strict)
        kid, kid_std = kid_from_features(fa, fb, strict=args.strict)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"n_a": len(fa), "n_b": len(fb), "fid": fid, "kid": kid, "kid_std": kid_std}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
