"""Optimisers chosen by name (optax), with learning-rate schedules and gradient clipping.

An optimiser config section (``optimizer_config()``; every field typed, so ``--config.g_optimizer.lr=...``
overrides work on the locked config)::

    name          'adam' | 'adamw' | 'adadelta' | 'rmsprop' | 'sgd'
    lr            base learning rate
    b1, b2, eps   Adam/AdamW (PyTorch and optax defaults 0.9, 0.999, 1e-8)
    rho           Adadelta's decay (PyTorch's default 0.9; GLCIC trains with Adadelta lr 1.0)
    decay         RMSProp's decay (PyTorch's alpha 0.99)
    momentum, nesterov   SGD and RMSProp momentum
    weight_decay  AdamW's decoupled decay; for the others L2 added to the gradient as PyTorch's weight_decay
    clip_norm     clip the global gradient norm to this first (0 = off; LaMa: 1, torch's clip_grad_norm_)
    schedule      'constant' | 'linear_decay' | 'cosine' | 'piecewise'
    decay_start, decay_steps   linear_decay/cosine: full lr before decay_start, then down to lr*end_factor
                  over decay_steps updates (Shift-Net's per-epoch lambda rule, pix2pix's niter_decay)
    end_factor    the final fraction of lr for linear_decay/cosine (0 by default)
    boundaries, scales   piecewise: lr*scales[i] from update boundaries[i] on (EdgeConnect's 1e-4 -> 1e-5)

Schedules count this network's *updates* (optax's step count), not global steps: a critic updated five
times per step (DeepFill v1) advances its schedule five times, and a network whose phase starts late (GLCIC's
discriminator) starts its schedule then.
"""

from __future__ import annotations

import ml_collections
import optax

NAMES = ("adam", "adamw", "adadelta", "rmsprop", "sgd")
SCHEDULES = ("constant", "linear_decay", "cosine", "piecewise")


def optimizer_config(name: str = "adam", lr: float = 1e-3, **overrides) -> ml_collections.ConfigDict:
    """A complete optimiser section with the given name, learning rate and overrides."""
    c = ml_collections.ConfigDict({
        "name": name, "lr": float(lr), "b1": 0.9, "b2": 0.999, "eps": 1e-8, "rho": 0.9, "decay": 0.99,
        "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "clip_norm": 0.0, "schedule": "constant",
        "decay_start": 0, "decay_steps": 0, "end_factor": 0.0, "boundaries": (0,), "scales": (1.0,)})
    for key, value in overrides.items():
        if key not in c:
            raise KeyError(f"optimizer_config: unknown field {key!r} (fields: {sorted(c)})")
        c[key] = value
    return c


def learning_rate(cfg) -> optax.Schedule | float:
    """The (possibly scheduled) learning rate of an optimiser section."""
    lr, kind = float(cfg.lr), cfg.schedule
    if kind == "constant":
        return lr
    if kind in ("linear_decay", "cosine"):
        start, steps = int(cfg.decay_start), int(cfg.decay_steps)
        if steps < 1:
            raise ValueError(f"optimizer schedule {kind!r} needs decay_steps >= 1, got {steps}")
        end = lr * float(cfg.end_factor)
        decay = (optax.linear_schedule(lr, end, steps) if kind == "linear_decay"
                 else optax.cosine_decay_schedule(lr, steps, alpha=float(cfg.end_factor)))
        del end
        return optax.join_schedules([optax.constant_schedule(lr), decay], [start]) if start else decay
    if kind == "piecewise":
        boundaries, scales = tuple(int(b) for b in cfg.boundaries), tuple(float(s) for s in cfg.scales)
        if len(boundaries) != len(scales):
            raise ValueError(f"optimizer schedule 'piecewise': {len(boundaries)} boundaries but {len(scales)} "
                             "scales (give one scale per boundary)")
        return lambda count: lr * _piecewise(count, boundaries, scales)
    raise ValueError(f"optimizer schedule {kind!r} is not one of {SCHEDULES}")


def _piecewise(count, boundaries, scales):
    import jax.numpy as jnp

    scale = jnp.asarray(1.0, jnp.float32)
    for b, s in zip(boundaries, scales):
        scale = jnp.where(count >= b, s, scale)
    return scale


def make(cfg) -> optax.GradientTransformation:
    """The optax transformation of an optimiser section (see the module docstring)."""
    name = cfg.name
    lr = learning_rate(cfg)
    parts = []
    if float(cfg.clip_norm):
        parts.append(optax.clip_by_global_norm(float(cfg.clip_norm)))
    wd = float(cfg.weight_decay)
    if wd and name != "adamw":
        parts.append(optax.add_decayed_weights(wd))  # PyTorch's weight_decay: L2 added to the gradient
    if name == "adam":
        parts.append(optax.adam(lr, b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps)))
    elif name == "adamw":
        parts.append(optax.adamw(lr, b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps), weight_decay=wd))
    elif name == "adadelta":
        parts.append(optax.adadelta(lr, rho=float(cfg.rho), eps=float(cfg.eps)))
    elif name == "rmsprop":
        parts.append(optax.rmsprop(lr, decay=float(cfg.decay), eps=float(cfg.eps),
                                   momentum=float(cfg.momentum) or None, nesterov=bool(cfg.nesterov)))
    elif name == "sgd":
        parts.append(optax.sgd(lr, momentum=float(cfg.momentum) or None, nesterov=bool(cfg.nesterov)))
    else:
        raise ValueError(f"optimizer {name!r} is not one of {NAMES}")
    return optax.chain(*parts)
