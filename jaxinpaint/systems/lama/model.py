"""LaMa's FFC ResNet generator (``FFCResNetGenerator`` in advimman/lama ``modules/ffc.py``) and its variants.

Input: ``concat(image * (1 - mask), mask)`` NHWC, image in [0, 1], mask 1 = hole. Output: the raw generator
prediction for the whole image (sigmoid, in [0, 1]); callers composite ``mask * pred + (1 - mask) * image``.

Layout (Big LaMa, 256x256): reflect-pad 3 + 7x7 conv (ngf) -> n_downsampling strided 3x3 convs (the last
one splits its output into local/global parts) -> n_blocks FFC residual blocks -> concat(local, global) ->
n_downsampling transposed 3x3 convs -> reflect-pad 3 + 7x7 conv -> sigmoid.

Named variants (``get_model('lama.BigLama')`` etc.):
  * ``BigLama``: 18 blocks (50.98M parameters), the released big-lama checkpoint;
  * ``LamaFourier``: 9 blocks (27.05M), the paper's LaMa-Fourier;
  * ``LamaRegular``: pix2pixHD global generator with 9 plain residual blocks (``jaxinpaint.nn.pix2pixhd``).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinpaint.nn import pix2pixhd
from jaxinpaint.nn.ffc import FFCBnAct, FFCResnetBlock
from jaxinpaint.nn.conv import Conv2D, activation, pad2d
from jaxinpaint.nn.pix2pixhd import UpBlock

Dtype = Any


class FFCResNetGenerator(nn.Module):
    """LaMa generator. Fields mirror the original constructor; defaults are Big LaMa's (big-lama.yaml).

    ``*_ratio_gin``/``*_ratio_gout`` correspond to the original's ``init_conv_kwargs``,
    ``downsample_conv_kwargs`` and ``resnet_conv_kwargs``. As in the original, the last down-sampling layer's
    ``ratio_gout`` is replaced by ``resnet_ratio_gin`` so the residual blocks receive a (local, global) pair.
    """

    input_nc: int = 4
    output_nc: int = 3
    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 18
    max_features: int = 1024
    init_ratio_gin: float = 0.0
    init_ratio_gout: float = 0.0
    downsample_ratio_gin: float = 0.0
    downsample_ratio_gout: float = 0.0
    resnet_ratio_gin: float = 0.75
    resnet_ratio_gout: float = 0.75
    enable_lfu: bool = False
    resnet_enable_lfu: bool = False
    spectral_pos_encoding: bool = False
    use_se: bool = False
    gated: bool = False
    resnet_dilation: int = 1
    add_out_act: str = "sigmoid"
    dtype: Dtype = jnp.float32
    bn_groups: int = 1  # BatchNorm statistics groups over the batch (training only; see jaxinpaint.nn.norm)
    conv_impl: str = "auto"  # per platform: CPU formulations on CPU, the platform's convolutions on GPU/TPU

    def setup(self):
        rt = dict(dtype=self.dtype, bn_groups=self.bn_groups, conv_impl=self.conv_impl)
        self.stem = FFCBnAct(self.ngf, 7, self.init_ratio_gin, self.init_ratio_gout, enable_lfu=self.enable_lfu,
                             **rt)
        down = []
        for i in range(self.n_downsampling):
            ratio_gout = self.resnet_ratio_gin if i == self.n_downsampling - 1 else self.downsample_ratio_gout
            down.append(FFCBnAct(min(self.max_features, self.ngf * 2 ** (i + 1)), 3, self.downsample_ratio_gin,
                                 ratio_gout, strides=2, padding=1, enable_lfu=self.enable_lfu, **rt))
        self.down = down
        dim = min(self.max_features, self.ngf * 2**self.n_downsampling)
        self.block = [
            FFCResnetBlock(dim, self.resnet_ratio_gin, self.resnet_ratio_gout, self.resnet_dilation,
                           self.resnet_enable_lfu, gated=self.gated, spectral_pos_encoding=self.spectral_pos_encoding,
                           use_se=self.use_se, **rt)
            for _ in range(self.n_blocks)
        ]
        self.up = [UpBlock(min(self.max_features, int(self.ngf * 2 ** (self.n_downsampling - i) / 2)), **rt)
                   for i in range(self.n_downsampling)]
        self.head = Conv2D(self.output_nc, 7, padding=3, padding_mode="reflect", dtype=self.dtype,
                           impl=self.conv_impl)

    def front(self, x: jax.Array, *, train: bool = False):
        """Stem and down-sampling: the (local, global) pair that enters the residual blocks.

        High-resolution refinement optimises this pair (``model.apply(..., method='front')``).
        """
        if x.shape[-1] != self.input_nc:
            raise ValueError(f"generator expects {self.input_nc} input channels (image*(1-mask) ++ mask), "
                             f"got input of shape {x.shape}")
        y = self.stem(pad2d(x.astype(self.dtype), 3, "reflect"), train=train)
        for layer in self.down:
            y = layer(y, train=train)
        return y

    def rear(self, y, *, train: bool = False) -> jax.Array:
        """Residual blocks, concatenation of the parts, up-sampling and the output head."""
        for block in self.block:
            y = block(y, train=train)
        x = jnp.concatenate([p for p in y if p is not None], axis=-1) if isinstance(y, tuple) else y
        for layer in self.up:
            x = layer(x, train=train)
        return activation(self.add_out_act)(self.head(x).astype(jnp.float32))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.rear(self.front(x, train=train), train=train)


Model = FFCResNetGenerator
BigLama = functools.partial(FFCResNetGenerator, n_blocks=18)
LamaFourier = functools.partial(FFCResNetGenerator, n_blocks=9)
LamaRegular = functools.partial(pix2pixhd.GlobalGenerator, n_blocks=9, add_out_act="sigmoid")
