"""LaMa's high-resolution refinement (advimman/lama ``saicinpainting/evaluation/refinement.py``, PR #112,
arXiv 2206.13644), reimplemented in JAX.

Why it exists: a generator trained on 256-px crops produces blurry, repetitive fills on 1-2 MP images. The
refiner runs the generator on an image pyramid, coarse to fine. At every finer scale it treats the generator's
*front* features (after the stem and down-sampling, the (local, global) pair that enters the residual blocks)
as free variables and optimises them with Adam so that

* the prediction reproduces the known pixels of the input (L1 over the pixels outside the hole), and
* the prediction, blurred and halved, agrees inside the hole with the previous (coarser) scale's result,
  which is globally coherent (L1 over the hole, eroded by a 15x15 ellipse so the seam is left free).

The generator's weights stay frozen (eval mode: BatchNorm running statistics). The coarsest scale is a plain
forward pass.

The algorithm, as in the original:

1. If ``H*W > px_budget`` (1.8e6), the image and mask are first resized by ``sqrt(px_budget / (H*W))``
   (bilinear; every mask value > 1e-8 becomes a hole).
2. ``n_scales = min(1 + round(max(0, log2(min(H, W) / min_side))), max_scales)`` with ``min_side=512``,
   ``max_scales=3``. The pyramid halves with a 5x5 Gaussian blur (sigma 1, reflect border) followed by
   bilinear resizing to ``(H // 2, W // 2)`` (half-pixel centres, no anti-aliasing: torch's
   ``F.interpolate``); a mask level is blurred the same way and every value >= 1e-8 becomes a hole (holes
   grow).
3. Each scale is padded bottom/right to ``modulo`` with reflection (torch ``'reflect'``, unlike predict's
   ``'symmetric'``). The coarsest scale: one forward pass. Every other scale: ``n_iters`` forward passes with
   ``n_iters - 1`` Adam steps (lr 0.002) on the front features between them; the loss is
   ``mean_{known}|pred - image| + mean_{eroded hole}|pyrdown(pred) - previous|``, where the hole of the second
   term is the current mask halved *without* blur, kept only where it is exactly 1, then eroded by
   ``cv2.getStructuringElement(MORPH_ELLIPSE, (15, 15))`` with the image border not eroding (kornia's
   ``'geodesic'`` border). The result of the last forward pass is composited with the input at that scale.

Deviations, on purpose:

* A term whose pixel set is empty (e.g. a hole thinner than the erosion kernel) counts as 0; the original
  takes the mean of an empty tensor, which is NaN and poisons the features.
* ``refine_inpaint`` returns an image of the *input* size: when the image was shrunk to the pixel budget, the
  refined prediction is resized back (bilinear) and used only inside the hole. The original returns the
  shrunk image.
* Known pixels are copied byte for byte from the input (the original converts the float composite with a
  truncating ``astype('uint8')``, which can turn ``k`` into ``k - 1``).

The inner loop is one ``jax.jit``-compiled ``lax.scan`` over optax Adam updates per scale (one compilation per
distinct scale shape). Objective values are returned per scale and iteration so callers can log or check them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.ndimage

from jaxinpaint import contract
from jaxinpaint.systems.lama.objective import generator_input

log = logging.getLogger(__name__)

_EPS = 1e-8  # the original's threshold for "non-zero" mask values


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """The refiner's settings; defaults are LaMa's ``configs/prediction/default.yaml`` ``refiner`` block.

    Attributes:
      n_iters: forward passes per scale above the coarsest (``n_iters - 1`` Adam steps between them).
      lr: Adam learning rate on the front features.
      min_side: the pyramid gets one extra level per doubling of ``min(H, W)`` above this.
      max_scales: upper bound on the number of pyramid levels.
      px_budget: images with more pixels than this are shrunk first (memory: the original needs ~24 GB of GPU
        memory at 1.8 MP).
      modulo: each level is padded bottom/right to a multiple of this (the generator's down-sampling factor).
      n_scales: overrides the computed number of levels (tests, experiments); ``None`` uses the formula.
    """

    n_iters: int = 15
    lr: float = 0.002
    min_side: int = 512
    max_scales: int = 3
    px_budget: int = 1_800_000
    modulo: int = 8
    n_scales: int | None = None

    def __post_init__(self):
        if self.n_iters < 1:
            raise ValueError(f"RefineConfig.n_iters must be >= 1, got {self.n_iters}")
        if self.max_scales < 1:
            raise ValueError(f"RefineConfig.max_scales must be >= 1, got {self.max_scales}")
        if self.n_scales is not None and self.n_scales < 1:
            raise ValueError(f"RefineConfig.n_scales must be >= 1 or None, got {self.n_scales}")
        if self.min_side < 1 or self.px_budget < 1 or self.modulo < 1:
            raise ValueError(f"RefineConfig: min_side, px_budget and modulo must be positive, got {self}")


@dataclasses.dataclass(frozen=True)
class RefineResult:
    """What ``refine`` produced.

    Attributes:
      inpainted: float32 (h, w, 3) in [0, 1], the composite at the working resolution (the input size unless
        the image was shrunk to ``px_budget``).
      objectives: one float32 array per scale, coarse to fine, holding the objective after 0, 1, ...,
        ``n_iters - 1`` Adam steps; empty for the coarsest scale (no optimisation there).
      sizes: (h, w) of every scale, coarse to fine.
    """

    inpainted: np.ndarray
    objectives: list[np.ndarray]
    sizes: list[tuple[int, int]]


# ------------------------------------------------------------------------------------------------------------
# Pyramid operators (NHWC, torch/kornia semantics).
# ------------------------------------------------------------------------------------------------------------


def n_scales_for(height: int, width: int, *, min_side: int = 512, max_scales: int = 3) -> int:
    """Number of pyramid levels for an image (LaMa's formula; ``round`` is half-to-even, like numpy's)."""
    breadth = min(height, width)
    return min(1 + int(round(max(0.0, math.log2(breadth / min_side)))), max_scales)


def _gaussian_kernel1d(size: int = 5, sigma: float = 1.0) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _xp(x):
    """numpy for numpy inputs (the pyramid is built eagerly, without compiling anything), jax.numpy otherwise
    (inside the jitted optimisation, where the prediction is blurred and halved differentiably)."""
    return np if isinstance(x, np.ndarray) else jnp


def gaussian_blur(x):
    """5x5 Gaussian blur, sigma 1, reflect border (kornia ``gaussian_blur2d`` defaults), on (N, H, W, C)."""
    xp = _xp(x)
    k = _gaussian_kernel1d()
    padded = xp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = x.shape[1], x.shape[2]
    # Separable: rows then columns, as sums of shifted slices (cheap, exact, no conv layout juggling).
    y = sum(k[i] * padded[:, i:i + h, :, :] for i in range(5))
    return sum(k[j] * y[:, :, j:j + w, :] for j in range(5))


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of torch's bilinear resize with ``align_corners=False`` and no anti-aliasing."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum((np.arange(n_out, dtype=np.float32) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def resize_bilinear(x, size: tuple[int, int]):
    """Bilinear resize of (N, H, W, C) to ``size`` with torch's ``F.interpolate(mode='bilinear',
    align_corners=False)`` semantics (``jax.image.resize`` anti-aliases when shrinking, torch does not)."""
    mh, mw = _bilinear_matrix(x.shape[1], size[0]), _bilinear_matrix(x.shape[2], size[1])
    if _xp(x) is np:  # two matrix products (a 3-operand np.einsum would loop naively)
        n, h, w, c = x.shape
        y = np.matmul(mh, x.reshape(n, h, w * c)).reshape(n, size[0], w, c)
        return np.matmul(y.transpose(0, 1, 3, 2), mw.T).transpose(0, 1, 3, 2).astype(np.float32)
    return jnp.einsum("ph,nhwc,qw->npqc", mh, x, mw, precision=jax.lax.Precision.HIGHEST)


def pyrdown(x):
    """One pyramid step down: blur, then bilinear to ``(H // 2, W // 2)`` (numpy or JAX arrays)."""
    return resize_bilinear(gaussian_blur(x), (x.shape[1] // 2, x.shape[2] // 2))


def pyrdown_mask(mask: np.ndarray, *, blur: bool = True, round_up: bool = True) -> np.ndarray:
    """Halves a binary (N, H, W, 1) mask. ``round_up``: any trace of hole stays a hole (pyramid levels);
    otherwise only pixels that are entirely hole stay (the loss's reference region)."""
    m = np.asarray(mask, np.float32)
    m = pyrdown(m) if blur else resize_bilinear(m, (m.shape[1] // 2, m.shape[2] // 2))
    return (m >= _EPS if round_up else m >= 1.0 - _EPS).astype(np.float32)


def ellipse_kernel(size: int = 15) -> np.ndarray:
    """``cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))`` as a bool array (OpenCV's construction:
    row ``i`` spans ``c +- round(c * sqrt(1 - ((i - r) / r)^2))``)."""
    r = c = size // 2
    k = np.zeros((size, size), bool)
    for i in range(size):
        dy = i - r
        dx = int(np.rint(c * math.sqrt((r * r - dy * dy) / (r * r)))) if r else 0
        k[i, max(c - dx, 0):min(c + dx + 1, size)] = True
    return k


def erode(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary erosion of (N, H, W, 1) with the image border treated as hole (kornia's geodesic border)."""
    out = np.empty_like(mask)
    for n in range(mask.shape[0]):
        out[n, ..., 0] = scipy.ndimage.binary_erosion(mask[n, ..., 0] > 0.5, structure=kernel, border_value=1)
    return out.astype(np.float32)


def _pad_reflect(x: np.ndarray, modulo: int) -> np.ndarray:
    h, w = x.shape[1:3]
    return np.pad(x, ((0, 0), (0, (-h) % modulo), (0, (-w) % modulo), (0, 0)), mode="reflect")


def build_pyramid(image: np.ndarray, mask: np.ndarray, n_scales: int
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Image and mask pyramids, coarsest first. ``image`` (1, H, W, 3) float, ``mask`` (1, H, W, 1) binary."""
    images, masks = [image], [mask]
    for _ in range(n_scales - 1):
        images.append(pyrdown(images[-1]))
        masks.append(pyrdown_mask(masks[-1]))
    return images[::-1], masks[::-1]


# ------------------------------------------------------------------------------------------------------------
# Per-scale optimisation.
# ------------------------------------------------------------------------------------------------------------


def _masked_mean_abs(a: jax.Array, b: jax.Array, weight: jax.Array) -> jax.Array:
    """Mean of |a - b| over the elements where ``weight`` is 1 (0 when there are none: module docstring)."""
    weight = jnp.broadcast_to(weight, a.shape)
    count = jnp.sum(weight)
    return jnp.where(count > 0, jnp.sum(jnp.abs(a - b) * weight) / jnp.maximum(count, 1.0), 0.0)


@functools.lru_cache(maxsize=16)
def _scale_fn(model, n_iters: int, lr: float, orig_hw: tuple[int, int], coarsest: bool
              ) -> Callable[..., Any]:
    """The jitted refinement of one scale: ``(variables, image_p, mask_p, ref, ref_mask) -> (pred, losses)``.

    Cached so that every image of a size reuses one compilation (keys: the model, which is a hashable
    dataclass, and the static settings).
    """
    h, w = orig_hw

    def rear(variables, z):
        return model.apply(variables, z, train=False, method="rear")

    @jax.jit
    def run(variables, image_p, mask_p, ref, ref_mask, offset, total):
        # offset, total: this scale's first iteration and the refinement's iterations over all scales, traced
        # so that every scale shares one compilation; they only feed the progress reports.
        x = generator_input({"image": image_p, "mask": mask_p})
        z0 = model.apply(variables, x, train=False, method="front")
        z0 = jax.lax.stop_gradient(z0)
        if coarsest:
            return rear(variables, z0), jnp.zeros((0,), jnp.float32)

        def loss_fn(z):
            pred = rear(variables, z)
            known = _masked_mean_abs(pred, image_p, 1.0 - mask_p)
            down = pyrdown(pred[:, :h, :w, :])
            return known + _masked_mean_abs(down, ref, ref_mask), pred

        tx = optax.adam(lr)

        def step(carry, i):
            z, opt_state = carry
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(z)
            updates, opt_state = tx.update(grads, opt_state, z)
            contract.report_progress(offset + i, total, every=1, objective=loss)
            return (optax.apply_updates(z, updates), opt_state), loss

        (z, _), losses = jax.lax.scan(step, (z0, tx.init(z0)), jnp.arange(n_iters - 1))
        last, pred = loss_fn(z)
        return pred, jnp.concatenate([losses, last[None]])

    return run


def _check_refinable(model) -> None:
    if not (callable(getattr(model, "front", None)) and callable(getattr(model, "rear", None))):
        raise TypeError(f"refinement needs a generator split into front() and rear() (LaMa's FFC ResNet or "
                        f"pix2pixHD generators); {type(model).__name__} has no such split")


def refine(model, variables: Any, image: np.ndarray, mask: np.ndarray, *,
           config: RefineConfig = RefineConfig()) -> RefineResult:
    """Inpaints one image with LaMa's multi-scale refinement.

    Args:
      model, variables: a generator with ``front``/``rear`` methods (``jaxinpaint.systems.lama.model``) and its
        weights.
      image: (H, W, 3) float in [0, 1] (or uint8, divided by 255).
      mask: (H, W) or (H, W, 1); any value > 0 is a hole.
      config: the refiner's settings.

    Returns:
      A ``RefineResult``; its ``inpainted`` image has the working resolution (see ``RefineConfig.px_budget``).

    Raises:
      TypeError: the model has no front/rear split.
      ValueError: bad shapes, or a pyramid level too small for the blur and the padding.
    """
    _check_refinable(model)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"refine: image must be (H, W, 3), got {image.shape}")
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != image.shape[:2]:
        raise ValueError(f"refine: mask {mask.shape} and image {image.shape[:2]} differ in size")
    img = image[None]
    msk = (mask > 0).astype(np.float32)[None, ..., None]
    h, w = image.shape[:2]
    if h * w > config.px_budget:
        ratio = math.sqrt(config.px_budget / float(h * w))
        size = (int(h * ratio), int(w * ratio))
        log.info("image of %dx%d px is over the refinement budget of %d px: refining at %dx%d", w, h,
                 config.px_budget, size[1], size[0])
        img = resize_bilinear(img, size)
        msk = (resize_bilinear(msk, size) > _EPS).astype(np.float32)
        h, w = size
    n_scales = config.n_scales or n_scales_for(h, w, min_side=config.min_side, max_scales=config.max_scales)
    smallest = min(h, w) // 2 ** (n_scales - 1)
    if smallest < max(8, config.modulo):
        raise ValueError(f"refine: {n_scales} scales of a {w}x{h} image leave a coarsest side of {smallest} "
                         f"px; at least {max(8, config.modulo)} is needed (fewer scales, or a larger image)")
    images, masks = build_pyramid(img, msk, n_scales)
    ekernel = ellipse_kernel(15)
    result, all_losses, sizes = None, [], []
    total, done = (n_scales - 1) * (config.n_iters - 1), 0  # the coarsest scale is a plain forward pass
    for s, (im, m) in enumerate(zip(images, masks)):
        sh, sw = im.shape[1:3]
        sizes.append((sh, sw))
        im_p, m_p = _pad_reflect(im, config.modulo), _pad_reflect(m, config.modulo)
        if result is None:
            ref = np.zeros((1, 0, 0, 3), np.float32)
            ref_mask = np.zeros((1, 0, 0, 1), np.float32)
        else:
            ref = result
            ref_mask = erode(pyrdown_mask(m, blur=False, round_up=False), ekernel)
        fn = _scale_fn(model, config.n_iters, float(config.lr), (sh, sw), result is None)
        pred, losses = fn(variables, im_p, m_p, ref, ref_mask, np.int32(done), np.int32(total))
        done += 0 if result is None else config.n_iters - 1
        pred = np.asarray(pred)[:, :sh, :sw, :]
        result = m * pred + (1.0 - m) * im
        losses = np.asarray(losses)
        all_losses.append(losses)
        if losses.size:
            log.info("refinement scale %d/%d (%dx%d): objective %.5f -> %.5f over %d iterations", s + 1,
                     n_scales, sw, sh, losses[0], losses[-1], losses.size)
        else:
            log.info("refinement scale %d/%d (%dx%d): plain forward pass", s + 1, n_scales, sw, sh)
    return RefineResult(inpainted=np.asarray(result[0], np.float32), objectives=all_losses, sizes=sizes)


def refine_inpaint(model, variables: Any, image: np.ndarray, mask: np.ndarray, *,
                   config: RefineConfig = RefineConfig()) -> tuple[np.ndarray, RefineResult]:
    """``refine`` plus the conversion ``jaxinpaint.inference.inpaint`` does: uint8 at the input's size.

    Args:
      image: (H, W, 3) uint8 (the bytes kept outside the hole), or float in [0, 1].
      mask: (H, W) or (H, W, 1); any value > 0 is a hole.

    Returns:
      ``(inpainted, result)``: (H, W, 3) uint8 equal to the input outside the hole byte for byte and
      ``clip(pred * 255)`` truncated inside (LaMa's conversion); ``result`` as returned by ``refine``.
    """
    image = np.asarray(image)
    result = refine(model, variables, image, mask, config=config)
    h, w = image.shape[:2]
    pred = result.inpainted
    if pred.shape[:2] != (h, w):
        pred = resize_bilinear(pred[None], (h, w))[0]
    hole = np.asarray(mask)
    hole = (hole[..., 0] if hole.ndim == 3 else hole) > 0
    filled = np.clip(pred * 255.0, 0, 255).astype(np.uint8)
    original = image if image.dtype == np.uint8 else np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.where(hole[..., None], filled, original), result


# ------------------------------------------------------------------------------------------------------------
# As a per-image solver: jaxinpaint.load(source, refine=True) / predict --refine.
# ------------------------------------------------------------------------------------------------------------


def default_config():
    """The solver's settings: LaMa's refiner defaults, plus ``model`` (the LaMa source to refine with)."""
    import ml_collections

    d = RefineConfig()
    return ml_collections.ConfigDict({"model": "", "n_iters": d.n_iters, "lr": d.lr, "min_side": d.min_side,
                                      "max_scales": d.max_scales, "px_budget": d.px_budget, "modulo": d.modulo})


def refine_config(config) -> RefineConfig:
    return RefineConfig(n_iters=int(config.n_iters), lr=float(config.lr), min_side=int(config.min_side),
                        max_scales=int(config.max_scales), px_budget=int(config.px_budget), modulo=int(config.modulo))


def _load_resources(config):
    """The LaMa generator to refine with, from ``config.model`` (any source ``jaxinpaint.load`` takes)."""
    from jaxinpaint import api

    if not config.model:
        raise ValueError("lama_refine: give the LaMa model to refine with (jaxinpaint.load(source, refine=True), "
                         "or model=SOURCE)")
    inpainter = api.load(config.model)
    module, variables = inpainter.network("generator")
    _check_refinable(module)
    return module, variables


def _host_solve(resources, image, mask, config, seed):
    """Refines one image (float [0, 1], (1, H, W, 3); mask (1, H, W, 1)); returns the prediction at that size."""
    del seed  # deterministic
    module, variables = resources
    h, w = image.shape[1:3]
    result = refine(module, variables, image[0], mask[0, ..., 0], config=refine_config(config))
    pred = result.inpainted
    if pred.shape[:2] != (h, w):
        pred = resize_bilinear(pred[None], (h, w))[0]
    return pred[None], {"objective": result.objectives}


SOLVER = contract.Solver(
    name="lama_refine",
    title="LaMa's high-resolution refinement (Kulshreshtha et al. 2022): Adam on the generator's front features",
    default_config=default_config,
    load_resources=_load_resources,
    host_solve=_host_solve,
    iterations=lambda config: int(config.n_iters),
    licence="Apache-2.0 (advimman/lama)",
)
