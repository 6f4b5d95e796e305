"""Total-variation inpainting: the always-available baseline (no network, no weights).

The textbook method (Rudin-Osher-Fatemi's TV prior used for inpainting, Chan and Shen 2001): the hole is filled
with the image of least total variation that agrees with the known pixels,

    minimise over x_H   TV(x)   subject to   x_K = y_K,

so only the hole pixels H are variables; the known pixels K are constants of the problem. The hole starts at
the mean known colour (per channel) and is solved coarse to fine (``levels``); the optimiser is L-BFGS
(``optax.lbfgs``, zoom line search) by default or Adam, and each level is one ``lax.scan`` of ``iterations``
steps (all levels in one jitted program) whose objective values come back in ``info['objective']``.

TV, per channel, with forward differences (the difference across the last row/column is 0, i.e. Neumann
boundary):

* ``'isotropic'`` (default): ``sum_p sqrt(dx_p^2 + dy_p^2 + eps^2)``, the smoothed Euclidean norm of the
  gradient. The ``eps`` (config ``eps``, 1e-3 in [0, 1] pixel units, i.e. a quarter of one 8-bit level) makes
  the objective differentiable where the image is flat, which L-BFGS needs; smaller values are closer to true
  TV but slower to converge.
* ``'anisotropic'``: ``sum_p sqrt(dx_p^2 + eps^2) + sqrt(dy_p^2 + eps^2)``, the L1 norm of the gradient with the
  same smoothing of ``|.|``.

Only the terms that involve a hole pixel vary; the objective reported is their sum divided by the number of
hole values (pixels x channels), so it reads as "TV per hole value" and is comparable across image sizes. The
run is deterministic (no random choices; the seed is ignored). The prediction is the optimised image; the
caller composites it, so known pixels come back byte-identical.

Speed (the defaults, a 256 px photo crop with a 10% square hole, the shared 2-core CPU): 3 levels x 200 L-BFGS
steps run in about 3 s (~200 it/s) once compiled; compiling takes about 8 s on first use. L-BFGS from a flat fill
at full size alone needs ~1000 steps to reach the same objective (TV moves information about a pixel per step),
hence the levels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxinpaint import contract

NORMS = ("isotropic", "anisotropic")
OPTIMIZERS = ("lbfgs", "adam")


def default_config() -> ml_collections.ConfigDict:
    """The solver's settings.

    Fields:
      norm: ``'isotropic'`` (default) or ``'anisotropic'`` TV (module docstring).
      eps: smoothing of the norms, in [0, 1] pixel units (1e-3).
      optimizer: ``'lbfgs'`` (default; ``optax.lbfgs`` with its zoom line search) or ``'adam'``.
      iterations: optimiser steps per level (Adam needs a few thousand where L-BFGS needs a few hundred).
      levels: coarse-to-fine levels (``solve``): 1 solves at full size only; each extra level first solves a
        2x-halved copy and starts from its upsampled result (levels stop before a side drops below 8 px).
      lr: Adam's learning rate (unused by L-BFGS, whose line search picks the step).
      memory: L-BFGS history size (optax's default 10).
    """
    return ml_collections.ConfigDict({"norm": "isotropic", "eps": 1e-3, "optimizer": "lbfgs", "iterations": 200,
                                      "levels": 3, "lr": 0.01, "memory": 10})


def _check(config) -> None:
    if config.norm not in NORMS:
        raise ValueError(f"tv: config field 'norm' must be one of {NORMS}, got {config.norm!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"tv: config field 'optimizer' must be one of {OPTIMIZERS}, got {config.optimizer!r}")
    if int(config.iterations) < 1:
        raise ValueError(f"tv: config field 'iterations' must be >= 1, got {config.iterations}")
    if int(config.levels) < 1:
        raise ValueError(f"tv: config field 'levels' must be >= 1, got {config.levels}")
    if float(config.eps) <= 0:
        raise ValueError(f"tv: config field 'eps' must be > 0 (the smoothed norm), got {config.eps}")


def forward_differences(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(dx, dy)`` of (N, H, W, C): ``x[., i, j+1] - x[., i, j]`` and ``x[., i+1, j] - x[., i, j]``; 0 past the
    edge."""
    dx = jnp.pad(x[:, :, 1:] - x[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
    dy = jnp.pad(x[:, 1:] - x[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))
    return dx, dy


def tv_terms(x: jax.Array, *, norm: str = "isotropic", eps: float = 1e-3) -> jax.Array:
    """Per-pixel, per-channel TV terms (N, H, W, C) of the smoothed ``norm`` (module docstring)."""
    dx, dy = forward_differences(x)
    e2 = jnp.float32(eps) ** 2
    if norm == "isotropic":
        return jnp.sqrt(dx * dx + dy * dy + e2)
    if norm == "anisotropic":
        return jnp.sqrt(dx * dx + e2) + jnp.sqrt(dy * dy + e2)
    raise ValueError(f"tv: unknown norm {norm!r}; expected one of {NORMS}")


def involved(mask: jax.Array) -> jax.Array:
    """(N, H, W, 1) 1 where pixel p's TV term involves a hole pixel (p, its right or its lower neighbour)."""
    right = jnp.pad(mask[:, :, 1:], ((0, 0), (0, 0), (0, 1), (0, 0)))
    down = jnp.pad(mask[:, 1:], ((0, 0), (0, 1), (0, 0), (0, 0)))
    return jnp.maximum(mask, jnp.maximum(right, down))


def mean_fill(image: jax.Array, mask: jax.Array) -> jax.Array:
    """The image with its hole set to the mean known colour (per channel; mid-grey when nothing is known)."""
    known = 1.0 - mask
    count = jnp.sum(known, axis=(1, 2), keepdims=True)
    mean = jnp.where(count > 0, jnp.sum(image * known, axis=(1, 2), keepdims=True) / jnp.maximum(count, 1.0), 0.5)
    return known * image + mask * mean


def _halve(image: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """2x2 average of the image, 2x2 max of the mask (a block touching the hole is hole); odd sizes edge-padded."""
    n, h, w, _ = image.shape
    pad = ((0, 0), (0, h % 2), (0, w % 2), (0, 0))
    image, mask = jnp.pad(image, pad, mode="edge"), jnp.pad(mask, pad, mode="edge")
    hh, ww = image.shape[1] // 2, image.shape[2] // 2
    image = image.reshape(n, hh, 2, ww, 2, -1).mean(axis=(2, 4))
    mask = mask.reshape(n, hh, 2, ww, 2, 1).max(axis=(2, 4))
    return image, mask


def _double(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour 2x upsampling cropped to ``size`` (inverse of ``_halve``'s layout)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)[:, :size[0], :size[1]]


def solve(resources, image: jax.Array, mask: jax.Array, config, rng) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Minimises TV over the hole (module docstring); ``(pred, {'objective': f32[levels * iterations]})``.

    With ``levels`` > 1 the problem is first solved on 2x-halved copies (coarsest first) and each result,
    upsampled, starts the next finer level: TV's gradient only moves information a pixel or so per iteration,
    so a large hole converges in far fewer fine-level iterations from a coarse solution than from a flat fill.
    """
    del resources, rng  # no network; deterministic
    _check(config)
    mask = (mask > 0.5).astype(jnp.float32)
    pyramid = [(image, mask)]
    for _ in range(int(config.levels) - 1):
        if min(pyramid[-1][0].shape[1:3]) < 8:
            break
        pyramid.append(_halve(*pyramid[-1]))
    n_iters = int(config.iterations)
    total = n_iters * len(pyramid)
    init, objectives = None, []
    for level, (im, m) in enumerate(reversed(pyramid)):
        z0 = mean_fill(im, m) if init is None else _double(init, im.shape[1:3])
        init, values = _solve_level(im, m, z0, config, offset=level * n_iters, total=total)
        objectives.append(values)
    return init, {"objective": jnp.concatenate(objectives), "levels": jnp.asarray(len(pyramid), jnp.int32)}


def _solve_level(image, mask, z0, config, *, offset: int, total: int):
    """One level's ``lax.scan`` from the hole values ``z0``; ``(image, objective after each step)``."""
    known = 1.0 - mask
    weight = involved(mask)
    n_values = jnp.maximum(jnp.sum(mask) * image.shape[-1], 1.0)
    fixed = image * known
    norm, eps = str(config.norm), float(config.eps)
    n_iters = int(config.iterations)
    z0 = known * image + mask * z0

    def objective(z):
        # Only z's hole values enter: the known pixels are constants, so their gradient is exactly 0 and
        # neither optimiser moves them.
        x = fixed + mask * z
        return jnp.sum(tv_terms(x, norm=norm, eps=eps) * weight) / n_values

    if config.optimizer == "lbfgs":
        tx = optax.lbfgs(memory_size=int(config.memory))
        value_and_grad = optax.value_and_grad_from_state(objective)

        def step(carry, i):
            z, state = carry
            value, grad = value_and_grad(z, state=state)
            updates, state = tx.update(grad, state, z, value=value, grad=grad, value_fn=objective)
            z = optax.apply_updates(z, updates)
            contract.report_progress(i + offset, total, objective=value)
            return (z, state), value
    else:
        tx = optax.adam(float(config.lr))
        value_and_grad = jax.value_and_grad(objective)

        def step(carry, i):
            z, state = carry
            value, grad = value_and_grad(z)
            updates, state = tx.update(grad, state, z)
            z = optax.apply_updates(z, updates)
            contract.report_progress(i + offset, total, objective=value)
            return (z, state), value

    (z, _), values = jax.lax.scan(step, (z0, tx.init(z0)), jnp.arange(n_iters))
    # Values are those *before* each step; the last entry is replaced by the final image's objective so the
    # array ends where the result is.
    return fixed + mask * z, jnp.concatenate([values[1:], objective(z)[None]])


SOLVER = contract.Solver(
    name="tv",
    title="Total-variation inpainting (Chan & Shen 2001): least-TV fill of the hole, known pixels fixed",
    default_config=default_config,
    solve=solve,
    iterations=lambda config: int(config.iterations) * int(config.levels),
    licence="Apache-2.0 (jaxinpaint; textbook method)",
)
