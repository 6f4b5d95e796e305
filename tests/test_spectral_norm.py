"""PyTorch-style spectral normalisation against the EdgeConnect fixtures (u, v and sigma of the original
``torch.nn.utils.spectral_norm``): eval-mode sigma from the stored vectors, one training-mode power iteration,
convolutions and transposed convolutions (``dim=1``). Tolerances: sigma 1e-6 relative, vectors 1e-6 absolute."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_file

from jaxinpaint.nn.spectral_norm import TorchSNConv2D, TorchSNConvTranspose2D, torch_spectral_sigma


@pytest.mark.parametrize("fixture", ["edgeconnect_disc_edge_w4.npz", "edgeconnect_edge_gen_w4.npz"])
def test_sigma_and_power_iteration_match_pytorch(fixture):
    z = np.load(reference_file(fixture))
    layers = json.loads(str(z["config_json"]))["sn_sigma_eval"]
    assert layers
    for name, info in layers.items():
        w = z[f"{name}.weight_orig"]
        w_mat = (w if info["dim"] == 0 else w.transpose(1, 0, 2, 3)).reshape(w.shape[info["dim"]], -1)
        u, v = z[f"{name}.weight_u"], z[f"{name}.weight_v"]
        sigma, _, _ = torch_spectral_sigma(jnp.asarray(w_mat), jnp.asarray(u), jnp.asarray(v), update=False)
        assert float(sigma) == pytest.approx(info["sigma"], rel=1e-6), name
        _, u1, v1 = torch_spectral_sigma(jnp.asarray(w_mat), jnp.asarray(u), jnp.asarray(v), update=True)
        np.testing.assert_allclose(u1, z[f"after_train_forward.{name}.weight_u"], atol=1e-6, err_msg=name)
        np.testing.assert_allclose(v1, z[f"after_train_forward.{name}.weight_v"], atol=1e-6, err_msg=name)


def _torch_conv_nhwc(x, w_oihw, stride, padding):
    return jax.lax.conv_general_dilated(jnp.asarray(x), jnp.asarray(w_oihw.transpose(2, 3, 1, 0)), (stride, stride),
                                        [(padding, padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_conv_module_loads_torch_weights_and_advances_only_in_training():
    z = np.load(reference_file("edgeconnect_disc_edge_w4.npz"))
    w, u, v = z["conv2.0.weight_orig"], z["conv2.0.weight_u"], z["conv2.0.weight_v"]
    sigma = json.loads(str(z["config_json"]))["sn_sigma_eval"]["conv2.0"]["sigma"]
    layer = TorchSNConv2D(features=w.shape[0], kernel_size=4, strides=2, padding=1, use_bias=False)
    variables = {"params": {"kernel": w.transpose(2, 3, 1, 0)}, "spectral": {"u": u, "v": v}}
    x = np.random.default_rng(0).normal(size=(2, 16, 16, w.shape[1])).astype(np.float32)
    expected = _torch_conv_nhwc(x, w / sigma, 2, 1)
    y, state = layer.apply(variables, x, train=False, mutable=["spectral"])
    np.testing.assert_allclose(y, expected, atol=1e-5)
    np.testing.assert_array_equal(state["spectral"]["u"], u)  # evaluation never moves the vectors
    _, state = layer.apply(variables, x, train=True, mutable=["spectral"])
    np.testing.assert_allclose(state["spectral"]["u"], z["after_train_forward.conv2.0.weight_u"], atol=1e-6)
    np.testing.assert_allclose(state["spectral"]["v"], z["after_train_forward.conv2.0.weight_v"], atol=1e-6)
    # Gradients flow into the kernel through sigma, never into u and v (they are state, not parameters).
    g = jax.grad(lambda p: jnp.sum(layer.apply({"params": p, "spectral": {"u": u, "v": v}}, x) ** 2))(
        variables["params"])
    assert np.all(np.isfinite(g["kernel"])) and np.abs(g["kernel"]).max() > 0


def test_transposed_conv_module_matches_torch_semantics():
    z = np.load(reference_file("edgeconnect_edge_gen_w4.npz"))
    w, u, v = z["decoder.0.weight_orig"], z["decoder.0.weight_u"], z["decoder.0.weight_v"]  # (I, O, 4, 4)
    sigma = json.loads(str(z["config_json"]))["sn_sigma_eval"]["decoder.0"]["sigma"]
    layer = TorchSNConvTranspose2D(features=w.shape[1], kernel_size=4, strides=2, padding=1, use_bias=False)
    kernel = w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)
    x = np.random.default_rng(1).normal(size=(1, 8, 8, w.shape[0])).astype(np.float32)
    y = layer.apply({"params": {"kernel": kernel}, "spectral": {"u": u, "v": v}}, x)
    expected = jax.lax.conv_transpose(jnp.asarray(x), jnp.asarray((w / sigma).transpose(2, 3, 1, 0)), (2, 2),
                                      [(2, 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
    assert y.shape == (1, 16, 16, w.shape[1])
    np.testing.assert_allclose(y, expected, atol=1e-5)
    _, state = layer.apply({"params": {"kernel": kernel}, "spectral": {"u": u, "v": v}}, x, train=True,
                           mutable=["spectral"])
    np.testing.assert_allclose(state["spectral"]["u"], z["after_train_forward.decoder.0.weight_u"], atol=1e-6)


def test_init_and_plain_mode():
    layer = TorchSNConv2D(features=4, kernel_size=3, padding=1)
    variables = layer.init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))
    assert variables["spectral"]["u"].shape == (4,) and variables["spectral"]["v"].shape == (18,)
    assert float(jnp.linalg.norm(variables["spectral"]["u"])) == pytest.approx(1.0, rel=1e-6)
    plain = TorchSNConv2D(features=4, kernel_size=3, padding=1, use_sn=False)
    assert set(plain.init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))) == {"params"}
