"""DeepFill v1: networks (sizes, names, clipping), the BGR boundary, the spatially discounted L1 against a direct
formula, the WGAN-GP penalty against finite differences, the five-critic-steps schedule (which parameters move in
which update), masks, configs, and the smoke run through the trainer, ``jaxinpaint.load`` and ``predict``.

No PyTorch or TF fixture exists for DeepFill v1 (the original is TF1); the contextual attention it shares with
DeepFill v2 is checked against its numpy reference in tests/test_gated_conv.py.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_update
from test_shift_net import _fast_compiles, predict_real_photos  # noqa: F401  (an autouse fixture)

import jaxinpaint
from jaxinpaint import config_lib, contract, losses, masks, systems, writers
from jaxinpaint.data import holes
from jaxinpaint.data import pipeline as data_lib
from jaxinpaint.systems import deepfill_v1
from jaxinpaint.systems.deepfill_v1 import model as df1
from jaxinpaint.systems.deepfill_v1 import objective
from jaxinpaint.train import optim, trainer
from jaxinpaint.train.state import NetState, TrainState


def _count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def _filled(module, *args, seed=0):
    """Variables on the ``eval_shape`` tree filled with numpy (Glorot-like kernels, small biases)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if "kernel" in jax.tree_util.keystr(path):
            bound = np.sqrt(6.0 / (np.prod(leaf.shape[:-1]) + leaf.shape[-1]))
            return rng.uniform(-bound, bound, leaf.shape).astype(np.float32)
        return rng.normal(0.0, 0.05, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(lambda: module.init(jax.random.key(0), *args)))


def tiny_config():
    c = config_lib.get_config("deepfill_v1:smoke")
    c.generator.cnum = 4
    c.local_critic.cnum = c.global_critic.cnum = 4
    c.input.update({"image_size": 32, "batch_size": 8, "num_workers": 0})
    c.losses.local_size = 16
    return c


# --------------------------------------------------------------------------------------------- networks


def test_parameter_counts_and_tf_variable_names():
    c = config_lib.get_config("deepfill_v1")
    g = systems.build_module("deepfill_v1", c.generator)
    g_vars = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, 256, 256, 5))))["params"]
    assert _count(g_vars) == 3_601_542
    assert _count({k: v for k, v in g_vars.items() if k.startswith("conv")}) == 1_448_227  # the coarse stage
    assert g_vars["conv13_upsample"]["conv13_upsample_conv"]["kernel"].shape == (3, 3, 128, 64)
    assert g_vars["xconv1"]["kernel"].shape == (5, 5, 5, 32)  # v1's refinement takes x ++ ones ++ mask
    assert {"pmconv6", "pmconv9", "allconv17", "xconv10_atrous", "conv4_downsample"} <= set(g_vars)
    local = systems.build_module("deepfill_v1", c.local_critic)
    glob = systems.build_module("deepfill_v1", c.global_critic)
    local_vars = jax.eval_shape(lambda: local.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3))))["params"]
    global_vars = jax.eval_shape(lambda: glob.init(jax.random.key(0), jnp.zeros((1, 256, 256, 3))))["params"]
    assert (_count(local_vars), _count(global_vars)) == (4_339_329, 2_733_441)
    assert local_vars["fc"]["kernel"].shape == (8 * 8 * 512, 1)
    assert global_vars["fc"]["kernel"].shape == (16 * 16 * 256, 1)


def test_generator_outputs_clip_and_use_the_mask():
    model = df1.Generator(cnum=4)
    rng = np.random.default_rng(0)
    batch = {"image": rng.random((2, 32, 32, 3)).astype(np.float32),
             "mask": masks.sample_batch(masks.get("deepfill_v1"), rng, 2, 32, 32)}
    x = objective.generator_input(batch)
    variables = _filled(model, x)
    # Scale the last convs up so that the clip is active somewhere: outputs stay in [-1, 1], no tanh.
    for stage in ("conv17", "allconv17"):
        variables["params"][stage]["kernel"] = variables["params"][stage]["kernel"] * 50
    apply = jax.jit(model.apply)
    coarse, fine = apply(variables, x)
    for out in (coarse, fine):
        assert out.shape == (2, 32, 32, 3) and float(jnp.min(out)) == -1.0 and float(jnp.max(out)) == 1.0
        assert 0 < float(jnp.mean(jnp.abs(out) == 1.0)) < 1
    other = dict(batch, mask=np.roll(batch["mask"], 8, axis=2))
    assert not np.allclose(apply(variables, objective.generator_input(other))[1], fine)
    with pytest.raises(ValueError, match="multiples of 8"):
        model.apply(variables, jnp.zeros((1, 36, 32, 5)))
    with pytest.raises(ValueError, match=r"\(N, H, W, 5\)"):
        model.apply(variables, jnp.zeros((1, 32, 32, 3)))


def test_bgr_is_handled_at_the_boundary_only():
    image = np.zeros((1, 8, 8, 3), np.float32)
    image[..., 0] = 1.0  # pure red
    mask = np.zeros((1, 8, 8, 1), np.float32)
    mask[:, 2:6, 2:6] = 1
    x = np.asarray(objective.generator_input({"image": image, "mask": mask}))
    np.testing.assert_array_equal(x[0, 0, 0], [-1.0, -1.0, 1.0, 1.0, 0.0])  # B, G, R in [-1, 1], ones, mask
    np.testing.assert_array_equal(x[0, 3, 3], [0.0, 0.0, 0.0, 1.0, 1.0])  # the hole is 0
    np.testing.assert_allclose(objective.from_network(objective.to_network(image)), image)
    out = objective.outputs((jnp.asarray(x[..., :3]), jnp.asarray(x[..., :3])), {"image": image, "mask": mask})
    np.testing.assert_array_equal(np.asarray(out["pred"])[0, 0, 0], [1.0, 0.0, 0.0])  # back to RGB
    np.testing.assert_array_equal(out["composite"], np.where(mask > 0, 0.5, image))


# ------------------------------------------------------------------------------------------------ losses


def test_spatially_discounted_l1_against_the_direct_formula():
    gamma, size = 0.9, 128
    direct = np.ones((size, size))
    for i in range(size):  # inpaint_ops.py::spatial_discounting_mask, written out
        for j in range(size):
            direct[i, j] = max(gamma ** min(i, size - i), gamma ** min(j, size - j))
    np.testing.assert_allclose(losses.spatial_discount(size, size, gamma), direct, rtol=1e-6)
    assert losses.spatial_discount(size, size, gamma)[64, 64] == pytest.approx(0.9**64, rel=1e-5)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 2, 24, 20, 3)).astype(np.float32)
    weights = np.array([[max(gamma ** min(i, 24 - i), gamma ** min(j, 20 - j)) for j in range(20)]
                        for i in range(24)])
    expected = np.mean(np.abs(a - b) * weights[None, :, :, None])
    assert float(losses.discounted_l1(pred=a, target=b, gamma=gamma)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        losses.discounted_l1(pred=a, target=b[:, :10], gamma=gamma)


def test_gradient_penalty_against_finite_differences():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(3, 4, 4, 2))
    w = rng.normal(size=(4, 4, 2)) * 0.7
    mask = np.zeros((1, 4, 4, 1))
    mask[:, 1:3, 0:3] = 1  # only these pixels count

    def critic_np(x, scale):
        return np.sum(np.tanh(scale * x * w) ** 2, axis=(1, 2, 3)) + np.sum(x, axis=(1, 2, 3))

    def penalty_fd(scale, eps=1e-6):
        grads = np.zeros_like(points)
        for idx in np.ndindex(points.shape):
            step = np.zeros_like(points)
            step[idx] = eps
            grads[idx] = (critic_np(points + step, scale)[idx[0]] - critic_np(points - step, scale)[idx[0]]) / (2 * eps)
        slopes = np.sqrt(np.sum(grads ** 2 * mask, axis=(1, 2, 3)))
        return np.mean((slopes - 1.0) ** 2)

    def penalty(scale):
        fn = lambda x: jnp.sum(jnp.tanh(scale * x * w) ** 2, axis=(1, 2, 3)) + jnp.sum(x, axis=(1, 2, 3))  # noqa: E731
        return losses.wgan_gradient_penalty(critic_fn=fn, points=jnp.asarray(points, jnp.float32),
                                            mask=jnp.asarray(mask, jnp.float32))

    assert float(penalty(1.3)) == pytest.approx(penalty_fd(1.3), rel=1e-4)
    # The critic's parameters get the penalty's gradient through the input gradient (double backprop).
    d_scale = (penalty_fd(1.3 + 1e-4) - penalty_fd(1.3 - 1e-4)) / 2e-4
    assert float(jax.grad(penalty)(1.3)) == pytest.approx(d_scale, rel=1e-3)
    # A linear critic <W, x>: the slope is |W ⊙ mask|, whatever the points.
    lin = losses.wgan_gradient_penalty(critic_fn=lambda x: jnp.sum(x * w, axis=(1, 2, 3)),
                                       points=jnp.asarray(points, jnp.float32), mask=jnp.asarray(mask, jnp.float32))
    assert float(lin) == pytest.approx((np.sqrt(np.sum(w ** 2 * mask[0])) - 1) ** 2, rel=1e-5)


class _StubG(df1.Generator):
    """Fixed stage outputs (BGR, [-1, 1]): coarse 0.2, fine -0.4."""

    def __call__(self, x, *, train=False):
        return jnp.full(x.shape[:3] + (3,), 0.2), jnp.full(x.shape[:3] + (3,), -0.4)


class _StubCritic(df1.Critic):
    """Scores each image with the mean of its BGR values (so reals and fakes are told apart)."""

    def __call__(self, x, *, train=False):
        return jnp.mean(x, axis=(1, 2, 3))[:, None] * 3.0


def test_objective_on_known_values():
    c = tiny_config()
    rng = np.random.default_rng(3)
    image = rng.random((2, 32, 32, 3)).astype(np.float32)
    mask = masks.sample_batch(masks.get("deepfill_v1"), rng, 1, 32, 32).repeat(2, axis=0)
    box = deepfill_v1.prepare_example({"image": image[0], "mask": mask[0]}, c, train=True)["box"]
    batch = {"image": jnp.asarray(image), "mask": jnp.asarray(mask), "box": jnp.asarray(np.stack([box, box]))}
    modules = {"generator": _StubG(), "local_critic": _StubCritic(), "global_critic": _StubCritic()}
    variables = {n: {"params": {}} for n in modules}

    x = (2 * image - 1)[..., ::-1]
    top, left = box
    crop = lambda a: a[:, top:top + 16, left:left + 16]  # noqa: E731
    dsc = losses.spatial_discount(16, 16, 0.9)[None, :, :, None]
    l1 = 1.2 * np.mean(np.abs(crop(x) - 0.2) * dsc) + np.mean(np.abs(crop(x) + 0.4) * dsc)
    known = 1 - mask
    ae = (1.2 * np.mean(np.abs(x - 0.2) * known) + np.mean(np.abs(x + 0.4) * known)) / np.mean(known)
    complete = -0.4 * mask + x * known
    score = lambda a: np.mean(a, axis=(1, 2, 3)) * 3.0  # noqa: E731
    g_local, g_global = -np.mean(score(crop(complete))), -np.mean(score(complete))
    total, metrics, _, _ = run_update(objective.generator_update, modules, variables, batch, c)
    for name, value in {"l1": l1, "ae": ae, "g_local": g_local, "g_global": g_global}.items():
        assert float(metrics[name]) == pytest.approx(value, rel=1e-5), name
    assert float(total) == pytest.approx(1.2 * l1 + 1.2 * ae + 0.001 * (g_global + g_local), rel=1e-5)

    # Coarse pre-training: only the x1 terms, no adversarial term.
    total, metrics, _, _ = run_update(lambda ctx: objective.generator_update(ctx, coarse_only=True), modules,
                                      variables, batch, c)
    l1_c = 1.2 * np.mean(np.abs(crop(x) - 0.2) * dsc)
    ae_c = 1.2 * np.mean(np.abs(x - 0.2) * known) / np.mean(known)
    assert set(metrics) == {"l1", "ae"} and float(total) == pytest.approx(1.2 * (l1_c + ae_c), rel=1e-5)

    # Critics: WGAN estimates on reals ++ fakes; a critic linear in x has slope 3/numel over the masked pixels.
    total, metrics, _, _ = run_update(objective.critics_update, modules, variables, batch, c)
    assert float(metrics["d_local"]) == pytest.approx(np.mean(score(crop(complete))) - np.mean(score(crop(x))),
                                                      rel=1e-5)
    assert float(metrics["d_global"]) == pytest.approx(np.mean(score(complete)) - np.mean(score(x)), rel=1e-5)
    slope_global = 3.0 / x[0].size * np.sqrt(mask[0].sum() * 3)
    slope_local = 3.0 / crop(x)[0].size * np.sqrt(crop(mask)[0].sum() * 3)
    assert float(metrics["gp_global"]) == pytest.approx((slope_global - 1) ** 2, rel=1e-5)
    assert float(metrics["gp_local"]) == pytest.approx((slope_local - 1) ** 2, rel=1e-5)
    assert float(total) == pytest.approx(float(metrics["d_local"] + metrics["d_global"])
                                         + 10 * float(metrics["gp_local"] + metrics["gp_global"]), rel=1e-5)


# --------------------------------------------------------------------------------------- n-critic schedule


def _opt_count(opt_state):
    counts = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
              if "count" in jax.tree_util.keystr(path)]
    return int(counts[0])


def test_five_critic_updates_on_fresh_batches_then_one_generator_update():
    c = tiny_config()
    system, networks, phases = trainer.build(c)
    (phase,) = phases
    assert [(u.name, u.trains, u.repeat, u.fresh_batches) for u in phase.updates] == [
        ("d", ("local_critic", "global_critic"), 5, True), ("g", ("generator",), 1, True)]
    assert phase.batches_per_step == 6  # five critic batches and the generator's own

    txs = {n: optim.make(net.optimizer) for n, net in networks.items()}
    example = trainer.example_batch(c)
    nets = {}
    for i, (name, net) in enumerate(networks.items()):
        params = _filled(net.module, *net.init_args(example), seed=i)["params"]
        nets[name] = NetState(params=params, state={}, opt_state=txs[name].init(params), ema={})
    state = TrainState(step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.key(0)), nets=nets)
    pipeline = data_lib.InputPipeline(c.input, seed=0, prepare=lambda ex: system.prepare_example(ex, c, train=True))
    batches = jax.tree.map(jnp.asarray, pipeline.local_batch(0, batches_per_step=6))
    assert batches["box"].shape == (6, 8, 2)
    assert len({np.asarray(batches["mask"][k, 0]).tobytes() for k in range(6)}) > 1  # fresh masks per batch

    def changed(a, b):
        return not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    # The critic update alone: both critics move, 5 optimiser steps each; the generator is untouched.
    critics_only = contract.Phase("critics", phase.updates[:1])
    first_five = jax.tree.map(lambda a: a[:5], batches)
    after_d, _ = jax.jit(trainer.make_train_step(c, system, networks, txs, critics_only))(state, first_five, {})
    for name in objective.CRITICS:
        assert _opt_count(after_d.nets[name].opt_state) == 5 and changed(after_d.nets[name].params, nets[name].params)
    assert _opt_count(after_d.nets["generator"].opt_state) == 0
    assert not changed(after_d.nets["generator"].params, nets["generator"].params)

    # The whole step: then the generator moves once, on the sixth batch.
    after, metrics = jax.jit(trainer.make_train_step(c, system, networks, txs, phase))(state, batches, {})
    assert _opt_count(after.nets["generator"].opt_state) == 1 and changed(after.nets["generator"].params,
                                                                          nets["generator"].params)
    for name in objective.CRITICS:
        assert _opt_count(after.nets[name].opt_state) == 5
        jax.tree.map(np.testing.assert_array_equal, after.nets[name].params, after_d.nets[name].params)
    assert {"d/d_local", "d/gp_global", "g/l1", "g/ae", "g/g_local"} <= set(metrics)


# ---------------------------------------------------------------------------------------- masks, configs


def test_mask_and_its_box():
    gen = masks.get("deepfill_v1")
    stats = masks.hole_ratio_stats(gen, 256, 2000)
    # Sides 128 - 2d, d uniform in 0..16 per axis: mean area (128 - 16)² / 256².
    assert stats["mean"] == pytest.approx(112**2 / 256**2, abs=0.004)
    assert stats["max"] <= 0.25 and min(stats["p10"], stats["median"]) >= 96**2 / 256**2
    rng = np.random.default_rng(0)
    for _ in range(100):
        hole = gen(rng, 256, 256)
        rows, cols = np.nonzero(hole)
        top, left = holes.box_around_hole(hole, 128)
        # The box the hole was cut from: the hole shrunk by the same amount on opposite sides, d in 0..16.
        d_top, d_bottom = rows.min() - top, top + 128 - rows.max() - 1
        d_left, d_right = cols.min() - left, left + 128 - cols.max() - 1
        assert d_top == d_bottom and d_left == d_right and 0 <= d_top <= 16 and 0 <= d_left <= 16


def test_configs():
    c = config_lib.get_config("deepfill_v1")
    for opt in (c.g_optimizer, c.d_optimizer):
        assert (opt.name, opt.lr, opt.b1, opt.b2, opt.clip_norm, opt.schedule) == ("adam", 1e-4, 0.5, 0.9, 0.0,
                                                                                    "constant")
    assert (c.input.batch_size, c.input.image_size, c.n_critic, c.losses.local_size) == (16, 256, 5, 128)
    assert c.input.mask.name == "deepfill_v1" and c.input.mask.per_batch
    assert (c.losses.l1, c.losses.ae, c.losses.coarse_l1, c.losses.adversarial, c.losses.gp, c.losses.gamma) == (
        1.2, 1.2, 1.2, 0.001, 10.0, 0.9)
    pre = config_lib.get_config("deepfill_v1:pretrain_coarse")
    phases = deepfill_v1.phases(pre)
    assert [p.name for p in phases] == ["coarse", "train"] and phases[0].until == pre.total_steps
    with pytest.raises(ValueError, match="local_size"):
        deepfill_v1.prepare_example({"image": np.zeros((64, 64, 3)), "mask": np.zeros((64, 64, 1))}, c, train=True)


# -------------------------------------------------------------------------------------------- end to end


def test_smoke_training_loss_falls_then_load_and_predict(tmp_path):
    c = tiny_config()
    c.total_steps, c.log_every_steps, c.ckpt_every_steps, c.image_every_steps = 8, 1, 8, 8
    workdir = tmp_path / "run"
    state = trainer.train_and_evaluate(c, str(workdir))
    assert int(state.step) == 8
    assert _opt_count(state.nets["local_critic"].opt_state) == 40 and _opt_count(
        state.nets["generator"].opt_state) == 8
    rows = [r for r in writers.read_jsonl(workdir / "metrics.jsonl") if "g/total" in r]
    assert all(np.isfinite(r[k]) for r in rows for k in ("g/l1", "g/ae", "d/total", "d/gp_local"))
    first = np.mean([r["g/ae"] + r["g/l1"] for r in rows[:3]])
    last = np.mean([r["g/ae"] + r["g/l1"] for r in rows[-3:]])
    assert last < first, (first, last)
    assert os.listdir(workdir / "checkpoints") == ["8"]

    model = jaxinpaint.load(str(workdir))
    assert model.name == "deepfill_v1" and model.modulo == 8
    predict_real_photos(str(workdir), tmp_path)
