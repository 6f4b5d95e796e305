"""PGGAN networks (Demir & Ünal, "Patch-Based Image Inpainting with Generative Adversarial Networks", arXiv
1803.07422), systems-more.md §4.

No code was released and only the abstract was read, so apart from the discriminator's *structure* (a shared
trunk feeding a global head and a PatchGAN head, verified in the abstract) everything here is a documented
design default, and every choice is a field (**unverified**):

* :class:`Generator`: a ResNet-style encoder-transformer-decoder. ``c7s1-ngf`` → two 3×3 stride-2 convs
  (2·ngf, 4·ngf), each with norm and ReLU; ``n_blocks`` residual blocks at H/4 whose two 3×3 convs are
  dilated (rates cycling through ``dilations``; residual add without a final activation); then
  "interpolated convolutions" instead of transposed convs, ``upsample`` ×2 (nearest or bilinear) → 3×3 conv
  → norm → ReLU, twice (4·ngf → 2·ngf → ngf); ``c7s1-3`` → tanh. Input: masked image in [-1, 1] (hole 0)
  ⧺ mask (4 channels); H and W multiples of 4.
* :class:`Discriminator`: the shared trunk C64 (no norm) → C128 → C256, 4×4 stride-2 convs with LeakyReLU 0.2;
  the PatchGAN head C512 4×4 s1 → norm → LReLU → C1 4×4 s1 (a 30×30 logit map at 256², pix2pix's 70×70
  receptive field); the global head 4×4 stride-2 C512 convs (norm, LReLU) down to 4×4, flatten, FC → 1 logit.
  It returns both, ``(global (N,), patch (N, h, w))``.

Norm (``norm``): 'instance' (affine, ε 1e-5, PyTorch's), 'batch' or 'none'. Convs have biases; weights are
drawn N(0, 0.02) and BatchNorm γ N(1, 0.02) (DCGAN/pix2pix practice, :func:`context_encoder.model.dcgan_init`).
Zero padding throughout.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinpaint.nn.conv import Conv2D, batch_norm
from jaxinpaint.systems.context_encoder.model import DCGANInit
from jaxinpaint.systems.glcic.model import SIZE_MULTIPLE, check_input

Dtype = Any
NORMS = ("instance", "batch", "none")
UPSAMPLES = ("nearest", "bilinear")


def _norm(kind: str, name: str, train: bool, dtype, groups: int):
    if kind == "instance":
        return nn.InstanceNorm(epsilon=1e-5, dtype=dtype, name=name)
    if kind == "batch":
        return batch_norm(train, name, dtype, groups)
    if kind == "none":
        return lambda x: x
    raise ValueError(f"pggan: norm must be one of {NORMS}, got {kind!r}")


def upsample2(x: jax.Array, method: str) -> jax.Array:
    """×2 resize of an NHWC array: 'nearest' (pixel replication) or 'bilinear' (half-pixel centres)."""
    if method == "nearest":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if method == "bilinear":
        n, h, w, c = x.shape
        return jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")
    raise ValueError(f"pggan.Generator.upsample must be one of {UPSAMPLES}, got {method!r}")


class Generator(DCGANInit, nn.Module):
    """PGGAN's dilated residual generator (module docstring).

    Attributes:
      ngf: base width (64).
      n_blocks: residual blocks at H/4 (design: 9).
      dilations: dilation of block i is ``dilations[i % len]`` (design: 1, 2, 4, 8).
      norm: 'instance', 'batch' or 'none'.
      upsample: the interpolation before each up-convolution, 'nearest' or 'bilinear'.
      dtype: computation dtype; the output is float32. bn_groups: BatchNorm statistics groups.
    """

    ngf: int = 64
    n_blocks: int = 9
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    norm: str = "instance"
    upsample: str = "nearest"
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    size_multiple = SIZE_MULTIPLE

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """(N, H, W, 4) masked image ⧺ mask, H and W multiples of 4 -> (N, H, W, 3) tanh output."""
        check_input("pggan.Generator", x)
        if not self.dilations or any(int(d) < 1 for d in self.dilations):
            raise ValueError(f"pggan.Generator.dilations must be positive ints, got {self.dilations}")

        def block(h, features, k, name, *, strides=1, dilation=1, act=True):
            h = Conv2D(features, k, strides=strides, padding=(k - 1) // 2 * dilation, dilation=dilation,
                       dtype=self.dtype, name=name)(h)
            h = _norm(self.norm, f"{name}_norm", train, self.dtype, self.bn_groups)(h)
            return nn.relu(h) if act else h

        h = block(x.astype(self.dtype), self.ngf, 7, "in")
        h = block(h, 2 * self.ngf, 3, "down1", strides=2)
        h = block(h, 4 * self.ngf, 3, "down2", strides=2)
        for i in range(self.n_blocks):
            d = int(self.dilations[i % len(self.dilations)])
            r = block(h, 4 * self.ngf, 3, f"res{i}_a", dilation=d)
            h = h + block(r, 4 * self.ngf, 3, f"res{i}_b", dilation=d, act=False)
        h = block(upsample2(h, self.upsample), 2 * self.ngf, 3, "up1")
        h = block(upsample2(h, self.upsample), self.ngf, 3, "up2")
        h = Conv2D(3, 7, padding=3, dtype=self.dtype, name="out")(h)
        return jnp.tanh(h.astype(jnp.float32))


class Discriminator(DCGANInit, nn.Module):
    """PGGAN's discriminator: a shared trunk, a PatchGAN head and a global head (module docstring).

    Attributes:
      input_size: the image side (the global head's FC fixes it; 256 in the paper, **unverified**).
      ndf: base width (64).
      norm: 'instance', 'batch' or 'none' (not in the first layer).
      dtype, bn_groups: as :class:`Generator`.
    """

    input_size: int = 256
    ndf: int = 64
    norm: str = "instance"
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    def trunk(self, x, train):
        h = x.astype(self.dtype)
        for i, mult in enumerate((1, 2, 4)):
            h = Conv2D(self.ndf * mult, 4, strides=2, padding=1, dtype=self.dtype, name=f"trunk{i}")(h)
            if i:
                h = _norm(self.norm, f"trunk{i}_norm", train, self.dtype, self.bn_groups)(h)
            h = nn.leaky_relu(h, 0.2)
        return h

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """(N, S, S, 3) in [-1, 1] -> (global logits (N,), patch logits (N, h, w))."""
        if x.ndim != 4 or x.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"pggan.Discriminator: expected (N, {self.input_size}, {self.input_size}, 3), "
                             f"got {x.shape}")
        side = self.input_size // 8
        n_global = int(round(math.log2(side / 4))) if side >= 4 else -1
        if n_global < 0 or 4 * 2 ** n_global != side:
            raise ValueError(f"pggan.Discriminator.input_size must be 32 * 2**k (32, 64, ..., 256), got "
                             f"{self.input_size}")
        shared = self.trunk(x, train)

        p = Conv2D(self.ndf * 8, 4, padding=1, dtype=self.dtype, name="patch0")(shared)
        p = nn.leaky_relu(_norm(self.norm, "patch0_norm", train, self.dtype, self.bn_groups)(p), 0.2)
        patch = Conv2D(1, 4, padding=1, dtype=self.dtype, name="patch1")(p)

        g = shared
        for i in range(n_global):
            g = Conv2D(self.ndf * 8, 4, strides=2, padding=1, dtype=self.dtype, name=f"global{i}")(g)
            g = nn.leaky_relu(_norm(self.norm, f"global{i}_norm", train, self.dtype, self.bn_groups)(g), 0.2)
        g = nn.Dense(1, dtype=self.dtype, name="global_fc")(g.reshape(g.shape[0], -1))
        return g.astype(jnp.float32)[:, 0], patch.astype(jnp.float32)[..., 0]
