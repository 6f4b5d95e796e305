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
    impl          'optax': optax's formulas; 'torch': PyTorch's arithmetic where it differs (``adam`` and the
                  clip only), for step-by-step parity with a PyTorch original (LaMa's configs):
                  * clip: ``g <- g * min(1, clip_norm / (||g|| + 1e-6))``, the global norm taken as the norm of
                    the per-tensor norms (``torch.nn.utils.clip_grad_norm_``; pytorch-lightning 1.2.9's
                    ``clip_gradients``, which LaMa runs, is the same formula); optax divides by the norm
                    without the 1e-6 and leaves gradients below the threshold untouched;
                  * adam: ``torch.optim.Adam``'s single-tensor update: ``m <- lerp(m, g, 1 - b1)``,
                    ``v <- v * b2 + (1 - b2) * g * g``, ``p <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)``
                    with bc_i = 1 - b_i^t computed without cancellation. optax's float32 ``1 - 0.999**t``
                    (1.3e-5 off at t = 1) and its order of operations move parameters by up to an ulp or so
                    more per step: no difference in training, but visible in a step-by-step comparison.
                  Same cost and the same state layout (``optax.adam``'s) either way.
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

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

NAMES = ("adam", "adamw", "adadelta", "rmsprop", "sgd")
SCHEDULES = ("constant", "linear_decay", "cosine", "piecewise")
IMPLS = ("optax", "torch")
TORCH_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ and pytorch-lightning 1.2.9's PrecisionPlugin.EPSILON


def optimizer_config(name: str = "adam", lr: float = 1e-3, **overrides) -> ml_collections.ConfigDict:
    """A complete optimiser section with the given name, learning rate and overrides."""
    c = ml_collections.ConfigDict({
        "name": name, "lr": float(lr), "b1": 0.9, "b2": 0.999, "eps": 1e-8, "rho": 0.9, "decay": 0.99,
        "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "clip_norm": 0.0, "schedule": "constant",
        "decay_start": 0, "decay_steps": 0, "end_factor": 0.0, "boundaries": (0,), "scales": (1.0,),
        "impl": "optax"})
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


def clip_by_global_norm_torch(max_norm: float, eps: float = TORCH_CLIP_EPS) -> optax.GradientTransformation:
    """PyTorch's ``clip_grad_norm_``: every gradient times ``min(1, max_norm / (total_norm + eps))``.

    ``total_norm`` is the 2-norm of the per-tensor 2-norms, as torch (and pytorch-lightning 1.2.9, whose
    ``PrecisionPlugin.clip_gradients`` LaMa runs) computes it; the gradients are always multiplied, by 1 when
    below the threshold.
    """

    def update_fn(updates, state, params=None):
        del params
        leaves = jax.tree.leaves(updates)
        if not leaves:
            return updates, state
        norms = jnp.stack([jnp.linalg.norm(jnp.ravel(g)).astype(jnp.float32) for g in leaves])
        coef = jnp.minimum(max_norm / (jnp.linalg.norm(norms) + eps), 1.0)
        return jax.tree.map(lambda g: g * coef.astype(g.dtype), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _one_minus_power(b: float, count: jax.Array) -> jax.Array:
    """``1 - b**count`` in float32 without the cancellation of ``1 - 0.999**t`` (1.3e-5 relative at t = 1).

    PyTorch computes the bias corrections in float64 on the host; ``-expm1(t·log b)`` with ``log b`` taken in
    float64 gets float32 within an ulp of that.
    """
    return -jnp.expm1(count.astype(jnp.float32) * math.log(b))


def adam_torch(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """``torch.optim.Adam`` (single-tensor path, no amsgrad) as a complete optax transformation (lr included).

    Moments ``m <- m + (1 - b1)·(g - m)`` (torch's ``lerp_``; ``g - (g - m)·b1`` when b1 <= 0.5) and
    ``v <- v·b2 + ((1 - b2)·g)·g`` (``addcmul_``), then ``p += (-(lr / bc1)·m) / (sqrt(v) / sqrt(bc2) + eps)``
    (``addcdiv_``), in this order. The state has ``optax.adam``'s layout, ``(ScaleByAdamState(count, mu = exp_avg,
    nu = exp_avg_sq), <its learning-rate state>)``, so a checkpoint resumes under either ``impl``; a schedule reads
    the count before the increment, as optax's do.
    """
    w1 = 1.0 - b1
    lr_layout = optax.scale_by_learning_rate(learning_rate)  # only for the learning-rate state (schedule count)

    def lerp(m, g):
        return m + w1 * (g - m) if abs(w1) < 0.5 else g - (g - m) * b1

    def init_fn(params):
        adam = optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params),
                                      nu=optax.tree.zeros_like(params))
        return adam, lr_layout.init(params)

    def update_fn(updates, state, params=None):
        del params
        adam, lr_state = state
        mu = jax.tree.map(lerp, adam.mu, updates)
        nu = jax.tree.map(lambda v, g: v * b2 + ((1.0 - b2) * g) * g, adam.nu, updates)
        count = optax.safe_increment(adam.count)
        lr = learning_rate(adam.count) if callable(learning_rate) else learning_rate
        step_size = lr / _one_minus_power(b1, count)
        bc2_sqrt = jnp.sqrt(_one_minus_power(b2, count))
        new = jax.tree.map(lambda m, v: (-step_size * m) / (jnp.sqrt(v) / bc2_sqrt + eps), mu, nu)
        _, lr_state = lr_layout.update({}, lr_state)  # advances a schedule's count, as optax.adam's does
        return new, (optax.ScaleByAdamState(count=count, mu=mu, nu=nu), lr_state)

    return optax.GradientTransformation(init_fn, update_fn)


def make(cfg) -> optax.GradientTransformation:
    """The optax transformation of an optimiser section (see the module docstring)."""
    name = cfg.name
    lr = learning_rate(cfg)
    impl = cfg.get("impl", "optax")
    if impl not in IMPLS:
        raise ValueError(f"optimizer impl {impl!r} is not one of {IMPLS}")
    if impl == "torch" and name != "adam":
        raise ValueError(f"optimizer impl 'torch' is implemented for 'adam' only, not {name!r}: use impl='optax'")
    parts = []
    if float(cfg.clip_norm):
        clip = clip_by_global_norm_torch if impl == "torch" else optax.clip_by_global_norm
        parts.append(clip(float(cfg.clip_norm)))
    wd = float(cfg.weight_decay)
    if wd and name != "adamw":
        parts.append(optax.add_decayed_weights(wd))  # PyTorch's weight_decay: L2 added to the gradient
    if name == "adam" and impl == "torch":
        parts.append(adam_torch(lr, b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps)))
    elif name == "adam":
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
