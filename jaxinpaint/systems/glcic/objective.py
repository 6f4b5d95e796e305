"""GLCIC's objective, phases and inference (systems-more.md §3.4-3.7).

Completion-network input, as the official ``inpaint.lua:77-82`` prepares it: the image in [0, 1] minus the
dataset's mean pixel (``config.inference.mean``; Places2's [0.4560, 0.4472, 0.4155]), hole pixels set to 0
(the mean pixel), concatenated with the mask (1 = hole). Its sigmoid output is in [0, 1] (not mean-subtracted)
and is composited: ``I·(1 - M) + C(x)·M``.

Losses (paper level; the paper's exact forms are **unverified**, otenim's choices noted):

* **C, phase 1 and 3**: the MSE inside the hole, ``mean((C(x)·M - I·M)²)`` over all pixels (otenim
  ``losses.py:4-5``); in phase 3 plus ``α·BCE(D(fake), 1)`` with α = ``config.losses.alpha`` (4e-4).
  otenim halves this sum (``train.py:392``); with Adadelta the factor barely matters, so it is left out.
* **D, phase 2 and 3**: ``d_weight·(BCE(D(real), 1) + BCE(D(fake), 0))``, real and fake in separate calls.
  otenim uses ``(…)/2`` in phase 2 and ``α·(…)`` in phase 3 (``:273,374``), which with Adadelta's ε makes
  D's phase-3 steps far smaller (likely an artefact): ``d_weight`` (default 1) is the knob.
* What D judges (``config.losses.d_input``): the composite (default; mmagic) or the raw output (otenim). The
  local patch is the ``local_size``² window centred on the hole's bounding box (``batch['box']``, added by
  :func:`prepare_example`), clipped to the image; the real local patch is the same window
  (``real_local='aligned'``, mmagic) or an independent uniformly placed one (``'independent'``, otenim
  ``train.py:263-269``).
* BatchNorm: C's statistics move in the C updates only (D updates run C in training mode without recording
  its statistics); D's move with every D call.

Phases (``config.schedule``; otenim's and mmagic's 90,000 / 10,000 / to 500,000 iterations [3rd], scaled by
``schedule.scale``): C only with the MSE until T_C; D only until T_C + T_D; then a D update and a C update per
step until ``config.total_steps``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinpaint import contract, losses
from jaxinpaint.masks.classic import hole_box

D_INPUTS = ("composite", "raw")
REAL_LOCAL = ("aligned", "independent")


def generator_input(batch, mean):
    """``(image - mean)·(1 - mask) ⧺ mask``: the official preprocessing (hole = 0 = the mean pixel)."""
    image, mask = batch["image"], batch["mask"]
    return jnp.concatenate([(image - jnp.asarray(mean, image.dtype)) * (1.0 - mask), mask], axis=-1)


def prepare_example(example: dict, config, *, train: bool) -> dict:
    """Adds the hole's bounding box ``'box'`` ([y0, x0, y1, x1], int32) for the local discriminator's patch."""
    del config, train
    return {**example, "box": hole_box(example["mask"])}


def local_origin(box, size: int, image_shape) -> jax.Array:
    """(N, 2) top-left corners of the ``size``² windows centred on the boxes, clipped to the image."""
    centre = (box[:, :2] + box[:, 2:]) // 2
    limit = jnp.asarray(image_shape, jnp.int32) - size
    return jnp.clip(centre - size // 2, 0, limit)


def crop(images, origins, size: int):
    """(N, size, size, C) windows of ``images`` at ``origins`` (N, 2)."""
    def one(image, origin):
        return jax.lax.dynamic_slice(image, (origin[0], origin[1], 0), (size, size, image.shape[-1]))

    return jax.vmap(one)(images, origins)


def completion_mse(*, pred, image, mask):
    """otenim's ``mse_loss(out·M, x·M)``: the squared error inside the hole, averaged over every element."""
    return jnp.mean(jnp.square(pred * mask - image * mask)).astype(jnp.float32)


def _complete(ctx: contract.Context, **kwargs):
    """``(raw output, composite)`` of the completion network in training mode."""
    batch = ctx.batch
    raw = ctx.nets("generator", generator_input(batch, ctx.config.inference.mean), **kwargs)
    return raw, contract.composite(raw, batch["image"], batch["mask"])


def _judge(ctx: contract.Context, images, origins, **kwargs):
    size = ctx.nets.modules["discriminator"].local_size
    return ctx.nets("discriminator", images, crop(images, origins, size), **kwargs)


def _fake_for_d(cfg, raw, comp):
    if cfg.d_input not in D_INPUTS:
        raise ValueError(f"config.losses.d_input must be one of {D_INPUTS}, got {cfg.d_input!r}")
    return comp if cfg.d_input == "composite" else raw


def completion_update(ctx: contract.Context):
    """Phase 1: the completion network alone, on the hole MSE."""
    raw, _ = _complete(ctx)
    mse = completion_mse(pred=raw, image=ctx.batch["image"], mask=ctx.batch["mask"])
    return mse, {"mse": mse}, {}


def discriminator_update(ctx: contract.Context):
    """Phases 2 and 3: BCE on real images (label 1) and completed ones (label 0), two separate D calls."""
    cfg, batch = ctx.config.losses, ctx.batch
    raw, comp = _complete(ctx, update_state=False)
    fake = jax.lax.stop_gradient(_fake_for_d(cfg, raw, comp))
    image = batch["image"]
    size = ctx.nets.modules["discriminator"].local_size
    fake_origin = local_origin(batch["box"], size, image.shape[1:3])
    if cfg.real_local == "aligned":
        real_origin = fake_origin
    elif cfg.real_local == "independent":
        limit = jnp.asarray(image.shape[1:3], jnp.int32) - size + 1
        real_origin = jax.random.randint(ctx.rng, (image.shape[0], 2), 0, limit)
    else:
        raise ValueError(f"config.losses.real_local must be one of {REAL_LOCAL}, got {cfg.real_local!r}")
    real_logits = _judge(ctx, image, real_origin)
    fake_logits = _judge(ctx, fake, fake_origin)
    bce_real = losses.nonsat_generator_loss(fake_logits=real_logits)  # BCE(sigmoid(l), 1)
    bce_fake = jnp.mean(jax.nn.softplus(fake_logits))  # BCE(sigmoid(l), 0)
    metrics = {"bce_real": bce_real, "bce_fake": bce_fake, "real_logits": jnp.mean(real_logits),
               "fake_logits": jnp.mean(fake_logits)}
    return cfg.d_weight * (bce_real + bce_fake), metrics, {}


def joint_update(ctx: contract.Context):
    """Phase 3, the completion network: hole MSE + α·BCE(D(completed), 1)."""
    cfg, batch = ctx.config.losses, ctx.batch
    raw, comp = _complete(ctx)
    size = ctx.nets.modules["discriminator"].local_size
    origin = local_origin(batch["box"], size, batch["image"].shape[1:3])
    adversarial = losses.nonsat_generator_loss(fake_logits=_judge(ctx, _fake_for_d(cfg, raw, comp), origin))
    mse = completion_mse(pred=raw, image=batch["image"], mask=batch["mask"])
    return mse + cfg.alpha * adversarial, {"mse": mse, "adversarial": adversarial}, {}


def phase_lengths(config) -> tuple[int, int]:
    """``(T_C, T_C + T_D)``: the steps at which phases 1 and 2 end (``schedule`` lengths × ``schedule.scale``)."""
    s = config.schedule
    t_c = max(1, round(s.completion_steps * s.scale))
    return t_c, t_c + max(1, round(s.discriminator_steps * s.scale))


def predict(nets: contract.Nets, batch, config) -> dict:
    """Eval-mode completion, composited; Telea + Poisson post-processing on the host when
    ``config.inference.postprocess`` (``jax.pure_callback`` into :mod:`.postprocess`)."""
    image, mask = batch["image"], batch["mask"]
    raw = nets("generator", generator_input(batch, config.inference.mean))
    comp = contract.composite(raw, image, mask)
    pred = comp
    if config.inference.get("postprocess", False):
        from jaxinpaint.systems.glcic import postprocess

        pred = jax.pure_callback(postprocess.postprocess_batch, jax.ShapeDtypeStruct(comp.shape, jnp.float32),
                                 comp, mask)
    return {"pred": pred, "composite": contract.composite(pred, image, mask), "raw": raw}
