"""BatchNorm whose batch statistics can be computed per group of the batch (per data-parallel device).

LaMa trains with PyTorch DDP and no SyncBatchNorm, so each GPU normalises its activations with the statistics
of its own shard of the batch (e.g. 10 images). Under ``jax.jit`` on a batch-sharded array,
``flax.linen.BatchNorm`` reduces over the *global* batch instead, which changes the effective BN batch size
and hence the training dynamics. :class:`BatchNorm` makes that a configuration choice:

* ``num_groups=1``: statistics over the whole batch; numerically the same as ``nn.BatchNorm(momentum=0.9,
  epsilon=1e-5)`` (same formula: ``E[x^2] - E[x]^2`` clamped at 0, in float32).
* ``num_groups=G``: the batch axis is split into ``G`` *contiguous* groups, each normalised with its own
  biased mean and variance. With ``G`` equal to the number of data-parallel devices this reproduces DDP's
  per-device statistics, and because a batch-sharded array is laid out contiguously over the devices, every
  group lives on one device and XLA needs no cross-device communication to normalise (forward or backward).

Running statistics (used in eval mode) are updated with the *average over groups* of the group means and the
group variances, ``ra = momentum * ra + (1 - momentum) * stat`` as Flax does. The variance that enters
``running_var`` is Flax's biased one by default; ``unbiased_running_var=True`` multiplies it by n / (n - 1)
(n = elements per channel of a group) as PyTorch's ``BatchNorm2d`` does (``jaxinpaint.nn.conv.batch_norm``, the
torch-semantics helper every ported PyTorch network uses, sets it; checked against LaMa's own training step in
``tests/test_train_parity.py``). The factor matters where few elements enter the statistics: 1 % for the
7x7 maps of a PatchGAN on a batch of 2. PyTorch DDP keeps rank 0's buffers (``broadcast_buffers=True`` copies
them to the other ranks at each forward); averaging over groups costs one tiny all-reduce of ``2C`` floats per
layer and is a better estimate. None of this changes the training-mode outputs or gradients, only the
eval-time statistics.

The variables have exactly Flax's names, shapes and initial values (``params``: ``scale`` ones, ``bias``
zeros; ``batch_stats``: ``mean`` zeros, ``var`` ones, all of shape ``(C,)``), so checkpoints and converted
torch weights are interchangeable with ``nn.BatchNorm``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes
from jax import lax

Dtype = Any


def grouped_moments(
        x: jax.Array, num_groups: int, axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-group biased mean and variance over all axes but the last, in at least float32.

    Args:
        x: ``(N, ..., C)`` input; ``N`` must be divisible by ``num_groups``.
        num_groups: number of contiguous groups the batch axis is split into.
        axis_name: optional mapped axis (``shard_map``/``pmap``) over which the group moments are averaged, as
            Flax's ``axis_name`` does.

    Returns:
        ``(mean, var)``, each ``(num_groups, C)``. The variance is ``E[x^2] - E[x]^2`` clamped at 0: Flax's
        default (``use_fast_variance``), so ``num_groups=1`` matches ``nn.BatchNorm`` to float rounding.
    """
    stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
    xg = x.astype(stats_dtype).reshape((num_groups, x.shape[0] // num_groups) + x.shape[1:])
    axes = tuple(range(1, xg.ndim - 1))
    mean = jnp.mean(xg, axis=axes)
    mean_sq = jnp.mean(lax.square(xg), axis=axes)
    if axis_name is not None:
        # One collective for both moments, as Flax does, to save latency.
        mean, mean_sq = lax.pmean(jnp.stack([mean, mean_sq]), axis_name)
    # E[x^2] - E[x]^2 can come out slightly negative through round-off; clamp to avoid NaNs in rsqrt.
    var = jnp.maximum(0.0, mean_sq - lax.square(mean))
    return mean, var


class BatchNorm(nn.Module):
    """Drop-in for ``flax.linen.BatchNorm`` over the last axis, with optional per-group batch statistics.

    Attributes:
        use_running_average: eval mode: normalise with the stored running statistics. May be overridden by
            the ``use_running_average`` call argument, as in Flax.
        momentum: running-average decay, Flax's convention (torch's momentum 0.1 is 0.9 here).
        epsilon: added to the variance before the reciprocal square root.
        num_groups: number of contiguous batch groups with their own statistics (1 = whole batch). Set it to
            the number of data-parallel devices for DDP-style per-device statistics.
        dtype: dtype of the output (None: inferred from the input and the parameters, as Flax does).
            Statistics are always computed in at least float32.
        param_dtype: dtype of ``scale`` and ``bias``.
        axis_name: mapped axis name (``shard_map``/``pmap``) over which batch moments are averaged, exactly as
            Flax's ``axis_name``; not needed under plain ``jax.jit``.
        unbiased_running_var: update ``var`` with the unbiased batch variance (× n / (n - 1), n the elements per
            channel of a group), as PyTorch does; the normalisation always uses the biased one (PyTorch and Flax
            alike). False: Flax's biased update.
    """

    use_running_average: bool | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5
    num_groups: int = 1
    dtype: Dtype | None = jnp.float32
    param_dtype: Dtype = jnp.float32
    axis_name: str | None = None
    unbiased_running_var: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        """Normalises ``x`` (``(N, ..., C)``) with batch-group or running statistics.

        During initialisation (``self.is_initializing()``) the running statistics are not updated and
        ``axis_name`` is ignored, like Flax, so ``init`` needs neither representative data nor a mapped axis.
        """
        use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                             use_running_average)
        where = self.name or "BatchNorm"
        if x.ndim < 2:
            raise ValueError(f"{where}: input must have a batch axis and a feature axis (rank >= 2), "
                             f"got shape {x.shape}")
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (features,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (features,))
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)

        if use_running_average:
            groups = 1
            mean, var = ra_mean.value[None], ra_var.value[None]
        else:
            groups = int(self.num_groups)
            if groups < 1:
                raise ValueError(f"{where}: num_groups must be >= 1, got {self.num_groups}")
            if x.shape[0] % groups:
                raise ValueError(f"{where}: batch size {x.shape[0]} (input shape {x.shape}) is not divisible "
                                 f"by num_groups={groups}")
            axis_name = None if self.is_initializing() else self.axis_name
            mean, var = grouped_moments(x, groups, axis_name)
            if not self.is_initializing():
                # Mean over equal-sized groups: the global mean, and the average within-group variance.
                batch_var = jnp.mean(var, axis=0)
                if self.unbiased_running_var:
                    n = x.size // (groups * features)
                    if n < 2:
                        raise ValueError(f"{where}: the unbiased running variance needs more than 1 value per "
                                         f"channel and statistics group, got input shape {x.shape} in {groups} "
                                         "group(s)")
                    batch_var = batch_var * (n / (n - 1))
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * jnp.mean(mean, axis=0)
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * batch_var

        # Same arithmetic order as Flax's _normalize: (x - mean) * (rsqrt(var + eps) * scale) + bias.
        xg = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
        bshape = (groups,) + (1,) * (x.ndim - 1) + (features,)
        mul = lax.rsqrt(var + self.epsilon) * scale
        y = (xg - mean.reshape(bshape)) * mul.reshape(bshape) + bias.reshape((features,))
        out_dtype = dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
        return jnp.asarray(y.reshape(x.shape), out_dtype)
