"""Partial convolution (Liu et al., ECCV 2018) with NVIDIA/partialconv's exact semantics, NHWC.

A partial convolution only looks at valid pixels: the input is multiplied by the mask, the response is
re-normalised by ``window size / number of valid inputs in the window`` so that a half-covered window gives
the same scale as a full one, and the layer hands back an updated mask (1 wherever the window saw anything
valid), which is how holes shrink layer by layer in a PConv U-Net.

This module follows ``NVIDIA/partialconv: models/partialconv2d.py`` (``PartialConv2d`` with ``return_mask``):

* ``U = conv(mask, ones)`` with the layer's stride/padding/dilation, ``ratio = slide_winsize / (U + 1e-8)``,
  ``U = clip(U, 0, 1)``, ``ratio = ratio * U``;
* ``out = ((conv(x * mask) - b) * ratio + b) * U`` with bias, ``conv(x * mask) * ratio`` without, so the
  bias is added after the re-normalisation and zeroed where the window held no valid input.

**Masks use 1 = valid** here, as upstream (the project-wide convention is 1 = hole; PConv models flip it at
their boundary). Unlike upstream, which caches the last mask and ratio inside the module, the mask path is
recomputed on every call under ``stop_gradient``, which keeps the layer pure and jit-safe.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxinpaint.nn.conv import torch_bias_init, torch_kernel_init

Dtype = Any

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Upstream's epsilon in ``slide_winsize / (U + eps)``; it suggests 1e-6 under mixed precision.
RATIO_EPS = 1e-8


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"PartialConv2D: {name} must be an int or a pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def window_valid_count(mask: jax.Array, kernel_size: tuple[int, int], strides: tuple[int, int],
                       padding: tuple[int, int], dilation: tuple[int, int]) -> jax.Array:
    """``U = conv(mask, ones)``: how many valid inputs (over H, W and channels) each output window sees.

    Summing the channels first and convolving a one-channel ones kernel equals upstream's
    ``(out, in, kh, kw)`` ones kernel (whose output channels are all identical) at a fraction of the cost.
    Zero padding, as torch.

    Args:
      mask: (N, H, W, C) mask, 1 = valid.
      kernel_size, strides, padding, dilation: the layer's geometry (padding in pixels per side).

    Returns:
      (N, H_out, W_out, 1) float32 counts.
    """
    summed = jnp.sum(mask.astype(jnp.float32), axis=-1, keepdims=True)
    ones = jnp.ones((*kernel_size, 1, 1), jnp.float32)
    return lax.conv_general_dilated(
        summed, ones, window_strides=strides, padding=[(padding[0], padding[0]), (padding[1], padding[1])],
        rhs_dilation=dilation, dimension_numbers=_DIMENSION_NUMBERS, precision=lax.Precision.HIGHEST)


class PartialConv2D(nn.Module):
    """NVIDIA's ``PartialConv2d(return_mask=True)`` in NHWC: ``y, new_mask = layer(x, mask)``.

    Attributes:
      features: output channels.
      kernel_size: int or (kh, kw).
      strides: int stride.
      padding: zero padding in pixels on every side (int or (ph, pw)), as torch's ``padding``.
      dilation: int dilation.
      use_bias: whether there is a bias (added after the re-normalisation, zeroed where no input was valid).
      multi_channel: upstream's ``multi_channel``. True: the mask has one channel per input channel,
        ``slide_winsize = C_in * kh * kw`` and the returned mask has ``features`` (identical) channels.
        False: a one-channel mask, ``slide_winsize = kh * kw`` and a one-channel returned mask.
        A one-channel mask given to a multi-channel layer is broadcast over the input channels (identical to
        passing it repeated ``C_in`` times).

    Parameters are ``kernel`` (HWIO, as ``flax.linen.Conv``) and ``bias``, initialised like torch's Conv2d so
    a torch ``weight`` (O, I, kh, kw) ports with ``transpose(2, 3, 1, 0)``.
    """

    features: int
    kernel_size: int | tuple[int, int]
    strides: int = 1
    padding: int | tuple[int, int] = 0
    dilation: int = 1
    use_bias: bool = True
    multi_channel: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Applies the partial convolution.

        Args:
          x: (N, H, W, C_in) features.
          mask: (N, H, W, C_in) when ``multi_channel`` (or one channel, broadcast), (N, H, W, 1) otherwise;
            1 = valid, 0 = hole. A leading batch dimension of 1 broadcasts over the batch. ``None`` means
            "partial-convolution padding": an all-ones mask, which still re-weights windows that overlap the
            zero padding at the image border.

        Returns:
          ``(y, new_mask)``: y is (N, H_out, W_out, features); new_mask is (N, H_out, W_out, features) in
          multi-channel mode and (N, H_out, W_out, 1) otherwise, 1 where the window saw a valid input.
        """
        if x.ndim != 4:
            raise ValueError(f"PartialConv2D: x must be NHWC (4-D), got shape {x.shape}")
        n, h, w, c_in = x.shape
        kh, kw = _pair(self.kernel_size, "kernel_size")
        geometry = dict(kernel_size=(kh, kw), strides=_pair(self.strides, "strides"),
                        padding=_pair(self.padding, "padding"), dilation=_pair(self.dilation, "dilation"))
        mask_channels = c_in if self.multi_channel else 1
        if mask is None:
            mask_for_x = None
            mask = jnp.ones((1, h, w, mask_channels), jnp.float32)
        else:
            self._check_mask(mask, x.shape)
            mask = mask.astype(jnp.float32)
            mask_for_x = mask
            if mask.shape[-1] != mask_channels:  # one-channel mask in multi-channel mode
                mask = jnp.broadcast_to(mask, (*mask.shape[:-1], mask_channels))

        slide_winsize = float(mask_channels * kh * kw)
        mask = lax.stop_gradient(mask)
        count = lax.stop_gradient(window_valid_count(mask, **geometry))
        ratio = slide_winsize / (count + RATIO_EPS)
        update_mask = jnp.clip(count, 0.0, 1.0)
        ratio = ratio * update_mask

        kernel_shape = (kh, kw, c_in, self.features)
        kernel = self.param("kernel", torch_kernel_init, kernel_shape, self.param_dtype)
        masked = x if mask_for_x is None else x * mask_for_x.astype(x.dtype)
        ph, pw = geometry["padding"]
        raw = lax.conv_general_dilated(
            masked.astype(self.dtype), kernel.astype(self.dtype), window_strides=geometry["strides"],
            padding=[(ph, ph), (pw, pw)], rhs_dilation=geometry["dilation"],
            dimension_numbers=_DIMENSION_NUMBERS)
        # ``raw`` is conv(x * mask) without the bias, i.e. upstream's ``raw_out - bias``.
        y = raw * ratio.astype(raw.dtype)
        if self.use_bias:
            bias = self.param("bias", torch_bias_init(math.prod(kernel_shape[:-1])), (self.features,),
                              self.param_dtype)
            y = (y + bias.astype(self.dtype)) * update_mask.astype(y.dtype)

        update_mask = jnp.broadcast_to(update_mask, (n, *update_mask.shape[1:3],
                                                     self.features if self.multi_channel else 1))
        return y, update_mask

    def _check_mask(self, mask: jax.Array, x_shape: tuple[int, ...]) -> None:
        n, h, w, c_in = x_shape
        allowed = (c_in, 1) if self.multi_channel else (1,)
        ok = (mask.ndim == 4 and mask.shape[0] in (n, 1) and mask.shape[1:3] == (h, w)
              and mask.shape[3] in allowed)
        if not ok:
            want = f"({n} or 1, {h}, {w}, {' or '.join(str(a) for a in allowed)})"
            where = "PartialConv2D" if self.name is None else f"PartialConv2D {self.name}"
            raise ValueError(f"{where}: mask must have shape "
                             f"{want} for x of shape {tuple(x_shape)} (multi_channel={self.multi_channel}), "
                             f"got {tuple(mask.shape)}")
