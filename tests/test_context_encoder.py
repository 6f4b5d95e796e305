"""Context Encoder: networks (parameter counts of systems-more.md §2.2), fill values and boxes, the
overlap-weighted L2 against a direct numpy formula, the D and G updates, the masks, inference, end to end.

No fixtures exist for Context Encoder (Torch7 only); every expected number comes from the specification.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import inpaint_odd_sized, run_update

import jaxinpaint
from jaxinpaint import config_lib, masks, writers
from jaxinpaint.systems.context_encoder import model as ce
from jaxinpaint.systems.context_encoder import objective
from jaxinpaint.train import trainer


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """XLA without most optimisations for this module (restored afterwards); nothing here times anything."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _count(module, *shapes):
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), *[jnp.zeros(s) for s in shapes]))
    return ce.parameter_count(abstract)


def _tiny_nets(fine_size=32, center_only=True, seed=0):
    g = ce.Generator(fine_size=fine_size, center_only=center_only, nef=4, ngf=4, n_bottleneck=8)
    d = ce.Discriminator(input_size=g.output_size, ndf=4)
    kg, kd = jax.random.split(jax.random.key(seed))
    return ({"generator": g, "discriminator": d},
            {"generator": g.init(kg, jnp.zeros((1, fine_size, fine_size, 3))),
             "discriminator": d.init(kd, jnp.zeros((1, g.output_size, g.output_size, 3)))})


def _center_batch(n=4, size=32, overlap=2, seed=0):
    rng = np.random.default_rng(seed)
    mask = masks.get("context_encoder_center", overlap=overlap)(rng, size, size)
    ex = {"image": rng.uniform(size=(n, size, size, 3)).astype(np.float32),
          "mask": np.broadcast_to(mask[None, ..., None], (n, size, size, 1)).astype(np.float32)}
    ex["box"] = np.stack([objective.hole_box(m) for m in ex["mask"]])
    return ex


def _ce_config(*variants):
    c = config_lib.get_config("configs/context_encoder.py" + (":" + ",".join(variants) if variants else ""))
    return c


# ------------------------------------------------------------------------------------------------ networks


def test_parameter_counts_match_the_specification():
    """§2.2: bias-free G 71,124,544 (nB 4000) / 7,219,144 (nB 100), D 2,765,568; random G adds 64·64·16 + 128."""
    assert _count(ce.Generator(n_bottleneck=4000), (1, 128, 128, 3)) == 71_124_544
    assert _count(ce.Generator(n_bottleneck=100), (1, 128, 128, 3)) == 7_219_144
    assert _count(ce.Discriminator(), (1, 64, 64, 3)) == 2_765_568
    assert _count(ce.Generator(center_only=False), (1, 128, 128, 3)) == 71_124_544 + 64 * 64 * 16 + 2 * 64
    assert _count(ce.Discriminator(input_size=128), (1, 128, 128, 3)) == 2_765_568 + 64 * 64 * 16 + 2 * 64
    # The paper's channel-wise bottleneck: 512 channels × 16×16 weights, then a 1×1 conv mixing 512 channels.
    assert _count(ce.Generator(bottleneck="channel_wise"), (1, 128, 128, 3)) == (
        71_124_544 - 2 * 8192 * 4000 - 2 * 4000 + 512 * 16 * 16 + 512 * 512 + 2 * 512)


def test_layer_structure_is_bias_free_with_the_papers_shapes():
    g = ce.Generator()
    shapes = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3))))["params"]
    assert not [k for k, v in shapes.items() if "bias" in v and "bn" not in k]
    assert [shapes[f"conv{i}"]["kernel"].shape[-1] for i in range(1, 6)] == [64, 64, 128, 256, 512]
    assert "bn1" not in shapes and shapes["bottleneck"]["kernel"].shape == (4, 4, 512, 4000)
    assert shapes["deconv0"]["kernel"].shape == (4, 4, 4000, 512)
    assert [shapes[f"deconv{i}"]["kernel"].shape[-1] for i in range(1, 5)] == [256, 128, 64, 3]
    out = jax.eval_shape(lambda v: g.apply(v, jnp.zeros((2, 128, 128, 3))), jax.eval_shape(
        lambda: g.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))))
    assert out.shape == (2, 64, 64, 3)
    # 64² random variant: E2 and the extra full-conv disappear (train_random.lua:91-95,148-152).
    g64 = ce.Generator(fine_size=64, center_only=False)
    p64 = jax.eval_shape(lambda: g64.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))["params"]
    assert [p64[f"conv{i}"]["kernel"].shape[-1] for i in range(1, 5)] == [64, 128, 256, 512]
    with pytest.raises(ValueError, match=r"expected input \(N, 128, 128, 3\)"):
        g.init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)))
    with pytest.raises(ValueError, match="fine_size must be 4"):
        ce.Generator(fine_size=96).init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)))


def test_dcgan_initialisation():
    nets, variables = _tiny_nets(fine_size=64)
    kernels = np.concatenate([np.ravel(v["kernel"]) for v in variables["generator"]["params"].values()
                              if "kernel" in v])
    scales = np.concatenate([np.ravel(v["scale"]) for v in variables["generator"]["params"].values() if "scale" in v])
    assert abs(kernels.std() - 0.02) < 0.002 and abs(kernels.mean()) < 0.002
    assert abs(scales.mean() - 1.0) < 0.01 and 0.01 < scales.std() < 0.03
    assert all(np.all(v["bias"] == 0) for v in variables["generator"]["params"].values() if "bias" in v)


# ------------------------------------------------------------------------------------------------ fill and boxes


def test_fill_values_and_boxes():
    np.testing.assert_allclose(ce.MEAN_FILL, [-0.082353, -0.184314, -0.035294], atol=1e-6)
    assert ce.center_box(128) == (32, 96) and ce.inner_box(128, 4) == (36, 92) and ce.inner_box(128, 0) == (32, 96)
    with pytest.raises(ValueError, match="overlap"):
        ce.inner_box(128, 32)
    x = jnp.zeros((1, 128, 128, 3))
    filled = np.asarray(ce.fill_center(x, 4))
    inside = np.zeros((128, 128), bool)
    inside[36:92, 36:92] = True
    np.testing.assert_allclose(filled[0][inside], np.broadcast_to(ce.MEAN_FILL, (56 * 56, 3)), atol=1e-7)
    assert np.all(filled[0][~inside] == 0)

    hole = masks.get("context_encoder_center")(np.random.default_rng(0), 128, 128)
    np.testing.assert_array_equal(hole, inside)
    np.testing.assert_array_equal(objective.hole_box(hole), [36, 36, 92, 92])
    np.testing.assert_array_equal(masks.get("context_encoder_center", overlap=0)(np.random.default_rng(0), 128, 128),
                                  masks.get("center_box")(np.random.default_rng(0), 128, 128))
    with pytest.raises(ValueError, match="leaves no hole"):
        masks.get("context_encoder_center", overlap=8)(np.random.default_rng(0), 32, 32)
    # The mask-driven fill equals the original's box fill for the centre mask.
    np.testing.assert_array_equal(np.asarray(ce.fill_hole(x, jnp.asarray(hole, jnp.float32)[None, ..., None])),
                                  filled)


def test_random_region_masks_statistics():
    """train_random.lua: hole fraction strictly in (0.2, 0.3), blobs of ~17-px noise cells, seeded."""
    gen = masks.get("context_encoder_random")
    stats = masks.hole_ratio_stats(gen, 128, 200, seed=1)
    assert 0.2 < stats["p10"] and stats["max"] < 0.3 and 0.21 < stats["mean"] < 0.26
    a = gen(np.random.default_rng(5), 128, 96)
    np.testing.assert_array_equal(a, gen(np.random.default_rng(5), 128, 96))
    assert a.shape == (128, 96)
    # Smooth regions, not salt-and-pepper: most hole pixels have a hole pixel to their right.
    assert (a[:, :-1] & a[:, 1:]).sum() > 0.9 * a[:, :-1].sum()
    with pytest.raises(RuntimeError, match="no 32x32 window"):
        masks.get("context_encoder_random", min_fraction=0.9, max_fraction=0.95, max_tries=3)(
            np.random.default_rng(0), 32, 32)
    assert _ce_config("random").input.mask.per_batch  # one mask per batch, as the original


# ------------------------------------------------------------------------------------------------ losses


def test_loss_weight_rules():
    assert objective.loss_weights(0.999) == (0.999, pytest.approx(0.001))
    assert objective.loss_weights(0) == (0.0, 1.0)
    assert objective.loss_weights(2.0) == (2.0, 1.0)
    with pytest.raises(ValueError, match="wtl2"):
        objective.loss_weights(-1)


def test_overlap_weighted_l2_against_numpy():
    """train.lua:380-384: weight 0.999 on the inner 56² of the 64² output, 9.99 on the 4-px ring, mean over
    all B·3·64·64 elements."""
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 2, 64, 64, 3)).astype(np.float32)
    hole = np.zeros((2, 64, 64, 1), np.float32)
    hole[:, 4:60, 4:60] = 1.0
    expected = 0.0
    for b in range(2):
        for i in range(64):
            for j in range(64):
                w = 0.999 if (4 <= i < 60 and 4 <= j < 60) else 9.99
                expected += w * np.sum((pred[b, i, j] - target[b, i, j]) ** 2)
    expected /= 2 * 64 * 64 * 3
    got = objective.overlap_weighted_l2(pred=pred, target=target, hole=hole, w_l2=0.999, overlap_weight=10.0)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_generator_and_discriminator_updates():
    """G: overlap-weighted L2 + 0.001·BCE(D(G(x)), 1) on the real centre; D: BCE real + BCE fake from two
    separate D calls (each moving D's running statistics), G's statistics moved once per step."""
    nets, variables = _tiny_nets()
    batch = {k: jnp.asarray(v) for k, v in _center_batch().items()}
    config = _ce_config("smoke")
    config.inference.overlap = 2
    g, d = nets["generator"], nets["discriminator"]

    x = batch["image"] * 2 - 1
    pred, _ = g.apply(variables["generator"], ce.fill_hole(x, batch["mask"]), train=True, mutable=["batch_stats"])
    center = x[:, 8:24, 8:24]
    hole = np.zeros((4, 16, 16, 1))
    hole[:, 2:14, 2:14] = 1
    logits, _ = d.apply(variables["discriminator"], pred, train=True, mutable=["batch_stats"])
    l2 = np.mean(np.where(hole, 0.999, 9.99) * (np.asarray(pred) - np.asarray(center)) ** 2)
    bce = np.mean(np.log1p(np.exp(-np.asarray(logits, np.float64))))
    loss, metrics, _, states = run_update(objective.generator_update, nets, variables, batch, config)
    np.testing.assert_allclose(float(metrics["l2"]), l2, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["adversarial"]), bce, rtol=1e-5)
    np.testing.assert_allclose(float(loss), l2 + 0.001 * bce, rtol=1e-5)
    # The G update's forward repeats the D update's: no second move of either network's statistics.
    for name in nets:
        jax.tree.map(np.testing.assert_array_equal, states[name]["batch_stats"], variables[name]["batch_stats"])

    real_logits, s1 = d.apply(variables["discriminator"], center, train=True, mutable=["batch_stats"])
    fake_logits, s2 = d.apply({**variables["discriminator"], **s1}, pred, train=True, mutable=["batch_stats"])
    sp = lambda z: np.log1p(np.exp(np.asarray(z, np.float64)))  # noqa: E731
    loss, metrics, _, states = run_update(objective.discriminator_update, nets, variables, batch, config)
    np.testing.assert_allclose(float(loss), np.mean(sp(-real_logits)) + np.mean(sp(fake_logits)), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), states["discriminator"]["batch_stats"],
                 s2["batch_stats"])
    assert not np.allclose(states["generator"]["batch_stats"]["bn2"]["mean"],
                           variables["generator"]["batch_stats"]["bn2"]["mean"])


# ------------------------------------------------------------------------------------------------ inference


def test_predict_is_the_original_paste_at_the_training_size_and_works_on_any_size():
    nets, variables = _tiny_nets()
    config = _ce_config("smoke")
    config.inference.overlap = 2
    batch = {k: jnp.asarray(v) for k, v in _center_batch(n=2).items()}
    from jaxinpaint import contract

    params = {n: v["params"] for n, v in variables.items()}
    states = {n: {"batch_stats": v["batch_stats"]} for n, v in variables.items()}
    predict = jax.jit(lambda b: objective.predict(contract.Nets(nets, params, states, train=False), b, config))
    out = predict(batch)
    x = batch["image"] * 2 - 1
    direct = nets["generator"].apply(variables["generator"], ce.fill_center(x, 2))
    # demo.lua: the prediction's inner [o, 16 - o) pasted into [8 + o, 24 - o).
    np.testing.assert_allclose(np.asarray(out["pred"])[:, 10:22, 10:22], (np.asarray(direct)[:, 2:14, 2:14] + 1) / 2,
                               atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["composite"])[:, :10], np.asarray(batch["image"])[:, :10])

    # Another size and an off-centre hole: the box is resampled onto the inner box and back.
    rng = np.random.default_rng(1)
    image = rng.uniform(size=(1, 45, 70, 3)).astype(np.float32)
    mask = np.zeros((1, 45, 70, 1), np.float32)
    mask[0, 5:20, 40:62] = 1
    odd = {"image": jnp.asarray(image), "mask": jnp.asarray(mask),
           "box": jnp.asarray(objective.hole_box(mask[0]))[None]}
    out = jax.jit(lambda b: objective.predict(contract.Nets(nets, params, states, train=False), b, config))(odd)
    assert out["pred"].shape == (1, 45, 70, 3)
    outside = np.ones((45, 70), bool)
    outside[5:20, 40:62] = False
    np.testing.assert_array_equal(np.asarray(out["pred"])[0][outside], image[0][outside])
    assert not np.allclose(np.asarray(out["pred"])[0][~outside], image[0][~outside])


# --------------------------------------------------------------------------------------- configs and end to end


def test_configs_carry_the_readme_settings():
    c = _ce_config()
    assert (c.generator.fine_size, c.generator.n_bottleneck, c.generator.center_only) == (128, 4000, True)
    assert (c.losses.wtl2, c.losses.overlap_weight, c.inference.overlap) == (0.999, 10.0, 4)
    assert c.input.mask.name == "context_encoder_center" and c.input.mask.kwargs.overlap == 4
    assert c.g_optimizer.lr == pytest.approx(10 * c.d_optimizer.lr) and c.d_optimizer.lr == 2e-4
    assert c.g_optimizer.b1 == c.d_optimizer.b1 == 0.5 and c.input.batch_size == 64
    assert c.input.short_side_range[0] * c.input.image_size == pytest.approx(350)
    r = _ce_config("random")
    assert (r.generator.center_only, r.discriminator.input_size, r.losses.overlap_weight) == (False, 128, 1.0)
    bad = _ce_config("smoke")
    bad.inference.overlap = 3
    with pytest.raises(ValueError, match="overlap"):
        jaxinpaint.systems.get("context_encoder").networks(bad)
    bad = _ce_config("smoke")
    bad.input.mask.name = "lama_train"
    with pytest.raises(ValueError, match="context_encoder_center"):
        jaxinpaint.systems.get("context_encoder").networks(bad)


@pytest.mark.parametrize("variant", ["smoke", "random,smoke"])
def test_train_checkpoint_and_inpaint_end_to_end(tmp_path, variant):
    c = _ce_config(*variant.split(","))
    c.generator.fine_size = c.input.image_size = 32
    c.discriminator.input_size = 16 if c.generator.center_only else 32
    c.generator.nef = c.generator.ngf = c.discriminator.ndf = 4
    c.input.num_workers = 0
    c.total_steps = c.ckpt_every_steps = c.image_every_steps = 4
    c.log_every_steps = 1
    c.eval_every_steps = 0
    workdir = tmp_path / "run"
    state = trainer.train_and_evaluate(c, str(workdir))
    assert int(state.step) == 4
    rows = [r for r in writers.read_jsonl(workdir / "metrics.jsonl") if "g/total" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"g/l2", "g/mse", "g/adversarial", "d/bce_real", "d/bce_fake"} <= set(rows[0])
    assert all(np.isfinite(r["g/total"]) for r in rows) and rows[-1]["g/total"] != rows[0]["g/total"]
    assert os.listdir(workdir / "checkpoints") == ["4"]

    model = jaxinpaint.load(str(workdir))
    assert model.name == "context_encoder" and model.modulo == 1
    image, mask, result = inpaint_odd_sized(model, (37, 51), ((10, 22), (30, 45)))
    assert not np.array_equal(result[mask], image[mask])
