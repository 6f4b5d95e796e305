"""Shift-Net (Yan et al., ECCV 2018; ``Zhaoyi-Yan/Shift-Net_pytorch`` a353431), NHWC: systems-more.md §9.

* :class:`Generator` (``UnetGeneratorShiftTriple``, ``--which_model_netG unet_shift_triple``): an 8-level U-Net
  of 4×4 stride-2 convolutions and transposed convolutions with affine InstanceNorm, whose 32×32 decoder level
  (at 256²) concatenates a third part to the usual ``[decoder, skip]`` pair: the **shift**. Every hole cell
  takes the encoder feature of the known cell whose encoder feature is most similar (cosine) to its own decoder
  feature. 54,944,771 parameters at ``ngf=64``.
* :class:`Discriminator` (``NLayerDiscriminator(3, 64, n_layers=3)`` with ``--norm instance`` and
  ``--use_spectral_norm_D 1``): PyTorch-style spectral norm on every conv (``TorchSNConv2D``), affine
  InstanceNorm on the middle three, LeakyReLU 0.2, a 1-channel PatchGAN map (logits; the original's sigmoid
  + BCE is the objective's log-sigmoid). 2,766,529 parameters.

The skips are LeakyReLU'd: each inner U-Net block applies an in-place LeakyReLU(0.2) to its input before its
down-convolution and then concatenates that same (modified) tensor as the skip, so the decoder sees
``[u_k, LReLU(e_k)]``. The innermost encoder level has no norm (InstanceNorm of a 1×1 map is degenerate).
Weights are initialised N(0, 0.02) with zero biases (``init_type normal``); InstanceNorm keeps (1, 0).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxinpaint import losses
from jaxinpaint.nn.conv import batch_norm
from jaxinpaint.nn.spectral_norm import TorchSNConv2D

Dtype = Any

#: The U-Net level of the shift block, counted from the outside (``layer_to_last=3``: features at H/8).
SHIFT_LEVEL = 3
MASK_RULES = ("nearest", "box")


def _instance_norm(name: str | None = None) -> nn.InstanceNorm:
    """``nn.InstanceNorm2d(affine=True)``: eps 1e-5 (flax's default is 1e-6), biased two-pass variance."""
    return nn.InstanceNorm(epsilon=1e-5, use_fast_variance=False, name=name)


def _lrelu(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, 0.2)


def feature_mask(hole: jax.Array, height: int, width: int, rule: str = "nearest") -> jax.Array:
    """The hole at the shift level, (B, height, width, 1) float 0/1.

    ``'nearest'`` (PyTorch, ``util.py::cal_feat_mask``): torch's nearest ``F.interpolate``, cell (i, j) reads
    pixel (floor(8i), floor(8j)), the top-left of its 8×8 block (``jax.image.resize`` would read the centre and
    move the hole by a cell). ``'box'`` (Torch7): three 4×4 stride-2 pad-1 convolutions with weights 1/16 (a box
    average over zero padding), then ``> 5/16``: a soft coverage test.
    """
    hole = hole.astype(jnp.float32)
    if rule == "nearest":
        return (losses.interpolate_mask_nearest(hole, (height, width)) > 0.5).astype(jnp.float32)
    if rule == "box":
        for _ in range(SHIFT_LEVEL):
            hole = lax.reduce_window(hole, 0.0, lax.add, (1, 4, 4, 1), (1, 2, 2, 1),
                                     ((0, 0), (1, 1), (1, 1), (0, 0))) / 16.0
        if hole.shape[1:3] != (height, width):
            raise ValueError(f"shift_net feature_mask: the box rule gives {hole.shape[1:3]}, expected "
                             f"{(height, width)}")
        return (hole > 5.0 / 16.0).astype(jnp.float32)
    raise ValueError(f"shift_net mask_rule must be one of {MASK_RULES}, got {rule!r}")


def shift(former: jax.Array, latter: jax.Array, flag: jax.Array, eps: float = 0.0):
    """The shift connection (``InnerShiftTriple``, 1×1 patches): ``(shifted, index)``.

    For every hole cell p (``flag`` 1) and known cell q: cos(p, q) = <former_p, latter_q> /
    sqrt(|former_p|²·|latter_q|²); q*(p) is the first maximiser over known q, and ``shifted_p = latter_{q*(p)}``
    (the raw encoder vector) in the hole, 0 elsewhere. The index is a stop-gradient gather, so autodiff gives
    the original's backward exactly: latter receives the gradient of every position that copied it, former none
    through this path. Per-sample masks work (the original needs equal hole counts across the batch).

    Args:
      former, latter: (B, H, W, C) decoder and encoder features.
      flag: (B, H, W, 1), 1 = hole.
      eps: floor of the denominator's square (the original has none: an all-zero feature gives NaN there).

    Returns:
      ``shifted`` (B, H, W, C) and ``index`` (B, H·W) int32, the flat source q*(p) (row-major), meaningful
      at hole cells.
    """
    b, h, w, c = former.shape
    f = former.reshape(b, h * w, c)
    lat = latter.reshape(b, h * w, c)
    hole = flag.reshape(b, h * w) > 0.5
    dots = jnp.einsum("bpc,bqc->bpq", f, lat, precision=lax.Precision.HIGHEST)
    norms = jnp.sum(jnp.square(f), -1)[:, :, None] * jnp.sum(jnp.square(lat), -1)[:, None, :]
    cos = dots / jnp.sqrt(jnp.maximum(norms, eps))
    cos = jnp.where(hole[:, None, :], -jnp.inf, cos)
    index = lax.stop_gradient(jnp.argmax(cos, axis=-1).astype(jnp.int32))
    shifted = jnp.take_along_axis(lat, index[..., None], axis=1) * hole[..., None].astype(lat.dtype)
    return shifted.reshape(b, h, w, c), index


class Generator(nn.Module):
    """``UnetGeneratorShiftTriple``: a U-Net with the shift connection at level 3 (H/8), NHWC.

    Channels of level k (1 = outermost): ``ngf·min(2^(k-1), 8)``; encoder ``e_1 = conv(x)``,
    ``e_k = IN(conv(LReLU(e_{k-1})))`` (no IN at the innermost level); decoder from the innermost level,
    ``u_k = IN(convT(ReLU([u_{k+1}, LReLU(e_k)])))``, with the shift inserted at level 3 (input channels 3·4ngf)
    and ``tanh(convT(ReLU([u_2, LReLU(e_1)])))`` at the top. Every conv is 4×4, stride 2, padding 1, with bias.

    Attributes:
      ngf: base width (64; the reference fixture uses 8).
      input_nc: 4, RGB in [-1, 1] with 0 in the hole ++ a channel that is 1 on **known** pixels; the hole of the
        shift (and of the guidance) is read from that channel.
      output_nc: 3.
      num_downs: U-Net levels (8 at 256²: a 1×1 bottleneck); H and W must be multiples of 2^num_downs.
      mask_rule: how the hole is brought to the shift level, ``'nearest'`` (PyTorch) or ``'box'`` (Torch7);
        see :func:`feature_mask`.
      shift_eps: floor of the squared cosine denominator (0 in the original).
      dtype: computation dtype.
      bn_groups: unused (no BatchNorm); accepted because the trainer passes it to every model.
    """

    ngf: int = 64
    input_nc: int = 4
    output_nc: int = 3
    num_downs: int = 8
    mask_rule: str = "nearest"
    shift_eps: float = 0.0
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    def width(self, level: int) -> int:
        return self.ngf * min(2 ** (level - 1), 8)

    @property
    def size_multiple(self) -> int:
        return 2 ** self.num_downs

    def setup(self):
        if self.num_downs < SHIFT_LEVEL + 2:
            raise ValueError(f"shift_net Generator: num_downs must be >= {SHIFT_LEVEL + 2} (the shift sits at level "
                             f"{SHIFT_LEVEL}), got {self.num_downs}")
        if self.mask_rule not in MASK_RULES:
            raise ValueError(f"shift_net Generator: mask_rule must be one of {MASK_RULES}, got {self.mask_rule!r}")
        n = self.num_downs
        init = nn.initializers.normal(0.02)
        conv = dict(kernel_size=(4, 4), strides=(2, 2), kernel_init=init, bias_init=nn.initializers.zeros,
                    dtype=self.dtype)
        # Index i of `down`/`up` is level i + 1; `down_norm`/`up_norm` index i is level i + 2.
        self.down = [nn.Conv(self.width(k), padding=((1, 1), (1, 1)), **conv) for k in range(1, n + 1)]
        self.down_norm = [_instance_norm() for _ in range(2, n)]
        # torch ConvTranspose2d(4, 2, 1) = a conv over the 2x-dilated input padded by k - 1 - p = 2 (flipped HWIO
        # kernel, as jaxinpaint.nn.conv.ConvTranspose2D stores it).
        self.up = [nn.ConvTranspose(self.width(k - 1) if k > 1 else self.output_nc, padding=((2, 2), (2, 2)),
                                    **conv) for k in range(1, n + 1)]
        self.up_norm = [_instance_norm() for _ in range(2, n + 1)]

    def _check(self, x: jax.Array) -> None:
        if x.ndim != 4 or x.shape[-1] != self.input_nc:
            raise ValueError(f"shift_net Generator: input must be (N, H, W, {self.input_nc}) = image with the hole "
                             f"zeroed ++ known-pixel channel, got shape {x.shape}")
        m = self.size_multiple
        if x.shape[1] % m or x.shape[2] % m:
            raise ValueError(f"shift_net Generator: height and width must be multiples of 2^num_downs = {m}, got "
                             f"{x.shape[1:3]}; pad the image (jaxinpaint.load pads to the model's multiple)")

    def _encode(self, x: jax.Array, levels: int) -> list[jax.Array]:
        """``[e_1, ..., e_levels]`` (before the skips' LeakyReLU)."""
        e = [self.down[0](x.astype(self.dtype))]
        for k in range(2, levels + 1):
            h = self.down[k - 1](_lrelu(e[-1]))
            e.append(self.down_norm[k - 2](h) if k < self.num_downs else h)
        return e

    def guidance_target(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """The encoder half of the shift level's input, ``ReLU(e_3)`` (the ground-truth pass sets InnerCos's
        target with it; only the encoder up to level 3 is needed)."""
        del train
        self._check(x)
        return nn.relu(self._encode(x, SHIFT_LEVEL)[-1])

    def __call__(self, x: jax.Array, *, train: bool = False, return_features: bool = False):
        """(N, H, W, 4) -> (N, H, W, 3) tanh output, and with ``return_features`` a dict of the shift level:
        ``former`` (ReLU of the decoder half), ``latter`` (ReLU of the skip), ``flag`` (hole at that level),
        ``shifted``, ``index`` (:func:`shift`), ``shift_out`` (the 3·4ngf channels entering the up-conv) and
        ``block_<k>`` = ``[u_{k+1}, LReLU(e_k)]``, the output of the U-Net block of level k + 1 (k = 2..n-1)."""
        del train
        self._check(x)
        n = self.num_downs
        e = self._encode(x, n)
        u = self.up_norm[n - 2](self.up[n - 1](nn.relu(e[-1])))
        features = {}
        for k in range(n - 1, 1, -1):
            features[f"block_{k}"] = jnp.concatenate([u, _lrelu(e[k - 1])], axis=-1)
            s = nn.relu(features[f"block_{k}"])
            if k == SHIFT_LEVEL:
                c = s.shape[-1] // 2
                hole = 1.0 - x[..., self.input_nc - 1:]
                flag = feature_mask(hole, s.shape[1], s.shape[2], self.mask_rule)
                shifted, index = shift(s[..., :c], s[..., c:], flag, self.shift_eps)
                features.update(former=s[..., :c], latter=s[..., c:], flag=flag, shifted=shifted, index=index)
                s = jnp.concatenate([s, shifted], axis=-1)
                features["shift_out"] = s
            u = self.up_norm[k - 2](self.up[k - 1](s))
        out = jnp.tanh(self.up[0](nn.relu(jnp.concatenate([u, _lrelu(e[0])], axis=-1))).astype(jnp.float32))
        return (out, features) if return_features else out


class Discriminator(nn.Module):
    """Shift-Net's ``NLayerDiscriminator`` (n_layers 3) with spectral norm and affine InstanceNorm, NHWC.

    4×4 convs with bias: ndf (s2), 2ndf (s2), 4ndf (s2), 8ndf (s1), 1 (s1), padding 1; IN after the 2nd-4th,
    LeakyReLU 0.2 after the first four. Returns the (N, h, w, 1) logits (13×13 on the 120² crop, 30×30 at
    256²). ``train=True`` advances every layer's PyTorch-style power iteration (``mutable=['spectral']``).

    Attributes:
      ndf: base width (64).
      n_layers: stride-2 layers after the first (3).
      use_sn: spectral norm on every conv (``--use_spectral_norm_D 1``).
      norm: ``'instance'`` (affine, PyTorch's ``--norm instance``) or ``'batch'`` (BatchNorm, the Torch7 D,
        which also has no spectral norm).
    """

    ndf: int = 64
    n_layers: int = 3
    use_sn: bool = True
    norm: str = "instance"
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"shift_net Discriminator: input must be (N, H, W, 3) images, got shape {x.shape}")
        if self.norm not in ("instance", "batch"):
            raise ValueError(f"shift_net Discriminator: norm must be 'instance' or 'batch', got {self.norm!r}")
        y = x.astype(self.dtype)
        widths = [self.ndf * min(2 ** i, 8) for i in range(self.n_layers + 1)]
        for i, width in enumerate(widths):
            stride = 2 if i < self.n_layers else 1
            y = TorchSNConv2D(width, 4, stride, 1, use_sn=self.use_sn, dtype=self.dtype, name=f"conv{i}")(
                y, train=train)
            if i and self.norm == "instance":
                y = _instance_norm(name=f"norm{i}")(y)
            elif i:
                y = batch_norm(train, f"norm{i}", self.dtype, self.bn_groups)(y)
            y = _lrelu(y)
        y = TorchSNConv2D(1, 4, 1, 1, use_sn=self.use_sn, dtype=self.dtype, name=f"conv{len(widths)}")(y, train=train)
        return y.astype(jnp.float32)
