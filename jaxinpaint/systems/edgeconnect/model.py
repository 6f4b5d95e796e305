"""EdgeConnect's networks (Nazeri et al. 2019, ``knazeri/edge-connect`` ``src/networks.py``), NHWC.

Written from the specification (``shared/docs/systems-more.md`` §8.2; the original is CC BY-NC 4.0):

* :class:`EdgeGenerator` (G1): reflect-pad 7×7 conv, two 4×4 stride-2 convs (zero pad 1), 8 residual blocks
  at 4×width with dilation 2, two 4×4 stride-2 transposed convs, reflect-pad 7×7 conv to 1 channel, sigmoid.
  Every conv but the last is spectrally normalised (PyTorch-style, u and v in the ``'spectral'``
  collection); the residual blocks' convs have no bias under spectral norm. InstanceNorm (no affine, eps 1e-5)
  and ReLU after every conv of the encoder and the decoder. 10,761,089 parameters at width 64.
* :class:`InpaintGenerator` (G2): the same structure on 4 input channels, without spectral norm, with biases
  in the residual blocks, a 3-channel output and ``(tanh(x) + 1) / 2``. 10,774,595 parameters.
* :class:`Discriminator` (D1 on grey ⧺ edge, D2 on RGB): a 70×70 PatchGAN of five 4×4 convs (strides 2, 2,
  2, 1, 1; pad 1), spectral norm and no bias, LeakyReLU 0.2 after the first four; returns
  ``(sigmoid(conv5) or conv5 for the hinge loss, [conv1..conv4 activations, conv5 logits])``.
  2,762,752 (2 channels) / 2,763,776 (3 channels) parameters.

Parameter names follow the original's module indices (``encoder_1`` is ``encoder.1``, ``middle_0/conv_block_5``
is ``middle.0.conv_block.5``, ``conv1_0`` is ``conv1.0``), so the converter maps keys by rule. Weights start
from N(0, 0.02) with zero biases (``init_weights`` of the original, on by default; with spectral norm it
initialises ``weight_orig``). ``width`` scales every channel count (64 is the original; the reference fixtures
use 16). H and W must be multiples of 4 (two down- and up-samplings; the original has no padding code).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinpaint.nn.spectral_norm import TorchSNConv2D, TorchSNConvTranspose2D

SIZE_MULTIPLE = 4


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """``nn.InstanceNorm2d(affine=False, track_running_stats=False)``: per sample and channel over H, W, with
    the biased variance; identical in training and evaluation."""
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class ResnetBlock(nn.Module):
    """Reflect pad d, 3×3 conv with dilation d, IN, ReLU, reflect pad 1, 3×3 conv, IN; ``x + block(x)`` with no
    activation after the sum (``src/networks.py`` ResnetBlock)."""

    features: int
    dilation: int = 2
    use_sn: bool = False
    use_bias: bool = True
    init_std: float | None = 0.02

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        common = dict(features=self.features, kernel_size=3, padding_mode="reflect", use_sn=self.use_sn,
                      use_bias=self.use_bias, init_std=self.init_std)
        y = TorchSNConv2D(padding=self.dilation, dilation=self.dilation, name="conv_block_1", **common)(x, train=train)
        y = nn.relu(instance_norm(y))
        y = TorchSNConv2D(padding=1, name="conv_block_5", **common)(y, train=train)
        return x + instance_norm(y)


class _Generator(nn.Module):
    """The encoder / residual middle / decoder generator both EdgeConnect stages share.

    Attributes:
      width: channels of the first conv (64 in the original); the others are 2× and 4× it.
      residual_blocks: residual blocks in the middle (8).
      use_spectral_norm: spectral norm on every conv but the last (the edge generator's default).
      residual_bias: biases in the residual blocks' convs; ``None`` = the original's rule, ``not
        use_spectral_norm`` (a converter that folds the norms into the kernels keeps it False).
      init_std: N(0, init_std²) kernels and zero biases at initialisation; ``None`` = PyTorch's default init.
    """

    width: int = 64
    residual_blocks: int = 8
    use_spectral_norm: bool = False
    residual_bias: bool | None = None
    init_std: float | None = 0.02

    out_channels = 1
    in_channels = 3
    size_multiple = SIZE_MULTIPLE

    def _output(self, logits: jax.Array) -> jax.Array:
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """(N, H, W, in_channels) -> (N, H, W, out_channels) in [0, 1]; H and W multiples of 4.

        Intermediate activations are sown into ``'intermediates'`` under the original's names
        (``act_encoder_3`` ... ``act_decoder_7``, the logits) for parity tests.
        """
        n, h, w, c = x.shape
        if c != self.in_channels or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(f"{type(self).__name__}: expected (N, H, W, {self.in_channels}) with H and W multiples "
                             f"of {SIZE_MULTIPLE}, got {x.shape}")
        sn, ch = self.use_spectral_norm, self.width
        res_bias = (not sn) if self.residual_bias is None else self.residual_bias

        def conv(features, k, stride, pad, mode, name, use_sn=sn):
            return TorchSNConv2D(features=features, kernel_size=k, strides=stride, padding=pad, padding_mode=mode,
                                 use_sn=use_sn, init_std=self.init_std, name=name)

        x = nn.relu(instance_norm(conv(ch, 7, 1, 3, "reflect", "encoder_1")(x, train=train)))
        self.sow("intermediates", "act_encoder_3", x)
        x = nn.relu(instance_norm(conv(2 * ch, 4, 2, 1, "zeros", "encoder_4")(x, train=train)))
        self.sow("intermediates", "act_encoder_6", x)
        x = nn.relu(instance_norm(conv(4 * ch, 4, 2, 1, "zeros", "encoder_7")(x, train=train)))
        self.sow("intermediates", "act_encoder_9", x)
        for i in range(self.residual_blocks):
            x = ResnetBlock(4 * ch, 2, use_sn=sn, use_bias=res_bias, init_std=self.init_std,
                            name=f"middle_{i}")(x, train=train)
            self.sow("intermediates", f"act_middle_{i}", x)
        for features, name, act in ((2 * ch, "decoder_0", "act_decoder_2"), (ch, "decoder_3", "act_decoder_5")):
            x = TorchSNConvTranspose2D(features=features, kernel_size=4, strides=2, padding=1, use_sn=sn,
                                       init_std=self.init_std, name=name)(x, train=train)
            x = nn.relu(instance_norm(x))
            self.sow("intermediates", act, x)
        x = conv(self.out_channels, 7, 1, 3, "reflect", "decoder_7", use_sn=False)(x, train=train)
        self.sow("intermediates", "act_decoder_7", x)
        return self._output(x)


class EdgeGenerator(_Generator):
    """G1: ``[grey·(1−m)+m, edge·(1−m), m]`` -> the edge map in [0, 1] (sigmoid); spectral norm by default."""

    use_spectral_norm: bool = True

    def _output(self, logits):
        return jax.nn.sigmoid(logits)


class InpaintGenerator(_Generator):
    """G2: ``[rgb·(1−m)+m, edge]`` -> the RGB image in [0, 1], ``(tanh(x) + 1) / 2``; no spectral norm."""

    out_channels = 3
    in_channels = 4

    def _output(self, logits):
        return (jnp.tanh(logits) + 1.0) / 2.0


class Discriminator(nn.Module):
    """EdgeConnect's 70×70 PatchGAN (``src/networks.py`` Discriminator).

    Attributes:
      width: channels of conv1 (64); conv2..conv4 have 2×, 4×, 8× it.
      use_sigmoid: apply a sigmoid to conv5 (the nsgan and lsgan losses); False for the hinge loss.
      use_spectral_norm: spectral norm on every conv (and then no biases), the original's default.
      init_std: N(0, init_std²) kernels at initialisation; ``None`` = PyTorch's default init.
    """

    width: int = 64
    use_sigmoid: bool = True
    use_spectral_norm: bool = True
    init_std: float | None = 0.02

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, list[jax.Array]]:
        """(N, H, W, C) -> (outputs (N, H', W', 1), [conv1, conv2, conv3, conv4 after LeakyReLU, conv5 logits])."""
        features = []
        ch = self.width
        for i, (out, stride) in enumerate(((ch, 2), (2 * ch, 2), (4 * ch, 2), (8 * ch, 1), (1, 1)), start=1):
            x = TorchSNConv2D(features=out, kernel_size=4, strides=stride, padding=1,
                              use_bias=not self.use_spectral_norm, use_sn=self.use_spectral_norm,
                              init_std=self.init_std, name=f"conv{i}_0")(x, train=train)
            if i < 5:
                x = nn.leaky_relu(x, 0.2)
            features.append(x)
        return (jax.nn.sigmoid(x) if self.use_sigmoid else x), features
