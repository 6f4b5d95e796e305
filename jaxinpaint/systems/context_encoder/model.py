"""Context Encoder networks (Pathak et al., CVPR 2016; ``pathak22/context-encoder`` ``train.lua``,
``train_random.lua``), systems-more.md §2.2-2.4.

The generator is an encoder, a bottleneck and a decoder of 4×4 stride-2 (transposed) convolutions; the
discriminator is DCGAN's. Everything works in the original's [-1, 1] range, NHWC:

* :class:`Generator` takes the ``fine_size``² context (the hole already filled with :data:`MEAN_FILL`) and
  returns the tanh prediction of the centre (``center_only``: the ``fine_size/2``² centre, ``train.lua``) or
  of the whole image (``train_random.lua``). Encoder ``E1..En`` (n = log2(fine_size/4); widths nef·[1, …, 1,
  2, 4, 8], LeakyReLU 0.2, BatchNorm from E2 on), then the bottleneck, then the decoder (widths ngf·[8, 4,
  2, 1, …], BatchNorm + ReLU) up to the output size and a tanh layer. At 128² this is the paper table: the
  centre variant keeps E2 (32²×64), the random variant adds the 64→64 full-conv before its 128² output, and
  at 64² both disappear, exactly as ``train_random.lua:91-95,148-152`` chooses.
* Bottleneck ``'fc'`` (the inpainting code's, default): a 4×4 valid conv to ``n_bottleneck`` channels (a
  fully connected layer 8192 → nB), BatchNorm + LeakyReLU, and a 4×4 full convolution back to 4²×8ngf
  (``train.lua:103,125-126,133``). ``'channel_wise'`` is the paper's Fig. 9(b) channel-wise fully connected
  layer (each channel's 16 positions to 16 outputs, no cross-channel weights), followed by BatchNorm +
  LeakyReLU and a stride-1 convolution that mixes the channels (1×1 here: a design choice, the paper's kernel
  size is **unverified**), then BatchNorm + ReLU.
* :class:`Discriminator`: DCGAN, widths ndf·[1, …, 1, 2, 4, 8] of 4×4 stride-2 convs (LeakyReLU 0.2,
  BatchNorm from the second on) and a 4×4 valid conv to one logit (``train.lua:178-197``;
  ``train_random.lua:194-198`` adds the extra 64→64 layer at 128²). The sigmoid lives in the loss.

No conv has a bias: ``train.lua`` re-zeroes every conv and full-conv bias before each update
(``:274-275,344-345``), so the port leaves them out; BatchNorm's β trains. Parameter counts (bias-free, as
the spec gives them): G 71,124,544 with nB 4000, 7,219,144 with nB 100; D 2,765,568.

Initialisation (``train.lua:58-67``): conv and full-conv weights N(0, 0.02), BatchNorm γ N(1, 0.02) and
β 0 (:func:`dcgan_init`, applied by both modules' ``init``).

Other systems use the generator too: MSNPS's content network is this centre generator, fed by
:func:`fill_center`.
"""

from __future__ import annotations

import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinpaint.nn.conv import Conv2D, ConvTranspose2D, batch_norm

Dtype = Any

#: The hole fill, (117, 104, 123)/255 mapped to [-1, 1] (``train.lua:283-285``): R, G, B.
MEAN_FILL = tuple(float(2.0 * v / 255.0 - 1.0) for v in (117, 104, 123))


def center_box(fine_size: int) -> tuple[int, int]:
    """The centre region [F/4, 3F/4) (half-open, 0-based) that the centre generator predicts: (32, 96) at 128."""
    return fine_size // 4, 3 * fine_size // 4


def inner_box(fine_size: int, overlap: int) -> tuple[int, int]:
    """The part of the centre that is overwritten in the input: [F/4 + o, 3F/4 - o), (36, 92) at 128, o = 4."""
    lo, hi = center_box(fine_size)
    if not 0 <= overlap < (hi - lo) // 2:
        raise ValueError(f"overlap (overlapPred) must be in [0, {(hi - lo) // 2}) for fine_size {fine_size}, "
                         f"got {overlap}")
    return lo + overlap, hi - overlap


def fill_center(x: jax.Array, overlap: int) -> jax.Array:
    """``x`` (N, F, F, 3) in [-1, 1] with the inner centre box set to :data:`MEAN_FILL` (``train.lua:282-285``)."""
    lo, hi = inner_box(x.shape[1], overlap)
    fill = jnp.asarray(MEAN_FILL, x.dtype)
    return x.at[:, lo:hi, lo:hi, :].set(jnp.broadcast_to(fill, x[:, lo:hi, lo:hi, :].shape))


def fill_hole(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``x`` in [-1, 1] with the hole (mask 1) set to :data:`MEAN_FILL` (``train_random.lua:332-334``)."""
    return jnp.where(mask > 0.5, jnp.asarray(MEAN_FILL, x.dtype), x)


def stage_widths(n: int) -> list[int]:
    """Width multipliers of ``n`` stride-2 stages from the image down to 4×4: [1, …, 1, 2, 4, 8] (last n)."""
    return ([1] * (n - 3) + [2, 4, 8])[-n:]


def num_stages(size: int, what: str) -> int:
    """log2(size / 4): the stride-2 stages between ``size``² and 4²; ``size`` must be 4·2^k, k >= 1."""
    n = int(round(math.log2(size / 4))) if size >= 8 else 0
    if n < 1 or 4 * 2 ** n != size:
        raise ValueError(f"{what} must be 4 * 2**k with k >= 1 (8, 16, ..., 64, 128), got {size}")
    return n


def dcgan_init(variables, key: jax.Array):
    """DCGAN's initialisation on an initialised variable tree: every ``kernel`` N(0, 0.02), every BatchNorm
    ``scale`` N(1, 0.02) (``train.lua:58-67``); biases, β and the running statistics are left as they are."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
    keys = jax.random.split(key, len(flat))
    out = {}
    for k, (path, leaf) in zip(keys, sorted(flat.items())):
        if path[0] == "params" and path[-1] == "kernel":
            leaf = 0.02 * jax.random.normal(k, leaf.shape, leaf.dtype)
        elif path[0] == "params" and path[-1] == "scale":
            leaf = 1.0 + 0.02 * jax.random.normal(k, leaf.shape, leaf.dtype)
        out[path] = leaf
    return flax.traverse_util.unflatten_dict(out)


class DCGANInit:
    """Mixin: ``init`` draws DCGAN's N(0, 0.02) kernels and N(1, 0.02) BatchNorm scales (:func:`dcgan_init`)."""

    def init(self, rngs, *args, **kwargs):
        variables = super().init(rngs, *args, **kwargs)
        key = rngs["params"] if isinstance(rngs, dict) else rngs
        return dcgan_init(variables, jax.random.fold_in(key, 0x0DC6))


def _down(x, features, index, *, use_bn, train, dtype, groups):
    """4×4 stride-2 conv (pad 1, no bias), optional BatchNorm, LeakyReLU 0.2."""
    x = Conv2D(features, 4, strides=2, padding=1, use_bias=False, dtype=dtype, name=f"conv{index}")(x)
    if use_bn:
        x = batch_norm(train, f"bn{index}", dtype, groups)(x)
    return nn.leaky_relu(x, 0.2)


class Generator(DCGANInit, nn.Module):
    """The Context Encoder generator (see the module docstring).

    Attributes:
      fine_size: input side F (128 in the paper; any 4·2^k >= 16).
      center_only: predict the F/2 centre (``train.lua``) or the whole F² image (``train_random.lua``).
      nef, ngf: encoder and decoder base widths (64).
      nc: image channels (3).
      n_bottleneck: nB, the bottleneck width of the ``'fc'`` bottleneck (README: 4000; file default 100).
      bottleneck: ``'fc'`` (the code's) or ``'channel_wise'`` (the paper's Fig. 9(b)).
      dtype: computation dtype (bf16 under ``config.mixed_precision``); the output is float32.
      bn_groups: BatchNorm statistics groups (set by the trainer from ``config.bn_groups``).
    """

    fine_size: int = 128
    center_only: bool = True
    nef: int = 64
    ngf: int = 64
    nc: int = 3
    n_bottleneck: int = 4000
    bottleneck: str = "fc"
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @property
    def output_size(self) -> int:
        return self.fine_size // 2 if self.center_only else self.fine_size

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """(N, F, F, nc) context in [-1, 1], hole filled -> (N, S, S, nc) tanh prediction (S = output_size)."""
        if x.ndim != 4 or x.shape[1:] != (self.fine_size, self.fine_size, self.nc):
            raise ValueError(f"context_encoder.Generator: expected input (N, {self.fine_size}, {self.fine_size}, "
                             f"{self.nc}), got {x.shape}")
        if self.bottleneck not in ("fc", "channel_wise"):
            raise ValueError(f"context_encoder.Generator.bottleneck must be 'fc' or 'channel_wise', got "
                             f"{self.bottleneck!r}")
        common = dict(train=train, dtype=self.dtype, groups=self.bn_groups)
        h = x.astype(self.dtype)
        for i, w in enumerate(stage_widths(num_stages(self.fine_size, "fine_size")), start=1):
            h = _down(h, self.nef * w, i, use_bn=i > 1, **common)

        if self.bottleneck == "fc":
            h = Conv2D(self.n_bottleneck, 4, padding=0, use_bias=False, dtype=self.dtype, name="bottleneck")(h)
        else:
            h = ChannelWiseDense(dtype=self.dtype, name="bottleneck")(h)
        h = nn.leaky_relu(batch_norm(train, "bn_bottleneck", self.dtype, self.bn_groups)(h), 0.2)

        widths = stage_widths(num_stages(self.output_size, "the output size"))[::-1]
        if self.bottleneck == "fc":
            h = ConvTranspose2D(self.ngf * widths[0], 4, strides=1, padding=0, output_padding=0, use_bias=False,
                                dtype=self.dtype, name="deconv0")(h)
        else:
            h = Conv2D(self.ngf * widths[0], 1, use_bias=False, dtype=self.dtype, name="deconv0")(h)
        h = nn.relu(batch_norm(train, "bn_deconv0", self.dtype, self.bn_groups)(h))
        for i, w in enumerate(widths[1:], start=1):
            h = ConvTranspose2D(self.ngf * w, 4, strides=2, padding=1, output_padding=0, use_bias=False,
                                dtype=self.dtype, name=f"deconv{i}")(h)
            h = nn.relu(batch_norm(train, f"bn_deconv{i}", self.dtype, self.bn_groups)(h))
        h = ConvTranspose2D(self.nc, 4, strides=2, padding=1, output_padding=0, use_bias=False, dtype=self.dtype,
                            name=f"deconv{len(widths)}")(h)
        return jnp.tanh(h.astype(jnp.float32))


class ChannelWiseDense(nn.Module):
    """The paper's channel-wise fully connected layer: per channel, all H·W positions to H·W outputs.

    ``y[b, m, c] = sum_n x[b, n, c] · W[c, n, m]`` over the flattened positions (row-major), no cross-channel
    weights and no bias (Context Encoder keeps its layers bias-free). Caffe's grouped-conv form of it is
    channel-major (output g·HW + j is channel g, position j) when importing weights.
    """

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        kernel = self.param("kernel", nn.initializers.normal(0.02), (c, h * w, h * w), jnp.float32)
        y = jnp.einsum("bnc,cnm->bmc", x.reshape(n, h * w, c), kernel.astype(self.dtype))
        return y.reshape(n, h, w, c)


class Discriminator(DCGANInit, nn.Module):
    """DCGAN's discriminator on ``input_size``² images in [-1, 1]; returns one logit per image, shape (N,).

    Attributes:
      input_size: the side it judges: the 64² centre (centre variant) or the whole F² image (random variant).
      ndf: base width (64).
      nc: image channels (3).
      dtype, bn_groups: as :class:`Generator`.
    """

    input_size: int = 64
    ndf: int = 64
    nc: int = 3
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4 or x.shape[1:] != (self.input_size, self.input_size, self.nc):
            raise ValueError(f"context_encoder.Discriminator: expected input (N, {self.input_size}, "
                             f"{self.input_size}, {self.nc}), got {x.shape}")
        h = x.astype(self.dtype)
        for i, w in enumerate(stage_widths(num_stages(self.input_size, "input_size")), start=1):
            h = _down(h, self.ndf * w, i, use_bn=i > 1, train=train, dtype=self.dtype, groups=self.bn_groups)
        h = Conv2D(1, 4, padding=0, use_bias=False, dtype=self.dtype, name="logit")(h)
        return h.astype(jnp.float32).reshape(x.shape[0])


def parameter_count(variables) -> int:
    """Number of trainable parameters in a variable tree (its ``params`` collection)."""
    return int(sum(np.prod(v.shape) for v in jax.tree.leaves(variables["params"])))
