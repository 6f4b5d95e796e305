"""PConv U-Net (Liu et al., "Image Inpainting for Irregular Holes Using Partial Convolutions", ECCV 2018).

Architecture as in ``naoto0804/pytorch-inpainting-with-partial-conv: net.py::PConvUNet`` (systems.md §3.2),
built from :class:`jaxinpaint.layers.PartialConv2D` with NVIDIA semantics:

* encoder ``enc_1 .. enc_L`` (``L = layer_size``: 7 at 256², the paper's 8 at 512²): partial convs of
  stride 2 with kernels 7, 5, 5, 3, 3, ... and widths 64, 128, 256, 512, 512, ... (``width`` scales them;
  they are capped at ``8 * width``), no bias, BatchNorm (not on ``enc_1``), ReLU;
* decoder ``dec_L .. dec_1``: nearest ×2 upsampling of the features *and* of the mask, concatenation with
  the encoder's features and mask one level up (the input image and mask for ``dec_1``), 3×3 partial conv
  (no bias), BatchNorm, LeakyReLU(0.2); ``dec_1`` has a bias and neither BatchNorm nor activation, so the
  output is linear.

Input: ``x = image * valid ++ valid`` (N, H, W, 3 + 3) with **1 = valid** (PConv's polarity; the objective
``jaxinpaint.systems.pconv.objective`` flips the project's 1 = hole mask); a one-channel mask (N, H, W, 3 + 1) is
broadcast over the image channels. H and W must be multiples of ``2 ** layer_size``. The masks of every
layer stay binary and shrink the holes layer by layer; they are recomputed from the input on every call.

Differences from naoto0804 worth knowing:

* **Re-normalisation.** naoto0804's partial conv computes ``(conv(x·m) - b) / sum(M) + b`` (no ``sum(1)``
  factor, systems.md §3.2); NVIDIA's (used here, as in the paper) multiplies by ``sum(1) / sum(M)`` with
  ``sum(1) = C_in·kh·kw``. A layer is the same function after dividing its kernel (not its bias) by
  ``C_in·kh·kw``, so naoto0804 weights port with that rescale. With NVIDIA's factor a fully valid window
  gives exactly the plain convolution, so torch's default initialisation keeps its usual scale.
* **Image range.** naoto0804 feeds ImageNet mean/std-normalised images and its output lives in that space.
  jaxinpaint's boundary is [0, 1] images, so with ``normalize_input=True`` (default) the model normalises
  the image itself and maps its linear output back with ``out·std + mean``: the network sees and produces
  what the original does (ported weights behave identically, losses on VGG features are unchanged), while
  callers stay in [0, 1]. The output is not squashed; callers clip it for display (the objective's
  ``pred``). ``normalize_input=False`` feeds [0, 1] directly.
* **Fine-tuning.** ``freeze_encoder_bn=True`` keeps the encoder's BatchNorm in eval mode (running
  statistics, not updated) even with ``train=True``, naoto0804's ``freeze_enc_bn`` / the paper's fine-tuning
  stage. The decoder's BatchNorm still trains.

Submodule names follow naoto0804's (``enc_<i>``/``dec_<i>``, each with ``conv`` and ``bn``), so a torch
``state_dict`` maps by renaming: ``enc_2.conv.input_conv.weight`` -> ``enc_2/conv/kernel`` (OIHW -> HWIO,
divided by ``C_in·kh·kw``), ``enc_2.bn.weight`` -> ``enc_2/bn/scale`` and so on.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinpaint.nn.conv import batch_norm
from jaxinpaint.nn.partial_conv import PartialConv2D
from jaxinpaint.backbones.vgg import IMAGENET_MEAN, IMAGENET_STD

Dtype = Any


def encoder_kernel_size(index: int) -> int:
    """Kernel of encoder layer ``index`` (1-based): 7, 5, 5, then 3 (the paper's and naoto0804's)."""
    return 7 if index == 1 else 5 if index <= 3 else 3


def encoder_channels(index: int, width: int = 64) -> int:
    """Output channels of encoder layer ``index`` (1-based): width·2^(i-1), capped at 8·width."""
    return min(width * 2 ** (index - 1), 8 * width)


def _expand(mask: jax.Array, channels: int) -> jax.Array:
    return jnp.broadcast_to(mask, (*mask.shape[:3], channels))


def upsample_nearest(x: jax.Array) -> jax.Array:
    """torch ``F.interpolate(scale_factor=2, mode='nearest')`` on NHWC: every pixel becomes a 2×2 block."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class PConvBlock(nn.Module):
    """naoto0804's ``PCBActiv``: partial conv, optional BatchNorm, optional activation.

    Attributes:
      features: output channels.
      kernel_size: square kernel; padding is ``kernel_size // 2`` (the 'same' size at stride 1).
      strides: 2 in the encoder, 1 in the decoder.
      use_bn: BatchNorm after the conv.
      activation: 'relu', 'lrelu' (slope 0.2) or 'none'.
      use_bias: conv bias (only the last decoder layer has one: BatchNorm's shift replaces it elsewhere).
      train_bn: whether BatchNorm uses and updates batch statistics; the caller passes
        ``train and not frozen``.
      bn_groups: batch-statistics groups (see ``jaxinpaint.nn.norm``).
    """

    features: int
    kernel_size: int
    strides: int = 1
    use_bn: bool = True
    activation: str = "relu"
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, *,
                 train_bn: bool = False) -> tuple[jax.Array, jax.Array]:
        """Returns ``(features, new_mask)``, the mask with one channel (all its channels are equal)."""
        x, new_mask = PartialConv2D(self.features, self.kernel_size, strides=self.strides,
                                    padding=self.kernel_size // 2, use_bias=self.use_bias, multi_channel=True,
                                    dtype=self.dtype, name="conv")(x, mask)
        if self.use_bn:
            x = batch_norm(train_bn, "bn", self.dtype, self.bn_groups)(x)
        if self.activation == "relu":
            x = nn.relu(x)
        elif self.activation == "lrelu":
            x = nn.leaky_relu(x, 0.2)
        elif self.activation != "none":
            raise ValueError(f"PConvBlock {self.name}: activation must be relu, lrelu or none, "
                             f"got {self.activation!r}")
        return x, new_mask[..., :1]


class PConvUNet(nn.Module):
    """The PConv U-Net generator; see the module docstring.

    Attributes:
      layer_size: encoder (and decoder) depth L: 7 for 256² training, 8 for the paper's 512². Inputs must be
        multiples of ``2 ** layer_size`` on each side.
      width: channels of the first layer (64 in the paper); every width scales with it, so small values give
        test/smoke models.
      in_channels: image channels (3).
      freeze_encoder_bn: fine-tuning mode: encoder BatchNorm in eval mode even when ``train=True``.
      normalize_input: normalise the [0, 1] input with ImageNet mean/std and map the output back (see the
        module docstring).
      dtype: computation dtype (bf16 under ``config.mixed_precision``); the output is float32.
      bn_groups: BatchNorm statistics groups (set by the trainer from ``config.bn_groups``).
    """

    layer_size: int = 7
    width: int = 64
    in_channels: int = 3
    freeze_encoder_bn: bool = False
    normalize_input: bool = True
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @property
    def size_multiple(self) -> int:
        """Input H and W must be multiples of this (callers pad to it: ``inference.inpaint(modulo=...)``)."""
        return 2 ** self.layer_size

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Inpaints a batch.

        Args:
          x: (N, H, W, in_channels + in_channels) or (N, H, W, in_channels + 1): the image (values under the
            hole are ignored) followed by the mask, **1 = valid**.
          train: BatchNorm uses batch statistics and updates its running averages (the encoder's only when
            ``freeze_encoder_bn`` is False).

        Returns:
          (N, H, W, in_channels) float32, linear, in the input's [0, 1] range when trained that way.
        """
        self._check_input(x)
        c = self.in_channels
        image = x[..., :c].astype(jnp.float32)
        mask = jnp.broadcast_to(x[..., c:].astype(jnp.float32), image.shape)
        if self.normalize_input:
            image = (image - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
        common = dict(dtype=self.dtype, bn_groups=self.bn_groups)

        # Encoder: features[i], masks[i] are the outputs of enc_i; index 0 is the input.
        features, masks = [image.astype(self.dtype)], [mask]
        train_encoder_bn = train and not self.freeze_encoder_bn
        for i in range(1, self.layer_size + 1):
            block = PConvBlock(encoder_channels(i, self.width), encoder_kernel_size(i), strides=2,
                               use_bn=i > 1, activation="relu", name=f"enc_{i}", **common)
            h, m = block(features[-1], masks[-1], train_bn=train_encoder_bn)
            features.append(h)
            masks.append(m)

        # Decoder: upsample features and mask, concatenate the skip (features and mask), partial conv.
        h, m = features[-1], masks[-1]
        for i in range(self.layer_size, 0, -1):
            up, skip = upsample_nearest(h), features[i - 1]
            # Every channel of a layer's mask is equal, so masks travel with one channel and are expanded to
            # the concatenated features' channels here (the input mask keeps its own channels).
            m = jnp.concatenate([_expand(upsample_nearest(m), up.shape[-1]),
                                 _expand(masks[i - 1], skip.shape[-1])], axis=-1)
            h = jnp.concatenate([up, skip], axis=-1)
            last = i == 1
            block = PConvBlock(c if last else encoder_channels(i - 1, self.width), 3, strides=1,
                               use_bn=not last, activation="none" if last else "lrelu", use_bias=last,
                               name=f"dec_{i}", **common)
            h, m = block(h, m, train_bn=train)
        out = h.astype(jnp.float32)
        if self.normalize_input:
            out = out * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN)
        return out

    def _check_input(self, x: jax.Array) -> None:
        if self.layer_size < 1 or self.width < 1:
            raise ValueError(f"PConvUNet: layer_size and width must be >= 1, got layer_size="
                             f"{self.layer_size}, width={self.width}")
        c = self.in_channels
        if self.normalize_input and c != 3:
            raise ValueError(f"PConvUNet: normalize_input=True needs RGB input (in_channels=3), got {c}")
        if x.ndim != 4 or x.shape[-1] not in (2 * c, c + 1):
            raise ValueError(f"PConvUNet: input must be (N, H, W, {2 * c} or {c + 1}) = image ++ valid mask, "
                             f"got shape {tuple(x.shape)}")
        multiple = self.size_multiple
        if x.shape[1] % multiple or x.shape[2] % multiple:
            raise ValueError(f"PConvUNet: H and W must be multiples of 2**layer_size = {multiple} "
                             f"(layer_size={self.layer_size}), got {x.shape[1]}x{x.shape[2]}; pad the image "
                             f"(e.g. inference.inpaint(..., modulo={multiple}))")


Model = PConvUNet
