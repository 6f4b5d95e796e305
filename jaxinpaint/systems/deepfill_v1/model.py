"""DeepFill v1 (Yu et al., "Generative Image Inpainting with Contextual Attention", CVPR 2018), NHWC.

Written from the specification (``shared/docs/systems-more.md`` §10), not from the original code
(``JiahuiYu/generative_inpainting`` v1.0.0 is CC BY-NC 4.0). The networks work in DeepFill's own domain:
BGR images in [-1, 1] (the objective converts at the system boundary).

* :class:`Generator` (``build_inpaint_net``): a coarse dilated encoder-decoder, then a refinement network with a
  dilated branch and a contextual-attention branch, merged and decoded. Plain convolutions with ELU (v2 gates
  them), both stages take 5 channels ``x ++ ones ++ mask`` (v2's second stage takes 3), and both outputs are
  **clipped** to [-1, 1] (v2: tanh), so the gradient is zero where the clip is active. 3,601,542 parameters at
  ``cnum=32`` (coarse stage 1,448,227).
* :class:`Critic` (``build_wgan_local_discriminator`` / ``..._global_discriminator``): four 5×5 stride-2 TF-SAME
  convolutions with LeakyReLU(0.2), no normalisation, then a dense layer on the NHWC-flattened map (TF's
  flatten order, so released dense weights map directly). The local critic (widths 64, 128, 256, 512 on the
  128² box around the hole) has 4,339,329 parameters, the global one (64, 128, 256, 256 on the 256² image)
  2,733,441.

Layer names are the original's variable scopes (``conv1`` ... ``conv17``, ``xconv*``, ``pmconv*``,
``allconv*``; an upsampling conv sits one scope deeper, ``conv13_upsample/conv13_upsample_conv``), kernels HWIO
with ``tf.layers.conv2d``'s default initialisers (Glorot uniform, zero bias; inferred from TF1's defaults), so
a TF checkpoint converter is a renaming. The contextual attention is the one DeepFill v2 uses
(``jaxinpaint.nn.gated_conv.contextual_attention``; the function is identical in both releases), called as v1
does: 3×3 patches, stride 1, rate 2, TF1's align-corners nearest resizing.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinpaint.nn.conv import activation as activation_fn
from jaxinpaint.nn.gated_conv import GatedConv2D, contextual_attention, resize_nearest_align_corners

Dtype = Any

# Two stride-2 stages, then contextual attention at rate 2: height and width must be multiples of 8.
SIZE_MULTIPLE = 8


class Conv(GatedConv2D):
    """DeepFill v1's ``gen_conv`` / ``dis_conv``: :class:`GatedConv2D`'s convolution without the gate.

    The same TF-SAME padding (asymmetric at stride 2), dilation, Glorot-uniform kernel and zero bias, then the
    activation on all ``features`` channels (``None``: the raw convolution, v1's output layers).
    """

    @property
    def gated(self) -> bool:
        return False

    def __call__(self, x: jax.Array) -> jax.Array:
        return activation_fn(self.activation)(super().__call__(x))


class Deconv(nn.Module):
    """``gen_deconv``: ×2 nearest upsampling (TF1 align-corners, which for ×2 is pixel repetition), then a 3×3
    :class:`Conv` with ELU in the child scope ``<name>_conv``, as the original nests it."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return Conv(self.features, 3, dtype=self.dtype, name=f"{self.name}_conv")(x)


class Generator(nn.Module):
    """DeepFill v1's coarse-to-fine generator (``inpaint_model.py::build_inpaint_net``).

    Widths (``c = cnum``): coarse 5×5 c, s2 2c, 2c, s2 4c, 4c ×2, dilated 4c ×4 (rates 2/4/8/16), 4c ×2, up 2c,
    2c, up c, c/2, 3 (raw, clipped). Refinement on ``coarse·m + x·(1-m) ++ ones ++ m``: dilated branch 5×5 c, s2 c,
    2c, s2 2c, 4c ×2, dilated 4c ×4; attention branch 5×5 c, s2 c, 2c, s2 4c, 4c, 4c (ReLU), contextual
    attention, 4c ×2; merge 4c ×2, up 2c, 2c, up c, c/2, 3 (raw, clipped).

    Attributes:
      cnum: base width (32 in DeepFill v1; smaller for smoke runs). Must be even (the c/2 layer).
      dtype: computation dtype (parameters and outputs stay float32).
      bn_groups: unused (no BatchNorm); accepted because the trainer passes it to every model.
    """

    cnum: int = 32
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    def _conv(self, features: int, kernel: int, name: str, strides: int = 1, dilation: int = 1,
              activation: str | None = "elu") -> Conv:
        return Conv(features, kernel, strides=strides, dilation=dilation, activation=activation, dtype=self.dtype,
                    name=name)

    def _encode(self, x: jax.Array, prefix: str, widths: tuple[int, ...], last_activation: str = "elu"):
        """5×5, s2, 3×3, s2, 3×3, 3×3 with ``widths``; names ``<prefix>1``, ``<prefix>2_downsample`` ..."""
        names = ("1", "2_downsample", "3", "4_downsample", "5", "6")
        for i, (suffix, width) in enumerate(zip(names, widths)):
            x = self._conv(width, 5 if i == 0 else 3, prefix + suffix, strides=2 if "down" in suffix else 1,
                           activation=last_activation if i == len(names) - 1 else "elu")(x)
        return x

    def _dilated(self, x: jax.Array, prefix: str) -> jax.Array:
        for i, rate in enumerate((2, 4, 8, 16)):
            x = self._conv(4 * self.cnum, 3, f"{prefix}{7 + i}_atrous", dilation=rate)(x)
        return x

    def _decode(self, x: jax.Array, prefix: str) -> jax.Array:
        """Layers 11 ... 17: 4c, 4c, up 2c, 2c, up c, c/2, 3 (raw), then the clip to [-1, 1]."""
        c = self.cnum
        x = self._conv(4 * c, 3, f"{prefix}11")(x)
        x = self._conv(4 * c, 3, f"{prefix}12")(x)
        x = Deconv(2 * c, dtype=self.dtype, name=f"{prefix}13_upsample")(x)
        x = self._conv(2 * c, 3, f"{prefix}14")(x)
        x = Deconv(c, dtype=self.dtype, name=f"{prefix}15_upsample")(x)
        x = self._conv(c // 2, 3, f"{prefix}16")(x)
        x = self._conv(3, 3, f"{prefix}17", activation=None)(x)
        return jnp.clip(x.astype(jnp.float32), -1.0, 1.0)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """DeepFill's 5-channel input -> ``(coarse, fine)``.

        Args:
          x: (N, H, W, 5) = ``image·(1-m)`` (BGR in [-1, 1]) ++ ones ++ ``m`` (1 = hole); H, W multiples of 8.
          train: unused (no BatchNorm or dropout); part of the trainer's model contract.

        Returns:
          ``(coarse, fine)``: (N, H, W, 3) float32 in [-1, 1], BGR.
        """
        del train
        if x.ndim != 4 or x.shape[-1] != 5:
            raise ValueError("deepfill_v1 Generator: input must be (N, H, W, 5) = image*(1-mask) ++ ones ++ mask, "
                             f"got shape {x.shape}")
        if x.shape[1] % SIZE_MULTIPLE or x.shape[2] % SIZE_MULTIPLE:
            raise ValueError(f"deepfill_v1 Generator: height and width must be multiples of {SIZE_MULTIPLE} (two "
                             f"stride-2 stages, then contextual attention at rate 2), got {x.shape[1:3]}; pad the "
                             "image (jaxinpaint.load pads to the model's multiple)")
        if self.cnum < 2 or self.cnum % 2:
            raise ValueError(f"deepfill_v1 Generator: cnum must be a positive even number, got {self.cnum}")
        c = self.cnum
        x = x.astype(self.dtype)
        xin, ones, mask = x[..., :3], x[..., 3:4], x[..., 4:5]

        # Stage 1: coarse.
        y = self._encode(x, "conv", (c, 2 * c, 2 * c, 4 * c, 4 * c, 4 * c))
        coarse = self._decode(self._dilated(y, "conv"), "conv")

        # Stage 2: refinement on the composite, with the mask as an input again (v1 only).
        xnow = jnp.concatenate([coarse.astype(self.dtype) * mask + xin * (1.0 - mask), ones, mask], axis=-1)
        hallu = self._dilated(self._encode(xnow, "xconv", (c, c, 2 * c, 2 * c, 4 * c, 4 * c)), "xconv")
        att = self._encode(xnow, "pmconv", (c, c, 2 * c, 4 * c, 4 * c, 4 * c), last_activation="relu")
        mask_s = resize_nearest_align_corners(mask, att.shape[1], att.shape[2])
        att, _ = contextual_attention(att, att, mask_s, ksize=3, stride=1, rate=2, align_corners=True)
        att = self._conv(4 * c, 3, "pmconv9")(att)
        att = self._conv(4 * c, 3, "pmconv10")(att)
        fine = self._decode(jnp.concatenate([hallu, att], axis=-1), "allconv")
        return coarse, fine


class Critic(nn.Module):
    """A WGAN critic of DeepFill v1: four 5×5 stride-2 convs (LeakyReLU 0.2), flatten (NHWC), dense 1.

    Attributes:
      cnum: first width (64); the widths are ``cnum, 2cnum, 4cnum, last_multiplier·cnum``.
      last_multiplier: 8 for the local critic (``discriminator_local``), 4 for the global one.
      dtype: computation dtype (scores are float32).
      bn_groups: unused; accepted because the trainer passes it to every model.
    """

    cnum: int = 64
    last_multiplier: int = 8
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """(N, H, W, 3) BGR in [-1, 1] -> (N, 1) scores."""
        del train
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"deepfill_v1 Critic: input must be (N, H, W, 3) images, got shape {x.shape}")
        y = x.astype(self.dtype)
        for i, mult in enumerate((1, 2, 4, self.last_multiplier)):
            y = Conv(mult * self.cnum, 5, strides=2, activation="lrelu", dtype=self.dtype, name=f"conv{i + 1}")(y)
        y = y.reshape(y.shape[0], -1)
        dense = nn.Dense(1, dtype=self.dtype, kernel_init=nn.initializers.glorot_uniform(), name="fc")
        return dense(y).astype(jnp.float32)
