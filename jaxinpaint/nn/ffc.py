"""Fast Fourier Convolutions (Chi et al., NeurIPS 2020) as used by LaMa, in NHWC linen modules.

A faithful port of ``saicinpainting/training/modules/ffc.py`` (advimman/lama, Apache-2.0). Features are split
into a local part (ordinary 3x3 convolutions) and a global part (a spectral transform whose 1x1 convolution
acts on the 2-D real FFT, so every output pixel sees the whole image). Module and parameter names follow the
original's attribute names (``convl2l``, ``convg2g``, ``fu.conv_layer``, ``bn_l``...) so that weight import is a
mechanical renaming; see ``jaxinpaint.convert``.

A (local, global) pair is passed as a tuple. A missing part is ``None`` (the original uses the integer 0).

Speed: in the residual blocks' FFC layers the three 3x3 convolution paths (l2l, g2l, l2g) are computed
jointly by Winograd F(2x2, 3x3) (:func:`local_convs`), with the parameters of the separate convolutions;
measurements in benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinpaint.nn.conv import (Conv2D, ConvKernel, activation, batch_norm, choose_conv_impl, pad2d, per_platform,
                                     winograd_input, winograd_input_transpose, winograd_kernel,
                                     winograd_kernel_transpose, winograd_output, winograd_output_transpose,
                                     winograd_products)

Dtype = Any


def split_channels(channels: int, ratio: float) -> tuple[int, int]:
    """(local, global) channel counts exactly as the original computes them: global = int(c * ratio)."""
    global_channels = int(channels * ratio)
    return channels - global_channels, global_channels


def spectrum_channels(x: jax.Array) -> jax.Array:
    """``rfft2`` over (H, W) with norm='ortho', real/imag interleaved on channels: (N, H, W//2+1, 2C) float32.

    Channel 2k holds Re and 2k+1 holds Im of input channel k, the order of the original's
    ``stack((re, im), -1).permute(0, 1, 4, 2, 3).view(...)``.
    """
    n, h, _, c = x.shape
    if not _static(x.shape[1:3]):  # jax.export with symbolic H, W (see _rfft2_dft)
        re, im = _rfft2_dft(x.astype(jnp.float32))
        return jnp.stack([re, im], axis=-1).reshape(n, h, re.shape[2], 2 * c)
    spectrum = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm="ortho")
    return jnp.stack([spectrum.real, spectrum.imag], axis=-1).reshape(n, h, spectrum.shape[2], 2 * c)


def channels_to_image(y: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Inverse of ``spectrum_channels``: de-interleave to complex and ``irfft2`` to the given (H, W).

    The size must be passed: for odd W the half-spectrum width alone does not determine it.
    """
    n, h, wf, c2 = y.shape
    y = y.astype(jnp.float32).reshape(n, h, wf, c2 // 2, 2)
    if not _static(size):
        return _irfft2_dft(y[..., 0], y[..., 1], size)
    return jnp.fft.irfft2(jax.lax.complex(y[..., 0], y[..., 1]), s=size, axes=(1, 2), norm="ortho")


# ---- The same transforms as DFT matrix products, for symbolic (jax.export) shapes ---------------------------
# XLA's FFT needs constant lengths (JAX cannot lower stablehlo.fft with a symbolic fft_length), so a model
# exported with symbolic height and width computes the two transforms as products with cos/sin matrices built
# from iotas of the symbolic sizes. Same result up to float32 rounding (~1e-6 at LaMa's bottleneck sizes), at
# O(H + W) instead of O(log HW) multiply-adds per value; only the export takes this path.


def _static(dims) -> bool:
    return all(isinstance(d, int) for d in dims)


def _dft_angles(rows, cols, size):
    """``2 pi (k n mod size) / size`` for k < rows, n < cols (the reduction keeps float32 angles exact)."""
    k = jax.lax.broadcasted_iota(jnp.int32, (rows, cols), 0)
    n = jax.lax.broadcasted_iota(jnp.int32, (rows, cols), 1)
    size_i = jnp.asarray(size, jnp.int32)
    return (2 * jnp.pi) * ((k * n) % size_i).astype(jnp.float32) / size_i.astype(jnp.float32)


def _mm(spec, a, b):
    return jnp.einsum(spec, a, b, precision=jax.lax.Precision.HIGHEST)


def _rfft2_dft(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``rfft2(x, axes=(1, 2), norm='ortho')`` of a real (N, H, W, C) array as (real, imag) DFT products."""
    _, h, w, _ = x.shape
    aw = _dft_angles(w // 2 + 1, w, w)
    re, im = _mm("kw,nhwc->nhkc", jnp.cos(aw), x), -_mm("kw,nhwc->nhkc", jnp.sin(aw), x)
    ah = _dft_angles(h, h, h)
    ch, sh = jnp.cos(ah), jnp.sin(ah)
    scale = jax.lax.rsqrt(jnp.asarray(h * w, jnp.float32))
    return ((_mm("kh,nhwc->nkwc", ch, re) + _mm("kh,nhwc->nkwc", sh, im)) * scale,
            (_mm("kh,nhwc->nkwc", ch, im) - _mm("kh,nhwc->nkwc", sh, re)) * scale)


def _irfft2_dft(re: jax.Array, im: jax.Array, size) -> jax.Array:
    """``irfft2(re + i im, s=size, axes=(1, 2), norm='ortho')`` as DFT products (Im of DC/Nyquist ignored)."""
    h, w = size
    ah = _dft_angles(h, h, h)
    ch, sh = jnp.cos(ah), jnp.sin(ah)
    re, im = (_mm("hk,nkwc->nhwc", ch, re) - _mm("hk,nkwc->nhwc", sh, im),
              _mm("hk,nkwc->nhwc", ch, im) + _mm("hk,nkwc->nhwc", sh, re))
    wf = re.shape[2]
    aw = _dft_angles(w, wf, w)
    k = jax.lax.broadcasted_iota(jnp.int32, (1, wf), 1)
    weight = jnp.where((k == 0) | (2 * k == jnp.asarray(w, jnp.int32)), 1.0, 2.0)  # Hermitian half-spectrum
    out = _mm("wk,nhkc->nhwc", jnp.cos(aw) * weight, re) - _mm("wk,nhkc->nhwc", jnp.sin(aw) * weight, im)
    return out * jax.lax.rsqrt(jnp.asarray(h * w, jnp.float32))


# Tuning constants, fixed at import (benchmarks/model.py patches them only to compare variants; the
# measurements behind the choices are in benchmarks/README.md):
# * the Winograd output tile of the FFC layers' 3x3 convolutions: 2 is F(2x2, 3x3); 4 is F(4x4, 3x3), fewer
#   multiplications but twice the compile time, ~10x the rounding error, and no faster at 256x256 here;
# * how local_convs is differentiated: "dx_winograd" computes the input gradients with the transposed Winograd
#   transforms and the kernel gradients with XLA's weight-gradient convolutions (fastest here), "winograd"
#   both with Winograd, "lax" both with XLA's convolution gradients.
_WINOGRAD_TILE = 2
_LOCAL_CONVS_BWD = "dx_winograd"


def _local_convs_lax(xp_l, xp_g, k_l2l, k_l2g, k_g2l):
    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    return conv(xp_l, k_l2l) + conv(xp_g, k_g2l), conv(xp_l, k_l2g)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def local_convs(xp_l: jax.Array, xp_g: jax.Array, k_l2l: jax.Array, k_l2g: jax.Array, k_g2l: jax.Array,
                m: int = 2) -> tuple[jax.Array, jax.Array]:
    """An FFC layer's three 3x3 paths, ``(l2l(x_l) + g2l(x_g), l2g(x_l))``, by Winograd F(m x m, 3x3).

    Inputs are padded (VALID convolutions, stride 1). Each input part is transformed once; l2l and l2g share
    one product (their kernels side by side), and the local output sums two products in the Winograd domain
    before its single inverse transform. The VJP is written out (input gradients: the transposed transforms
    and batched matmuls, with the forward pass's reduction of multiply-adds; kernel gradients: see
    ``_LOCAL_CONVS_BWD``) so that XLA sees plain batched matmuls rather than the transposes of slices and
    concatenations that autodiff would produce.
    """
    return _local_convs_fwd(xp_l, xp_g, k_l2l, k_l2g, k_g2l, m)[0]


def _local_convs_fwd(xp_l, xp_g, k_l2l, k_l2g, k_g2l, m):
    out_cl = k_l2l.shape[-1]
    v_l, tiles = winograd_input(xp_l, m)
    v_g, _ = winograd_input(xp_g, m)
    u_local = winograd_kernel(jnp.concatenate([k_l2l, k_l2g], -1), m)
    u_g2l = winograd_kernel(k_g2l, m)
    m_local = winograd_products(v_l, u_local)
    out_l = winograd_output(m_local[..., :out_cl] + winograd_products(v_g, u_g2l), tiles)
    l2g = winograd_output(m_local[..., out_cl:], tiles)
    return (out_l, l2g), (xp_l, xp_g, k_l2l, k_l2g, k_g2l, v_l, v_g, u_local, u_g2l)


def _local_convs_bwd(m, residuals, cotangents):
    xp_l, xp_g, k_l2l, k_l2g, k_g2l, v_l, v_g, u_local, u_g2l = residuals
    if _LOCAL_CONVS_BWD == "lax":
        _, vjp = jax.vjp(_local_convs_lax, xp_l, xp_g, k_l2l, k_l2g, k_g2l)
        return vjp(cotangents)
    d_out_l, d_l2g = cotangents
    out_cl = k_l2l.shape[-1]
    dm_l = winograd_output_transpose(d_out_l, xp_l.shape, m)
    dm_local = jnp.concatenate([dm_l, winograd_output_transpose(d_l2g, xp_l.shape, m)], -1)

    def kernel_grad(v, dm):  # dU = V^T dM per tile position, then the kernel transform's transpose
        du = jax.lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
        return winograd_kernel_transpose(du.astype(v.dtype), m)

    def input_grad(dm, u, shape):  # dV = dM U^T, then the input transform's transpose
        dv = jax.lax.dot_general(dm, u, (((2,), (2,)), ((0,), (0,))), preferred_element_type=jnp.float32)
        return winograd_input_transpose(dv.astype(dm.dtype), shape, m)

    dxp_l, dxp_g = input_grad(dm_local, u_local, xp_l.shape), input_grad(dm_l, u_g2l, xp_g.shape)
    if _LOCAL_CONVS_BWD == "dx_winograd":
        _, vjp = jax.vjp(lambda *k: _local_convs_lax(xp_l, xp_g, *k), k_l2l, k_l2g, k_g2l)
        return (dxp_l, dxp_g) + tuple(vjp(cotangents))
    dk_local = kernel_grad(v_l, dm_local)
    return dxp_l, dxp_g, dk_local[..., :out_cl], dk_local[..., out_cl:], kernel_grad(v_g, dm_l)


local_convs.defvjp(_local_convs_fwd, _local_convs_bwd)


class SqueezeExcitation(nn.Module):
    """LaMa's SELayer (ffc.py): global average pool, two bias-free linear layers, sigmoid gate."""

    reduction: int = 16

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        y = jnp.mean(x, axis=(1, 2))
        y = nn.relu(nn.Dense(c // self.reduction, use_bias=False, name="fc1")(y))
        y = nn.sigmoid(nn.Dense(c, use_bias=False, name="fc2")(y))
        return x * y[:, None, None, :]


class FourierUnit(nn.Module):
    """1x1 convolution + BN + ReLU applied to the real 2-D FFT of the input.

    The spectrum ``rfft2(x, norm='ortho')`` over (H, W) has real and imaginary parts; they are stacked as channels
    in the original's interleaved order (channel 2k = Re of input channel k, 2k+1 = Im), so the original 1x1
    weights and the BN(2C) statistics load unchanged. The inverse transform is given the spatial size
    explicitly, which keeps odd H and W exact. The FFT always runs in float32: XLA has no bf16 FFT (and
    PyTorch's rfftn has no half kernel either).
    """

    features: int
    spectral_pos_encoding: bool = False
    use_se: bool = False
    se_reduction: int = 16
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    conv_impl: str = "auto"  # jaxinpaint.nn.conv.Conv2D's impl for every convolution inside

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        n, h, w, _ = x.shape
        y = spectrum_channels(x)
        wf = y.shape[2]
        if self.spectral_pos_encoding:
            # The original prepends two coordinate channels (vertical, horizontal) spanning [0, 1] on the grid.
            vert = jnp.broadcast_to(jnp.linspace(0.0, 1.0, h)[None, :, None, None], (n, h, wf, 1))
            hor = jnp.broadcast_to(jnp.linspace(0.0, 1.0, wf)[None, None, :, None], (n, h, wf, 1))
            y = jnp.concatenate([vert, hor, y], axis=-1)
        if self.use_se:
            y = SqueezeExcitation(self.se_reduction, name="se")(y)
        y = Conv2D(2 * self.features, 1, use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                   name="conv_layer")(y)
        y = nn.relu(batch_norm(train, "bn", self.dtype, self.bn_groups)(y))
        return channels_to_image(y, (h, w)).astype(self.dtype)


class SpectralTransform(nn.Module):
    """The global-to-global path: 1x1 conv (C -> C/2) + BN + ReLU, FourierUnit, optional local Fourier unit,
    then a 1x1 conv (C/2 -> C) on the sum ``x + FU(x) [+ LFU(x)]``.

    The local Fourier unit (LFU) takes the first quarter of the channels, cuts the map into 2x2 spatial tiles
    stacked on channels, applies a FourierUnit and tiles the result back, like the original (which requires an
    even, square map: it splits both axes by H // 2).
    """

    features: int
    strides: int = 1
    enable_lfu: bool = True
    spectral_pos_encoding: bool = False
    use_se: bool = False
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if self.strides == 2:
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        half = self.features // 2
        x = Conv2D(half, 1, use_bias=False, dtype=self.dtype, impl=self.conv_impl, name="conv1")(x)
        x = nn.relu(batch_norm(train, "conv1_bn", self.dtype, self.bn_groups)(x))
        out = FourierUnit(half, self.spectral_pos_encoding, self.use_se, dtype=self.dtype,
                          bn_groups=self.bn_groups, conv_impl=self.conv_impl, name="fu")(x, train=train)
        if self.enable_lfu:
            n, h, w, c = x.shape
            s = h // 2
            if h % 2 or w != h:
                raise ValueError(f"The local Fourier unit needs an even, square feature map, got {h}x{w} "
                                 "(enable_lfu=False lifts the restriction)")
            quarter = x[..., : c // 4]
            rows = jnp.concatenate(jnp.split(quarter, h // s, axis=1), axis=-1)  # tiles along H onto channels
            tiles = jnp.concatenate(jnp.split(rows, w // s, axis=2), axis=-1)  # then along W
            xs = FourierUnit(half, dtype=self.dtype, bn_groups=self.bn_groups, conv_impl=self.conv_impl,
                             name="lfu")(tiles, train=train)
            out = out + jnp.tile(xs, (1, 2, 2, 1))
        return Conv2D(self.features, 1, use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                      name="conv2")(x + out)


class FFC(nn.Module):
    """Fast Fourier convolution: ``out_l = l2l(x_l) + g2l(x_g)``, ``out_g = l2g(x_l) + g2g(x_g)``.

    ``ratio_gin``/``ratio_gout`` give the fraction of input/output channels in the global part. Paths whose input
    or output part is empty do not exist (no parameters), exactly as the original's ``nn.Identity`` stand-ins.
    With ``gated=True`` a 1x1 conv on the concatenated input produces sigmoid gates for the g2l and l2g paths.
    """

    features: int
    kernel_size: int
    ratio_gin: float
    ratio_gout: float
    strides: int = 1
    padding: int = 0
    dilation: int = 1
    use_bias: bool = False
    enable_lfu: bool = True
    padding_type: str = "reflect"
    gated: bool = False
    spectral_pos_encoding: bool = False
    use_se: bool = False
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    conv_impl: str = "auto"  # jaxinpaint.nn.conv.Conv2D's impl ('auto': CPU formulations only on CPU)

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        in_cl = x_l.shape[-1] if x_l is not None else 0
        in_cg = x_g.shape[-1] if x_g is not None else 0
        out_cl, out_cg = split_channels(self.features, self.ratio_gout)

        def conv(features, name):
            return Conv2D(features, self.kernel_size, self.strides, self.padding, self.padding_type, self.dilation,
                          use_bias=self.use_bias, dtype=self.dtype, impl=self.conv_impl, name=name)

        if self.gated and in_cg and out_cl:
            total = jnp.concatenate([p for p in (x_l, x_g) if p is not None], axis=-1)
            gates = nn.sigmoid(Conv2D(2, 1, dtype=self.dtype, impl=self.conv_impl, name="gate")(total))
            g2l_gate, l2g_gate = gates[..., :1], gates[..., 1:]
        else:
            g2l_gate = l2g_gate = 1.0

        # The residual blocks' FFC layers (all four parts, 3x3, stride 1): one joint Winograd computation.
        joint = (self.conv_impl in ("auto", "cpu") and not self.gated and self.kernel_size == 3
                 and min(in_cl, in_cg, out_cl, out_cg) > 0 and all(
            choose_conv_impl(i, o, (3, 3), self.strides, self.dilation, 1, self.dtype) == "winograd"
            for i, o in ((in_cl, out_cl), (in_cl, out_cg), (in_cg, out_cl))))
        if joint:
            out_l, l2g = self._joint_winograd(x_l, x_g, out_cl, out_cg)
            g2g = SpectralTransform(out_cg, self.strides, self.enable_lfu, self.spectral_pos_encoding,
                                    self.use_se, dtype=self.dtype, bn_groups=self.bn_groups,
                                    conv_impl=self.conv_impl, name="convg2g")(x_g, train=train)
            return out_l, l2g + g2g

        out_l = out_g = None
        if out_cl:
            parts = []
            if in_cl:
                parts.append(conv(out_cl, "convl2l")(x_l))
            if in_cg:
                parts.append(conv(out_cl, "convg2l")(x_g) * g2l_gate)
            out_l = sum(parts[1:], parts[0]) if parts else None
        if out_cg:
            parts = []
            if in_cl:
                parts.append(conv(out_cg, "convl2g")(x_l) * l2g_gate)
            if in_cg:
                parts.append(SpectralTransform(out_cg, self.strides, self.enable_lfu, self.spectral_pos_encoding,
                                               self.use_se, dtype=self.dtype, bn_groups=self.bn_groups,
                                               conv_impl=self.conv_impl, name="convg2g")(x_g, train=train))
            out_g = sum(parts[1:], parts[0]) if parts else None
        return out_l, out_g


    def _joint_winograd(self, x_l, x_g, out_cl, out_cg):
        """The three 3x3 paths (l2l, g2l, l2g) by :func:`local_convs` (shared Winograd transforms) on CPU, by
        three platform convolutions elsewhere (``conv_impl='auto'``).

        Same parameters (``convl2l/kernel``...) as the separate convolutions.
        """
        in_cl, in_cg = x_l.shape[-1], x_g.shape[-1]

        def kernel(features, in_features, name):
            k, b = ConvKernel(features, 3, in_features, self.use_bias, name=name)()
            return k.astype(self.dtype), b

        k_l2l, b_l2l = kernel(out_cl, in_cl, "convl2l")
        k_g2l, b_g2l = kernel(out_cl, in_cg, "convg2l")
        k_l2g, b_l2g = kernel(out_cg, in_cl, "convl2g")
        xp_l = pad2d(x_l.astype(self.dtype), self.padding, self.padding_type)
        xp_g = pad2d(x_g.astype(self.dtype), self.padding, self.padding_type)
        def winograd(*args):
            return local_convs(*args, _WINOGRAD_TILE)

        if self.conv_impl == "auto":
            out_l, l2g = per_platform(winograd, _local_convs_lax, xp_l, xp_g, k_l2l, k_l2g, k_g2l)
        else:
            out_l, l2g = winograd(xp_l, xp_g, k_l2l, k_l2g, k_g2l)
        if self.use_bias:
            out_l = out_l + (b_l2l + b_g2l).astype(self.dtype)
            l2g = l2g + b_l2g.astype(self.dtype)
        return out_l, l2g


class FFCBnAct(FFC):
    """FFC followed by BatchNorm and an activation on each part (the original's ``FFC_BN_ACT``).

    Takes every field of ``FFC`` (the FFC itself is the child ``ffc``, as in the original's state dict) plus the
    activation.
    """

    activation: str = "relu"

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        ffc_fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(FFC)
                      if f.name not in ("parent", "name")}
        x_l, x_g = FFC(**ffc_fields, name="ffc")(x, train=train)
        act = activation(self.activation)
        if x_l is not None:
            x_l = act(batch_norm(train, "bn_l", self.dtype, self.bn_groups)(x_l))
        if x_g is not None:
            x_g = act(batch_norm(train, "bn_g", self.dtype, self.bn_groups)(x_g))
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    """Two FFCBnAct layers (3x3, both ending in BN + activation); the identity is added per part afterwards."""

    features: int
    ratio_gin: float = 0.75
    ratio_gout: float = 0.75
    dilation: int = 1
    enable_lfu: bool = False
    padding_type: str = "reflect"
    gated: bool = False
    spectral_pos_encoding: bool = False
    use_se: bool = False
    activation: str = "relu"
    dtype: Dtype = jnp.float32
    bn_groups: int = 1
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        y = (x_l, x_g)
        for name in ("conv1", "conv2"):
            y = FFCBnAct(self.features, 3, self.ratio_gin, self.ratio_gout, padding=self.dilation,
                         dilation=self.dilation, enable_lfu=self.enable_lfu, padding_type=self.padding_type,
                         gated=self.gated, spectral_pos_encoding=self.spectral_pos_encoding, use_se=self.use_se,
                         activation=self.activation, dtype=self.dtype, bn_groups=self.bn_groups,
                         conv_impl=self.conv_impl, name=name)(y, train=train)
        out_l = y[0] if x_l is None else x_l + y[0]
        out_g = y[1] if x_g is None else x_g + y[1]
        return out_l, out_g
