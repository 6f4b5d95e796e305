"""DeepFill v2's objective (``JiahuiYu/generative_inpainting`` v2.0.0 ``inpaint_model.py``, ``inpaint.yml``).

Written from ``docs/systems.md`` section 4 (the original is CC BY-NC 4.0). DeepFill works in [-1, 1]: this
module converts at its boundary, so the trainer's batch stays ``{'image': [0, 1], 'mask': 1 = hole}``.

* Generator input: ``x*(1-m) ++ ones ++ m`` with ``x = 2*image - 1``; the generator returns ``(coarse, fine)``
  tanh outputs.
* D (SN-PatchGAN) judges the **composite** ``fine*m + x*(1-m)`` concatenated with the mask, and real images
  with the same mask.
* Generator loss, in DeepFill's [-1, 1] units (twice the [0, 1] L1)::

      l1_coarse * mean|x - coarse| + l1_fine * mean|x - fine| + adversarial * (-mean D(composite))

  with weights 1, 1, 1 as in the original (``l1_loss_alpha``, ``gan_loss_alpha``); the L1 covers the whole
  image, not just the hole. Discriminator loss: hinge,
  ``0.5 mean relu(1 - D(x)) + 0.5 mean relu(1 + D(fake))``.
* Outputs: ``'pred'`` (the fine output in [0, 1]), ``'coarse'`` (the coarse output in [0, 1]),
  ``'composite'`` (``pred`` pasted into the hole of the input image).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxinpaint import contract, losses


def _to_signed(image):
    """[0, 1] -> DeepFill's [-1, 1]."""
    return image * 2.0 - 1.0


def generator_input(batch):
    """``img*(1-m) ++ ones ++ m`` with the image in [-1, 1] (5 channels, DeepFill's ``build_inpaint_net``)."""
    image, mask = batch["image"], batch["mask"]
    return jnp.concatenate([_to_signed(image) * (1.0 - mask), jnp.ones_like(mask), mask], axis=-1)


def outputs(raw, batch):
    """The generator's ``(coarse, fine)`` in [-1, 1] -> the trainer's [0, 1] outputs."""
    coarse, fine = raw
    image, mask = batch["image"], batch["mask"]
    pred = (fine + 1.0) * 0.5
    return {"pred": pred, "coarse": (coarse + 1.0) * 0.5, "composite": mask * pred + (1.0 - mask) * image}


def discriminator_input(images, batch):
    """``images`` in [-1, 1] ++ the mask (0/1), as the original's ``gan_with_mask``.

    ``images`` may stack several image sets along the batch axis (``discriminator_loss`` judges reals and
    fakes in one call, as the original does); the mask is then repeated to match.
    """
    mask = batch["mask"]
    if images.shape[0] % mask.shape[0]:
        raise ValueError(f"deepfill_v2.discriminator_input: {images.shape[0]} images do not split into "
                         f"copies of the batch's {mask.shape[0]} masks")
    mask = jnp.tile(mask, (images.shape[0] // mask.shape[0], 1, 1, 1))
    return jnp.concatenate([_to_signed(images), mask.astype(images.dtype)], axis=-1)


def predict(nets: contract.Nets, batch, config) -> dict:
    """Eval-mode inference: the fine output, the coarse output and the composite, in [0, 1]."""
    del config
    return outputs(nets("generator", generator_input(batch)), batch)


def generator_update(ctx: contract.Context):
    """Whole-image L1 on both stages (in [-1, 1] units) plus the hinge generator loss on D(composite ++ mask).

    Hands the composite to the D update (``carry['fake']``): the original trains D on the fakes of the G it
    judged, without a second G pass.
    """
    cfg, batch, nets = ctx.config.losses, ctx.batch, ctx.nets
    out = outputs(nets("generator", generator_input(batch)), batch)
    image = batch["image"]
    metrics = {
        # |(2a - 1) - (2b - 1)| = 2 |a - b|: the original's [-1, 1] L1, computed on the [0, 1] outputs.
        "l1_coarse": 2.0 * losses.l1(pred=out["coarse"], target=image),
        "l1_fine": 2.0 * losses.l1(pred=out["pred"], target=image),
    }
    total = cfg.l1_coarse * metrics["l1_coarse"] + cfg.l1_fine * metrics["l1_fine"]
    if "discriminator" in nets:
        fake_logits, _ = nets("discriminator", discriminator_input(out["composite"], batch))
        metrics["adversarial"] = losses.hinge_generator_loss(fake_logits=fake_logits)
        total = total + cfg.adversarial * metrics["adversarial"]
    return total, metrics, {"fake": out["composite"]}


def discriminator_update(ctx: contract.Context):
    """Hinge loss on reals and composites, judged in ONE discriminator call (the original concatenates them).

    One call means one spectral-norm power iteration per D step, as in the original.
    """
    batch, real, fake = ctx.batch, ctx.batch["image"], ctx.carry["fake"]
    n = real.shape[0]
    logits, _ = ctx.nets("discriminator", discriminator_input(jnp.concatenate([real, fake], axis=0), batch))
    real_logits, fake_logits = logits[:n], logits[n:]
    loss = losses.hinge_discriminator_loss(real_logits=real_logits, fake_logits=fake_logits)
    metrics = {"hinge": loss, "real_logits": jnp.mean(real_logits), "fake_logits": jnp.mean(fake_logits)}
    return loss, metrics, {}
