"""DeepFill v2 building blocks (Yu et al., ICCV 2019): gated convolution and contextual attention, NHWC.

Written from the description in ``docs/systems.md`` section 4 and the papers, not from the original code
(``JiahuiYu/generative_inpainting`` is CC BY-NC 4.0). Where the original's TensorFlow 1 behaviour matters for
porting trained weights (SAME padding, nearest resizing with ``align_corners=True``, the row-wrapping of the
fusion trick), it is reproduced and said so.

* :class:`GatedConv2D` is ``gen_conv``: one convolution with ``features`` filters whose output is split into a
  feature half and a gate half, ``act(feature) * sigmoid(gate)``, so **the output has ``features // 2``
  channels** (``features`` is the original's ``cnum``, a filter count). Output layers (``features == 3`` or
  ``activation=None``) return the raw convolution.
* :class:`GatedDeconv2D` is ``gen_deconv``: nearest x2 upsampling, then a gated 3x3 convolution.
* :func:`contextual_attention` fills the hole with background patches chosen by cosine similarity.

Parameters are ``kernel`` (HWIO) and ``bias``, initialised as ``tf.layers.conv2d`` does (Glorot uniform,
zeros), so a TF checkpoint's ``<scope>/kernel`` and ``<scope>/bias`` load without any transposition.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinpaint.nn.conv import activation as activation_fn
from jaxinpaint.nn.conv import pad2d

Dtype = Any

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_PADDINGS = ("same", "reflect", "symmetric")


class GatedConv2D(nn.Module):
    """DeepFill v2's gated convolution (``gen_conv``).

    Attributes:
      features: number of convolution filters (the original's ``cnum``). When gated, the first half are
        features and the second half gates, so the output has ``features // 2`` channels; ``features`` must
        then be even.
      kernel_size: square kernel size.
      strides: convolution stride.
      dilation: dilation rate (the original's ``rate``).
      padding: ``'same'`` (TF SAME zero padding, asymmetric for odd totals: e.g. kernel 3 stride 2 on an
        even size pads 0 before and 1 after, which ``lax``'s ``'SAME'`` reproduces), or ``'reflect'`` /
        ``'symmetric'`` (explicit ``int(dilation * (kernel_size - 1) / 2)`` pixels of TF REFLECT / SYMMETRIC
        padding on every side, then a VALID convolution, as the original's padding option).
      activation: activation of the feature half (a name from ``jaxinpaint.nn.conv.activation``;
        DeepFill uses ``'elu'``, and ``'relu'`` in the attention branch's ``pmconv6``). ``None`` makes this an
        output layer: no gating, the raw convolution with ``features`` channels.
    """

    features: int
    kernel_size: int
    strides: int = 1
    dilation: int = 1
    padding: str = "same"
    activation: str | None = "elu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def gated(self) -> bool:
        """False for the original's output layers (``cnum == 3`` or no activation), which skip the gate."""
        return self.features != 3 and self.activation not in (None, "none")

    @property
    def out_features(self) -> int:
        """Channels of the output: ``features // 2`` when gated, ``features`` otherwise."""
        return self.features // 2 if self.gated else self.features

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, C_in) -> (N, H', W', out_features)."""
        where = f"GatedConv2D{'' if self.name is None else ' ' + self.name}"
        if self.gated and self.features % 2:
            raise ValueError(f"{where}: a gated conv splits its {self.features} filters into two halves; "
                             "features must be even (or 3 / activation=None for an output layer)")
        mode = self.padding.lower()
        if mode not in _PADDINGS:
            raise ValueError(f"{where}: padding must be one of {_PADDINGS}, got {self.padding!r}")
        if x.ndim != 4:
            raise ValueError(f"{where}: x must be NHWC (4-D), got shape {x.shape}")
        k = self.kernel_size
        if mode == "same":
            conv_padding = "SAME"
        else:
            x = pad2d(x, int(self.dilation * (k - 1) / 2), mode)
            conv_padding = "VALID"
        kernel = self.param("kernel", nn.initializers.glorot_uniform(), (k, k, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
        y = lax.conv_general_dilated(
            x.astype(self.dtype), kernel.astype(self.dtype), window_strides=(self.strides, self.strides),
            padding=conv_padding, rhs_dilation=(self.dilation, self.dilation),
            dimension_numbers=_DIMENSION_NUMBERS)
        y = y + bias.astype(self.dtype)
        if not self.gated:
            return y
        feature, gate = jnp.split(y, 2, axis=-1)
        return activation_fn(self.activation)(feature) * nn.sigmoid(gate)


class GatedDeconv2D(nn.Module):
    """DeepFill v2's ``gen_deconv``: nearest x2 upsampling, then a gated 3x3 stride-1 convolution.

    The original upsamples with TF1's ``resize_nearest_neighbor(align_corners=True)``; for an exact factor of
    2 that picks input index ``round(o * (n - 1) / (2n - 1)) = o // 2``, i.e. plain pixel repetition, which is
    what this does. The convolution is the child ``conv`` (the original's ``<name>_conv`` scope).

    Attributes:
      features: filters of the gated conv (output channels ``features // 2``; see :class:`GatedConv2D`).
      padding: as :class:`GatedConv2D`.
    """

    features: int
    padding: str = "same"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, C_in) -> (N, 2H, 2W, features // 2)."""
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return GatedConv2D(self.features, 3, padding=self.padding, dtype=self.dtype,
                           param_dtype=self.param_dtype, name="conv")(x)


# ----------------------------------------------------------------------------------------------------------
# Contextual attention
# ----------------------------------------------------------------------------------------------------------


def _tf_align_corners_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices of TF1 ``resize_nearest_neighbor(align_corners=True)`` (legacy, no half-pixel centres).

    TF computes ``scale = (in - 1) / (out - 1)`` in float32 and reads ``min(roundf(o * scale), in - 1)``, with
    ``roundf`` rounding halves away from zero.
    """
    scale = np.float32((in_size - 1) / np.float32(out_size - 1)) if out_size > 1 else np.float32(0.0)
    pos = np.arange(out_size, dtype=np.float32) * scale
    return np.minimum(np.floor(pos.astype(np.float64) + 0.5).astype(np.int64), in_size - 1)


def _downsample(x: jax.Array, rate: int, align_corners: bool) -> jax.Array:
    """Nearest downsampling by an integer ``rate``: ``x[:, ::rate, ::rate]`` or TF1's align-corners rule."""
    if rate == 1:
        return x
    if not align_corners:
        return x[:, ::rate, ::rate]
    _, h, w, _ = x.shape
    rows = _tf_align_corners_indices(h, h // rate)
    cols = _tf_align_corners_indices(w, w // rate)
    return x[:, rows][:, :, cols]


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF SAME geometry: (output size, padding before, padding after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _extract_patches(x: jax.Array, kernel: int, stride: int) -> jax.Array:
    """TF ``extract_image_patches`` with SAME zero padding: (N, H, W, C) -> (N, H', W', kernel, kernel, C)."""
    n, h, w, c = x.shape
    oh, top, bottom = _same_pads(h, kernel, stride)
    ow, left, right = _same_pads(w, kernel, stride)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    rows = []
    for a in range(kernel):
        cols = [xp[:, a: a + (oh - 1) * stride + 1: stride, b: b + (ow - 1) * stride + 1: stride]
                for b in range(kernel)]
        rows.append(jnp.stack(cols, axis=3))
    return jnp.stack(rows, axis=3)  # (N, oh, ow, kernel, kernel, C)


def _diagonal_sum(scores: jax.Array, k: int) -> jax.Array:
    """Convolves each (P, Q) score map with a k x k identity kernel (TF SAME zero padding).

    ``out[p, q] = sum_d scores[p + d, q + d]`` for ``d`` in the kernel's offsets: a foreground position and a
    background patch reinforce each other when their neighbours also match.
    """
    before = (k - 1) // 2
    after = k - 1 - before
    _, p, q = scores.shape
    padded = jnp.pad(scores, ((0, 0), (before, after), (before, after)))
    return sum(padded[:, d: d + p, d: d + q] for d in range(k))


def _paste(attention: jax.Array, raw_patches: jax.Array, out_hw: tuple[int, int], rate: int) -> jax.Array:
    """TF ``conv2d_transpose`` of the attention map with the raw patches as filters, stride ``rate``, SAME.

    Args:
      attention: (N, hf, wf, Q) weights of each background patch at each (downsampled) foreground position.
      raw_patches: (N, Q, 2 rate, 2 rate, C) full-resolution background patches.
      out_hw: full-resolution output size (hf * rate, wf * rate).

    Each foreground position adds its weighted patch at rows ``i * rate - pad .. i * rate - pad + 2 rate - 1``
    (the geometry the patches were extracted with), i.e. every output pixel is covered by 2 x 2 positions.
    """
    n, hf, wf, _ = attention.shape
    c = raw_patches.shape[-1]
    contrib = jnp.einsum("nijq,nqabc->nijabc", attention, raw_patches)
    contrib = contrib.reshape(n, hf, wf, 2, rate, 2, rate, c)
    blocks = 0
    for a in range(2):  # which half of the 2rate x 2rate patch lands in block (i + a, j + b)
        for b in range(2):
            part = contrib[:, :, :, a, :, b, :, :]  # (n, hf, wf, rate, rate, c)
            blocks = blocks + jnp.pad(part, ((0, 0), (a, 1 - a), (b, 1 - b), (0, 0), (0, 0), (0, 0)))
    full = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(n, (hf + 1) * rate, (wf + 1) * rate, c)
    _, top, _ = _same_pads(out_hw[0], 2 * rate, rate)
    _, left, _ = _same_pads(out_hw[1], 2 * rate, rate)
    return full[:, top: top + out_hw[0], left: left + out_hw[1]]


def contextual_attention(f: jax.Array, b: jax.Array, mask: jax.Array | None = None, ksize: int = 3,
                         stride: int = 1, rate: int = 2, fuse_k: int = 3, softmax_scale: float = 10.0,
                         fuse: bool = True, *, align_corners: bool = False) -> tuple[jax.Array, jax.Array]:
    """DeepFill's contextual attention: rebuild foreground ``f`` from patches of background ``b``.

    1. ``f``, ``b`` and ``mask`` are downsampled by ``rate`` (nearest) for matching.
    2. Every ``ksize`` x ``ksize`` patch of the downsampled ``b`` (stride 1, SAME zero padding) is
       L2-normalised (norm clamped at 1e-4) and correlated with the downsampled ``f``: score[p, q] is the
       cosine-like similarity of foreground position p and background patch q.
    3. Patches whose mask window contains any hole pixel are excluded (``mm = 0``).
    4. With ``fuse``, the (P, Q) score map is convolved with a ``fuse_k`` identity kernel, once with positions
       flattened row-major and once column-major, which rewards matches whose horizontal and then vertical
       neighbours also match. As in the original, neighbours along the flattened index wrap from the end of
       one row (column) to the start of the next; this is kept so that trained weights see the same scores.
    5. ``attention = softmax(scale * score * mm) * mm`` over the background patches. Excluded patches enter
       the softmax with score 0 before being zeroed, so a row sums to at most 1 (as in the original).
    6. The raw ``2 rate`` x ``2 rate`` full-resolution patches of ``b`` are pasted with these weights by a
       stride-``rate`` transposed convolution and divided by 4 (each pixel is covered by 2 x 2 patches).

    Unlike the original, which takes the mask of the first batch element for the whole batch, each sample may
    have its own mask; a mask with batch size 1 is shared, which reproduces the original.

    Args:
      f: (N, Hf, Wf, C) foreground features (the ones to fill).
      b: (N, Hb, Wb, C) background features to borrow from (DeepFill passes the same tensor as ``f``).
      mask: (N or 1, Hb, Wb, 1), **1 = hole** (patches touching it are not used); None = all usable.
      ksize: matching patch size.
      stride: matching stride; only 1 is supported (the original's fusion is only defined for 1).
      rate: downsampling rate for matching; sizes must be divisible by it.
      fuse_k: size of the identity kernel of the fusion.
      softmax_scale: softmax temperature multiplier (10 in DeepFill).
      fuse: whether to apply the fusion.
      align_corners: downsample with TF1's ``resize_nearest_neighbor(align_corners=True)`` index rule (what
        the original's ``resize`` does: ``round(o * (H - 1) / (H / rate - 1))``, which for the second half of
        the image picks odd rows) instead of ``x[:, ::rate, ::rate]``. Set it to reproduce trained DeepFill
        weights.

    Returns:
      ``(y, attention)``: y (N, Hf, Wf, C) the reconstruction; attention (N, Hf / rate, Wf / rate,
      (Hb / rate) * (Wb / rate)) the weights over background patches (row-major patch index), from which
      :func:`attention_offsets` derives DeepFill's flow.
    """
    if f.ndim != 4 or b.ndim != 4 or f.shape[0] != b.shape[0] or f.shape[-1] != b.shape[-1]:
        raise ValueError(f"contextual_attention: f and b must be NHWC with the same batch and channels, got "
                         f"f {f.shape} and b {b.shape}")
    if stride != 1:
        raise ValueError(f"contextual_attention: only stride=1 is supported (the fusion step assumes "
                         f"adjacent patches), got stride={stride}")
    if rate < 1 or any(s % rate for s in (*f.shape[1:3], *b.shape[1:3])):
        raise ValueError(f"contextual_attention: rate must be >= 1 and divide the spatial sizes of "
                         f"f {f.shape} and b {b.shape}, got rate={rate}")
    n, hf_full, wf_full, c = f.shape
    _, hb_full, wb_full, _ = b.shape
    if mask is not None and (mask.ndim != 4 or mask.shape[0] not in (1, n)
                             or mask.shape[1:] != (hb_full, wb_full, 1)):
        batch = f"{n} or 1" if n != 1 else "1"
        raise ValueError(f"contextual_attention: mask must have shape ({batch}, {hb_full}, {wb_full}, 1) "
                         f"like b, got {mask.shape}")

    # Full-resolution patches of b, to be pasted: kernel 2*rate, stride rate, SAME.
    raw = _extract_patches(b, 2 * rate, rate)  # (N, hb, wb, 2r, 2r, C)
    raw = raw.reshape(n, -1, *raw.shape[3:])

    fd = _downsample(f, rate, align_corners)
    bd = _downsample(b, rate, align_corners)
    _, hf, wf, _ = fd.shape
    _, hb, wb, _ = bd.shape
    p, q = hf * wf, hb * wb

    # Matching: cosine-like scores between every foreground position and every normalised background patch.
    w = _extract_patches(bd, ksize, 1).reshape(n, q, -1)
    w = w / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(w), axis=-1, keepdims=True)), 1e-4)
    fp = _extract_patches(fd, ksize, 1).reshape(n, p, -1)
    scores = jnp.einsum("npd,nqd->npq", fp, w)

    if fuse:
        scores = _diagonal_sum(scores, fuse_k)
        scores = scores.reshape(n, hf, wf, hb, wb).transpose(0, 2, 1, 4, 3).reshape(n, p, q)
        scores = _diagonal_sum(scores, fuse_k)
        scores = scores.reshape(n, wf, hf, wb, hb).transpose(0, 2, 1, 4, 3).reshape(n, p, q)

    if mask is None:
        mm = jnp.ones((1, 1, q), scores.dtype)
    else:
        md = _downsample(lax.stop_gradient(mask.astype(scores.dtype)), rate, align_corners)
        windows = _extract_patches(md, ksize, 1).reshape(md.shape[0], q, -1)
        mm = jnp.all(windows == 0, axis=-1).astype(scores.dtype)[:, None, :]

    scores = scores * mm
    attention = jax.nn.softmax(scores * softmax_scale, axis=-1) * mm
    attention = attention.reshape(n, hf, wf, q)
    y = _paste(attention, raw, (hf_full, wf_full), rate) / 4.0
    return y.astype(f.dtype), attention


def attention_offsets(attention: jax.Array, background_hw: tuple[int, int]) -> jax.Array:
    """Per foreground position, the (row, col) offset to its best background patch (DeepFill's flow).

    Args:
      attention: (N, hf, wf, hb * wb) from :func:`contextual_attention`.
      background_hw: (hb, wb), the downsampled background grid (``b``'s size divided by ``rate``).

    Returns:
      (N, hf, wf, 2) int32 offsets ``argmax position - own position``, in downsampled pixels; DeepFill colours
      these with the optical-flow colour wheel for its summaries.
    """
    hb, wb = background_hw
    if attention.shape[-1] != hb * wb:
        raise ValueError(f"attention_offsets: attention has {attention.shape[-1]} background patches, "
                         f"background_hw {background_hw} implies {hb * wb}")
    _, hf, wf, _ = attention.shape
    best = jnp.argmax(attention, axis=-1)
    rows = jnp.arange(hf)[None, :, None]
    cols = jnp.arange(wf)[None, None, :]
    return jnp.stack([best // wb - rows, best % wb - cols], axis=-1).astype(jnp.int32)


def resize_nearest_align_corners(x: jax.Array, out_h: int, out_w: int) -> jax.Array:
    """TF1 ``resize_nearest_neighbor(align_corners=True)`` of an NHWC array (legacy rule, no half pixels).

    The original resizes the hole mask to the attention features' size with this rule (``resize_mask_like``),
    and :func:`contextual_attention` with ``align_corners=True`` downsamples its inputs with the same rule, so
    the mask must follow it too or hole and features disagree by a pixel in the image's second half. Source
    index ``min(round_half_away(o * (in - 1) / (out - 1)), in - 1)``, the scale in float32 as TF computes it.
    """
    def indices(n_in: int, n_out: int) -> np.ndarray:
        scale = np.float32((n_in - 1) / np.float32(n_out - 1)) if n_out > 1 else np.float32(0.0)
        pos = np.arange(n_out, dtype=np.float32) * scale
        return np.minimum(np.floor(pos.astype(np.float64) + 0.5).astype(np.int64), n_in - 1)

    _, h, w, _ = x.shape
    return x[:, indices(h, out_h)][:, :, indices(w, out_w)]
