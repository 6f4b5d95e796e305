"""LaMa's objective (advimman/lama ``trainers/default.py``, ``configs/training/big-lama.yaml``).

Generator input ``image*(1-mask) ++ mask``; D judges the raw prediction ŷ (``image_to_discriminator:
predicted_image``), not the composite. Generator loss (weights from ``config.losses``)::

    masked_l1(ŷ, x; w_missing=0, w_known=10) + 10·softplus(-D(ŷ)) + 100·FM(D(ŷ), D(x)) + 30·HRF-PL(ŷ, x)

Discriminator loss: non-saturating with R1 (γ = 0.001) on reals and ``mask_as_fake_target`` (the known region
of the prediction counts as real); the adversarial weight 10 is not applied to it (as in LaMa).

Order of operations, as LaMa's Lightning loop runs them (``../shared/reference`` training-step fixture):

* G update: ``D(x)`` then ``D(ŷ)``, two separate calls, each with its own train-mode BatchNorm statistics
  and each moving D's running statistics (D's parameters are not updated here);
* D update: the fakes come from a second forward pass of the *updated* generator (``config.d_fake =
  'regenerate'``, LaMa-exact; its BatchNorm statistics move a second time) or from the G update
  (``'reuse'``, one forward pass cheaper); ``D(x)`` (with R1 by double backprop) then ``D(ŷ)``.
* The HRF perceptual encoder runs with train-mode BatchNorm (``losses.hrf_bn_mode = 'train'``): Lightning's
  ``model.train()`` undoes ``ResNetPL``'s ``eval()``, so LaMa's released models were trained that way.
* BatchNorm running variances move with the unbiased batch variance (torch's); the optimisers use torch's
  Adam arithmetic and Lightning 1.2.9's gradient clip (``impl='torch'`` in ``configs/big_lama.py``).

``tests/test_train_parity.py`` checks one whole step against LaMa's own trainer, loss by loss and parameter by
parameter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinpaint import contract, losses


def generator_input(batch):
    image, mask = batch["image"], batch["mask"]
    return jnp.concatenate([image * (1.0 - mask), mask], axis=-1)


def predict(nets: contract.Nets, batch, config) -> dict:
    """Eval-mode inference: the raw prediction and its composite with the known pixels."""
    del config
    pred = nets("generator", generator_input(batch))
    return {"pred": pred, "composite": contract.composite(pred, batch["image"], batch["mask"])}


def frozen_networks(config):
    """The HRF perceptual backbone's variables when its weight is non-zero.

    ``config.losses.hrf_weights``: a path to LaMa's ``encoder_epoch_20.pth`` (or a converted .npz), or
    ``'random'`` for a randomly initialised backbone (tests and smoke runs only: the loss then measures
    random features).
    """
    cfg = config.losses
    if not cfg.hrf_perceptual:
        return {}
    from jaxinpaint.backbones import resnet_ade20k

    if cfg.hrf_weights == "random":
        return {"hrf": resnet_ade20k.random_variables()}
    return {"hrf": resnet_ade20k.load(cfg.hrf_weights or None)}


def generator_loss_terms(cfg, *, pred, image, mask, d_real, d_fake, hrf_variables) -> tuple[jax.Array, dict]:
    """LaMa's ``generator_loss`` on a prediction: (total, unweighted terms)."""
    metrics = {"l1": losses.masked_l1(pred=pred, target=image, mask=mask, weight_missing=cfg.l1_weight_missing,
                                      weight_known=cfg.l1_weight_known)}
    total = metrics["l1"]
    if d_fake is not None:
        metrics["adversarial"] = losses.nonsat_generator_loss(fake_logits=d_fake[0])
        metrics["feature_matching"] = losses.feature_matching(fake_features=d_fake[1], real_features=d_real[1])
        total = total + cfg.adversarial * metrics["adversarial"] + cfg.feature_matching * metrics["feature_matching"]
    if hrf_variables is not None:
        metrics["hrf_perceptual"] = losses.hrf_perceptual(variables=hrf_variables, pred=pred, target=image,
                                                          train_bn=cfg.hrf_bn_mode == "train")
        total = total + cfg.hrf_perceptual * metrics["hrf_perceptual"]
    return total, metrics


def generator_loss(nets: contract.Nets, batch, pred, cfg, hrf_variables) -> tuple[jax.Array, dict]:
    """LaMa's ``generator_loss`` on a prediction, D's calls included: ``D(x)``, then ``D(ŷ)`` (train mode, each
    recording its BatchNorm update), then the terms. Returns (total, unweighted terms)."""
    d_real = d_fake = None
    if "discriminator" in nets:
        d_real = jax.tree.map(jax.lax.stop_gradient, nets("discriminator", batch["image"]))
        d_fake = nets("discriminator", pred)
    return generator_loss_terms(cfg, pred=pred, image=batch["image"], mask=batch["mask"], d_real=d_real,
                                d_fake=d_fake, hrf_variables=hrf_variables)


def generator_update(ctx: contract.Context):
    """The G update's loss; hands its prediction to the D update (``carry['fake']``)."""
    pred = ctx.nets("generator", generator_input(ctx.batch))
    total, metrics = generator_loss(ctx.nets, ctx.batch, pred, ctx.config.losses, ctx.frozen.get("hrf"))
    return total, metrics, {"fake": pred}


def discriminator_update(ctx: contract.Context):
    """Non-saturating D loss with R1 on reals and the mask-as-fake-target rule."""
    batch, nets, cfg = ctx.batch, ctx.nets, ctx.config.losses
    if ctx.config.d_fake == "regenerate":
        fake = jax.lax.stop_gradient(nets("generator", generator_input(batch)))
    elif ctx.config.d_fake == "reuse":
        fake = ctx.carry["fake"]
    else:
        raise ValueError(f"config.d_fake must be 'regenerate' or 'reuse', got {ctx.config.d_fake!r}")

    def real_fn(x):
        (logits, _), new_state = nets.apply("discriminator", x)
        return logits, new_state

    real_logits, r1, d_state = losses.logits_and_r1_penalty(discriminator_fn=real_fn, real=batch["image"],
                                                            has_aux=True)
    nets.states["discriminator"] = d_state
    fake_logits, _ = nets("discriminator", fake)
    adv = losses.nonsat_discriminator_loss(real_logits=real_logits, fake_logits=fake_logits, mask=batch["mask"],
                                           mask_as_fake_target=cfg.mask_as_fake_target)
    loss = adv + cfg.r1_gamma * r1
    metrics = {"adversarial": adv, "r1": r1, "real_logits": jnp.mean(real_logits),
               "fake_logits": jnp.mean(fake_logits)}
    return loss, metrics, {}
