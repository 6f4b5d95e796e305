"""PGGAN's objective (systems-more.md §4.4; everything **unverified**: the paper's abstract only).

PGGAN works in [-1, 1] (design); this module converts at its boundary. Generator input: ``x·(1 - m) ⧺ m``
(hole 0). One step is a D update, then a G update:

* **D**: the sum of both heads' losses, ``L_D = L^global(real, fake) + L^patch(real, fake)``, real and fake in
  separate calls (the abstract's "two adversarial losses"), with the fakes of a generator forward pass.
* **G**: ``λ1·L_rec + λ2·L_adv^global + λ3·L_adv^patch``, ``L_rec`` the L1 over the whole image in [-1, 1]
  units; recalled λ1 = 0.995, λ2 = λ3 = 0.0025 (low confidence).
* GAN form (``losses.gan``): 'vanilla' (BCE on logits: D ``softplus(-D(x)) + softplus(D(ŷ))``, G
  ``softplus(-D(ŷ))``) or 'lsgan' (D ``(D(x) - 1)² + D(ŷ)²``, G ``(D(ŷ) - 1)²``), means over images and
  patch positions.
* What D judges (``losses.d_input``): the composite (default) or the raw output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinpaint import contract, losses

GAN_FORMS = ("vanilla", "lsgan")
D_INPUTS = ("composite", "raw")


def to_signed(image):
    return image * 2.0 - 1.0


def generator_input(batch):
    """``x·(1 - m) ⧺ m`` with x in [-1, 1]."""
    image, mask = batch["image"], batch["mask"]
    return jnp.concatenate([to_signed(image) * (1.0 - mask), mask], axis=-1)


def gan_discriminator_loss(form: str, *, real_logits, fake_logits):
    """One head's D loss (real target 1, fake target 0), a mean over every logit."""
    if form == "vanilla":
        return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
    if form == "lsgan":
        return jnp.mean(jnp.square(real_logits - 1.0)) + jnp.mean(jnp.square(fake_logits))
    raise ValueError(f"config.losses.gan must be one of {GAN_FORMS}, got {form!r}")


def gan_generator_loss(form: str, *, fake_logits):
    """One head's G loss (fake target 1)."""
    if form == "vanilla":
        return losses.nonsat_generator_loss(fake_logits=fake_logits)
    if form == "lsgan":
        return jnp.mean(jnp.square(fake_logits - 1.0))
    raise ValueError(f"config.losses.gan must be one of {GAN_FORMS}, got {form!r}")


def outputs(raw, batch):
    """The generator's tanh output -> ``'pred'`` in [0, 1] and its ``'composite'``."""
    pred = (raw + 1.0) * 0.5
    return {"pred": pred, "composite": contract.composite(pred, batch["image"], batch["mask"])}


def predict(nets: contract.Nets, batch, config) -> dict:
    del config
    return outputs(nets("generator", generator_input(batch)), batch)


def _judged(cfg, out):
    if cfg.d_input not in D_INPUTS:
        raise ValueError(f"config.losses.d_input must be one of {D_INPUTS}, got {cfg.d_input!r}")
    return to_signed(out["composite"] if cfg.d_input == "composite" else out["pred"])


def discriminator_update(ctx: contract.Context):
    """Both heads on real images and on the generator's (stop-gradient'ed) fakes; their losses summed."""
    cfg, batch = ctx.config.losses, ctx.batch
    out = outputs(ctx.nets("generator", generator_input(batch), update_state=False), batch)
    fake = jax.lax.stop_gradient(_judged(cfg, out))
    real_g, real_p = ctx.nets("discriminator", to_signed(batch["image"]))
    fake_g, fake_p = ctx.nets("discriminator", fake)
    metrics = {"global": gan_discriminator_loss(cfg.gan, real_logits=real_g, fake_logits=fake_g),
               "patch": gan_discriminator_loss(cfg.gan, real_logits=real_p, fake_logits=fake_p),
               "real_global_logits": jnp.mean(real_g), "fake_global_logits": jnp.mean(fake_g)}
    return metrics["global"] + metrics["patch"], metrics, {}


def generator_update(ctx: contract.Context):
    """``λ1·L1 + λ2·adv_global + λ3·adv_patch`` (weights ``config.losses.{l1, global_adv, patch_adv}``)."""
    cfg, batch = ctx.config.losses, ctx.batch
    out = outputs(ctx.nets("generator", generator_input(batch)), batch)
    fake_g, fake_p = ctx.nets("discriminator", _judged(cfg, out))
    metrics = {"l1": 2.0 * losses.l1(pred=out["pred"], target=batch["image"]),  # [-1, 1] units
               "global_adv": gan_generator_loss(cfg.gan, fake_logits=fake_g),
               "patch_adv": gan_generator_loss(cfg.gan, fake_logits=fake_p)}
    total = cfg.l1 * metrics["l1"] + cfg.global_adv * metrics["global_adv"] + cfg.patch_adv * metrics["patch_adv"]
    return total, metrics, {}
