"""The fast convolution formulations (Winograd, matmul + shifted adds, the joint FFC path) equal the plain
``lax.conv_general_dilated`` convolutions they replace, forward and gradients, and keep the parameter tree."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxinpaint.nn import conv as layers
from jaxinpaint.nn import ffc

DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, k):
    return lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=DN, precision="highest")


def _rand(seed, *shape, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, jnp.float32)


def _rel(a, b):
    return float(jnp.abs(a - b).max() / jnp.abs(b).max())


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", [(2, 10, 12, 8), (1, 9, 7, 5)])
def test_winograd_equals_conv_and_its_gradient(m, shape):
    x, k = _rand(0, *shape), _rand(1, 3, 3, shape[-1], 6, scale=0.3)
    t = _rand(2, shape[0], shape[1] - 2, shape[2] - 2, 6)
    tol = 2e-6 if m == 2 else 2e-5  # F(4x4, 3x3)'s larger constants cost about one decimal digit
    assert _rel(jax.jit(layers.winograd_conv3x3, static_argnums=2)(x, k, m), _conv(x, k)) < tol
    grads = jax.jit(jax.grad(lambda x, k: jnp.sum(layers.winograd_conv3x3(x, k, m) * t), (0, 1)))(x, k)
    expected = jax.jit(jax.grad(lambda x, k: jnp.sum(_conv(x, k) * t), (0, 1)))(x, k)
    for g, e in zip(grads, expected):
        assert _rel(g, e) < 5 * tol


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_transposes_are_adjoint(m):
    """<T x, y> == <x, T^T y> for the input, output and kernel transforms (what the custom VJPs rely on)."""
    xp = _rand(3, 2, 9, 11, 3)
    v, tiles = layers.winograd_input(xp, m)  # eager: small, and the transposes are checked op by op
    dv = _rand(4, *v.shape)
    lhs = jnp.vdot(v, dv)
    rhs = jnp.vdot(xp, layers.winograd_input_transpose(dv, xp.shape, m))
    assert abs(float(lhs - rhs)) < 1e-4 * float(jnp.abs(lhs)) + 1e-3

    y = layers.winograd_output(dv[..., :2], tiles)
    dy = _rand(5, *y.shape)
    assert y.shape == (2, 7, 9, 2)
    lhs, rhs = jnp.vdot(y, dy), jnp.vdot(dv[..., :2], layers.winograd_output_transpose(dy, xp.shape, m))
    assert abs(float(lhs - rhs)) < 1e-4 * float(jnp.abs(lhs)) + 1e-3

    k = _rand(6, 3, 3, 3, 2)
    u = layers.winograd_kernel(k, m)
    du = _rand(7, *u.shape)
    lhs, rhs = jnp.vdot(u, du), jnp.vdot(k, layers.winograd_kernel_transpose(du, m))
    assert abs(float(lhs - rhs)) < 1e-4 * float(jnp.abs(lhs)) + 1e-3


def test_winograd_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 3x3"):
        layers.winograd_input(jnp.zeros((1, 2, 5, 1)))
    with pytest.raises(ValueError, match="tile size"):
        layers.winograd_input(jnp.zeros((1, 5, 5, 1)), m=3)
    with pytest.raises(ValueError, match=r"\(3, 3, C_in, C_out\)"):
        layers.winograd_kernel(jnp.zeros((5, 5, 1, 1)))


def test_few_outputs_head_equals_conv_and_its_gradient():
    """The 7x7, many -> 3 head as one matmul plus 49 shifted adds."""
    x, k = _rand(8, 2, 14, 12, 16), _rand(9, 7, 7, 16, 3, scale=0.1)
    t = _rand(10, 2, 8, 6, 3)
    assert _rel(jax.jit(layers.conv_few_outputs)(x, k), _conv(x, k)) < 2e-6
    grads = jax.jit(jax.grad(lambda x, k: jnp.sum(layers.conv_few_outputs(x, k) * t), (0, 1)))(x, k)
    expected = jax.grad(lambda x, k: jnp.sum(_conv(x, k) * t), (0, 1))(x, k)
    for g, e in zip(grads, expected):
        assert _rel(g, e) < 2e-6


@pytest.mark.parametrize("bwd", ["dx_winograd", "winograd", "lax"])
def test_joint_ffc_convs_equal_separate_convs(monkeypatch, bwd):
    monkeypatch.setattr(ffc, "_LOCAL_CONVS_BWD", bwd)
    args = (_rand(11, 2, 8, 10, 4), _rand(12, 2, 8, 10, 12), _rand(13, 3, 3, 4, 4, scale=0.3),
            _rand(14, 3, 3, 4, 12, scale=0.3), _rand(15, 3, 3, 12, 4, scale=0.3))
    t_l, t_g = _rand(16, 2, 6, 8, 4), _rand(17, 2, 6, 8, 12)

    def loss(f):
        return lambda *a: jnp.sum(f(*a)[0] * t_l) + jnp.sum(jnp.square(f(*a)[1]) * t_g)

    out, expected = jax.jit(ffc.local_convs)(*args), ffc._local_convs_lax(*args)
    for o, e in zip(out, expected):
        assert _rel(o, e) < 2e-6
    grads = jax.jit(jax.grad(loss(ffc.local_convs), argnums=tuple(range(5))))(*args)
    expected = jax.jit(jax.grad(loss(ffc._local_convs_lax), argnums=tuple(range(5))))(*args)
    for g, e in zip(grads, expected):
        assert _rel(g, e) < 1e-5


def _tree_shapes(variables):
    return {"/".join(k): v.shape for k, v in flax.traverse_util.flatten_dict(variables).items()}


@pytest.mark.parametrize("kernel_size,features,padding", [(3, 40, 1), (7, 3, 3), (1, 40, 0)])
def test_conv2d_auto_matches_lax_with_the_same_parameters(kernel_size, features, padding):
    x = _rand(18, 2, 12, 11, 36)
    fast = layers.Conv2D(features, kernel_size, padding=padding, padding_mode="reflect")
    plain = fast.clone(impl="lax")
    expected_impl = {3: "winograd", 7: "few_outputs", 1: "matmul"}[kernel_size]
    assert layers.choose_conv_impl(36, features, (kernel_size,) * 2, 1, 1, 1, jnp.float32) == expected_impl
    variables = fast.init(jax.random.key(0), x)
    assert _tree_shapes(variables) == _tree_shapes(plain.init(jax.random.key(0), x))
    assert _rel(fast.apply(variables, x), plain.apply(variables, x)) < 2e-6


def test_conv2d_same_padding_and_forced_impl_errors():
    x = _rand(19, 1, 9, 9, 32)
    conv = layers.Conv2D(32, 3, padding="same")
    variables = conv.init(jax.random.key(0), x)
    assert _rel(conv.apply(variables, x), conv.clone(impl="lax").apply(variables, x)) < 2e-6
    with pytest.raises(ValueError, match="strides, dilation and groups of 1"):
        layers.Conv2D(8, 3, strides=2, impl="winograd").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="needs a 3x3 kernel"):
        layers.Conv2D(8, 5, impl="winograd").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="impl must be"):
        layers.Conv2D(8, 3, impl="fft").init(jax.random.key(0), x)


def test_ffc_layer_joint_path_keeps_parameter_names_and_outputs(monkeypatch):
    """The joint Winograd FFC layer has the separate convolutions' parameters and computes the same thing."""
    x = (_rand(20, 2, 8, 8, 32), _rand(21, 2, 8, 8, 96))
    layer = ffc.FFC(128, 3, 0.75, 0.75, padding=1, enable_lfu=False)
    calls = []
    original = ffc.local_convs
    monkeypatch.setattr(ffc, "local_convs", lambda *a: calls.append(a[-1]) or original(*a))
    variables = layer.init(jax.random.key(0), x)
    fast = jax.jit(layer.apply)(variables, x)
    assert calls, "the joint Winograd path was not used for a 32/96-channel 3x3 FFC layer"
    assert set(variables["params"]) == {"convl2l", "convg2l", "convl2g", "convg2g"}
    assert variables["params"]["convl2g"]["kernel"].shape == (3, 3, 32, 96)

    monkeypatch.setattr(ffc, "choose_conv_impl", lambda *a: "lax")
    monkeypatch.setattr(layers, "choose_conv_impl", lambda *a: "lax")
    calls.clear()
    plain_variables = layer.init(jax.random.key(0), x)
    plain = jax.jit(layer.apply)(variables, x)
    assert not calls
    assert _tree_shapes(plain_variables) == _tree_shapes(variables)
    for a, b in zip(fast, plain):
        assert _rel(a, b) < 2e-6
