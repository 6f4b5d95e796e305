"""Spectral normalisation (Miyato et al. 2018), TF/neuralgym style, and a spectrally normalised convolution.

``spectral_normalize`` follows neuralgym's ``conv2d_spectral_norm`` (DeepFill v2's SN-PatchGAN): one power
iteration per call from a stored ``u`` of shape (1, out_channels), kept in the mutable ``'spectral'``
collection. PyTorch's ``torch.nn.utils.spectral_norm`` (EdgeConnect, Shift-Net, CTSDG) keeps both ``u`` and
``v`` and differs in detail; systems that port PyTorch weights need that variant.
"""

from __future__ import annotations

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


