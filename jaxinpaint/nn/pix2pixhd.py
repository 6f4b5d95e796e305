"""pix2pixHD modules as used by LaMa (advimman/lama ``modules/pix2pixhd.py``): the global generator behind
LaMa-Regular and the NLayer PatchGAN discriminator used by every LaMa variant.

Module names mirror the original's structure (``layer_<i>`` for ``model<i>``) so that weight import is a renaming.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinpaint.nn.conv import Conv2D, ConvTranspose2D, activation, batch_norm, pad2d

Dtype = Any


class ResnetBlock(nn.Module):
    """pix2pixHD residual block: pad, 3x3 conv (bias), BN, ReLU, pad, 3x3 conv, BN; ``x + block(x)``."""

    features: int
    padding_type: str = "reflect"
    dilation: int = 1
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    conv_impl: str = "auto"  # jaxinpaint.nn.conv.Conv2D's impl

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        mode = self.padding_type
        y = Conv2D(self.features, 3, padding=self.dilation, padding_mode=mode, dilation=self.dilation,
                   dtype=self.dtype, impl=self.conv_impl, name="conv1")(x)
        y = nn.relu(batch_norm(train, "bn1", self.dtype, self.bn_groups)(y))
        y = Conv2D(self.features, 3, padding=self.dilation, padding_mode=mode, dilation=self.dilation,
                   dtype=self.dtype, impl=self.conv_impl, name="conv2")(y)
        return x + batch_norm(train, "bn2", self.dtype, self.bn_groups)(y)


class ConvBnRelu(nn.Module):
    """Conv2d (bias, torch's zero padding) + BatchNorm + ReLU."""

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = Conv2D(self.features, self.kernel_size, self.strides, self.padding, dtype=self.dtype,
                   impl=self.conv_impl, name="conv")(x)
        return nn.relu(batch_norm(train, "bn", self.dtype, self.bn_groups)(x))


class UpBlock(nn.Module):
    """ConvTranspose2d(3, stride 2, padding 1, output_padding 1, bias) + BatchNorm + ReLU."""

    features: int
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = ConvTranspose2D(self.features, dtype=self.dtype, impl=self.conv_impl, name="conv")(x)
        return nn.relu(batch_norm(train, "bn", self.dtype, self.bn_groups)(x))


class GlobalGenerator(nn.Module):
    """pix2pixHD GlobalGenerator (LaMa-Regular with 9 blocks and a sigmoid output).

    Differences from the FFC generator worth knowing: the convolutions have biases and the strided
    down-sampling convolutions zero-pad (torch's default), while the residual blocks reflect-pad.
    """

    input_nc: int = 4
    output_nc: int = 3
    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 9
    max_features: int = 1024
    padding_type: str = "reflect"
    add_out_act: str = "sigmoid"
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    conv_impl: str = "auto"

    def setup(self):
        rt = dict(dtype=self.dtype, bn_groups=self.bn_groups, conv_impl=self.conv_impl)
        self.stem = ConvBnRelu(self.ngf, 7, **rt)
        self.down = [ConvBnRelu(min(self.max_features, self.ngf * 2 ** (i + 1)), 3, 2, 1, **rt)
                     for i in range(self.n_downsampling)]
        dim = min(self.max_features, self.ngf * 2**self.n_downsampling)
        self.block = [ResnetBlock(dim, self.padding_type, **rt) for _ in range(self.n_blocks)]
        self.up = [UpBlock(min(self.max_features, int(self.ngf * 2 ** (self.n_downsampling - i) / 2)), **rt)
                   for i in range(self.n_downsampling)]
        self.head = Conv2D(self.output_nc, 7, padding=3, padding_mode="reflect", dtype=self.dtype,
                           impl=self.conv_impl)

    def front(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.shape[-1] != self.input_nc:
            raise ValueError(f"generator expects {self.input_nc} input channels, got input of shape {x.shape}")
        y = self.stem(pad2d(x.astype(self.dtype), 3, "reflect"), train=train)
        for layer in self.down:
            y = layer(y, train=train)
        return y

    def rear(self, y: jax.Array, *, train: bool = False) -> jax.Array:
        for block in self.block:
            y = block(y, train=train)
        for layer in self.up:
            y = layer(y, train=train)
        return activation(self.add_out_act)(self.head(y).astype(jnp.float32))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.rear(self.front(x, train=train), train=train)


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator: 4x4 convs (zero padding 2), stride 2 for the first ``n_layers`` layers, then a
    stride-1 layer and a 1-channel stride-1 output layer; BN + LeakyReLU(0.2) except on the first and last.

    ``__call__`` returns ``(logits, features)``: logits NHWC ``(N, h, w, 1)`` and the ``n_layers + 1``
    intermediate activations (outputs of the original's ``model0`` ... ``model<n_layers>``) used by LaMa's
    feature-matching loss. At 256x256 with the LaMa settings the logits are 19x19.
    """

    input_nc: int = 3
    ndf: int = 64
    n_layers: int = 4
    use_norm: bool = True
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False):
        if x.shape[-1] != self.input_nc:
            raise ValueError(f"discriminator expects {self.input_nc} input channels, got input of shape {x.shape}")
        features = []
        nf = self.ndf
        y = x.astype(self.dtype)
        for i in range(self.n_layers + 1):
            if i > 0:
                nf = min(nf * 2, 512)
            stride = 2 if i < self.n_layers else 1
            y = Conv2D(nf, 4, stride, 2, dtype=self.dtype, impl=self.conv_impl, name=f"layer_{i}_conv")(y)
            if i > 0 and self.use_norm:
                y = batch_norm(train, f"layer_{i}_bn", self.dtype, self.bn_groups)(y)
            y = nn.leaky_relu(y, 0.2)
            features.append(y)
        logits = Conv2D(1, 4, 1, 2, dtype=self.dtype, impl=self.conv_impl, name=f"layer_{self.n_layers + 1}_conv")(y)
        return logits.astype(jnp.float32), features


Model = NLayerDiscriminator
