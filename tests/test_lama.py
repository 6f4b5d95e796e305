"""LaMa models and weight import: parity with the original PyTorch code (../shared/reference fixtures).

Tolerances: the fixtures' generator logits are reproduced to max abs error <= 1e-4 (measured ~4e-6 against
logits of magnitude ~5), every stored activation to <= 1e-4, the discriminator's logits and features to <= 1e-5.
"""

import json
import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED_REFERENCE, reference_file

from jaxinpaint.nn import ffc, pix2pixhd
from jaxinpaint.nn.conv import ConvTranspose2D, pad2d
from jaxinpaint.systems.lama import convert
from jaxinpaint.systems.lama import model as lama

GEN_TOL = 1e-4
DISC_TOL = 1e-5


def nhwc(a):
    return np.asarray(a).transpose(0, 2, 3, 1)


def _intermediates(model, x):
    """Outputs of every stage, named like the fixtures' act_<i> (i = index in the original nn.Sequential)."""
    nd, nb = model.n_downsampling, model.n_blocks
    acts = {}
    y = model.stem(pad2d(x, 3, "reflect"), train=False)
    acts["act_01"] = y
    for i, layer in enumerate(model.down):
        y = layer(y, train=False)
        acts[f"act_{2 + i:02d}"] = y
    for i, block in enumerate(model.block):
        y = block(y, train=False)
        acts[f"act_{2 + nd + i:02d}"] = y
    h = jnp.concatenate([p for p in y if p is not None], -1)
    concat = 2 + nd + nb
    acts[f"act_{concat:02d}"] = h
    for i, up in enumerate(model.up):
        h = up(h, train=False)
        acts[f"act_{concat + 3 * i + 3:02d}"] = h  # output of the ReLU of the i-th (ConvT, BN, ReLU) triple
    return acts


@pytest.mark.parametrize("name", ["lama_small_seed0.npz", "big_lama_2blocks_seed1_128.npz"])
def test_generator_parity_with_pytorch(name):
    path = reference_file(name)
    ref = np.load(path)
    model, variables = convert.load_lama_generator(path)
    assert isinstance(model, lama.FFCResNetGenerator)
    cfg = json.loads(str(ref["config_json"]))["generator_kwargs"]
    assert (model.ngf, model.n_downsampling, model.n_blocks) == (cfg["ngf"], cfg["n_downsampling"], cfg["n_blocks"])

    x = jnp.asarray(nhwc(ref["input"]))
    acts = model.apply(variables, x, method=_intermediates)
    checked = 0
    for key, act in acts.items():
        parts = act if isinstance(act, tuple) else (act,)
        suffixes = ("_l", "_g") if isinstance(act, tuple) else ("",)
        for suffix, part in zip(suffixes, parts):
            if key + suffix in ref.files and part is not None:
                err = np.abs(np.asarray(part) - nhwc(ref[key + suffix])).max()
                assert err <= GEN_TOL, f"{name}: {key}{suffix} differs from PyTorch by {err}"
                checked += 1
    assert checked >= 8, f"only {checked} intermediate activations compared"

    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    logits_model = model.clone(add_out_act=None)
    logits = logits_model.apply(variables, x, train=False)
    assert np.abs(np.asarray(logits) - nhwc(ref["output_logits"])).max() <= GEN_TOL
    assert np.abs(np.asarray(out) - nhwc(ref["output"])).max() <= GEN_TOL
    mask = nhwc(ref["mask"])
    inpainted = mask * np.asarray(out) + (1 - mask) * nhwc(ref["image"])
    assert np.abs(inpainted - nhwc(ref["inpainted"])).max() <= GEN_TOL


def test_discriminator_parity_with_pytorch():
    path = reference_file("nlayer_disc_seed2_256.npz")
    ref = np.load(path)
    model, variables = convert.load_lama_discriminator(path)
    assert (model.ndf, model.n_layers, model.input_nc) == (64, 4, 3)
    logits, features = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, nhwc(ref["input"]))
    assert logits.shape == (1, 19, 19, 1)
    assert np.abs(np.asarray(logits) - nhwc(ref["output"])).max() <= DISC_TOL
    assert len(features) == 5
    for i, feat in enumerate(features):
        assert np.abs(np.asarray(feat) - nhwc(ref[f"feat_{i}"])).max() <= DISC_TOL, f"feature {i}"


def _state_dict(name):
    ref = np.load(reference_file(name))
    return {k: ref[k] for k in ref.files if re.match(r"model\d*\.", k)}


def test_lightning_checkpoint_layout_and_leftover_keys():
    g = _state_dict("lama_small_seed0.npz")
    d = _state_dict("nlayer_disc_seed2_256.npz")
    ckpt = {**{"generator." + k: v for k, v in g.items()}, **{"discriminator." + k: v for k, v in d.items()},
            "loss_resnet_pl.impl.conv1.weight": np.zeros((64, 3, 3, 3), np.float32)}
    model, variables = convert.load_lama_generator(ckpt)
    assert model.n_blocks == 2
    d_model, d_vars = convert.load_lama_discriminator(ckpt)
    assert d_model.n_layers == 4

    # Every key is consumed: an extra generator key is an error naming it, so is a missing one.
    with pytest.raises(convert.ConversionError, match=r"unused key.*model\.4\.conv1\.ffc\.extra"):
        convert.load_lama_generator({**g, "model.4.conv1.ffc.extra.weight": np.zeros((1,), np.float32)})
    incomplete = dict(g)
    del incomplete["model.5.conv2.ffc.convg2g.fu.bn.running_var"]
    with pytest.raises(convert.ConversionError, match=r"missing.*block_1/conv2/ffc/convg2g/fu/bn/var"):
        convert.load_lama_generator(incomplete)
    wrong = {**g, "model.14.weight": np.zeros((3, 16, 5, 5), np.float32)}
    with pytest.raises(convert.ConversionError, match="wrong shape"):
        convert.load_lama_generator(wrong)


def _keys_from_listing(name):
    shapes = {}
    for line in reference_file(name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        shapes[key] = (tuple(int(s) for s in re.findall(r"\d+", shape)), dtype)
    return shapes


def test_full_big_lama_key_list_converts_exactly():
    listing = _keys_from_listing("big_lama_keys.txt")
    assert len(listing) == 989
    sd = {k: np.zeros(shape, np.int64 if dtype == "int64" else np.float32) for k, (shape, dtype) in listing.items()}
    cfg = convert.infer_generator_config(sd)
    assert cfg == {"kind": "FFCResNetGenerator", "input_nc": 4, "ngf": 64, "n_downsampling": 3, "n_blocks": 18,
                   "resnet_ratio_gin": 0.75, "resnet_ratio_gout": 0.75, "resnet_enable_lfu": False,
                   "use_se": False, "gated": False, "spectral_pos_encoding": False, "output_nc": 3}
    model, variables = convert.load_lama_generator(sd)  # raises on any leftover or missing key
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    n_stats = sum(x.size for x in jax.tree.leaves(variables["batch_stats"]))
    assert n_params == 50_975_875
    n_counters = sum(1 for k in listing if k.endswith("num_batches_tracked"))
    assert n_params + n_stats + n_counters == 51_057_179


def test_discriminator_key_list_converts_exactly():
    listing = _keys_from_listing("nlayer_disc_keys.txt")
    sd = {k: np.zeros(shape, np.float32) for k, (shape, _) in listing.items()}
    model, variables = convert.load_lama_discriminator(sd)
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == 6_962_369


def _count_params(model, size=64):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, model.input_nc))))
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def test_named_variants_parameter_counts():
    assert _count_params(lama.BigLama()) == 50_975_875
    assert _count_params(lama.LamaFourier()) == 27_048_835
    regular = _count_params(lama.LamaRegular())
    assert 45e6 < regular < 47e6  # paper Table 2: 46M
    assert _count_params(pix2pixhd.NLayerDiscriminator(), 256) == 6_962_369


def test_global_generator_weights_round_trip():
    """LaMa-Regular: torch-named weights built from a JAX model convert back to the same function."""
    model = pix2pixhd.GlobalGenerator(ngf=8, n_downsampling=2, n_blocks=2)
    x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 4))
    variables = model.init(jax.random.key(0), x)
    # Name every JAX leaf the way the original state dict does, through the converter's own key map inverted.
    cfg = {"kind": "GlobalGenerator", "n_downsampling": 2, "n_blocks": 2}
    key_map = convert.generator_key_map(cfg)
    torch_keys = [f"model.{i}.{s}" for i in range(20) for s in ("weight", "bias", "running_mean", "running_var")]
    torch_keys += [f"model.{i}.conv_block.{j}.{s}" for i in range(20) for j in (1, 2, 5, 6)
                   for s in ("weight", "bias", "running_mean", "running_var")]
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    leaves = {tuple(p.key for p in path): np.asarray(v) for path, v in flat}
    sd = {}
    for key in torch_keys:
        target = key_map(key)
        if target is None or (target[0], *target[1]) not in leaves:
            continue
        value = leaves[(target[0], *target[1])]
        if value.ndim == 4:  # HWIO -> torch layout (the inverse of the converter's transform)
            value = value[::-1, ::-1].transpose(2, 3, 0, 1) if "up_" in target[1][0] else value.transpose(3, 2, 0, 1)
        sd[key] = value
    loaded_model, loaded = convert.load_lama_generator(sd)
    assert isinstance(loaded_model, pix2pixhd.GlobalGenerator)
    np.testing.assert_allclose(loaded_model.apply(loaded, x), model.apply(variables, x), atol=1e-6)


@pytest.mark.parametrize("size", [(33, 47), (31, 31), (16, 9), (1, 5)])
def test_fft_round_trip_odd_sizes(size):
    x = jax.random.normal(jax.random.key(0), (2, *size, 3))
    spec = ffc.spectrum_channels(x)
    assert spec.shape == (2, size[0], size[1] // 2 + 1, 6)
    np.testing.assert_allclose(ffc.channels_to_image(spec, size), x, atol=1e-5)
    # Interleaved order: channel 2k = Re, 2k+1 = Im of channel k (checked against numpy's orthonormal FFT).
    ref = np.fft.rfft2(np.asarray(x), axes=(1, 2), norm="ortho")
    np.testing.assert_allclose(spec[..., 2], ref[..., 1].real, atol=1e-5)
    np.testing.assert_allclose(spec[..., 3], ref[..., 1].imag, atol=1e-5)


@pytest.mark.parametrize("size", [(37, 53), (64, 64)])
def test_ffc_block_any_resolution(size):
    block = ffc.FFCResnetBlock(16, enable_lfu=False)
    x = (jnp.ones((1, *size, 4)), jnp.ones((1, *size, 12)))
    variables = block.init(jax.random.key(0), x)
    y_l, y_g = block.apply(variables, x)
    assert y_l.shape == (1, *size, 4) and y_g.shape == (1, *size, 12)


def test_ffc_options_lfu_se_gating_spectral_pos_encoding():
    layer = ffc.FFC(64, 3, 0.5, 0.5, padding=1, enable_lfu=True, gated=True, spectral_pos_encoding=True, use_se=True)
    x = (jax.random.normal(jax.random.key(0), (2, 8, 8, 32)), jax.random.normal(jax.random.key(1), (2, 8, 8, 32)))
    variables = layer.init(jax.random.key(2), x)
    params = variables["params"]
    assert {"gate", "convl2l", "convl2g", "convg2l", "convg2g"} <= set(params)
    assert {"fu", "lfu"} <= set(params["convg2g"])
    # 32 global channels -> SpectralTransform width 16 -> FourierUnit 2*16 spectral + 2 position channels.
    assert params["convg2g"]["fu"]["conv_layer"]["kernel"].shape == (1, 1, 2 * 16 + 2, 32)
    assert params["convg2g"]["fu"]["se"]["fc1"]["kernel"].shape == (34, 2)
    out_l, out_g = layer.apply(variables, x)
    assert out_l.shape == (2, 8, 8, 32) and out_g.shape == (2, 8, 8, 32)
    with pytest.raises(ValueError, match="even, square"):
        layer.apply(variables, (x[0][:, :7], x[1][:, :7]))


def test_ffc_with_zero_ratios_is_a_plain_conv():
    layer = ffc.FFC(8, 3, 0.0, 0.0, padding=1)
    x = jax.random.normal(jax.random.key(0), (1, 10, 12, 5))
    variables = layer.init(jax.random.key(1), x)
    assert set(variables["params"]) == {"convl2l"}
    out_l, out_g = layer.apply(variables, x)
    assert out_g is None
    kernel = variables["params"]["convl2l"]["kernel"]
    expected = jax.lax.conv_general_dilated(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect"), kernel,
                                            (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(out_l, expected, atol=1e-6)


def test_conv_transpose_matches_dilated_formulation_and_its_gradient():
    layer = ConvTranspose2D(5)
    x = jax.random.normal(jax.random.key(0), (2, 7, 9, 3))
    variables = layer.init(jax.random.key(1), x)
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(1, 2), (1, 2)], lhs_dilation=(2, 2),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias

    y = layer.apply(variables, x)
    assert y.shape == (2, 14, 18, 5)
    np.testing.assert_allclose(y, reference(x, kernel), atol=1e-5)
    g_fast = jax.grad(lambda k: jnp.sum(layer.apply({"params": {"kernel": k, "bias": bias}}, x) ** 2))(kernel)
    g_ref = jax.grad(lambda k: jnp.sum(reference(x, k) ** 2))(kernel)
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-4, atol=1e-4)


def test_converter_command_round_trip(tmp_path, capsys):
    from jaxinpaint.cli import convert as convert_cli
    from jaxinpaint.io import checkpoint

    src = reference_file("lama_small_seed0.npz")
    out = tmp_path / "converted"
    assert convert_cli.main([str(src), str(out)]) == 0  # the system is recognised from the keys
    assert checkpoint.read_metadata(out)["system"] == "lama"
    model, variables = convert.load_lama_generator(out)
    ref = np.load(src)
    pred = model.apply(variables, nhwc(ref["input"]), train=False)
    assert np.abs(np.asarray(pred) - nhwc(ref["output"])).max() <= GEN_TOL
    capsys.readouterr()
    assert convert_cli.main([str(src), str(out)]) == 2  # never overwrites: one error line, exit 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an empty directory" in err[0]


def test_malicious_checkpoint_is_refused(tmp_path):
    from jaxinpaint.io import torch_pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"model.1.ffc.convl2l.weight": Evil()}))
    with pytest.raises(torch_pickle.UnsafePickleError, match="system"):
        convert.load_lama_generator(path)
    assert not marker.exists()


def test_clear_errors_for_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such.ckpt"):
        convert.load_lama_generator(tmp_path / "no-such.ckpt")
    with pytest.raises(convert.ConversionError, match="no generator weights"):
        convert.load_lama_generator({"foo.weight": np.zeros(3)})
    assert SHARED_REFERENCE.name == "reference"
