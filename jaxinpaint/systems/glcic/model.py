"""GLCIC networks (Iizuka, Simo-Serra, Ishikawa, SIGGRAPH 2017), systems-more.md §3.2-3.3.

* :class:`CompletionNetwork`: 17 layers at full width (6,072,131 parameters, as ``otenim/GLCIC-PyTorch``'s
  definition and the official t7 shapes). Two stride-2 3×3 convs down to H/4, four dilated 3×3 convs (rates
  2, 4, 8, 16; the rates are invisible in the weights, so they follow the paper: **unverified**), two
  k4 s2 p1 transposed convs back up, a sigmoid output. Explicit symmetric padding (k−1)/2·dilation (XLA's
  ``'SAME'`` pads stride-2 3×3 convs asymmetrically). Every conv has a bias and PyTorch's default
  initialisation (otenim relies on it). Input: 4 channels (image ⧺ mask, 1 = hole); H and W multiples of 4.
* :class:`Discriminator`: the global and the local discriminator *and* their concatenated head in one
  module (one network, one optimiser): each branch is [5×5 stride-2 conv (pad 2), BatchNorm, ReLU] blocks
  with widths 64, 128, 256, 512, 512, 512… (local 5 blocks on 128², global 6 on 256²; otenim's CelebA
  architecture: 5 and 5 on 160²/96²), flatten, FC 1024, ReLU; then FC 2048 → 1 on the concatenation. It
  returns the logit (the sigmoid is in the loss). At full size 45,063,681 parameters: local 19,253,248 +
  global 25,808,384 + head 2,049. The flatten is in PyTorch's C, H, W order, so otenim's FC weights would map
  directly.

Block order: ``conv → BN → ReLU`` as the official t7's module order (and the paper, **unverified** for D);
``bn_after_relu=True`` gives otenim's ``conv → ReLU → BN``. Widths scale with ``width`` (64 in the paper) for
small test and smoke models.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinpaint.nn.conv import Conv2D, ConvTranspose2D, batch_norm, torch_bias_init, torch_kernel_init

Dtype = Any

#: (kind, kernel, dilation, stride, output width / 64) of the completion network's layers 1-16 (§3.2 table);
#: layer 17 is the 3×3 output conv with a sigmoid.
COMPLETION_LAYERS = (
    ("conv", 5, 1, 1, 1), ("conv", 3, 1, 2, 2), ("conv", 3, 1, 1, 2), ("conv", 3, 1, 2, 4),
    ("conv", 3, 1, 1, 4), ("conv", 3, 1, 1, 4),
    ("conv", 3, 2, 1, 4), ("conv", 3, 4, 1, 4), ("conv", 3, 8, 1, 4), ("conv", 3, 16, 1, 4),
    ("conv", 3, 1, 1, 4), ("conv", 3, 1, 1, 4),
    ("deconv", 4, 1, 2, 2), ("conv", 3, 1, 1, 2), ("deconv", 4, 1, 2, 1), ("conv", 3, 1, 1, 0.5),
)
SIZE_MULTIPLE = 4


def check_input(owner: str, x: jax.Array, channels: int = 4, multiple: int = SIZE_MULTIPLE) -> None:
    """Raises ValueError unless ``x`` is (N, H, W, channels) with H and W multiples of ``multiple``."""
    if x.ndim != 4 or x.shape[-1] != channels or x.shape[1] % multiple or x.shape[2] % multiple:
        raise ValueError(f"{owner}: expected (N, H, W, {channels}) with H and W multiples of {multiple}, "
                         f"got {x.shape}")


def _norm_act(x, index, *, train, bn_after_relu, dtype, groups):
    bn = batch_norm(train, f"bn{index}", dtype, groups)
    return bn(nn.relu(x)) if bn_after_relu else nn.relu(bn(x))


class CompletionNetwork(nn.Module):
    """GLCIC's completion network (module docstring).

    Attributes:
      width: base width (64); layer widths are multiples of it (32 for layer 16 at full width).
      bn_after_relu: otenim's ReLU → BN order instead of the official BN → ReLU.
      dtype: computation dtype; the output is float32.
      bn_groups: BatchNorm statistics groups (from ``config.bn_groups``).
    """

    width: int = 64
    bn_after_relu: bool = False
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    size_multiple = SIZE_MULTIPLE

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """(N, H, W, 4) image ⧺ mask (H, W multiples of 4) -> (N, H, W, 3) sigmoid output in [0, 1]."""
        check_input("glcic.CompletionNetwork", x)
        h = x.astype(self.dtype)
        for i, (kind, k, d, s, w) in enumerate(COMPLETION_LAYERS, start=1):
            features = max(1, int(self.width * w))
            if kind == "conv":
                h = Conv2D(features, k, strides=s, padding=(k - 1) // 2 * d, dilation=d, dtype=self.dtype,
                           name=f"conv{i}")(h)
            else:
                h = ConvTranspose2D(features, k, strides=s, padding=1, output_padding=0, dtype=self.dtype,
                                    name=f"conv{i}")(h)
            h = _norm_act(h, i, train=train, bn_after_relu=self.bn_after_relu, dtype=self.dtype,
                          groups=self.bn_groups)
        h = Conv2D(3, 3, padding=1, dtype=self.dtype, name=f"conv{len(COMPLETION_LAYERS) + 1}")(h)
        return jax.nn.sigmoid(h.astype(jnp.float32))


def _dense(features: int, fan_in: int, name: str, dtype) -> nn.Dense:
    """``torch.nn.Linear``'s default initialisation (U(±1/√fan_in) for weight and bias)."""
    return nn.Dense(features, kernel_init=torch_kernel_init, bias_init=torch_bias_init(fan_in), dtype=dtype,
                    name=name)


class _Branch(nn.Module):
    """One discriminator branch: ``layers`` × [5×5 s2 conv, BN, ReLU], flatten (C, H, W), FC 1024, ReLU."""

    layers: int
    width: int
    bn_after_relu: bool
    dtype: Dtype
    bn_groups: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        h = x.astype(self.dtype)
        for i in range(self.layers):
            h = Conv2D(self.width * min(2 ** i, 8), 5, strides=2, padding=2, dtype=self.dtype, name=f"conv{i + 1}")(h)
            h = _norm_act(h, i + 1, train=train, bn_after_relu=self.bn_after_relu, dtype=self.dtype,
                          groups=self.bn_groups)
        h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)  # PyTorch's C, H, W flatten order
        return nn.relu(_dense(16 * self.width, h.shape[-1], "fc", self.dtype)(h))


class Discriminator(nn.Module):
    """GLCIC's global + local discriminator with the concatenated head (module docstring).

    Attributes:
      global_size, local_size: the input sides (256/128 for Places2, 160/96 for otenim's CelebA); the FC
        heads fix them.
      global_layers, local_layers: stride-2 blocks per branch (6/5; CelebA 5/5).
      width: base width (64).
      bn_after_relu, dtype, bn_groups: as :class:`CompletionNetwork`.
    """

    global_size: int = 256
    local_size: int = 128
    global_layers: int = 6
    local_layers: int = 5
    width: int = 64
    bn_after_relu: bool = False
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @nn.compact
    def __call__(self, global_x: jax.Array, local_x: jax.Array, *, train: bool = False) -> jax.Array:
        """(N, G, G, 3) whole images and (N, L, L, 3) patches around the hole -> (N,) logits."""
        for what, x, size in (("global", global_x, self.global_size), ("local", local_x, self.local_size)):
            if x.ndim != 4 or x.shape[1:] != (size, size, 3):
                raise ValueError(f"glcic.Discriminator: expected {what} input (N, {size}, {size}, 3), got {x.shape}")
        common = dict(width=self.width, bn_after_relu=self.bn_after_relu, dtype=self.dtype,
                      bn_groups=self.bn_groups)
        g = _Branch(self.global_layers, name="global_branch", **common)(global_x, train=train)
        loc = _Branch(self.local_layers, name="local_branch", **common)(local_x, train=train)
        h = jnp.concatenate([loc, g], axis=-1)
        return _dense(1, h.shape[-1], "head", self.dtype)(h).astype(jnp.float32)[:, 0]

