"""Spectral normalisation (Miyato et al. 2018), TF/neuralgym style, and a spectrally normalised convolution.

``spectral_normalize`` follows neuralgym's ``conv2d_spectral_norm`` (DeepFill v2's SN-PatchGAN): one power
iteration per call from a stored ``u`` of shape (1, out_channels), kept in the mutable ``'spectral'``
collection. PyTorch's ``torch.nn.utils.spectral_norm`` (EdgeConnect, Shift-Net, CTSDG) keeps both ``u`` and
``v`` and differs in detail; systems that port PyTorch weights need that variant.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any

SPECTRAL = "spectral"  # the mutable collection holding the spectral-norm power-iteration vectors


def _l2_normalize(v: jax.Array, epsilon: float) -> jax.Array:
    return v / (jnp.sqrt(jnp.sum(jnp.square(v))) + epsilon)


def spectral_normalize(kernel: jax.Array, u: jax.Array, *, epsilon: float = 1e-12):
    """One power iteration on ``kernel`` viewed as a ``(k*k*in, out)`` matrix W; returns ``W / sigma(W)``.

    ``v = normalize(u W^T)``, ``u' = normalize(v W)``, ``sigma = v W u'^T`` (Miyato et al. 2018, as in
    neuralgym's ``conv2d_spectral_norm``). ``u`` and ``v`` carry no gradient; ``sigma`` does through W.
    Repeated calls feeding ``u'`` back converge to W's largest singular value, so one iteration per training step
    suffices once training is under way.

    Args:
      kernel: HWIO convolution kernel (any shape whose last axis is the output channels).
      u: (1, out) current estimate of the leading left singular vector of W^T (right one of W).
      epsilon: added to norms to avoid dividing by zero.

    Returns:
      ``(normalised kernel, new u, sigma)``.
    """
    w = kernel.reshape(-1, kernel.shape[-1])
    u = lax.stop_gradient(u.astype(w.dtype))
    v = lax.stop_gradient(_l2_normalize(u @ w.T, epsilon))
    u_new = lax.stop_gradient(_l2_normalize(v @ w, epsilon))
    sigma = (v @ w @ u_new.T)[0, 0]
    return kernel / sigma, u_new, sigma


class SpectralConv2D(nn.Module):
    """A convolution with a spectrally normalised kernel (neuralgym's ``conv2d_spectral_norm``), TF SAME.

    The power-iteration vector ``u`` lives in the mutable ``'spectral'`` collection: every call runs one
    iteration from it, and ``train=True`` stores the new vector (apply with ``mutable=['spectral']``);
    ``train=False`` leaves it untouched, so evaluation is deterministic and never changes the state.

    Attributes:
      features: output channels.
      kernel_size: square kernel size.
      strides: convolution stride.
      epsilon: norm epsilon of the power iteration.
    """

    features: int
    kernel_size: int = 5
    strides: int = 2
    epsilon: float = 1e-12
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """(N, H, W, C_in) -> (N, ceil(H / strides), ceil(W / strides), features)."""
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.glorot_uniform(), (k, k, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
        u = self.variable(SPECTRAL, "u", lambda: jax.random.normal(self.make_rng("params"),
                                                                   (1, self.features), self.param_dtype))
        kernel_sn, u_new, _ = spectral_normalize(kernel, u.value, epsilon=self.epsilon)
        if train and not self.is_initializing():
            u.value = u_new.astype(self.param_dtype)
        y = lax.conv_general_dilated(x.astype(self.dtype), kernel_sn.astype(self.dtype),
                                     window_strides=(self.strides, self.strides), padding="SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias.astype(self.dtype)




# ----------------------------------------------------------------------------------------------------------
# PyTorch's torch.nn.utils.spectral_norm (EdgeConnect, Shift-Net, CTSDG).
# ----------------------------------------------------------------------------------------------------------


def _torch_normalize(x: jax.Array, eps: float) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


def torch_spectral_sigma(w_mat: jax.Array, u: jax.Array, v: jax.Array, *, update: bool, eps: float = 1e-12):
    """PyTorch's ``SpectralNorm.compute_weight`` on a weight matrix: ``(sigma, u, v)``.

    ``update`` (training mode) runs one power iteration first, ``v = normalize(Wᵀu)``, ``u = normalize(W v)``
    with ``normalize(x) = x / max(‖x‖, eps)``; evaluation mode uses the stored vectors as they are. ``u`` and
    ``v`` carry no gradient; ``sigma = uᵀ W v`` carries it into W.
    """
    u, v = u.astype(w_mat.dtype), v.astype(w_mat.dtype)
    if update:
        w_sg = lax.stop_gradient(w_mat)
        v = _torch_normalize(w_sg.T @ u, eps)
        u = _torch_normalize(w_sg @ v, eps)
    u, v = lax.stop_gradient(u), lax.stop_gradient(v)
    return u @ (w_mat @ v), u, v


def _unit_vector_init(key, shape, dtype=jnp.float32):
    """PyTorch initialises u and v with normal draws normalised to unit length."""
    x = jax.random.normal(key, shape, dtype)
    return x / jnp.maximum(jnp.linalg.norm(x), 1e-12)


class TorchSNConv2D(nn.Module):
    """``spectral_norm(nn.Conv2d(...))`` with PyTorch's semantics, NHWC.

    The kernel is stored HWIO (``kernel``; the original's ``weight_orig`` transposed); the power-iteration
    vectors ``u`` (out channels) and ``v`` (in·kh·kw, in PyTorch's O,I,kh,kw flatten order) live in the mutable
    ``'spectral'`` collection, so ``weight_u`` / ``weight_v`` of a PyTorch state dict load as they are. Every
    training-mode call advances them once (a network called three times per step iterates three times, as in
    PyTorch); evaluation mode uses them unchanged. ``use_sn=False`` gives the plain convolution (EdgeConnect's
    ``use_spectral_norm`` switch) with the same parameter names.

    Attributes:
      features, kernel_size, strides, padding, dilation, use_bias: as ``torch.nn.Conv2d``.
      padding_mode: ``'zeros'`` or ``'reflect'`` (``ReflectionPad2d`` before the conv).
      use_sn: apply spectral normalisation.
      eps: PyTorch's 1e-12.
      init_std: ``None`` initialises like PyTorch's default; a number draws the kernel from N(0, init_std²)
        and zeroes the bias, the ``init_weights('normal', 0.02)`` of EdgeConnect, Shift-Net and CTSDG (with SN
        it initialises ``weight_orig``, which ``weight`` aliases in PyTorch).
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    padding: int = 0
    dilation: int = 1
    use_bias: bool = True
    padding_mode: str = "zeros"
    use_sn: bool = True
    eps: float = 1e-12
    init_std: float | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        from jaxinpaint.nn.conv import pad2d, torch_bias_init, torch_kernel_init

        k = self.kernel_size
        cin = x.shape[-1]
        kernel_init, bias_init = _inits(self.init_std, torch_kernel_init, torch_bias_init(cin * k * k))
        kernel = self.param("kernel", kernel_init, (k, k, cin, self.features), jnp.float32)
        if self.use_sn:
            kernel = _sn_kernel(self, kernel, kernel.transpose(3, 2, 0, 1).reshape(self.features, -1), train)
        x = pad2d(x.astype(self.dtype), int(self.padding), self.padding_mode)
        y = lax.conv_general_dilated(x, kernel.astype(self.dtype), (self.strides, self.strides), "VALID",
                                     rhs_dilation=(self.dilation, self.dilation),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", bias_init, (self.features,), jnp.float32).astype(y.dtype)
        return y


class TorchSNConvTranspose2D(nn.Module):
    """``spectral_norm(nn.ConvTranspose2d(...))`` with PyTorch's semantics (``dim=1``), NHWC.

    The kernel is stored like ``jaxinpaint.nn.conv.ConvTranspose2D``'s: the flipped HWIO kernel of the
    equivalent forward convolution over the zero-dilated input. PyTorch views the (I, O, kh, kw) weight as an
    (O, I·kh·kw) matrix for the power iteration (u has O entries), which is reproduced here. ``init_std`` as
    for :class:`TorchSNConv2D`.
    """

    features: int
    kernel_size: int = 4
    strides: int = 2
    padding: int = 1
    output_padding: int = 0
    use_bias: bool = True
    use_sn: bool = True
    eps: float = 1e-12
    init_std: float | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        from jaxinpaint.nn.conv import torch_bias_init

        k, s, p, op = self.kernel_size, self.strides, self.padding, self.output_padding
        cin = x.shape[-1]
        bound = 1.0 / math.sqrt(self.features * k * k)  # a Python float: this also runs under a trace
        kernel_init, bias_init = _inits(
            self.init_std, lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound),
            torch_bias_init(self.features * k * k))
        kernel = self.param("kernel", kernel_init, (k, k, cin, self.features), jnp.float32)
        if self.use_sn:
            w_mat = kernel[::-1, ::-1].transpose(3, 2, 0, 1).reshape(self.features, -1)
            kernel = _sn_kernel(self, kernel, w_mat, train)
        y = lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (1, 1),
                                     [(k - 1 - p, k - 1 - p + op)] * 2, lhs_dilation=(s, s),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", bias_init, (self.features,), jnp.float32).astype(y.dtype)
        return y


def _inits(init_std: float | None, torch_kernel, torch_bias):
    """(kernel, bias) initialisers: PyTorch's defaults, or N(0, init_std²) kernels and zero biases."""
    if init_std is None:
        return torch_kernel, torch_bias
    return nn.initializers.normal(float(init_std)), nn.initializers.zeros_init()


def _sn_kernel(module: nn.Module, kernel: jax.Array, w_mat: jax.Array, train: bool) -> jax.Array:
    """``kernel / sigma`` with the module's stored (u, v), advanced once in training mode."""
    u = module.variable(SPECTRAL, "u", lambda: _unit_vector_init(module.make_rng("params"), (w_mat.shape[0],)))
    v = module.variable(SPECTRAL, "v", lambda: _unit_vector_init(module.make_rng("params"), (w_mat.shape[1],)))
    update = train and not module.is_initializing()
    sigma, u_new, v_new = torch_spectral_sigma(w_mat, u.value, v.value, update=update, eps=module.eps)
    if update:
        u.value, v.value = u_new, v_new
    return kernel / sigma
