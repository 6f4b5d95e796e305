"""CTSDG's networks (Guo, Yang, Huang, "Image Inpainting via Conditional Texture and Structure Dual
Generation", ICCV 2021; ``xiefan-guo/ctsdg`` @ def0274, MIT), NHWC. Specification: systems-more.md §11.

:class:`Generator` (52,147,789 parameters at ``width=64``) works in CTSDG's own conventions: images in
[-1, 1] and masks with **1 = valid (known)**; ``jaxinpaint.systems.ctsdg.objective`` converts the project's
``{'image': [0, 1], 'mask': 1 = hole}`` at its boundary. Its pieces:

* two partial-convolution encoders of ``depth`` levels (7 in the original, so inputs are multiples of
  128): the *texture* stream on ``image·m`` with the mask repeated to 3 channels, the *structure* stream on
  ``edge·m ++ grey·m`` with the mask repeated to 2 channels. Each level is a ``PConvBNActiv``: the PConv
  U-Net's block (``jaxinpaint.systems.pconv.model.PConvBlock``: NVIDIA's multi-channel partial convolution,
  ratio ``C_in·k·k / count`` with the count clamped to [0, 1], no bias), BatchNorm (not at level 1), ReLU;
  kernels 7, 5, 5, 3, ... at stride 2; widths 64, 128, 256, 512, 512, ...
* two decoders, **cross-wired**: the texture decoder starts from the *structure* encoder's deepest output
  (and mask) and takes its skips from the texture encoder; the structure decoder the other way round. Each
  step: features ×2 bilinear (half-pixel centres), mask ×2 nearest, concatenation with the skip's features
  and mask, 3×3 partial conv + BatchNorm + LeakyReLU(0.2);
* projections used only by the intermediate loss: a bottleneck residual block (3×3 convs 64→16→64 without
  bias, BatchNorm) then a 1×1 conv to RGB + tanh (texture) or to one edge channel + sigmoid (structure);
* Bi-GFF: gates ``σ(conv3×3(t ++ s))``; ``t' = t + γ_t·(g_st ⊙ s)`` and then ``s' = s + γ_s·(g_ts ⊙ t')`` with
  the *updated* t' (the original's order); γ's start at 0;
* fusion: 3×3 stride-2 conv + LeakyReLU, the contextual feature aggregation (CFA: region affinity learning,
  then multi-scale aggregation with dilations 1, 2, 4, 8), a 3×3 conv on ``x ++ cfa``, ×2 bilinear, and a 1×1
  conv on ``that ++ bigff`` + tanh.

:class:`Discriminator` (5,531,729 parameters): a texture branch on the RGB image and a structure branch on
``edge ++ grey``, each EdgeConnect's 70×70 PatchGAN (PyTorch-style spectral norm, no bias, sigmoid), and a
learned :class:`EdgeDetector` whose edges of the judged image replace the Canny edges for fakes.

Initialisation follows the original's ``weights_init``: every generator conv N(0, 0.02) with zero bias,
BatchNorm scale N(1, 0.02); the discriminator branches' convs N(0, 0.02); the edge detector keeps PyTorch's
default initialisation (applied in :meth:`init`, after Flax's per-layer initialisers, as the original's
``self.apply(weights_init())`` runs after construction).

Running statistics: the generator's BatchNorm uses the project's BatchNorm (biased batch variance in the
running average, ``jaxinpaint.nn.norm``); the edge detector's updates them with the unbiased variance, as
PyTorch does, so its state after a training-mode call equals the original's. Only eval-mode inference reads
running statistics, and only the generator's.

Layer names follow the original's modules (``ec_texture_1/conv``, ``dc_structure_3/bn``, ``bigff/texture_gate``,
``cfa/msfa/dilated_conv_2``, ``texture_branch/conv4``, ``edge_detector/res_layer_3``...), so
``jaxinpaint.systems.ctsdg.convert`` maps a released state dict by renaming.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from jaxinpaint.nn.conv import Conv2D, batch_norm
from jaxinpaint.nn.norm import BatchNorm
from jaxinpaint.nn.spectral_norm import TorchSNConv2D
from jaxinpaint.systems.pconv.model import PConvBlock, encoder_channels, encoder_kernel_size, upsample_nearest

Dtype = Any
HIGHEST = lax.Precision.HIGHEST

# ----------------------------------------------------------------------------------------------------------
# Resizing
# ----------------------------------------------------------------------------------------------------------


def upsample_bilinear(x: jax.Array) -> jax.Array:
    """torch ``F.interpolate(scale_factor=2, mode='bilinear')`` (align_corners=False): half-pixel centres,
    which is what ``jax.image.resize`` does when enlarging (no anti-aliasing is involved)."""
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear").astype(x.dtype)


def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of torch's bilinear resize with ``align_corners=True`` (float32 arithmetic)."""
    scale = np.float32((n_in - 1) / np.float32(n_out - 1)) if n_out > 1 else np.float32(0.0)
    src = np.arange(n_out, dtype=np.float32) * scale
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def resize_bilinear_align_corners(x: jax.Array, out_h: int, out_w: int) -> jax.Array:
    """torch ``F.interpolate(mode='bilinear', align_corners=True)`` of an NHWC array (corner pixels map onto
    corner pixels), as two small matrix products; RAL shrinks its foreground with it."""
    mh, mw = _align_corners_matrix(x.shape[1], out_h), _align_corners_matrix(x.shape[2], out_w)
    return jnp.einsum("ph,nhwc,qw->npqc", mh, x, mw, precision=HIGHEST)


# ----------------------------------------------------------------------------------------------------------
# Region affinity learning (the attention half of CFA)
# ----------------------------------------------------------------------------------------------------------


def _background_patches(x: jax.Array) -> jax.Array:
    """All 4×4 windows at stride 2 of ``x`` zero-padded by 1, row-major: (N, H/2 · W/2, 4·4·C), (ky, kx, c).

    With ``x`` padded to (2(h+1), 2(w+1)) and cut into 2×2 blocks, window (py, px) holds block rows py, py+1
    and block columns px, px+1, so the windows are four shifted views of the blocks.
    """
    n, hh, ww, c = x.shape
    h, w = hh // 2, ww // 2
    blocks = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(n, h + 1, 2, w + 1, 2, c)
    views = jnp.stack([jnp.stack([blocks[:, a:a + h, :, b:b + w] for b in (0, 1)], axis=3) for a in (0, 1)],
                      axis=2)  # (n, h, a, row-in-block, b, w, col-in-block, c)
    return views.transpose(0, 1, 5, 2, 3, 4, 6, 7).reshape(n, h * w, 16 * c)


def _fold_stride2(pieces: jax.Array) -> jax.Array:
    """The transpose of :func:`_background_patches`: sums 4×4 pieces (N, h, w, 4, 4, C) placed at stride 2
    on a canvas cropped by 1 pixel per side, i.e. ``conv_transpose2d(stride=2, padding=1)``'s placement."""
    n, h, w, _, _, c = pieces.shape
    k = pieces.reshape(n, h, w, 2, 2, 2, 2, c)  # (a, row-in-block, b, col-in-block)
    canvas = 0.0
    for a in (0, 1):
        for b in (0, 1):
            piece = k[:, :, :, a, :, b].transpose(0, 1, 3, 2, 4, 5)  # (n, h, row, w, col, c)
            canvas = canvas + jnp.pad(piece, ((0, 0), (a, 1 - a), (0, 0), (b, 1 - b), (0, 0), (0, 0)))
    return canvas.reshape(n, 2 * h + 2, 2 * w + 2, c)[:, 1:-1, 1:-1]


def region_affinity(x: jax.Array, *, softmax_scale: float = 10.0, eps: float = 1e-4) -> jax.Array:
    """CTSDG's RAL (``models/generator/cfa.py``) with the original's settings (3×3 patches, stride 1, rate 2),
    on (N, 2h, 2w, C) features used as background and foreground alike:

    1. ``f`` = x shrunk by 2, bilinear with **align_corners=True**;
    2. the 3×3 patches of ``f`` (zero padding 1), each divided by ``max(‖patch‖₂, 1e-4)``, score every
       position of ``f`` (a self-similarity: every position, its own included, is a candidate; no hole mask);
    3. softmax over the h·w candidates of 10·score, clamped at ≥ 1e-8;
    4. each position pastes the attention-weighted 4×4 patches of x (zero padding 1, stride 2) back at
       stride 2 (``conv_transpose2d(stride=2, padding=1) / 4``).

    Per sample, no mixing across the batch. The score and paste steps are (h·w)² matrix products: 4096² per
    sample at a 256² input (64 MB of float32 scores).
    """
    n, hh, ww, c = x.shape
    if hh % 2 or ww % 2 or hh < 2 or ww < 2:
        raise ValueError(f"region_affinity: height and width must be even and >= 2, got {hh}x{ww}")
    h, w = hh // 2, ww // 2
    x = x.astype(jnp.float32)
    f = jnp.pad(resize_bilinear_align_corners(x, h, w), ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([f[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=-1)
    patches = patches.reshape(n, h * w, 9 * c)
    norms = jnp.sqrt(jnp.sum(jnp.square(patches), axis=-1, keepdims=True))
    normed = patches / jnp.maximum(norms, eps)
    scores = jnp.einsum("nqk,npk->nqp", patches, normed, precision=HIGHEST)
    attention = jnp.maximum(jax.nn.softmax(scores * softmax_scale, axis=-1), 1e-8)
    pasted = jnp.einsum("nqp,npk->nqk", attention, _background_patches(x), precision=HIGHEST)
    return _fold_stride2(pasted.reshape(n, h, w, 4, 4, c)) / 4.0


# ----------------------------------------------------------------------------------------------------------
# Generator parts
# ----------------------------------------------------------------------------------------------------------


class MSFA(nn.Module):
    """Multi-scale feature aggregation: ``Σ_i softmax_i(ReLU(conv1×1(ReLU(conv3×3(x))))) · ReLU(conv_d_i(x))``
    with 3×3 convs of dilation (= padding) 1, 2, 4, 8."""

    features: int
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weights = nn.relu(Conv2D(self.features, 3, padding=1, dtype=self.dtype, name="weight_calc_0")(x))
        weights = nn.relu(Conv2D(len(self.dilations), 1, dtype=self.dtype, name="weight_calc_2")(weights))
        weights = jax.nn.softmax(weights.astype(jnp.float32), axis=-1).astype(x.dtype)
        out = 0.0
        for i, d in enumerate(self.dilations):
            branch = Conv2D(self.features, 3, padding=d, dilation=d, dtype=self.dtype, name=f"dilated_conv_{i}")
            out = out + weights[..., i:i + 1] * nn.relu(branch(x))
        return out


class CFA(nn.Module):
    """Contextual feature aggregation: :func:`region_affinity` of x with itself, then :class:`MSFA`."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        attended = region_affinity(x).astype(x.dtype)
        self.sow("intermediates", "ral", attended)
        return MSFA(self.features, dtype=self.dtype, name="msfa")(attended)


class BiGFF(nn.Module):
    """Bi-directional gated feature fusion (``models/generator/bigff.py``); returns ``t' ++ s'``."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, texture: jax.Array, structure: jax.Array) -> jax.Array:
        energy = jnp.concatenate([texture, structure], axis=-1)
        gate_s2t = nn.sigmoid(Conv2D(self.features, 3, padding=1, dtype=self.dtype, name="structure_gate")(energy))
        gate_t2s = nn.sigmoid(Conv2D(self.features, 3, padding=1, dtype=self.dtype, name="texture_gate")(energy))
        gamma_t = self.param("texture_gamma", nn.initializers.zeros, (1,), jnp.float32).astype(texture.dtype)
        gamma_s = self.param("structure_gamma", nn.initializers.zeros, (1,), jnp.float32).astype(texture.dtype)
        texture = texture + gamma_t * (gate_s2t * structure)
        structure = structure + gamma_s * (gate_t2s * texture)  # the updated texture, as the original
        return jnp.concatenate([texture, structure], axis=-1)


class Bottleneck(nn.Module):
    """The projections' residual block: ReLU(x + BN(conv(ReLU(BN(conv(x)))))), 3×3 convs without bias."""

    planes: int
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train_bn: bool) -> jax.Array:
        y = Conv2D(self.planes, 3, padding=1, use_bias=False, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(batch_norm(train_bn, "bn1", self.dtype, self.bn_groups)(y))
        y = Conv2D(x.shape[-1], 3, padding=1, use_bias=False, dtype=self.dtype, name="conv2")(y)
        y = batch_norm(train_bn, "bn2", self.dtype, self.bn_groups)(y)
        return nn.relu(y + x)


class Projection(nn.Module):
    """``Feature2Texture`` (RGB, tanh) or ``Feature2Structure`` (one edge channel, sigmoid)."""

    planes: int
    out_channels: int
    resolver: str  # 'texture_resolver' or 'structure_resolver' (the original's attribute names)
    activation: str  # 'tanh' or 'sigmoid'
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train_bn: bool) -> jax.Array:
        y = Bottleneck(self.planes, self.dtype, self.bn_groups, name=self.resolver)(x, train_bn=train_bn)
        y = Conv2D(self.out_channels, 1, dtype=self.dtype, name="out_layer")(y).astype(jnp.float32)
        return jnp.tanh(y) if self.activation == "tanh" else nn.sigmoid(y)


def _expand(mask: jax.Array, channels: int) -> jax.Array:
    """A layer's one-channel mask as the ``channels`` identical channels the original carries."""
    return jnp.broadcast_to(mask, (*mask.shape[:3], channels))


class _OriginalInit:
    """``init`` followed by the original's ``weights_init`` pass over the parameters (see the module docstring).

    ``_init_rule(path) -> 'normal' | 'scale' | 'zero' | None`` says what each parameter becomes: N(0, 0.02),
    N(1, 0.02), 0, or what Flax initialised.
    """

    @nn.nowrap
    def init(self, rngs, *args, **kwargs):
        variables = super().init(rngs, *args, **kwargs)
        key = rngs["params"] if isinstance(rngs, Mapping) else rngs
        flat = traverse_util.flatten_dict(dict(variables["params"]))
        rules = {path: self._init_rule(path) for path in sorted(flat)}
        drawn = [path for path, rule in rules.items() if rule in ("normal", "scale")]
        # One draw for every re-initialised parameter: a threefry call per shape costs seconds of compilation.
        noise = 0.02 * jax.random.normal(jax.random.fold_in(key, 0x5EED), (sum(flat[p].size for p in drawn),))
        offset = 0
        for path in drawn:
            value = flat[path]
            part = noise[offset:offset + value.size].reshape(value.shape).astype(value.dtype)
            flat[path] = part + 1.0 if rules[path] == "scale" else part
            offset += value.size
        for path, rule in rules.items():
            if rule == "zero":
                flat[path] = jnp.zeros_like(flat[path])
        return {**variables, "params": traverse_util.unflatten_dict(flat)}


# ----------------------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------------------


class Generator(_OriginalInit, nn.Module):
    """CTSDG's two-stream generator; see the module docstring.

    Attributes:
      width: the first encoder level's channels (64); every width follows it (encoder min(width·2^i,
        8·width), projections width/4, Bi-GFF and CFA width).
      depth: encoder and decoder levels (7 in the original). Inputs are multiples of ``2 ** depth``; smaller
        values give small test and smoke models.
      out_channels: RGB output channels (3).
      freeze_bn: the fine-tuning stage (``freeze_ec_bn``): **every** BatchNorm of the generator (encoders,
        decoders, projections) uses and keeps its running statistics even in training mode; the affine
        parameters still train.
      dtype: computation dtype (bfloat16 under mixed precision); RAL, the heads and the outputs are float32.
      bn_groups: BatchNorm statistics groups (``config.bn_groups``).
    """

    width: int = 64
    depth: int = 7
    out_channels: int = 3
    freeze_bn: bool = False
    dtype: Dtype = jnp.float32
    bn_groups: int = 1

    @property
    def size_multiple(self) -> int:
        return 2 ** self.depth

    @nn.nowrap
    def _init_rule(self, path: tuple[str, ...]) -> str | None:
        return {"kernel": "normal", "scale": "scale", "bias": "zero"}.get(path[-1])

    @nn.compact
    def __call__(self, image: jax.Array, structure: jax.Array, mask: jax.Array, *,
                 train: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Inpaints a batch (CTSDG's ``generator(input_image, input_edge, mask)``).

        Args:
          image: (N, H, W, 3) ``image·mask`` in [-1, 1].
          structure: (N, H, W, 2) ``edge·mask ++ grey·mask``.
          mask: (N, H, W, 1), **1 = valid**.
          train: BatchNorm uses batch statistics and updates its running averages (unless ``freeze_bn``).

        Returns:
          ``(output, projected_image, projected_edge)``: tanh RGB, tanh RGB and a sigmoid edge map, float32.
        """
        self._check(image, structure, mask)
        train_bn = train and not self.freeze_bn
        mask = mask.astype(jnp.float32)
        texture_skips = self._encode("texture", "t", image, mask, train_bn)
        structure_skips = self._encode("structure", "s", structure, mask, train_bn)
        # Cross-wired: each decoder starts from the *other* stream's deepest features.
        texture = self._decode("texture", "t", structure_skips[-1], texture_skips, train_bn)
        structure = self._decode("structure", "s", texture_skips[-1], structure_skips, train_bn)

        common = dict(dtype=self.dtype, bn_groups=self.bn_groups)
        planes = max(self.width // 4, 1)
        projected_image = Projection(planes, self.out_channels, "texture_resolver", "tanh", **common,
                                     name="texture_feature_projection")(texture, train_bn=train_bn)
        projected_edge = Projection(planes, 1, "structure_resolver", "sigmoid", **common,
                                    name="structure_feature_projection")(structure, train_bn=train_bn)

        fused = BiGFF(self.width, self.dtype, name="bigff")(texture, structure)
        x = nn.leaky_relu(Conv2D(self.width, 3, strides=2, padding=1, dtype=self.dtype, name="fusion_layer1")(fused),
                          0.2)
        self.sow("intermediates", "cfa_in", x)
        attended = CFA(self.width, self.dtype, name="cfa")(x)
        self.sow("intermediates", "cfa_out", attended)
        x = Conv2D(self.width, 3, padding=1, dtype=self.dtype, name="fusion_layer2")(
            jnp.concatenate([x, attended], axis=-1))
        x = nn.leaky_relu(x, 0.2)
        self.sow("intermediates", "fusion2", x)
        x = upsample_bilinear(x)
        logits = Conv2D(self.out_channels, 1, dtype=self.dtype, name="out_layer")(
            jnp.concatenate([x, fused], axis=-1)).astype(jnp.float32)
        self.sow("intermediates", "output_logits", logits)
        return jnp.tanh(logits), projected_image, projected_edge

    def _encode(self, stream: str, tag: str, x: jax.Array, mask: jax.Array, train_bn: bool):
        """Levels 0..depth of one encoder: ``[(features, one-channel mask), ...]`` (level 0 = the input)."""
        skips = [(x.astype(self.dtype), mask)]
        for i in range(1, self.depth + 1):
            block = PConvBlock(encoder_channels(i, self.width), encoder_kernel_size(i), strides=2, use_bn=i > 1,
                               activation="relu", dtype=self.dtype, bn_groups=self.bn_groups, name=f"ec_{stream}_{i}")
            h, m = block(*skips[-1], train_bn=train_bn)
            self.sow("intermediates", f"ec_{tag}_{i}", h)
            self.sow("intermediates", f"ec_{tag}_{i}_mask", m)
            skips.append((h, m))
        return skips

    def _decode(self, stream: str, tag: str, start, skips, train_bn: bool) -> jax.Array:
        h, m = start
        for i in range(self.depth, 0, -1):
            h, m = upsample_bilinear(h), upsample_nearest(m)
            skip, skip_mask = skips[i - 1]
            mask = jnp.concatenate([_expand(m, h.shape[-1]), _expand(skip_mask, skip.shape[-1])], axis=-1)
            features = encoder_channels(i - 1, self.width) if i > 1 else self.width
            block = PConvBlock(features, 3, strides=1, use_bn=True, activation="lrelu", dtype=self.dtype,
                               bn_groups=self.bn_groups, name=f"dc_{stream}_{i}")
            h, m = block(jnp.concatenate([h, skip.astype(h.dtype)], axis=-1), mask, train_bn=train_bn)
            self.sow("intermediates", f"dc_{tag}_{i}", h)
            self.sow("intermediates", f"dc_{tag}_{i}_mask", m)
        return h

    def _check(self, image, structure, mask) -> None:
        if self.width < 4 or self.depth < 2:
            raise ValueError(f"ctsdg Generator: width must be >= 4 and depth >= 2, got width={self.width}, "
                             f"depth={self.depth}")
        for name, x, channels in (("image", image, None), ("structure", structure, None), ("mask", mask, 1)):
            if x.ndim != 4 or x.shape[:3] != image.shape[:3] or (channels and x.shape[-1] != channels):
                raise ValueError(f"ctsdg Generator: {name} must be NHWC with the image's (N, H, W)"
                                 f"{' and one channel' if channels else ''}: image {tuple(image.shape)}, "
                                 f"{name} {tuple(x.shape)}")
        multiple = self.size_multiple
        if image.shape[1] % multiple or image.shape[2] % multiple:
            raise ValueError(f"ctsdg Generator: H and W must be multiples of 2**depth = {multiple} (depth="
                             f"{self.depth}), got {image.shape[1]}x{image.shape[2]}; pad the image first")


# ----------------------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------------------


class PatchBranch(nn.Module):
    """``TextureBranch`` / ``StructureBranch``: EdgeConnect's 70×70 PatchGAN with PyTorch spectral norm.

    4×4 convs without bias, widths w, 2w, 4w at stride 2, 8w and 1 at stride 1 (padding 1), LeakyReLU(0.2)
    between them, sigmoid output. The activations ``act_conv1`` ... ``act_conv5`` (after the LeakyReLU; ``conv5``
    before the sigmoid) are sown into ``'intermediates'``.
    """

    width: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        w = self.width
        for i, (features, stride) in enumerate(((w, 2), (2 * w, 2), (4 * w, 2), (8 * w, 1), (1, 1)), start=1):
            x = TorchSNConv2D(features, 4, strides=stride, padding=1, use_bias=False, name=f"conv{i}")(x, train=train)
            if i < 5:
                x = nn.leaky_relu(x, 0.2)
            self.sow("intermediates", f"act_conv{i}", x)
        return nn.sigmoid(x)


class EdgeDetector(nn.Module):
    """The discriminator's learned edge detector (``structure_branch.py``): 3×3 conv + BN + ReLU, a residual
    pair of 3×3 conv + BN, ReLU, then a 1×1 conv + sigmoid. PyTorch's default initialisation; BatchNorm
    running variances updated with the unbiased batch variance, as PyTorch does."""

    width: int = 16
    bn_groups: int = 1

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        def conv_bn(x, conv, bn):
            x = Conv2D(self.width, 3, padding=1, name=conv)(x)
            return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, num_groups=self.bn_groups,
                             unbiased_running_var=True, name=bn)(x)

        h = nn.relu(conv_bn(image, "projection_0", "projection_1"))
        r = conv_bn(nn.relu(conv_bn(h, "res_layer_0", "res_layer_1")), "res_layer_3", "res_layer_4")
        return nn.sigmoid(Conv2D(1, 1, name="out_layer")(nn.relu(h + r)))


class Discriminator(_OriginalInit, nn.Module):
    """CTSDG's discriminator; see the module docstring.

    Attributes:
      width: the branches' first width (64).
      edge_width: the edge detector's channels (16).
      bn_groups: BatchNorm statistics groups of the edge detector.
    """

    width: int = 64
    edge_width: int = 16
    bn_groups: int = 1

    @nn.nowrap
    def _init_rule(self, path: tuple[str, ...]) -> str | None:
        return "normal" if path[0].endswith("_branch") and path[-1] == "kernel" else None

    @nn.compact
    def __call__(self, image: jax.Array, grey: jax.Array, edge: jax.Array, *, is_real: bool = False,
                 train: bool = False) -> tuple[jax.Array, jax.Array]:
        """``forward(output, gray_image, real_edge, is_real)`` of the original.

        Args:
          image: (N, H, W, 3) in [-1, 1] (the ground truth or the generator's raw output).
          grey: (N, H, W, 1) the ground truth's full greyscale image.
          edge: (N, H, W, 1) its Canny edges; the structure branch sees them only when ``is_real``, otherwise
            the edge detector's edges of ``image``.
          is_real: which edges the structure branch judges.
          train: spectral-norm power iterations and BatchNorm batch statistics (state updates recorded).

        Returns:
          ``(texture ++ structure probabilities (N, h, w, 2), the edge detector's map (N, H, W, 1))``.
        """
        if image.ndim != 4 or grey.shape[:3] != image.shape[:3] or edge.shape != grey.shape:
            raise ValueError(f"ctsdg Discriminator: image (N, H, W, 3), grey and edge (N, H, W, 1) expected, got "
                             f"{tuple(image.shape)}, {tuple(grey.shape)}, {tuple(edge.shape)}")
        texture = PatchBranch(self.width, name="texture_branch")(image, train=train)
        fake_edge = EdgeDetector(self.edge_width, self.bn_groups, name="edge_detector")(image, train=train)
        judged = jnp.concatenate([edge if is_real else fake_edge, grey], axis=-1)
        structure = PatchBranch(self.width, name="structure_branch")(judged, train=train)
        return jnp.concatenate([texture, structure], axis=-1), fake_edge
