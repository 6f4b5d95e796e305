"""CTSDG: parity with the original PyTorch code (``ctsdg_*`` fixtures, through the converter), the grey/edge
inputs with the uint8 wrap, the objective's wiring, the configs, the released-checkpoint layout, and training
and inference end to end.

Tolerances (the fixture README's): generator outputs 1e-4 absolute; activations, logits and discriminator
features 1e-4 relative to the array's max |value|; masks, Canny maps and grey images exactly; loss scalars
1e-5 relative; spectral-norm vectors and BatchNorm running statistics after a training-mode call 1e-6
relative to their max (tight enough to tell PyTorch's unbiased running variance from the biased one).
Every width, depth and shape comes from the fixtures (through the converter, which reads them off the
weights) or from ``ctsdg_keys.txt``.
"""

import collections
import functools
import json
import os
import pickle
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_file, run_update
from flax import traverse_util
from PIL import Image

import jaxinpaint
from jaxinpaint import config_lib, losses, systems, writers
from jaxinpaint.backbones import vgg
from jaxinpaint.data import edges, photos
from jaxinpaint.io import tree
from jaxinpaint.systems.ctsdg import convert, inputs, objective
from jaxinpaint.systems.ctsdg.model import BiGFF, Discriminator, Generator
from jaxinpaint.train import trainer


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """XLA without most optimisations for this module (restored afterwards): compilation dominates here."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def nhwc(a):
    return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


def assert_close(actual, expected, *, atol=None, rel=None, what=""):
    """``expected`` in the fixtures' NCHW layout; ``rel`` is relative to its max |value|."""
    expected = np.asarray(expected)
    expected = expected.transpose(0, 2, 3, 1) if expected.ndim == 4 else expected
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    bound = atol if atol is not None else rel * float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(actual - expected)))
    assert err <= bound, f"{what}: max |error| {err:.3g} > {bound:.3g}"


def ctsdg_config():
    return config_lib.load_module("ctsdg")


def _keys_file_sections():
    """``{'Generator': {key: shape}, 'Discriminator': ..., ...}`` and the header counts of ctsdg_keys.txt."""
    sections, counts, current = {}, {}, None
    for line in reference_file("ctsdg_keys.txt").read_text().splitlines():
        if m := re.match(r"# === (\w+)", line):
            current = m[1]
            sections[current] = {}
        elif m := re.match(r"# (\d+) state_dict entries, (\d+) parameters", line):
            counts[current] = (int(m[1]), int(m[2]))
        elif line and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            sections[current][key] = tuple(json.loads(shape.replace("(", "[").replace(",)", "]").replace(")", "]")))
    return sections, counts


def _n_params(variables) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


# ---------------------------------------------------------------------------------------------- parity


def test_generator_matches_the_original_through_the_converter():
    path = reference_file("ctsdg_gen_w8.npz")
    z = np.load(path)
    config = json.loads(str(z["config_json"]))
    nets = convert.load_original(path)
    assert set(nets) == {"generator"}  # the fixture's other arrays are ignored
    module, variables = nets["generator"]
    assert _n_params(variables) == config["n_params"]
    assert module.width == config["shapes"]["act_ec_t_1"][1] and module.depth == 7
    assert len(convert.split_networks(dict(z))["generator"]) == config["n_state"]

    # The trainer's boundary: [0, 1] image, 1 = hole mask, host-side grey and edges -> the original's tensors.
    image01 = nhwc((z["image"] + 1) / 2)
    batch = {"image": image01, "mask": 1.0 - nhwc(z["mask"]), "edge": nhwc(z["edge"]), "grey": nhwc(z["gray"])}
    image_in, structure_in, valid = objective.generator_inputs(batch)
    assert_close(image_in, z["input_image"], atol=1e-6, what="input_image")
    assert_close(structure_in, z["input_structure"], atol=0, what="input_structure")

    apply = jax.jit(functools.partial(module.apply, mutable=["intermediates"]))
    (output, projected_image, projected_edge), state = apply(
        variables, nhwc(z["input_image"]), nhwc(z["input_structure"]), nhwc(z["mask"]))
    assert_close(output, z["output"], atol=1e-4, what="output")
    assert_close(projected_image, z["projected_image"], atol=1e-4, what="projected_image")
    assert_close(projected_edge, z["projected_edge"], atol=1e-4, what="projected_edge")
    acts = {k: v[0] for k, v in traverse_util.flatten_dict(state["intermediates"], sep="_").items()}
    expected = [k[len("act_"):] for k in z.files if k.startswith("act_")]
    assert sorted(acts) == sorted(expected)
    for name in expected:
        if name.endswith("_mask"):
            np.testing.assert_array_equal(acts[name], z[f"act_{name}"].transpose(0, 2, 3, 1), err_msg=name)
        else:
            assert_close(acts[name], z[f"act_{name}"], rel=1e-4, what=name)

    # predict()'s outputs: [0, 1] prediction and the composite of test.py (known pixels from the input).
    out = objective.outputs((output, projected_image, projected_edge), batch)
    assert_close(out["composite"] * 2 - 1, z["output_comp"], atol=1e-4, what="output_comp")


def test_discriminator_matches_the_original_in_eval_and_training_mode():
    path = reference_file("ctsdg_disc_w4.npz")
    z = np.load(path)
    config = json.loads(str(z["config_json"]))
    module, variables = convert.load_original(path)["discriminator"]
    assert _n_params(variables) == config["n_params"]
    grey, edge = nhwc(z["gray"]), nhwc(z["edge"])
    apply = jax.jit(module.apply, static_argnames=("is_real", "train", "mutable"))
    for tag, image, is_real in (("real", z["image"], True), ("fake", z["fake"], False)):
        (pred, fake_edge), state = apply(variables, nhwc(image), grey, edge, is_real=is_real,
                                         mutable=("intermediates",))
        assert_close(pred, z[f"pred_{tag}"], rel=1e-4, what=f"pred_{tag}")
        assert_close(fake_edge, z[f"edge_pred_{tag}"], rel=1e-4, what=f"edge_pred_{tag}")
    for branch in ("texture", "structure"):
        for k in range(1, 6):
            assert_close(state["intermediates"][f"{branch}_branch"][f"act_conv{k}"][0],
                         z[f"feat_fake_{branch}_conv{k}"], rel=1e-4, what=f"{branch} conv{k}")

    # One training-mode call from the same state: one power iteration per SN layer, BN batch statistics.
    (pred, fake_edge), new = apply(variables, nhwc(z["fake"]), grey, edge, is_real=False, train=True,
                                   mutable=("spectral", "batch_stats"))
    assert_close(pred, z["pred_fake_train"], rel=1e-4, what="pred_fake_train")
    assert_close(fake_edge, z["edge_pred_fake_train"], rel=1e-4, what="edge_pred_fake_train")
    checked = 0
    for (collection, *path_, leaf), value in traverse_util.flatten_dict(new).items():
        if collection == "spectral":
            key = f"{path_[0]}.{path_[1]}.0.weight_{leaf}"
        else:
            layer, index = path_[1].rsplit("_", 1)
            key = f"edge_detector.{layer}.{index}.running_{leaf}"
        assert_close(value, z[f"after_train_forward.{key}"], rel=1e-6, what=key)
        checked += 1
    assert checked == 2 * config["n_spectral_norm"] + 2 * config["n_batchnorm"]
    np.testing.assert_array_equal(variables["spectral"]["texture_branch"]["conv2"]["u"],
                                  z["texture_branch.conv2.0.weight_u"])  # apply never mutates its input


def test_losses_match_generator_and_discriminator_loss_func():
    z = np.load(reference_file("ctsdg_losses_vggw4.npz"))
    config = json.loads(str(z["config_json"]))
    # The fixture's VGG16FeatureExtractor (enc_1 = features[:5] ...) in vgg.Model's names.
    names = {"enc_1.0": "conv1_1", "enc_1.2": "conv1_2", "enc_2.0": "conv2_1", "enc_2.2": "conv2_2",
             "enc_3.0": "conv3_1", "enc_3.2": "conv3_2", "enc_3.4": "conv3_3"}
    vgg_variables = {"params": {n: {"kernel": z[f"extractor.{k}.weight"].transpose(2, 3, 1, 0),
                                    "bias": z[f"extractor.{k}.bias"]} for k, n in names.items()}}
    cfg = ctsdg_config().get_config()
    cfg.losses.vgg_width_divisor = config["vgg_width_div"]
    model = objective.vgg_model(cfg.losses)
    assert _n_params(vgg_variables) == config["extractor_n_params"]
    for source in ("ground_truth", "output", "comp"):
        feats = jax.jit(model.apply)(vgg_variables, nhwc(z[source]))
        for i, tap in enumerate(vgg.PCONV_TAPS):
            assert_close(feats[tap], z[f"vgg_{source}_{i}"], rel=1e-4, what=f"vgg {source} {tap}")

    t = {k: nhwc(z[k]) for k in ("mask", "output", "ground_truth", "edge", "output_pred", "output_edge",
                                  "projected_image", "projected_edge")}
    terms = jax.jit(functools.partial(objective.generator_loss_terms, model=model))(vgg_variables=vgg_variables, **t)
    for name in objective.LOSS_TERMS:
        assert float(terms[name]) == pytest.approx(float(z[f"g_loss_{name}"]), rel=1e-5), name
    # The config's weights are the original's train_options defaults.
    weights = {name: float(cfg.losses[name]) for name in objective.LOSS_TERMS}
    assert weights == {k.split("_")[0].lower(): v for k, v in config["train_weights"].items()}
    joint = sum(weights[name] * terms[name] for name in objective.LOSS_TERMS)
    assert float(joint) == pytest.approx(float(z["g_loss_joint"]), rel=1e-5)
    d_loss = objective.discriminator_loss(real_pred=nhwc(z["real_pred"]), fake_pred=nhwc(z["fake_pred"]),
                                          real_pred_edge=nhwc(z["real_pred_edge"]),
                                          fake_pred_edge=nhwc(z["fake_pred_edge"]), edge=t["edge"])
    assert float(d_loss) == pytest.approx(float(z["d_loss_adversarial"]), rel=1e-5)
    # The probabilities include exact 0 and 1: BCE's log clamp at -100 keeps the loss (and gradient) finite.
    assert np.any(z["output_pred"] == 1.0) and np.any(z["fake_pred"] == 0.0)
    grad = jax.grad(lambda p: losses.binary_cross_entropy(probs=p, targets=1.0))(t["output_pred"])
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("fixture", ["ctsdg_gen_w8.npz", "ctsdg_disc_w4.npz", "ctsdg_losses_vggw4.npz"])
def test_grey_and_edges_reproduce_the_uint8_wrap(fixture):
    z = np.load(reference_file(fixture))
    images = z["image"] if "image" in z.files else z["ground_truth"]
    cfg = ctsdg_config().get_config()
    for i in range(images.shape[0]):
        signed = images[i].transpose(1, 2, 0)
        pixels = np.round((signed + 1) / 2 * 255).astype(np.uint8)
        np.testing.assert_array_equal(inputs.normalise(pixels), signed)  # ToTensor + Normalize(0.5, 0.5)
        # The pipeline hands prepare_example [0, 1] floats (k / 255).
        ex = inputs.prepare_example({"image": pixels.astype(np.float32) / 255, "mask": None}, cfg, train=True)
        np.testing.assert_array_equal(ex["edge"][..., 0], z["edge"][i, 0])
        if "gray" in z.files:
            np.testing.assert_array_equal(ex["grey"][..., 0], z["gray"][i, 0])
        # The corrected input: grey and Canny of the image itself (up to 0.5 away from the wrapped grey).
        grey, edge = inputs.grey_and_edges(pixels, uint8_wrap=False, sigma=2.0)
        np.testing.assert_allclose(grey[..., 0], edges.grey(pixels), atol=1e-7)
        assert np.abs(grey - ex["grey"]).max() > 0.4 and not np.array_equal(edge, ex["edge"])


def test_uint8_wrap_values():
    pixels = np.array([[[0] * 3, [127] * 3, [128] * 3, [255] * 3]], np.uint8)
    # -1 -> 1; just below 0 -> trunc(-0.99999) = 0; just above 0 -> 1; 1 -> 255 (x86's cast of trunc mod 256).
    np.testing.assert_array_equal(inputs.wrapped_uint8(pixels)[0, :, 0], [1, 0, 1, 255])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        inputs.grey_and_edges(np.zeros((4, 4)), uint8_wrap=True, sigma=2.0)


def test_parameter_counts_and_key_coverage_at_full_width():
    """eval_shape only: 52M parameters are never materialised."""
    sections, counts = _keys_file_sections()
    generator, discriminator = Generator(), Discriminator()
    x, s, m = (jax.ShapeDtypeStruct((1, 128, 128, c), jnp.float32) for c in (3, 2, 1))
    g_vars = jax.eval_shape(lambda *a: generator.init(jax.random.key(0), *a), x, s, m)
    d_vars = jax.eval_shape(lambda *a: discriminator.init(jax.random.key(0), *a), x, m, m)
    assert _n_params(g_vars) == counts["Generator"][1] == 52_147_789
    assert _n_params(d_vars) == counts["Discriminator"][1] == 5_531_729
    assert _n_params({"params": g_vars["params"]["bigff"]}) == 147_586
    assert _n_params({"params": g_vars["params"]["cfa"]}) == 184_900
    assert [_n_params({"params": d_vars["params"][n]}) for n in ("texture_branch", "structure_branch",
                                                                  "edge_detector")] == [2_763_776, 2_762_752, 5_201]
    # Every key of the released layout maps (210 generator, 59 discriminator entries), every variable is filled.
    for name, variables, rules in (("Generator", g_vars, convert.GENERATOR_MODULES),
                                   ("Discriminator", d_vars, convert.DISCRIMINATOR_MODULES)):
        sd = {k: np.broadcast_to(np.float32(0), shape) for k, shape in sections[name].items()}
        assert len(sd) == counts[name][0]
        filled, unknown = convert.map_state_dict(convert.drop_aliases(sd, name), rules)
        assert unknown == [] and tree.differences(variables, tree.from_flat(filled)) == []
    assert generator.size_multiple == 128


# ---------------------------------------------------------------------------------------------- modules


def test_bigff_uses_the_updated_texture_feature():
    rng = np.random.default_rng(0)
    t, s = (jnp.asarray(rng.normal(size=(1, 4, 4, 3)), jnp.float32) for _ in range(2))
    module = BiGFF(3)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32),
                          jax.eval_shape(module.init, jax.random.key(0), t, s))["params"]
    params = {**params, "texture_gamma": jnp.array([0.5]), "structure_gamma": jnp.array([0.5])}
    out = module.apply({"params": params}, t, s)
    conv = lambda p, e: jax.lax.conv_general_dilated(e, p["kernel"], (1, 1), [(1, 1)] * 2,  # noqa: E731
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
    e = jnp.concatenate([t, s], -1)
    t2 = t + 0.5 * jax.nn.sigmoid(conv(params["structure_gate"], e)) * s
    s2 = s + 0.5 * jax.nn.sigmoid(conv(params["texture_gate"], e)) * t2
    np.testing.assert_allclose(out, jnp.concatenate([t2, s2], -1), atol=1e-5)
    # At the original's initial gammas of 0 it is the identity.
    zero = {**params, "texture_gamma": jnp.zeros(1), "structure_gamma": jnp.zeros(1)}
    np.testing.assert_allclose(module.apply({"params": zero}, t, s), e, atol=0)


def test_original_initialisation_and_frozen_batch_norm():
    g = Generator(width=4, depth=2)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    s = jnp.zeros((2, 8, 8, 2))
    m = jnp.ones((2, 8, 8, 1)).at[:, 2:5, 2:6].set(0.0)
    variables = jax.jit(g.init)(jax.random.key(0), x, s, m)
    flat = traverse_util.flatten_dict(variables["params"])
    kernels = np.concatenate([np.ravel(v) for k, v in flat.items() if k[-1] == "kernel"])
    scales = np.concatenate([np.ravel(v) for k, v in flat.items() if k[-1] == "scale"])
    assert abs(kernels.std() - 0.02) < 0.002 and abs(scales.mean() - 1) < 0.01 and 0 < scales.std() < 0.03
    assert all(not np.any(v) for k, v in flat.items() if k[-1] == "bias" or k[-1].endswith("gamma"))
    d = jax.jit(Discriminator(width=4, edge_width=4).init)(jax.random.key(1), x, m, m)["params"]
    assert np.asarray(d["texture_branch"]["conv2"]["kernel"]).std() < 0.03  # N(0, 0.02)
    assert np.abs(np.asarray(d["edge_detector"]["res_layer_0"]["bias"])).max() > 0  # torch's default init

    # Fine-tuning: every generator BatchNorm keeps its running statistics even in training mode.
    frozen = g.clone(freeze_bn=True)

    @jax.jit
    def run(variables):
        out_train, new = frozen.apply(variables, x, s, m, train=True, mutable=["batch_stats"])
        _, moved = g.apply(variables, x, s, m, train=True, mutable=["batch_stats"])
        return out_train, frozen.apply(variables, x, s, m), new, moved

    out_train, out_eval, new, moved = run(variables)
    np.testing.assert_allclose(out_train[0], out_eval[0], atol=1e-6)
    assert jax.tree.all(jax.tree.map(np.array_equal, new["batch_stats"], variables["batch_stats"]))
    assert not np.array_equal(moved["batch_stats"]["dc_texture_1"]["bn"]["mean"],
                              variables["batch_stats"]["dc_texture_1"]["bn"]["mean"])
    with pytest.raises(ValueError, match="multiples of 2\\*\\*depth = 4"):
        jax.eval_shape(g.apply, variables, x[:, :6, :6], s[:, :6, :6], m[:, :6, :6])
    with pytest.raises(ValueError, match="mask must be NHWC"):
        jax.eval_shape(g.apply, variables, x, s, jnp.ones((2, 8, 8, 2)))


def test_batch_norm_running_variance_as_pytorch_updates_it():
    """The edge detector's BatchNorm option: running_var moves towards the unbiased batch variance."""
    from jaxinpaint.nn.norm import BatchNorm

    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, size=(2, 3, 5, 4)), jnp.float32)
    for unbiased, ddof in ((True, 1), (False, 0)):
        bn = BatchNorm(use_running_average=False, unbiased_running_var=unbiased)
        variables = {"params": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
                     "batch_stats": {"mean": jnp.zeros(4), "var": jnp.ones(4)}}
        _, new = bn.apply(variables, x, mutable=["batch_stats"])
        flat = np.asarray(x).reshape(-1, 4)
        np.testing.assert_allclose(new["batch_stats"]["var"], 0.9 + 0.1 * flat.var(axis=0, ddof=ddof), rtol=1e-5)
        np.testing.assert_allclose(new["batch_stats"]["mean"], 0.1 * flat.mean(axis=0), rtol=1e-5)


def test_objective_wiring_polarity_and_update_order():
    """Stub networks record their calls: G update = G once + D once (is_real=False, on the raw output, D in
    training mode); D update = D twice (real with Canny edges, then the carried fake)."""

    class StubG(nn.Module):
        @nn.compact
        def __call__(self, image, structure, mask, *, train=False):
            out = jnp.full(image.shape, 0.5)
            return out, jnp.zeros(image.shape), jnp.full(mask.shape, 0.5)

    class StubD(nn.Module):
        @nn.compact
        def __call__(self, image, grey, edge, *, is_real=False, train=False):
            calls = self.variable("calls", "log", lambda: jnp.zeros((4,), jnp.float32))
            if train and not self.is_initializing():
                n = jnp.sum(calls.value != 0)
                calls.value = calls.value.at[n].set(jnp.where(is_real, 1.0, -1.0) * (1 + jnp.mean(image)))
            p = jnp.full(image.shape[:1] + (2, 2, 2), 0.75 if is_real else 0.25)
            return p, jnp.full(grey.shape, 0.5)

    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.uniform(size=(2, 4, 4, 3)), jnp.float32),
             "mask": jnp.zeros((2, 4, 4, 1)).at[:, 1:3, 1:3].set(1.0),
             "edge": jnp.asarray(rng.integers(0, 2, (2, 4, 4, 1)), jnp.float32),
             "grey": jnp.asarray(rng.uniform(size=(2, 4, 4, 1)), jnp.float32)}
    cfg = ctsdg_config().get_config()
    modules = {"generator": StubG(), "discriminator": StubD()}
    variables = {"generator": {"params": {}}, "discriminator": {"params": {}, "calls": {"log": jnp.zeros(4)}}}
    total, metrics, carry, states = run_update(objective.generator_update, modules, variables, batch, cfg)
    image_in, structure_in, valid = objective.generator_inputs(batch)
    np.testing.assert_array_equal(valid, 1.0 - batch["mask"])  # the polarity flip
    np.testing.assert_allclose(image_in, (2 * batch["image"] - 1) * valid, atol=1e-6)
    np.testing.assert_array_equal(structure_in[..., :1], batch["edge"] * valid)
    x = 2 * batch["image"] - 1
    hole, valid_l1 = np.mean(np.abs((1 - valid) * (0.5 - x))), np.mean(np.abs(valid * (0.5 - x)))
    bce_half = -np.log(0.5)
    assert float(metrics["hole"]) == pytest.approx(hole, rel=1e-5)
    assert float(metrics["valid"]) == pytest.approx(valid_l1, rel=1e-5)
    assert float(metrics["adversarial"]) == pytest.approx(-np.log(0.25) + bce_half, rel=1e-5)
    assert float(metrics["intermediate"]) == pytest.approx(bce_half + np.mean(np.abs(x)), rel=1e-5)
    expected_total = 60 * hole + 10 * valid_l1 + 0.1 * (-np.log(0.25) + bce_half) + bce_half + np.mean(np.abs(x))
    assert float(total) == pytest.approx(expected_total, rel=1e-5)  # no VGG frozen: perceptual = style = 0
    np.testing.assert_array_equal(carry["fake"], 0.5)  # the raw output, not the composite
    np.testing.assert_allclose(states["discriminator"]["calls"]["log"], [-1.5, 0, 0, 0], atol=1e-6)

    loss, d_metrics, _, states = run_update(objective.discriminator_update, modules, variables, batch, cfg,
                                            carry={"fake": jnp.full((2, 4, 4, 3), -0.5)})
    log = np.asarray(states["discriminator"]["calls"]["log"])
    np.testing.assert_allclose(log[:2], [1 + float(jnp.mean(x)), -0.5], atol=1e-6)  # real first, then the fake
    assert float(loss) == pytest.approx(-np.log(0.75) - np.log(0.75) + 2 * bce_half, rel=1e-5)


# ---------------------------------------------------------------------------------------------- configs


def test_configs():
    c = ctsdg_config().get_config()
    assert c.system == "ctsdg" and (c.generator.width, c.generator.depth) == (64, 7) and not c.generator.freeze_bn
    assert {k: c.losses[k] for k in objective.LOSS_TERMS} == {"hole": 60.0, "valid": 10.0, "perceptual": 0.1,
                                                                "style": 250.0, "adversarial": 0.1,
                                                                "intermediate": 1.0}
    assert (c.g_optimizer.name, c.g_optimizer.lr, c.g_optimizer.b1, c.g_optimizer.b2) == ("adam", 2e-4, 0.9, 0.999)
    assert c.d_optimizer.lr == pytest.approx(2e-5) and c.input.batch_size == 6 and c.total_steps == 300_000
    assert c.inference.uint8_wrap and c.inference.canny_sigma == 2.0
    f = ctsdg_config().get_config("finetune,corrected_edges")
    assert f.generator.freeze_bn and f.g_optimizer.lr == 5e-5 and f.d_optimizer.lr == pytest.approx(5e-6)
    assert f.total_steps == 150_000 and not f.inference.uint8_wrap
    with pytest.raises(ValueError, match="init_from"):
        systems.get("ctsdg").phases(f)
    f.init_from = "workdirs/ctsdg"
    assert [u.name for u in systems.get("ctsdg").phases(f)[0].updates] == ["g", "d"]
    n = ctsdg_config().get_config("nvidia_masks")
    assert n.input.mask.name == "folder" and n.input.mask.kwargs.invert
    smoke = ctsdg_config().get_config("smoke")
    assert smoke.input.image_size % 2 ** smoke.generator.depth == 0 and smoke.total_steps <= 100
    with pytest.raises(ValueError, match="unknown config variant"):
        ctsdg_config().get_config("tiny")
    with pytest.raises(FileNotFoundError, match="CTSDG's perceptual and style losses need"):
        objective.frozen_networks(c)
    assert set(objective.frozen_networks(smoke)) == {"vgg"}
    smoke.losses.perceptual = smoke.losses.style = 0.0
    assert objective.frozen_networks(smoke) == {}


# ---------------------------------------------------------------------------------------------- weights


def _released_checkpoint(path):
    """The authors' ``{n_iter:06d}.pt`` layout, {'n_iter', 'generator', 'discriminator'}, from the fixtures'
    state dicts (a plain pickle of numpy arrays: read by the same code path as torch's zip files)."""
    g, d = (np.load(reference_file(f)) for f in ("ctsdg_gen_w8.npz", "ctsdg_disc_w4.npz"))
    generator = collections.OrderedDict((k, g[k]) for k in convert.split_networks(dict(g))["generator"])
    discriminator = collections.OrderedDict((k, d[k]) for k in convert.split_networks(dict(d))["discriminator"])
    path.write_bytes(pickle.dumps({"n_iter": 7, "generator": generator, "discriminator": discriminator},
                                  protocol=2))
    return g


def _photo(size):
    """A real photo cropped to ``size`` = (H, W), and a hole."""
    image = np.asarray(Image.open(photos.builtin_photo_paths("all")[0]).convert("RGB"))[:size[0], :size[1]]
    mask = np.zeros(size, bool)
    mask[size[0] // 4: size[0] // 2, size[1] // 3: size[1] // 3 + 30] = True
    return image, mask


def test_released_checkpoint_loads_converts_and_predicts(tmp_path):
    from jaxinpaint.cli import main as cli_main

    ckpt = tmp_path / "000007.pt"
    g = _released_checkpoint(ckpt)
    assert systems.for_weights(str(ckpt)).name == "ctsdg"
    nets = systems.get("ctsdg").load_original(str(ckpt))
    assert set(nets) == {"generator", "discriminator"}
    np.testing.assert_array_equal(nets["generator"][1]["params"]["ec_texture_2"]["conv"]["kernel"],
                                  g["ec_texture_2.conv.weight"].transpose(2, 3, 1, 0))

    model = jaxinpaint.load(str(ckpt))
    assert model.name == "ctsdg" and model.modulo == 128 and model.config.inference.uint8_wrap
    image, mask = _photo((131, 97))  # odd sizes: padded to 256 x 128
    result = model.inpaint(image, mask)
    assert result.shape == image.shape and result.dtype == np.uint8
    np.testing.assert_array_equal(result[~mask], image[~mask])
    assert not np.array_equal(result[mask], image[mask])

    # convert -> model directory -> predict (LaMa's folder layout), known pixels byte-identical.
    converted, inp, out = tmp_path / "converted", tmp_path / "in", tmp_path / "out"
    assert cli_main(["convert", str(ckpt), str(converted)]) == 0
    meta = json.loads((converted / "jaxinpaint_models.json").read_text())
    assert meta["system"] == "ctsdg" and set(meta["models"]) == {"generator", "discriminator"}
    inp.mkdir()
    for name, size in (("a", (131, 97)), ("b", (200, 120))):  # both pad to 256 x 128: one compilation
        image, mask = _photo(size)
        Image.fromarray(image).save(inp / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(inp / f"{name}_mask001.png")
    assert cli_main(["predict", f"--model={converted}", f"--input_dir={inp}", f"--output_dir={out}"]) == 0
    for name in ("a", "b"):
        src, got = np.asarray(Image.open(inp / f"{name}.png")), np.asarray(Image.open(out / f"{name}_mask001.png"))
        hole = np.asarray(Image.open(inp / f"{name}_mask001.png")) > 0
        assert got.shape == src.shape
        np.testing.assert_array_equal(got[~hole], src[~hole])


def test_converter_errors(tmp_path):
    g = dict(np.load(reference_file("ctsdg_gen_w8.npz")))
    broken = {k: v for k, v in g.items() if k != "cfa.msfa.weight_calc.2.bias"}
    with pytest.raises(convert.ConversionError, match=r"1 missing: params/cfa/msfa/weight_calc_2/bias"):
        convert.load_original(broken)
    with pytest.raises(convert.ConversionError, match=r"unused key\(s\): \['cfa.msfa.extra.0.weight'\]"):
        convert.load_original({**g, "cfa.msfa.extra.0.weight": np.zeros((1, 1, 1, 1), np.float32)})
    d = dict(np.load(reference_file("ctsdg_disc_w4.npz")))
    d["texture_branch.features.0.weight_u"] = d["texture_branch.features.0.weight_u"] + 1
    with pytest.raises(convert.ConversionError, match="features.0.weight_u must equal"):
        convert.load_original(d)
    with pytest.raises(convert.ConversionError, match="no CTSDG generator"):
        convert.load_original({"model.1.weight": np.zeros(3)})
    with pytest.raises(FileNotFoundError, match="Google Drive"):
        convert.load_original(str(tmp_path / "missing.pt"))
    assert convert.looks_like_ctsdg(["generator.ec_texture_1.conv.weight"])
    assert convert.looks_like_ctsdg(["ec_texture_1.conv.weight"])
    assert not convert.looks_like_ctsdg(["model.1.ffc.convl2l.weight", "texture_branch.conv1.0.weight_orig"])


# ---------------------------------------------------------------------------------------------- end to end


def _tiny_smoke_config():
    c = ctsdg_config().get_config("smoke")
    c.generator.width, c.generator.depth = 4, 5
    c.discriminator.width, c.discriminator.edge_width = 4, 4
    c.losses.vgg_width_divisor = 8
    c.input.image_size, c.input.batch_size, c.input.num_workers = 32, 8, 0  # 8 test devices
    c.total_steps, c.log_every_steps, c.ckpt_every_steps = 3, 1, 3
    c.image_every_steps = c.eval_every_steps = 0  # the trainer's own tests cover images and evaluation
    return c


def test_train_finetune_and_inpaint_end_to_end(tmp_path):
    c = _tiny_smoke_config()
    workdir = str(tmp_path / "run")
    state = trainer.train_and_evaluate(c, workdir)
    assert int(state.step) == 3 and set(state.nets) == {"generator", "discriminator"}
    rows = [r for r in writers.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "g/total" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    keys = [f"g/{t}" for t in objective.LOSS_TERMS] + ["g/total", "d/total", "d/adversarial"]
    assert all(np.isfinite(r[k]) for r in rows for k in keys)
    assert all(r["g/perceptual"] > 0 and r["g/style"] > 0 for r in rows)
    d_state = state.nets["discriminator"].state
    assert set(d_state) == {"spectral", "batch_stats"} and set(d_state["batch_stats"]) == {"edge_detector"}

    # Fine-tuning stage from that workdir: every generator BatchNorm statistic stays where stage 1 left it.
    f = _tiny_smoke_config()
    f.generator.freeze_bn = True
    f.init_from, f.total_steps, f.ckpt_every_steps = workdir, 1, 1
    tuned = trainer.train_and_evaluate(f, str(tmp_path / "finetune"))
    before, after = state.nets["generator"], tuned.nets["generator"]
    assert jax.tree.all(jax.tree.map(np.array_equal, after.state["batch_stats"], before.state["batch_stats"]))
    assert not np.array_equal(after.params["out_layer"]["kernel"], before.params["out_layer"]["kernel"])

    model = jaxinpaint.load(workdir)
    assert model.name == "ctsdg" and isinstance(model.network("generator")[0], Generator) and model.modulo == 32
    image, mask = _photo((45, 37))
    result = model.inpaint(image, mask)
    np.testing.assert_array_equal(result[~mask], image[~mask])
    assert not np.array_equal(result[mask], image[mask])


def test_module_kinds_round_trip():
    """What checkpoints record of the networks rebuilds them (and unknown fields are refused)."""
    for module in (Generator(width=8, depth=3, freeze_bn=True), Discriminator(width=8, edge_width=4)):
        spec = systems.module_spec("ctsdg", module)
        assert systems.module_spec("ctsdg", systems.build_module("ctsdg", spec)) == spec
    with pytest.raises(systems.UnknownNameError, match="no field"):
        systems.build_module("ctsdg", {"kind": "ctsdg.Generator", "layer_size": 7})
