"""Context Encoder's objective, exactly as ``train.lua`` / ``train_random.lua`` apply it (systems-more.md §2.5).

Context Encoder works in [-1, 1]; this module converts at its boundary, so the trainer's batch stays
``{'image': [0, 1], 'mask': 1 = hole}``. The generator's input is the image with the hole set to the mean
colour (:func:`model.fill_hole`; for the centre variant the batch's mask is the overwritten inner box,
``masks.get('context_encoder_center')``).

One step is a D update, then a G update (``train.lua:411-414``):

* **D**: the generator's prediction (one train-mode forward, which moves G's BatchNorm statistics once per
  step, as the original's single forward does), then D on the real target and D on the prediction in two
  *separate* calls (separate batch statistics): ``BCE(D(real), 1) + BCE(D(fake), 0)``, each a batch mean.
* **G**: ``w_adv · BCE(D(pred), 1) + mean(W ⊙ (pred - target)²)``, the scalar loss whose gradient is the
  original's hand-built one (``:380-388``). The target is the real centre (centre variant, F/2²) or the whole
  image (random variant); W is ``w_l2`` on hole pixels and ``overlap_weight · w_l2`` on the others: the 4-px
  ring of the centre (10× in ``train.lua``) or the known pixels (``useOverlapPred``, off in the README's random
  command: weight 1). The mean runs over all B·3·S² elements. ``w_l2, w_adv`` follow ``wtl2``
  (:func:`loss_weights`). The G forward of this update repeats the D update's one with the same parameters
  and batch (identical output), so it does not move G's running statistics a second time; D is called with
  its *updated* parameters in train mode without moving its statistics. The original instead back-propagates
  D's cached pre-update activations through its updated weights (``:355-364``); recomputing is the standard
  port (documented difference).

Inference (:func:`predict`) maps a window of the image onto the generator's ``fine_size``² input with
``jax.image.scale_and_translate`` (linear, antialiased): for the centre variant the window is chosen so that
the hole's bounding box (``batch['box']``, from :func:`prepare_example`) lands on the inner box the network
learned to fill ([F/4 + o, 3F/4 - o), ``config.inference.overlap``), i.e. the box's side·F/(F/2 - 2o); for the
random variant it is the whole image. The prediction is mapped back and pasted into the box (centre) or
composited into the hole (random). At the training size with the training mask both maps are the identity,
so this is ``demo.lua``'s paste exactly; context outside the image reads as the mean colour.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinpaint import contract, losses
from jaxinpaint.masks.classic import hole_box
from jaxinpaint.systems.context_encoder.model import MEAN_FILL, center_box, fill_hole, inner_box


def to_signed(image):
    """[0, 1] -> Context Encoder's [-1, 1]."""
    return image * 2.0 - 1.0


def loss_weights(wtl2: float) -> tuple[float, float]:
    """``(w_l2, w_adv)`` from ``wtl2`` as ``train.lua:372-388`` applies it: 0 < wtl2 < 1 scales the adversarial
    gradient by 1 - wtl2; wtl2 >= 1 keeps it at 1 and adds L2 with weight wtl2; wtl2 = 0 is a pure GAN."""
    wtl2 = float(wtl2)
    if wtl2 < 0:
        raise ValueError(f"config.losses.wtl2 must be >= 0, got {wtl2}")
    if wtl2 == 0:
        return 0.0, 1.0
    return (wtl2, 1.0 - wtl2) if wtl2 < 1 else (wtl2, 1.0)


def overlap_weighted_l2(*, pred, target, hole, w_l2: float, overlap_weight: float):
    """``mean(W ⊙ (pred - target)²)``, W = w_l2 on the hole (``hole`` 1) and overlap_weight·w_l2 elsewhere.

    ``hole`` (N, H, W, 1) broadcasts over the channels; the mean is over every element of ``pred``.
    """
    weights = w_l2 * jnp.where(hole > 0.5, 1.0, overlap_weight)
    return jnp.mean(weights * jnp.square(pred - target)).astype(jnp.float32)


def prepare_example(example: dict, config, *, train: bool) -> dict:
    """Adds the hole's bounding box ``'box'`` ([y0, x0, y1, x1], int32), which inference maps onto the network."""
    del config, train
    return {**example, "box": hole_box(example["mask"])}


def _region(x, generator):
    """The part of a fine_size² array the generator predicts: the centre [F/4, 3F/4)² or everything."""
    if not generator.center_only:
        return x
    lo, hi = center_box(generator.fine_size)
    return x[:, lo:hi, lo:hi]


def _check_training_size(batch, generator):
    if batch["image"].shape[1:3] != (generator.fine_size, generator.fine_size):
        raise ValueError(f"context_encoder: training images are {batch['image'].shape[1:3]}, the generator's "
                         f"fine_size is {generator.fine_size}: set config.input.image_size to it")


def _generator_io(nets, batch, **kwargs):
    generator = nets.modules["generator"]
    _check_training_size(batch, generator)
    x = to_signed(batch["image"])
    pred = nets("generator", fill_hole(x, batch["mask"]), **kwargs)
    return pred, _region(x, generator), _region(batch["mask"], generator)


def discriminator_update(ctx: contract.Context):
    """BCE on the real target (label 1) and the generator's raw prediction (label 0), two separate D calls."""
    fake, real, _ = _generator_io(ctx.nets, ctx.batch)
    fake = jax.lax.stop_gradient(fake)
    real_logits = ctx.nets("discriminator", real)
    fake_logits = ctx.nets("discriminator", fake)
    bce_real = losses.nonsat_generator_loss(fake_logits=real_logits)  # mean softplus(-l) = BCE(sigmoid(l), 1)
    bce_fake = jnp.mean(jax.nn.softplus(fake_logits))  # BCE(sigmoid(l), 0)
    metrics = {"bce_real": bce_real, "bce_fake": bce_fake, "real_logits": jnp.mean(real_logits),
               "fake_logits": jnp.mean(fake_logits)}
    return bce_real + bce_fake, metrics, {}


def generator_update(ctx: contract.Context):
    """The overlap-weighted L2 plus the weighted BCE of D(prediction) against label 1 (module docstring)."""
    cfg = ctx.config.losses
    pred, target, hole = _generator_io(ctx.nets, ctx.batch, update_state=False)
    w_l2, w_adv = loss_weights(cfg.wtl2)
    metrics = {"l2": overlap_weighted_l2(pred=pred, target=target, hole=hole, w_l2=w_l2,
                                         overlap_weight=cfg.overlap_weight),
               "mse": jnp.mean(jnp.square(pred - target))}
    total = metrics["l2"]
    if "discriminator" in ctx.nets:
        metrics["adversarial"] = losses.nonsat_generator_loss(
            fake_logits=ctx.nets("discriminator", pred, update_state=False))
        total = total + w_adv * metrics["adversarial"]
    return total, metrics, {}


# ------------------------------------------------------------------------------------------------ inference


def _window_map(box, target: tuple[int, int]):
    """Per-axis ``(scale, translation)`` taking image coordinates [y0, y1) × [x0, x1) onto [a, b)² (pixel
    edges, ``scale_and_translate``'s convention)."""
    a, b = target
    box = box.astype(jnp.float32)
    start = box[:2]
    size = jnp.maximum(box[2:] - box[:2], 1.0)
    scale = (b - a) / size
    return scale, a - start * scale


def _resample(image, shape, scale, translation):
    """``image`` (H, W, C) resampled to ``shape`` under ``out = in·scale + translation`` (linear, antialiased)."""
    return jax.image.scale_and_translate(image, (*shape, image.shape[-1]), (0, 1), scale, translation, "linear")


def predict(nets: contract.Nets, batch, config) -> dict:
    """Eval-mode inference on any image size (module docstring); ``'pred'`` equals the image outside the box."""
    generator = nets.modules["generator"]
    f = generator.fine_size
    fill = jnp.asarray(MEAN_FILL, jnp.float32)
    image, mask = batch["image"], batch["mask"]
    h, w = image.shape[1:3]
    if generator.center_only:
        target = inner_box(f, int(config.inference.get("overlap", 0)))
        box = batch["box"]  # added by prepare_example
    else:
        target = (0, f)
        box = jnp.broadcast_to(jnp.asarray([0, 0, h, w], jnp.int32), (image.shape[0], 4))

    def one(x, m, b):
        scale, translation = _window_map(b, target)
        # Resampled about the mean colour, so context outside the image reads as the mean colour.
        context = _resample(to_signed(x) - fill, (f, f), scale, translation) + fill
        if generator.center_only:  # the whole inner box is filled, as in training
            hole = jnp.zeros((f, f, 1), bool).at[target[0]:target[1], target[0]:target[1]].set(True)
        else:  # every pixel a hole pixel touches
            hole = _resample(m, (f, f), scale, translation) > 0
        return context, hole

    context, hole = jax.vmap(one)(image, mask, box)
    out = nets("generator", jnp.where(hole, fill, context))
    canvas = context.at[:, f // 4:3 * f // 4, f // 4:3 * f // 4].set(out) if generator.center_only else out

    def back(c, b):
        scale, translation = _window_map(b, target)
        return _resample(c, (h, w), 1.0 / scale, -translation / scale)

    pred = (jax.vmap(back)(canvas, box) + 1.0) * 0.5
    rows, cols = jnp.arange(h)[None, :, None, None], jnp.arange(w)[None, None, :, None]
    b = box[:, None, None, None, :]
    in_box = (rows >= b[..., 0]) & (rows < b[..., 2]) & (cols >= b[..., 1]) & (cols < b[..., 3])
    pred = jnp.clip(jnp.where(in_box, pred, image), 0.0, 1.0)
    return {"pred": pred, "composite": contract.composite(pred, image, mask)}
