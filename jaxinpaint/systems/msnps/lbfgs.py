"""``mylbfgs``: the L-BFGS variant MSNPS optimises each scale with, reimplemented in JAX.

Why not ``optax.lbfgs``: MSNPS (``leehomyc/Faster-High-Res-Neural-Inpainting``, ``mylib/myoptimizer.lua``,
systems-more.md §5.2) runs a modified Torch ``optim.lbfgs`` with **no line search** and a fixed step, and its
objective value is never computed (the wrapper returns 0), so only the gradients drive it. optax's L-BFGS
needs a line search on the value and scales its first step differently; its iterates would differ from the
first step on. This module reproduces the update rule exactly:

* iteration 1: direction ``d = -g``, step ``t = min(1, 1 / ||g||_1) * lr`` (the only scaled step);
* later iterations: with ``y = g - g_old`` and ``s = t_prev * d_prev``, when ``y.s > 1e-10`` the pair
  ``(s, y)`` is appended to the history (the oldest pair dropped once ``history`` pairs are stored) and the
  initial inverse-Hessian scale becomes ``Hdiag = y.s / y.y``; the direction is the two-loop recursion
  ``d = -H g`` over the stored pairs (pairs rejected by the curvature test leave the history and ``Hdiag``
  unchanged, the direction is still recomputed); step ``t = lr``;
* before stepping, ``g.d > -tol_x`` (not a descent direction) stops the run *without* taking the step;
* after ``x += t d`` the gradient is re-evaluated, except in the last iteration (the original does not
  re-evaluate there either), and the run stops when ``sum|g| <= tol_fun``, ``sum|t d| <= tol_x`` or
  ``|f - f_old| < tol_x``, or when ``max_eval`` evaluations were made (default ``1.25 * max_iter``, as
  Torch); a run also returns at once when the initial ``sum|g| <= tol_fun``.

The gradient is multiplied by ``mask`` after every evaluation (the original's "add by chris"; MSNPS passes
all ones). MSNPS uses ``history=25``, ``max_iter=100``, ``lr=1`` and ``tol_x = tol_fun = 0``; with those
tolerances only a non-descent direction (or an exactly zero gradient) ends a scale early.

The loop is one ``lax.scan`` of ``max_iter`` steps with a ``done`` flag (a stopped run keeps its point; the
objective is not evaluated any more), so the whole optimisation compiles once. The history is a fixed
``(history, n)`` buffer ordered oldest first plus a count, which makes the shift-when-full of the original a
``jnp.roll``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxinpaint import contract

#: ``opfunc(x) -> (f, g, aux)``: the value the optimiser sees (only used by the ``tol_x`` test on changes of
#: f), the gradient (same shape as x) and anything to record per evaluation (a pytree of scalars).
OpFunc = Callable[[jax.Array], tuple[jax.Array, jax.Array, Any]]


@dataclasses.dataclass(frozen=True)
class LBFGSConfig:
    """``mylbfgs``'s settings (``optim_state`` of ``transfer_CNNMRF_wrapper.lua``).

    Attributes:
      max_iter: iterations (``maxIter``; MSNPS: 100 per scale).
      history: stored correction pairs (``nCorrection``; MSNPS: 25, Torch's default 100).
      lr: the fixed step (``learningRate``, 1).
      tol_fun: stop when ``sum|g| <= tol_fun`` (MSNPS: 0).
      tol_x: stop when ``g.d > -tol_x``, ``sum|t d| <= tol_x`` or ``|f - f_old| < tol_x`` (MSNPS: 0).
      max_eval: stop after this many evaluations (``maxEval``); ``None`` = ``1.25 * max_iter``.
    """

    max_iter: int = 100
    history: int = 25
    lr: float = 1.0
    tol_fun: float = 0.0
    tol_x: float = 0.0
    max_eval: float | None = None

    def __post_init__(self):
        if self.max_iter < 1 or self.history < 1:
            raise ValueError(f"LBFGSConfig: max_iter and history must be >= 1, got {self}")


def _two_loop(g, S, Y, count, hdiag):
    """``d = -H g`` by the two-loop recursion over the first ``count`` pairs of S, Y (oldest first).

    Written as the original (``q`` starts at ``-g``, so ``d`` comes out directly); unused slots are skipped
    by masking, so the loops have a static length.
    """
    m = S.shape[0]
    valid = jnp.arange(m) < count
    ys = jnp.sum(S * Y, axis=1)
    ro = jnp.where(valid, 1.0 / jnp.where(valid, ys, 1.0), 0.0)

    def backward(q, i):  # i = count-1 ... 0 (newest first); invalid slots contribute nothing
        al = jnp.where(valid[i], jnp.dot(S[i], q) * ro[i], 0.0)
        return q - al * Y[i], al

    q, als = jax.lax.scan(backward, -g, jnp.arange(m)[::-1])
    als = als[::-1]  # als[i] belongs to pair i
    r = q * hdiag

    def forward(r, i):  # i = 0 ... count-1 (oldest first)
        be = jnp.dot(Y[i], r) * ro[i]
        return jnp.where(valid[i], r + (als[i] - be) * S[i], r), None

    r, _ = jax.lax.scan(forward, r, jnp.arange(m))
    return r


def minimize(opfunc: OpFunc, x0: jax.Array, config: LBFGSConfig = LBFGSConfig(), *,
             mask: jax.Array | None = None, trace_x: bool = False, progress: tuple | None = None):
    """Runs ``mylbfgs`` from ``x0``; traceable (call it inside ``jax.jit``).

    Args:
      opfunc: ``x -> (f, g, aux)`` (see :data:`OpFunc`).
      x0: the starting point (any shape; the optimiser works on the flattened vector).
      config: :class:`LBFGSConfig`.
      mask: multiplies every gradient (default ones).
      trace_x: also return the iterate after every iteration (tests).
      progress: ``(offset, total)`` (may be traced): each iteration is reported to
        :func:`jaxinpaint.contract.report_progress` as ``offset + i`` of ``total`` (several scales share one bar).

    Returns:
      ``(x, info)``: the final point, and ``info`` with ``f`` and ``aux`` of the evaluation at the start of
      every iteration (``max_iter`` entries: the initial point, then the point after each step; entries after
      a stop repeat nothing and are NaN), ``n_iter`` (iterations that ran; a run stopped by ``g.d > -tol_x``
      counts that iteration, as the original's ``state.nIter``), ``stopped`` (bool per iteration: no step was
      taken in it) and, with ``trace_x``, ``x`` (the point after each iteration).
    """
    shape = x0.shape
    n = x0.size
    m = int(config.history)
    max_iter = int(config.max_iter)
    max_eval = float(config.max_eval) if config.max_eval is not None else max_iter * 1.25
    lr, tol_x, tol_fun = float(config.lr), float(config.tol_x), float(config.tol_fun)
    gmask = jnp.ones((n,), x0.dtype) if mask is None else jnp.reshape(mask, (n,)).astype(x0.dtype)

    def evaluate(x):
        f, g, aux = opfunc(jnp.reshape(x, shape))
        return jnp.asarray(f, jnp.float32), jnp.reshape(g, (n,)) * gmask, aux

    x = jnp.reshape(x0, (n,))
    f, g, aux = evaluate(x)
    nan_aux = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), aux)
    dtype = x.dtype
    carry = dict(x=x, f=f, g=g, aux=aux, d=jnp.zeros_like(x), t=jnp.zeros((), dtype), g_old=jnp.zeros_like(x),
                 f_old=jnp.zeros((), jnp.float32), S=jnp.zeros((m, n), dtype), Y=jnp.zeros((m, n), dtype),
                 count=jnp.zeros((), jnp.int32), hdiag=jnp.ones((), dtype),
                 done=jnp.sum(jnp.abs(g)) <= tol_fun, evals=jnp.ones((), jnp.float32))

    def iteration(c, i):
        if progress is not None:
            contract.report_progress(progress[0] + i, progress[1], every=1)  # slow iterations: report each one
        first = i == 0
        recorded = (jnp.where(c["done"], jnp.nan, c["f"]),
                    jax.tree.map(lambda a, b: jnp.where(c["done"], b, a), c["aux"], nan_aux))

        def direction(c):
            y = c["g"] - c["g_old"]
            s = c["d"] * c["t"]
            ys = jnp.dot(y, s)
            accept = ys > 1e-10
            full = c["count"] == m
            S = jnp.where(full, jnp.roll(c["S"], -1, axis=0), c["S"])
            Y = jnp.where(full, jnp.roll(c["Y"], -1, axis=0), c["Y"])
            slot = jnp.minimum(c["count"], m - 1)
            S = jnp.where(accept, S.at[slot].set(s), c["S"])
            Y = jnp.where(accept, Y.at[slot].set(y), c["Y"])
            count = jnp.where(accept, jnp.minimum(c["count"] + 1, m), c["count"])
            hdiag = jnp.where(accept, ys / jnp.where(accept, jnp.dot(y, y), 1.0), c["hdiag"])
            d = _two_loop(c["g"], S, Y, count, hdiag)
            return d, S, Y, count, hdiag

        def first_direction(c):
            return -c["g"], c["S"], c["Y"], c["count"], jnp.ones((), dtype)

        d, S, Y, count, hdiag = jax.lax.cond(first, first_direction, direction, c)
        g_old, f_old = c["g"], c["f"]
        gtd = jnp.dot(c["g"], d)
        no_descent = gtd > -tol_x
        t = jnp.where(first, jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(c["g"]))) * lr, lr).astype(dtype)
        stop_now = c["done"] | no_descent
        x_new = jnp.where(stop_now, c["x"], c["x"] + t * d)
        last = i == max_iter - 1
        skip_eval = stop_now | last

        f_new, g_new, aux_new = jax.lax.cond(
            skip_eval, lambda x: (c["f"], c["g"], c["aux"]), evaluate, x_new)
        evals = c["evals"] + jnp.where(skip_eval, 0.0, 1.0)
        stop_after = (last | (evals >= max_eval) | (jnp.sum(jnp.abs(g_new)) <= tol_fun)
                      | (jnp.sum(jnp.abs(d * t)) <= tol_x) | (jnp.abs(f_new - f_old) < tol_x))
        keep = lambda old, new: jnp.where(c["done"], old, new)  # noqa: E731  (a finished run changes nothing)
        new = dict(x=x_new, f=keep(c["f"], f_new), g=keep(c["g"], g_new),
                   aux=jax.tree.map(keep, c["aux"], aux_new), d=keep(c["d"], d), t=keep(c["t"], t),
                   g_old=keep(c["g_old"], g_old), f_old=keep(c["f_old"], f_old), S=keep(c["S"], S),
                   Y=keep(c["Y"], Y), count=keep(c["count"], count), hdiag=keep(c["hdiag"], hdiag),
                   done=stop_now | stop_after, evals=evals)
        out = {"f": recorded[0], "aux": recorded[1], "ran": ~c["done"], "stopped": stop_now}
        if trace_x:
            out["x"] = jnp.reshape(x_new, shape)
        return new, out

    carry, outs = jax.lax.scan(iteration, carry, jnp.arange(max_iter))
    info = {"f": outs["f"], "aux": outs["aux"], "n_iter": jnp.sum(outs["ran"].astype(jnp.int32)),
            "stopped": outs["stopped"]}
    if trace_x:
        info["x"] = outs["x"]
    return jnp.reshape(carry["x"], shape), info


__all__ = ["LBFGSConfig", "OpFunc", "minimize"]
