"""Building blocks with PyTorch semantics, NHWC.

The systems jaxinpaint ports were written in PyTorch, so these layers reproduce torch's conventions exactly
(padding modes, transposed-convolution geometry, initialisation, BatchNorm momentum/epsilon) while storing
kernels in JAX's HWIO layout. Weight conversion (``jaxinpaint.convert``) relies on the parameter names here:
every conv has ``kernel`` (HWIO) and optionally ``bias``.

Some convolutions are computed by formulations that XLA:CPU runs much faster than its generic convolution
(measurements: benchmarks/README.md). They do the same arithmetic up to float rounding, and they change
neither the parameters nor their names:

* 3x3, stride 1 convolutions with enough channels use Winograd's F(2x2, 3x3) algorithm
  (:func:`winograd_conv3x3`; F(4x4, 3x3) is available too): 16 multiplications per 2x2 output tile instead
  of 36, as 16 batched matmuls over 4x4 input tiles, with hand-written transposes for the gradients;
* convolutions with a large kernel and few output channels (the 7x7, 64 -> 3 output heads) are one matmul
  followed by ``kh * kw`` shifted adds (:func:`conv_few_outputs`);
* 1x1 convolutions are a plain ``dot_general``.

:func:`choose_conv_impl` picks the formulation. The formulations were measured to win on XLA:CPU only; on GPU
and TPU the platform's own convolutions (cuDNN, the TPU's convolution units) are the right choice. So
``impl='auto'`` (the default) is *per platform*: it lowers through ``lax.platform_dependent``, which keeps the
formulation in programs compiled for CPU and the plain ``lax.conv_general_dilated`` in programs compiled for
anything else, also when a program is lowered for another platform with ``jax.export`` (tests check both
lowerings). ``impl='lax'`` forces the platform convolutions everywhere, ``impl='cpu'`` the CPU formulations
everywhere (``config.conv_impl`` passes either to a whole network), and a formulation's name forces it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Dtype = Any

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

# Winograd pays once the matmuls are big enough that the transforms (memory-bound) are cheap beside them.
# Measured on XLA:CPU (benchmarks/README.md): 64 -> 64 channels already gains; tiny convs do not.
_WINOGRAD_MIN_CHANNELS = 32
# A conv with at most this many outputs and a kernel of at least _FEW_OUTPUTS_MIN_TAPS taps is computed as
# one matmul plus shifted adds: XLA:CPU's convolution is ~10x below peak when the output has 3 channels.
_FEW_OUTPUTS_MAX_FEATURES = 8
_FEW_OUTPUTS_MIN_TAPS = 9


def torch_kernel_init(key, shape, dtype=jnp.float32):
    """torch.nn.Conv2d's default kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), HWIO."""
    fan_in = math.prod(shape[:-1])
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_bias_init(fan_in: int):
    """torch's default conv bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

    def init(key, shape, dtype=jnp.float32):
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def pad2d(x: jax.Array, pad: int | tuple[tuple[int, int], tuple[int, int]], mode: str = "zeros") -> jax.Array:
    """Pads the H and W axes of an NHWC array the way torch's ``padding_mode`` does.

    ``mode`` is ``'zeros'``, ``'reflect'`` (torch ReflectionPad2d: edge pixel not repeated), ``'replicate'`` or
    ``'symmetric'`` (numpy's: edge pixel repeated; what LaMa's predict uses for its modulo padding).
    """
    if isinstance(pad, int):
        pad = ((pad, pad), (pad, pad))
    if all(p == 0 for pair in pad for p in pair):
        return x
    np_mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "symmetric": "symmetric"}.get(mode)
    if np_mode is None:
        raise ValueError(f"padding mode must be zeros, reflect, replicate or symmetric, got {mode!r}")
    return jnp.pad(x, ((0, 0), pad[0], pad[1], (0, 0)), mode=np_mode)


# ---- Winograd F(m x m, 3x3) --------------------------------------------------------------------------------
# Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). An m x m output tile of a 3x3
# convolution is A^T [(G g G^T) * (B^T d B)] A, where d is the (m+2) x (m+2) input tile and g the kernel. Over
# channels the elementwise product becomes, for each of the (m+2)^2 tile positions, a (tiles, C_in) x
# (C_in, C_out) matmul. F(2x2, 3x3) does 16 multiplications per 4 outputs instead of 36 (2.25x fewer);
# F(4x4, 3x3) does 36 per 16 instead of 144 (4x fewer), at the price of larger transform constants (relative
# error ~1e-6 instead of ~1e-7 per convolution in float32) and fewer, larger tiles.
#
# The transforms work on blocks of m pixels: an axis of length m (T + 1) reshaped to (T + 1, m), so that the
# input tile t is block t followed by the first 2 rows of block t + 1. Each transform is a few adds of
# block-shifted views with the constants below, and each has a hand-written transpose (custom VJP): XLA:CPU
# differentiates strided slices and stacks into pad-and-add chains that took seconds to compile and ran ~10x
# slower than the forward transforms.

_WINOGRAD = {
    2: dict(
        bt=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        g=np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]], np.float64),
        at=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: dict(
        bt=np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                     [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        g=np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                    [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        at=np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                    np.float64)),
}


def _combine(coeffs: np.ndarray, parts) -> jax.Array:
    """``sum_j coeffs[j] * parts[j]``, skipping zeros and multiplications by +-1 (the transform constants)."""
    out = None
    for c, part in zip(coeffs, parts):
        if c == 0:
            continue
        term = part if abs(c) == 1 else part * jnp.asarray(abs(c), part.dtype)
        if out is None:
            out = term if c > 0 else -term
        else:
            out = out + term if c > 0 else out - term
    return out if out is not None else jnp.zeros_like(parts[0])


class WinogradTiles(tuple):
    """``(m, n, tiles_h, tiles_w, h, w)``: how an input was tiled (the output transform needs it)."""


def _tiles_of(padded_shape, m: int) -> WinogradTiles:
    n, hp, wp, _ = padded_shape
    h, w = hp - 2, wp - 2
    if h < 1 or w < 1:
        raise ValueError(f"Winograd: a padded 3x3 input must be at least 3x3, got {tuple(padded_shape)}")
    if m not in _WINOGRAD:
        raise ValueError(f"Winograd: output tile size must be one of {sorted(_WINOGRAD)}, got {m}")
    return WinogradTiles((m, n, -(-h // m), -(-w // m), h, w))


def _bt_rows(a: jax.Array, axis: int, m: int) -> jax.Array:
    """``B^T d`` along block axis ``axis`` (in-block axis ``axis + 1``): the m+2 new rows at axis 0."""
    lo = lax.slice_in_dim(a, 0, a.shape[axis] - 1, axis=axis)
    hi = lax.slice_in_dim(a, 1, a.shape[axis], axis=axis)
    d = ([lax.index_in_dim(lo, j, axis + 1, keepdims=False) for j in range(m)]
         + [lax.index_in_dim(hi, j, axis + 1, keepdims=False) for j in range(2)])
    return jnp.stack([_combine(row, d) for row in _WINOGRAD[m]["bt"]])


def _bt_rows_transpose(v: jax.Array, axis: int, m: int) -> jax.Array:
    """Transpose of :func:`_bt_rows`: ``B dV`` per tile, then overlap-add of the tiles into blocks.

    ``v`` has the m+2 transformed rows at axis 0 and the tile axis at ``axis`` (numbered as in ``v[0]``); the
    result has one block more than there are tiles, with the in-block axis inserted at ``axis + 1``.
    """
    bt = _WINOGRAD[m]["bt"]
    rows = [v[a] for a in range(m + 2)]
    p = [_combine(bt[:, j], rows) for j in range(m + 2)]  # tile row j
    first = jnp.stack(p[:m], axis + 1)  # rows 0..m-1 of tile t are block t
    second = jnp.stack(p[m:] + [jnp.zeros_like(p[0])] * (m - 2), axis + 1)  # rows m, m+1: block t + 1
    pad_first, pad_second = [(0, 0)] * first.ndim, [(0, 0)] * first.ndim
    pad_first[axis], pad_second[axis] = (0, 1), (1, 0)
    return jnp.pad(first, pad_first) + jnp.pad(second, pad_second)


def _input_even(xp: jax.Array, m: int) -> jax.Array:
    """``(N, m(T+1), m(S+1), C)`` -> ``(m+2, m+2, N, T, S, C)``, axes (tile column, tile row, ...)."""
    n, hp, wp, c = xp.shape
    xb = xp.reshape(n, hp // m, m, wp // m, m, c)
    return _bt_rows(_bt_rows(xb, 1, m), 3, m)


def _input_even_transpose(dv: jax.Array, m: int) -> jax.Array:
    xb = _bt_rows_transpose(_bt_rows_transpose(dv, 3, m), 1, m)  # (n, T+1, m, S+1, m, c)
    n, tb, _, sb, _, c = xb.shape
    return xb.reshape(n, tb * m, sb * m, c)


def _output_even(mt: jax.Array, m: int) -> jax.Array:
    """``(m+2, m+2, N, T, S, O)`` (tile column, row, ...) -> ``(N, mT, mS, O)``: ``A^T M A`` of every tile."""
    at = _WINOGRAD[m]["at"]
    _, _, n, th, tw, o = mt.shape
    cols = [_combine(row, mt) for row in at]  # cols[q]: (m+2 rows, n, T, S, o)
    planes = [[_combine(row, c) for row in at] for c in cols]  # planes[q][p]: (n, T, S, o)
    y = jnp.stack([jnp.stack([planes[q][p] for q in range(m)], axis=3) for p in range(m)], axis=2)
    return y.reshape(n, m * th, m * tw, o)


def _output_even_transpose(dy: jax.Array, m: int) -> jax.Array:
    at = _WINOGRAD[m]["at"]
    n, h, w, o = dy.shape
    dyb = dy.reshape(n, h // m, m, w // m, m, o)
    cols = [jnp.stack([_combine(at[:, a], [dyb[:, :, p, :, q] for p in range(m)]) for a in range(m + 2)])
            for q in range(m)]  # cols[q]: (m+2 rows, n, T, S, o)
    return jnp.stack([_combine(at[:, b], cols) for b in range(m + 2)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _input_even_vjp(xp, m):
    return _input_even(xp, m)


_input_even_vjp.defvjp(lambda xp, m: (_input_even(xp, m), None),
                       lambda m, _, dv: (_input_even_transpose(dv, m),))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _output_even_vjp(mt, m):
    return _output_even(mt, m)


_output_even_vjp.defvjp(lambda mt, m: (_output_even(mt, m), None),
                        lambda m, _, dy: (_output_even_transpose(dy, m),))


def winograd_input(xp: jax.Array, m: int = 2) -> tuple[jax.Array, WinogradTiles]:
    """Transforms an already padded NHWC input into Winograd F(m x m, 3x3) tiles.

    Args:
        xp: ``(N, H + 2, W + 2, C)``, the input of a VALID 3x3 convolution (padding already applied).
        m: output tile size, 2 or 4.

    Returns:
        ``(V, tiles)``: ``V`` of shape ``((m+2)^2, N * ceil(H/m) * ceil(W/m), C)`` and the tiling for
        :func:`winograd_output`. Sizes that are not multiples of m are zero-extended and cropped at the end.
    """
    tiles = _tiles_of(xp.shape, m)
    _, n, th, tw, h, w = tiles
    c = xp.shape[-1]
    xp = jnp.pad(xp, ((0, 0), (0, m * (th + 1) - h - 2), (0, m * (tw + 1) - w - 2), (0, 0)))
    v = _input_even_vjp(xp, m)
    return v.reshape((m + 2) ** 2, n * th * tw, c), tiles


def winograd_input_transpose(dv: jax.Array, padded_shape, m: int = 2) -> jax.Array:
    """Transpose of :func:`winograd_input`: ``((m+2)^2, P, C)`` cotangents -> the padded input's shape."""
    _, n, th, tw, h, w = _tiles_of(padded_shape, m)
    dxp = _input_even_transpose(dv.reshape(m + 2, m + 2, n, th, tw, dv.shape[-1]), m)
    return dxp[:, : h + 2, : w + 2]


def _kernel_matrix(m: int, dtype) -> jax.Array:
    # (G (x) G) as a ((m+2)^2, 9) matrix: row (m+2) b + a (tile column b, row a: the input transform's order),
    # column 3i + j (kernel row i, column j) holds G[a, i] * G[b, j].
    g = _WINOGRAD[m]["g"]
    return jnp.asarray(np.einsum("ai,bj->baij", g, g).reshape((m + 2) ** 2, 9), dtype)


def winograd_kernel(kernel: jax.Array, m: int = 2) -> jax.Array:
    """``G g G^T`` for a ``(3, 3, C_in, C_out)`` HWIO kernel: ``((m+2)^2, C_in, C_out)``.

    One small matmul with the constant ``G (x) G``: it compiles in milliseconds, where the same arithmetic
    written as slices and adds costs XLA:CPU a large fused kernel to compile per layer.
    """
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"winograd_kernel: expected a (3, 3, C_in, C_out) kernel, got shape {kernel.shape}")
    u = lax.dot_general(_kernel_matrix(m, kernel.dtype), kernel.reshape(9, -1), (((1,), (0,)), ((), ())),
                        precision=lax.Precision.HIGHEST)
    return u.reshape((m + 2) ** 2, kernel.shape[2], kernel.shape[3])


def winograd_kernel_transpose(du: jax.Array, m: int = 2) -> jax.Array:
    """Transpose of :func:`winograd_kernel`: ``((m+2)^2, C_in, C_out)`` -> ``(3, 3, C_in, C_out)``."""
    dk = lax.dot_general(_kernel_matrix(m, du.dtype), du.reshape(du.shape[0], -1), (((0,), (0,)), ((), ())),
                         precision=lax.Precision.HIGHEST)
    return dk.reshape(3, 3, du.shape[1], du.shape[2])


def winograd_output(mt: jax.Array, tiles: WinogradTiles) -> jax.Array:
    """Inverse transform of the ``((m+2)^2, P, C_out)`` products into the ``(N, H, W, C_out)`` output."""
    m, n, th, tw, h, w = tiles
    y = _output_even_vjp(mt.reshape(m + 2, m + 2, n, th, tw, mt.shape[-1]), m)
    return y[:, :h, :w] if (h, w) != (m * th, m * tw) else y


def winograd_output_transpose(dy: jax.Array, padded_shape, m: int = 2) -> jax.Array:
    """Transpose of :func:`winograd_output`: ``(N, H, W, C)`` cotangents -> ``((m+2)^2, P, C)``.

    ``padded_shape`` is the shape of the padded input the tiles were cut from (it fixes the tiling).
    """
    _, n, th, tw, h, w = _tiles_of(padded_shape, m)
    dy = jnp.pad(dy, ((0, 0), (0, m * th - h), (0, m * tw - w), (0, 0)))
    return _output_even_transpose(dy, m).reshape((m + 2) ** 2, n * th * tw, dy.shape[-1])


def winograd_products(v: jax.Array, u: jax.Array) -> jax.Array:
    """The per-position matmuls ``(T, P, C_in) x (T, C_in, C_out) -> (T, P, C_out)``, float32 accumulation."""
    products = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
    return products.astype(v.dtype)


def winograd_conv3x3(xp: jax.Array, kernel: jax.Array, m: int = 2) -> jax.Array:
    """VALID 3x3, stride-1 convolution of a padded NHWC input with an HWIO kernel by Winograd F(m x m, 3x3).

    Equals ``lax.conv_general_dilated(xp, kernel, (1, 1), 'VALID')`` up to float rounding. Differentiable: the
    gradients are again transforms and batched matmuls, with the same reduction of multiply-adds.
    """
    v, tiles = winograd_input(xp, m)
    return winograd_output(winograd_products(v, winograd_kernel(kernel.astype(xp.dtype), m)), tiles)


def _conv_lax(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(xp, kernel, (1, 1), "VALID", dimension_numbers=_DIMENSION_NUMBERS)


@jax.custom_vjp
def conv_few_outputs(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID stride-1 convolution as one matmul and ``kh * kw`` shifted adds; for kernels with few outputs.

    ``z = xp @ K`` computes every tap's contribution at every input pixel, ``(N, Hp, Wp, kh * kw * C_out)``;
    the output is the sum of the taps' planes, each shifted by its offset. For a 7x7 kernel with 3 outputs
    this is a (pixels, 64) x (64, 147) matmul, which XLA:CPU runs near peak, instead of a convolution whose
    3-wide output dimension it vectorises poorly (~10x slower). The gradients are XLA's own convolution
    gradients (an input-gradient convolution with 3 input channels and a weight-gradient convolution),
    which it handles well; differentiating the shifted adds instead made it materialise 49 padded copies.
    """
    n, hp, wp, c = xp.shape
    kh, kw, _, o = kernel.shape
    h, w = hp - kh + 1, wp - kw + 1
    z = lax.dot_general(xp, kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * o), (((3,), (0,)), ((), ())),
                        preferred_element_type=jnp.float32).astype(xp.dtype)
    z = z.reshape(n, hp, wp, kh * kw, o)
    taps = [z[:, i:i + h, j:j + w, i * kw + j] for i in range(kh) for j in range(kw)]
    return functools.reduce(jnp.add, taps)


def _conv_few_outputs_fwd(xp, kernel):
    return conv_few_outputs(xp, kernel), (xp, kernel)


def _conv_few_outputs_bwd(residuals, dy):
    _, vjp = jax.vjp(_conv_lax, *residuals)  # XLA removes the unused forward convolution
    return vjp(dy)


conv_few_outputs.defvjp(_conv_few_outputs_fwd, _conv_few_outputs_bwd)


def choose_conv_impl(in_features: int, features: int, kernel_hw: tuple[int, int], strides: int, dilation: int,
                     groups: int, dtype) -> str:
    """Which formulation :class:`Conv2D` uses for a float32 convolution (others always use ``'lax'``).

    ``'matmul'`` for 1x1 kernels (a plain ``dot_general``), ``'winograd'`` for 3x3 with at least
    ``_WINOGRAD_MIN_CHANNELS`` inputs and outputs, ``'few_outputs'`` for large kernels with few outputs, and
    ``'lax'`` (``lax.conv_general_dilated``) for everything else, including every strided or dilated conv.
    """
    if strides != 1 or dilation != 1 or groups != 1 or jnp.dtype(dtype) != jnp.float32:
        return "lax"
    if kernel_hw == (1, 1):
        return "matmul"
    if kernel_hw == (3, 3) and min(in_features, features) >= _WINOGRAD_MIN_CHANNELS:
        return "winograd"
    if features <= _FEW_OUTPUTS_MAX_FEATURES and kernel_hw[0] * kernel_hw[1] >= _FEW_OUTPUTS_MIN_TAPS:
        return "few_outputs"
    return "lax"


class ConvKernel(nn.Module):
    """Only the parameters of a :class:`Conv2D` (same names, shapes and initialisers): ``(kernel, bias)``.

    For layers that compute several convolutions jointly (the FFC layer shares one Winograd input transform
    between its paths) but must keep each path's parameters under its own module name.
    """

    features: int
    kernel_size: int | tuple[int, int]
    in_features: int
    use_bias: bool = False
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array | None]:
        size = self.kernel_size
        kh, kw = (size, size) if isinstance(size, int) else size
        kernel_shape = (kh, kw, self.in_features, self.features)
        kernel = self.param("kernel", torch_kernel_init, kernel_shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", torch_bias_init(math.prod(kernel_shape[:-1])), (self.features,),
                              self.param_dtype)
        return kernel, bias


IMPLS = ("auto", "lax", "cpu", "matmul", "winograd", "few_outputs")


def per_platform(cpu_fn, default_fn, *args):
    """``cpu_fn(*args)`` in programs compiled for CPU, ``default_fn(*args)`` for GPU/TPU (``platform_dependent``)."""
    return lax.platform_dependent(*args, cpu=cpu_fn, default=default_fn)


class Conv2D(nn.Module):
    """torch.nn.Conv2d in NHWC: explicit integer padding with a padding mode, stride, dilation, groups.

    Attributes mirror torch's constructor. ``padding`` may also be ``'same'`` (TF-style SAME zero padding,
    which is what DeepFill's TF code uses). ``impl`` picks the formulation: ``'auto'`` (per platform: on CPU
    Winograd for float32 3x3 stride-1 convs with >= 32 channels, matmul + shifted adds for large kernels with
    <= 8 outputs, a dot_general for 1x1, ``lax.conv_general_dilated`` otherwise; on GPU/TPU always
    ``lax.conv_general_dilated``), ``'cpu'`` (the CPU choice on every platform), ``'lax'``, or one of
    ``'matmul'``, ``'winograd'``, ``'few_outputs'`` forced (they need stride 1, dilation 1, groups 1, and
    Winograd a 3x3 kernel).
    """

    features: int
    kernel_size: int | tuple[int, int]
    strides: int = 1
    padding: int | str = 0
    padding_mode: str = "zeros"
    dilation: int = 1
    groups: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = (self.kernel_size, self.kernel_size) if isinstance(self.kernel_size, int) else self.kernel_size
        in_features = x.shape[-1]
        if in_features % self.groups:
            raise ValueError(f"{self.name}: {in_features} input channels not divisible by groups={self.groups}")
        kernel_shape = (kh, kw, in_features // self.groups, self.features)
        kernel = self.param("kernel", torch_kernel_init, kernel_shape, self.param_dtype)
        if self.padding == "same":
            conv_padding = "SAME"
        else:
            x = pad2d(x, int(self.padding), self.padding_mode)
            conv_padding = "VALID"
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.impl not in IMPLS:
            raise ValueError(f"{self.name}: impl must be one of {IMPLS}, got {self.impl!r}")
        impl = self.impl
        if impl in ("auto", "cpu"):
            chosen = choose_conv_impl(in_features, self.features, (kh, kw), self.strides, self.dilation,
                                      self.groups, self.dtype)
            if impl == "auto" and chosen != "lax":
                y = per_platform(functools.partial(self._conv, chosen, conv_padding),
                                 functools.partial(self._conv, "lax", conv_padding), x, kernel)
            else:
                y = self._conv(chosen, conv_padding, x, kernel)
        else:
            y = self._conv(impl, conv_padding, x, kernel)
        if self.use_bias:
            bias = self.param("bias", torch_bias_init(math.prod(kernel_shape[:-1])), (self.features,),
                              self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y

    def _conv(self, impl: str, conv_padding, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """One formulation of the convolution of the padded input (``conv_padding`` is 'VALID' or 'SAME')."""
        kh, kw = kernel.shape[:2]
        if impl == "matmul" and (kh, kw) != (1, 1):
            raise ValueError(f"{self.name}: impl='matmul' needs a 1x1 kernel, got {(kh, kw)}")
        if impl != "lax" and (self.strides, self.dilation, self.groups) != (1, 1, 1):
            raise ValueError(f"{self.name}: impl={impl!r} needs strides, dilation and groups of 1, got "
                             f"{(self.strides, self.dilation, self.groups)}")
        if impl == "winograd" and (kh, kw) != (3, 3):
            raise ValueError(f"{self.name}: impl='winograd' needs a 3x3 kernel, got {(kh, kw)}")
        if impl != "lax" and conv_padding == "SAME":
            x = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
        if impl == "winograd":
            return winograd_conv3x3(x, kernel)
        if impl == "few_outputs":
            return conv_few_outputs(x, kernel)
        if impl == "matmul":
            return lax.dot_general(x, kernel.reshape(kernel.shape[-2:]), (((3,), (0,)), ((), ())),
                                   preferred_element_type=jnp.float32).astype(self.dtype)
        return lax.conv_general_dilated(
            x, kernel, window_strides=(self.strides, self.strides), padding=conv_padding,
            rhs_dilation=(self.dilation, self.dilation), dimension_numbers=_DIMENSION_NUMBERS,
            feature_group_count=self.groups)


class ConvTranspose2D(nn.Module):
    """torch.nn.ConvTranspose2d in NHWC (stride, padding, output_padding as in torch).

    ``kernel`` is stored as the HWIO kernel of the *equivalent forward convolution* over the zero-dilated input,
    i.e. torch's ``(I, O, kh, kw)`` weight flipped spatially and transposed to ``(kh, kw, I, O)``.

    The common up-sampling case (kernel 3, stride 2, padding 1, output_padding 1, LaMa's and pix2pixHD's) is
    computed by sub-pixel decomposition: four small convolutions on the un-dilated input, one per output phase,
    interleaved. That does exactly torch's arithmetic (9 taps per output pair, no multiplications by the
    inserted zeros) and its gradient is made of ordinary convolutions, which XLA:CPU handles far better than
    the gradient of an ``lhs_dilation`` convolution (measured here: seconds per layer for the latter).
    """

    features: int
    kernel_size: int = 3
    strides: int = 2
    padding: int = 1
    output_padding: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    impl: str = "auto"  # 'auto' (sub-pixel on CPU, the platform's transposed conv elsewhere), 'cpu', 'lax'

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, p, op = self.kernel_size, self.strides, self.padding, self.output_padding
        in_features = x.shape[-1]
        kernel_shape = (k, k, in_features, self.features)
        # torch initialises ConvTranspose2d weights with fan_in computed from weight.size(1) * k * k = out * k * k.
        kernel = self.param("kernel", functools.partial(_convt_kernel_init, fan_in=self.features * k * k),
                            kernel_shape, self.param_dtype)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)

        def dilated(x, kernel):
            return lax.conv_general_dilated(
                x, kernel, window_strides=(1, 1), padding=[(k - 1 - p, k - 1 - p + op)] * 2,
                lhs_dilation=(s, s), dimension_numbers=_DIMENSION_NUMBERS)

        if self.impl not in ("auto", "cpu", "lax"):
            raise ValueError(f"{self.name}: impl must be 'auto', 'cpu' or 'lax', got {self.impl!r}")
        subpixel = (k, s, p, op) == (3, 2, 1, 1)
        if subpixel and self.impl == "auto":
            y = per_platform(_convt_k3s2p1op1, dilated, x, kernel)
        elif subpixel and self.impl == "cpu":
            y = _convt_k3s2p1op1(x, kernel)
        else:
            y = dilated(x, kernel)
        if self.use_bias:
            bias = self.param("bias", torch_bias_init(self.features * k * k), (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


def _convt_kernel_init(key, shape, dtype=jnp.float32, *, fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _convt_k3s2p1op1(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Transposed conv (k3, s2, p1, op1) as four phase convolutions; ``kernel`` is the flipped HWIO kernel.

    In 1-D, the equivalent forward conv over the zero-dilated input (padding 1 low) reads
    y[o] = sum_j xd[o + j - 1]·f[j] with xd[2i] = x[i], so y[2m] = x[m]·f[1] and
    y[2m+1] = x[m]·f[0] + x[m+1]·f[2] (x past the end is 0). The 2-D phases are the products of those rules.
    """
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    taps = {0: (1,), 1: (0, 2)}  # phase -> kernel rows (of the flipped kernel) for input offsets 0, 1

    def phase(a, b):
        rows, cols = taps[a], taps[b]
        sub = kernel[jnp.array(rows)][:, jnp.array(cols)]  # (len(rows), len(cols), I, O)
        inp = xp[:, : h + len(rows) - 1, : w + len(cols) - 1]
        return lax.conv_general_dilated(inp, sub, (1, 1), "VALID", dimension_numbers=_DIMENSION_NUMBERS)

    y00, y01, y10, y11 = phase(0, 0), phase(0, 1), phase(1, 0), phase(1, 1)
    top = jnp.stack([y00, y01], axis=3)  # (n, h, w, 2, o): column phase
    bottom = jnp.stack([y10, y11], axis=3)
    y = jnp.stack([top, bottom], axis=2)  # (n, h, 2, w, 2, o): row phase
    return y.reshape(n, 2 * h, 2 * w, y.shape[-1])


def batch_norm(train: bool, name: str, dtype: Dtype = jnp.float32, groups: int = 1):
    """BatchNorm2d with torch's defaults: eps 1e-5, momentum 0.1 (= Flax momentum 0.9), affine, running variance
    updated with the unbiased batch variance.

    ``groups`` > 1 normalises each of that many contiguous slices of the batch with its own statistics (LaMa's
    per-GPU statistics when it equals the number of data-parallel devices; see ``jaxinpaint.nn.norm``).
    Variables are named like ``flax.linen.BatchNorm``'s.
    """
    from jaxinpaint.nn.norm import BatchNorm

    return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, num_groups=groups,
                     unbiased_running_var=True, name=name)


_ACTIVATIONS = {
    "relu": nn.relu,
    "lrelu": lambda x: nn.leaky_relu(x, 0.2),
    "elu": nn.elu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "identity": lambda x: x,
}


def activation(name: str | None):
    """Activation by name, as LaMa's ``get_activation`` (``None``/``'none'`` = identity; ``True`` = tanh)."""
    if name in (None, False, "none"):
        return _ACTIVATIONS["identity"]
    if name is True or name == "True":
        return _ACTIVATIONS["tanh"]
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]
