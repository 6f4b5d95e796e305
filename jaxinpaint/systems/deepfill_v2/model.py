"""DeepFill v2 (Yu et al., "Free-Form Image Inpainting with Gated Convolution", ICCV 2019), NHWC.

Written from the description in ``docs/systems.md`` section 4, not from the original code
(``JiahuiYu/generative_inpainting`` is CC BY-NC 4.0). Two models:

* :class:`Generator` (``get_model('deepfill')``): a coarse gated-conv encoder-decoder, then a refinement
  network with a dilated branch and a contextual-attention branch, merged and decoded. It takes DeepFill's
  5-channel input ``img*(1-m) ++ ones ++ m`` (image in [-1, 1], mask 1 = hole) and returns
  ``(coarse, fine)``, both tanh outputs in [-1, 1]. About 4.05M parameters at ``cnum=48``.
* :class:`SNPatchGAN` (``get_model('deepfill.SNPatchGAN')``): six spectral-normalised 5x5 stride-2
  convolutions with LeakyReLU(0.2) on ``image ++ mask``; every element of the final feature map is a score.

Layer names follow the original's variable scopes (``conv1`` ... ``conv17``, ``xconv*``, ``pmconv*``,
``allconv*``; ``conv1`` ... ``conv6`` in the discriminator) so that a future TF-checkpoint converter is a
renaming: kernels are HWIO ``kernel`` plus ``bias`` as ``tf.layers.conv2d`` stores them, and the spectral-norm
power-iteration vector is ``u`` of shape ``(1, out_channels)`` in the ``'spectral'`` collection.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinpaint.nn.gated_conv import GatedConv2D, GatedDeconv2D, contextual_attention, resize_nearest_align_corners
from jaxinpaint.nn.spectral_norm import SpectralConv2D

Dtype = Any

# The generator downsamples twice (x4) and contextual attention matches at rate 2 on top of that, so the
# input's height and width must be multiples of 8.
SIZE_MULTIPLE = 8


# ----------------------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """DeepFill v2's two-stage gated-convolution generator (``build_inpaint_net``).

    Filter counts are the original's (``features`` of :class:`GatedConv2D`; each gated layer outputs half):

    * coarse: 5x5 cnum, s2 2cnum, 2cnum, s2 4cnum, 4cnum x2, dilated 4cnum x4 (2/4/8/16), 4cnum x2,
      up 2cnum, 2cnum, up cnum, cnum/2, 3 (raw), tanh;
    * the coarse output is pasted into the hole; stage 2 sees only that 3-channel composite;
    * refine, dilated branch: 5x5 cnum, s2 cnum, 2cnum, s2 2cnum, 4cnum x2, dilated 4cnum x4;
    * refine, attention branch: 5x5 cnum, s2 cnum, 2cnum, s2 4cnum, 4cnum, 4cnum (ReLU-gated),
      contextual attention (3x3 patches, rate 2, softmax scale 10, fused), 4cnum x2;
    * merge: concat, 4cnum x2, up 2cnum, 2cnum, up cnum, cnum/2, 3 (raw), tanh.

    Attributes:
      cnum: base filter count (48 in DeepFill v2; smaller for smoke runs). Must be a multiple of 4 so that
        the ``cnum/2`` layer still splits into feature and gate halves.
      padding: padding of every gated conv: ``'same'`` (the original's default), ``'reflect'`` or
        ``'symmetric'``.
      align_corners: downsample for attention matching, and resize the mask to the attention features, with
        TF1's align-corners nearest rule, as the original does (keep True to match trained DeepFill weights);
        False uses plain ``x[::rate]`` subsampling.
      dtype: computation dtype (parameters and outputs stay float32).
      bn_groups: unused (DeepFill has no BatchNorm); accepted because the trainer passes it to every model.
    """

    cnum: int = 48
    padding: str = "same"
    align_corners: bool = True
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    def _conv(self, features: int, kernel: int, name: str, strides: int = 1, dilation: int = 1,
              activation: str | None = "elu") -> GatedConv2D:
        return GatedConv2D(features, kernel, strides=strides, dilation=dilation, padding=self.padding,
                           activation=activation, dtype=self.dtype, name=name)

    def _up(self, features: int, name: str) -> GatedDeconv2D:
        return GatedDeconv2D(features, padding=self.padding, dtype=self.dtype, name=name)

    def _dilated(self, x: jax.Array, prefix: str, first: int) -> jax.Array:
        """Four 3x3 gated convs with dilation 2, 4, 8, 16 named ``<prefix><first>_atrous`` ..."""
        for i, rate in enumerate((2, 4, 8, 16)):
            x = self._conv(4 * self.cnum, 3, f"{prefix}{first + i}_atrous", dilation=rate)(x)
        return x

    def _decode(self, x: jax.Array, prefix: str, first: int) -> jax.Array:
        """The shared decoder tail: two 4cnum convs, up, conv, up, cnum/2 conv, raw 3-channel conv, tanh.

        Layer numbers continue from ``first`` (11 in both stages), the upsamplings being ``13`` and ``15``.
        """
        c = self.cnum
        x = self._conv(4 * c, 3, f"{prefix}{first}")(x)
        x = self._conv(4 * c, 3, f"{prefix}{first + 1}")(x)
        x = self._up(2 * c, f"{prefix}{first + 2}_upsample")(x)
        x = self._conv(2 * c, 3, f"{prefix}{first + 3}")(x)
        x = self._up(c, f"{prefix}{first + 4}_upsample")(x)
        x = self._conv(c // 2, 3, f"{prefix}{first + 5}")(x)
        x = self._conv(3, 3, f"{prefix}{first + 6}", activation=None)(x)
        return jnp.tanh(x.astype(jnp.float32))

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """DeepFill's 5-channel input -> ``(coarse, fine)``.

        Args:
          x: (N, H, W, 5) = ``img*(1-m)`` in [-1, 1] ++ ones ++ ``m`` (1 = hole); H and W multiples of 8.
          train: unused (no BatchNorm or dropout); part of the trainer's model contract.

        Returns:
          ``(coarse, fine)``: (N, H, W, 3) float32 tanh outputs in [-1, 1] of the two stages.
        """
        del train
        if x.ndim != 4 or x.shape[-1] != 5:
            raise ValueError("deepfill Generator: input must be (N, H, W, 5) = image*(1-mask) ++ ones ++ "
                             f"mask, got shape {x.shape}")
        if x.shape[1] % SIZE_MULTIPLE or x.shape[2] % SIZE_MULTIPLE:
            raise ValueError(f"deepfill Generator: height and width must be multiples of {SIZE_MULTIPLE} "
                             f"(two stride-2 stages, then contextual attention at rate 2), got {x.shape[1:3]}; "
                             "pad the image (jaxinpaint.inference pads to modulo 8)")
        if self.cnum < 4 or self.cnum % 4:
            raise ValueError("deepfill Generator: cnum must be a positive multiple of 4 (its cnum/2 layer is "
                             f"a gated conv that splits into two halves), got {self.cnum}")
        c = self.cnum
        x = x.astype(self.dtype)
        xin, mask = x[..., :3], x[..., 4:5]

        # ---- Stage 1: coarse ------------------------------------------------------------------------------
        y = self._conv(c, 5, "conv1")(x)
        y = self._conv(2 * c, 3, "conv2_downsample", strides=2)(y)
        y = self._conv(2 * c, 3, "conv3")(y)
        y = self._conv(4 * c, 3, "conv4_downsample", strides=2)(y)
        y = self._conv(4 * c, 3, "conv5")(y)
        y = self._conv(4 * c, 3, "conv6")(y)
        y = self._dilated(y, "conv", 7)
        coarse = self._decode(y, "conv", 11)

        # ---- Stage 2: refine on the composite -------------------------------------------------------------
        xnow = coarse.astype(self.dtype) * mask + xin * (1.0 - mask)

        # Dilated ("hallucination") branch.
        h = self._conv(c, 5, "xconv1")(xnow)
        h = self._conv(c, 3, "xconv2_downsample", strides=2)(h)
        h = self._conv(2 * c, 3, "xconv3")(h)
        h = self._conv(2 * c, 3, "xconv4_downsample", strides=2)(h)
        h = self._conv(4 * c, 3, "xconv5")(h)
        h = self._conv(4 * c, 3, "xconv6")(h)
        h = self._dilated(h, "xconv", 7)

        # Contextual-attention branch.
        a = self._conv(c, 5, "pmconv1")(xnow)
        a = self._conv(c, 3, "pmconv2_downsample", strides=2)(a)
        a = self._conv(2 * c, 3, "pmconv3")(a)
        a = self._conv(4 * c, 3, "pmconv4_downsample", strides=2)(a)
        a = self._conv(4 * c, 3, "pmconv5")(a)
        a = self._conv(4 * c, 3, "pmconv6", activation="relu")(a)
        if self.align_corners:
            mask_s = resize_nearest_align_corners(mask, a.shape[1], a.shape[2])
        else:
            mask_s = mask[:, ::4, ::4]
        a, _ = contextual_attention(a, a, mask_s, ksize=3, stride=1, rate=2, align_corners=self.align_corners)
        a = self._conv(4 * c, 3, "pmconv9")(a)
        a = self._conv(4 * c, 3, "pmconv10")(a)

        fine = self._decode(jnp.concatenate([h, a], axis=-1), "allconv", 11)
        return coarse, fine


Model = Generator


# ----------------------------------------------------------------------------------------------------------
# The SN-PatchGAN discriminator
# ----------------------------------------------------------------------------------------------------------


class SNPatchGAN(nn.Module):
    """DeepFill v2's SN-PatchGAN discriminator (``build_sn_patch_gan_discriminator``).

    Six ``SpectralConv2D`` 5x5 stride-2 SAME layers with ``cnum, 2cnum, 4cnum, 4cnum, 4cnum, 4cnum`` filters,
    each followed by LeakyReLU(0.2), on ``image ++ mask``; no final 1-channel conv. At 256x256 the output is
    (N, 4, 4, 256), and every element is a hinge-loss score (the original flattens it, which changes no mean).

    Attributes:
      cnum: base filter count (64 in DeepFill v2).
      input_nc: input channels (4: RGB in [-1, 1] ++ mask, ``gan_with_mask``).
      dtype: computation dtype (the logits are returned in float32).
      bn_groups: unused (no BatchNorm); accepted because the trainer passes it to every model.
    """

    cnum: int = 64
    input_nc: int = 4
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, list[jax.Array]]:
        """Returns ``(logits, features)``: the last layer's activations and the five before it.

        ``train=True`` advances every layer's spectral-norm power iteration (``mutable=['spectral']``).
        """
        if x.ndim != 4 or x.shape[-1] != self.input_nc:
            raise ValueError(f"deepfill SNPatchGAN: input must be (N, H, W, {self.input_nc}) = image ++ "
                             f"mask, got shape {x.shape}")
        c = self.cnum
        y = x.astype(self.dtype)
        features = []
        for i, nf in enumerate((c, 2 * c, 4 * c, 4 * c, 4 * c, 4 * c)):
            y = SpectralConv2D(nf, 5, 2, dtype=self.dtype, name=f"conv{i + 1}")(y, train=train)
            y = nn.leaky_relu(y, 0.2)
            features.append(y)
        return y.astype(jnp.float32), features[:-1]
