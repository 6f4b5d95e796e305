"""Deep Image Prior's skip encoder-decoder (``DmitryUlyanov/deep-image-prior @ 042e0d4``, ``models/skip.py:5-100``,
``models/common.py:76-124``) in linen, NHWC.

The network *is* the prior: DIP fits a randomly initialised copy to one image, so the architecture, PyTorch's
default initialisation and train-mode BatchNorm are what make the method work, not details (spec
systems-more.md §7.5). Therefore:

* every convolution uses PyTorch's default init (kaiming-uniform a=sqrt(5) weight and bias,
  :func:`jaxinpaint.nn.conv.torch_kernel_init`), not Flax's lecun-normal kernel and zero bias;
* ``pad='reflection'`` is ``ReflectionPad2d((k - 1) // 2)`` followed by a VALID convolution, also for the
  stride-2 down convolutions (XLA's SAME pads asymmetrically at stride 2 and would shift every level);
* BatchNorm runs in **training mode** (batch statistics over N*H*W per channel, biased variance, eps 1e-5)
  because the original never calls ``net.eval()``, not even for the final image. :class:`TorchBatchNorm` keeps
  the running statistics as PyTorch does (momentum 0.1, unbiased variance) only when ``batch_stats`` is
  mutable; the solver never needs them.

Structure, per scale ``i`` (outermost first), as ``skip()`` builds it::

    deeper_i = conv(k_down_i, stride 2) -> BN -> act -> conv(k_down_i) -> BN -> act -> [scale i+1] -> Upsample x2
    skip_i   = conv(k_skip) -> BN -> act                        (only when num_channels_skip[i] > 0)
    out_i    = BN(cat(skip_i, deeper_i)) -> conv(k_up_i) -> BN -> act [-> conv 1x1 -> BN -> act if need1x1_up]

followed by a final 1x1 convolution to ``num_output_channels`` and, if ``need_sigmoid``, a sigmoid. The
concatenation centre-crops mismatched inputs like the original ``Concat`` (a no-op when H and W are multiples of
``2 ** n_scales``, :attr:`Skip.size_multiple`).

Parameter names are flat (``s<i>_down1``, ``s<i>_down1_bn``, ..., ``out``); ``jaxinpaint.systems.dip.convert``
maps the original's nested ``Sequential`` keys onto them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxinpaint.nn.conv import Conv2D

#: ``act_fun`` names of ``models/common.py:act`` that are supported (the original also accepts a module).
ACTIVATIONS = {
    "LeakyReLU": lambda x: nn.leaky_relu(x, 0.2),
    "ELU": nn.elu,
    "Swish": lambda x: x * nn.sigmoid(x),
    "none": lambda x: x,
}
PADS = ("reflection", "zero")
UPSAMPLE_MODES = ("nearest", "bilinear")


class TorchBatchNorm(nn.Module):
    """``torch.nn.BatchNorm2d`` (eps 1e-5, momentum 0.1), NHWC, with Flax's variable names.

    ``train=True`` normalises with the batch statistics (biased variance, computed two-pass as PyTorch's CPU
    kernel does: ``E[(x - mean)^2]``, not ``E[x^2] - mean^2``, which loses digits when |mean| >> std). The running
    statistics move (unbiased variance, like PyTorch) only when the ``batch_stats`` collection is mutable.
    """

    epsilon: float = 1e-5
    momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            if self.is_mutable_collection("batch_stats") and not self.is_initializing():
                n = x.size // c
                ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * var * (n / max(n - 1, 1))
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias


def _per_scale(value: int | str | Sequence, n: int, what: str) -> tuple:
    """``skip()`` accepts one value for every scale or a list with one per scale."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"Skip.{what}: {len(value)} values for {n} scales")
        return tuple(value)
    return (value,) * n


def _centre_crop(x: jax.Array, h: int, w: int) -> jax.Array:
    """``models/common.py:Concat``'s crop: the centre ``h x w`` window (offsets rounded down)."""
    dh, dw = (x.shape[1] - h) // 2, (x.shape[2] - w) // 2
    return x[:, dh:dh + h, dw:dw + w, :]


def upsample2x(x: jax.Array, mode: str) -> jax.Array:
    """``nn.Upsample(scale_factor=2, mode)``: nearest repeats pixels; bilinear uses half-pixel centres
    (``align_corners=False``), which ``jax.image.resize`` matches when enlarging."""
    if mode == "nearest":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if mode == "bilinear":
        n, h, w, c = x.shape
        return jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")
    raise ValueError(f"Skip.upsample_mode must be one of {UPSAMPLE_MODES}, got {mode!r}")


class Skip(nn.Module):
    """``models/skip.py:skip()``; fields mirror its keyword arguments (same defaults).

    ``downsample_mode`` other than ``'stride'`` (avg/max/lanczos) is not ported: every DIP inpainting setting
    uses strided convolutions. ``conv_impl`` is a runtime field (how convolutions are computed,
    ``jaxinpaint.nn.conv.Conv2D.impl``), not part of the architecture.
    """

    num_input_channels: int = 2
    num_output_channels: int = 3
    num_channels_down: Sequence[int] = (16, 32, 64, 128, 128)
    num_channels_up: Sequence[int] = (16, 32, 64, 128, 128)
    num_channels_skip: Sequence[int] = (4, 4, 4, 4, 4)
    filter_size_down: int | Sequence[int] = 3
    filter_size_up: int | Sequence[int] = 3
    filter_skip_size: int = 1
    need_sigmoid: bool = True
    need_bias: bool = True
    pad: str = "zero"
    upsample_mode: str | Sequence[str] = "nearest"
    downsample_mode: str | Sequence[str] = "stride"
    act_fun: str = "LeakyReLU"
    need1x1_up: bool = True
    conv_impl: str | None = None

    @property
    def n_scales(self) -> int:
        return len(self.num_channels_down)

    @property
    def size_multiple(self) -> int:
        """Total downsampling: H and W must be multiples of this for the skip concatenations to line up."""
        return 2 ** self.n_scales

    def _check(self) -> None:
        n = self.n_scales
        if not (len(self.num_channels_up) == len(self.num_channels_skip) == n) or n < 1:
            raise ValueError(f"Skip: num_channels_down/up/skip must have the same (non-zero) length, got "
                             f"{len(self.num_channels_down)}/{len(self.num_channels_up)}/{len(self.num_channels_skip)}")
        if self.pad not in PADS:
            raise ValueError(f"Skip.pad must be one of {PADS}, got {self.pad!r}")
        if self.act_fun not in ACTIVATIONS:
            raise ValueError(f"Skip.act_fun must be one of {sorted(ACTIVATIONS)}, got {self.act_fun!r}")
        for mode in _per_scale(self.downsample_mode, n, "downsample_mode"):
            if mode != "stride":
                raise NotImplementedError(f"Skip.downsample_mode {mode!r} is not ported (only 'stride', which every "
                                          "DIP inpainting setting uses)")

    def _conv(self, features: int, k: int, stride: int, name: str) -> Conv2D:
        return Conv2D(features, k, strides=stride, padding=(k - 1) // 2,
                      padding_mode="reflect" if self.pad == "reflection" else "zeros", use_bias=self.need_bias,
                      impl=self.conv_impl or "auto", name=name)

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        """``z`` (N, H, W, num_input_channels) -> (N, H, W, num_output_channels). Sows the ``Upsample`` output of
        scale ``i`` as ``intermediates/level<i>_up`` and the final logits as ``intermediates/logits``."""
        self._check()
        n = self.n_scales
        k_down = _per_scale(self.filter_size_down, n, "filter_size_down")
        k_up = _per_scale(self.filter_size_up, n, "filter_size_up")
        modes = _per_scale(self.upsample_mode, n, "upsample_mode")
        act = ACTIVATIONS[self.act_fun]

        def cba(x, features, k, stride, name):  # conv -> BN -> act
            x = self._conv(features, k, stride, name)(x)
            return act(TorchBatchNorm(name=f"{name}_bn")(x, train))

        def scale(i: int, x: jax.Array) -> jax.Array:
            d = cba(x, self.num_channels_down[i], k_down[i], 2, f"s{i}_down1")
            d = cba(d, self.num_channels_down[i], k_down[i], 1, f"s{i}_down2")
            if i < n - 1:
                d = scale(i + 1, d)
            d = upsample2x(d, modes[i])
            self.sow("intermediates", f"level{i}_up", d)
            if self.num_channels_skip[i]:
                s = cba(x, self.num_channels_skip[i], self.filter_skip_size, 1, f"s{i}_skip")
                h, w = min(s.shape[1], d.shape[1]), min(s.shape[2], d.shape[2])
                y = jnp.concatenate([_centre_crop(s, h, w), _centre_crop(d, h, w)], axis=-1)
            else:
                y = d
            y = TorchBatchNorm(name=f"s{i}_bn")(y, train)
            y = cba(y, self.num_channels_up[i], k_up[i], 1, f"s{i}_up")
            if self.need1x1_up:
                y = cba(y, self.num_channels_up[i], 1, 1, f"s{i}_up1x1")
            return y

        y = scale(0, z)
        y = self._conv(self.num_output_channels, 1, 1, "out")(y)
        self.sow("intermediates", "logits", y)
        return nn.sigmoid(y) if self.need_sigmoid else y


def from_kwargs(kwargs: dict[str, Any], **runtime) -> Skip:
    """A :class:`Skip` from ``skip()``'s keyword arguments (e.g. a fixture's ``config_json["kwargs"]``)."""
    fields = {f for f in Skip.__dataclass_fields__ if f not in ("parent", "name")}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"skip(): unknown argument(s) {unknown}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return Skip(**kw, **runtime)


def count_params(module: Skip, input_channels: int | None = None, size: int | None = None) -> int:
    """Number of trainable parameters (PyTorch's ``sum(p.numel() for p in net.parameters())``), from shapes only."""
    size = size or module.size_multiple
    c = input_channels or module.num_input_channels
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, c)))
    return int(sum(x.size for x in jax.tree.leaves(shapes["params"])))
