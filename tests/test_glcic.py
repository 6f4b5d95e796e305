"""GLCIC: parameter counts (systems-more.md §3.2-3.3), the box-hole sampler's statistics, the local patch, the
three phases (which parameters change in which step), the losses, the post-processing byte-equal to the same
OpenCV calls, inference and the smoke config end to end.

No fixtures exist for GLCIC yet; every expected number comes from the specification.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
from conftest import inpaint_odd_sized, run_update

import jaxinpaint
from jaxinpaint import config_lib, contract, masks, systems, writers
from jaxinpaint.data import photos
from jaxinpaint.systems.context_encoder.model import parameter_count
from jaxinpaint.systems.glcic import model as glcic
from jaxinpaint.systems.glcic import objective, postprocess
from jaxinpaint.train import optim, trainer

cv2 = pytest.importorskip("cv2")


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """XLA without most optimisations for this module (restored afterwards); nothing here times anything."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _config(variant="smoke"):
    c = config_lib.get_config(f"configs/glcic.py:{variant}" if variant else "configs/glcic.py")
    if variant == "smoke":  # 32² images, 16² local patches, width 4: compiles in seconds
        c.generator.width = c.discriminator.width = 4
        c.input.image_size = c.discriminator.global_size = 32
        c.discriminator.local_size = 16
        c.discriminator.global_layers, c.discriminator.local_layers = 3, 2
        c.input.mask.kwargs = ml_collections.ConfigDict({"area": 16, "min_size": 8, "max_size": 14})
        c.input.batch_size = 4
        c.input.num_workers = 0
    return c


def _batch(config, n=4, seed=0):
    rng = np.random.default_rng(seed)
    size = config.input.image_size
    gen = masks.get(config.input.mask.name, **config.input.mask.kwargs)
    mask = masks.sample_batch(gen, rng, n, size, size)
    return {"image": jnp.asarray(rng.uniform(size=(n, size, size, 3)), jnp.float32), "mask": jnp.asarray(mask),
            "box": jnp.asarray(np.stack([objective.hole_box(m) for m in mask]))}


def _count(module, *shapes):
    return parameter_count(jax.eval_shape(lambda: module.init(jax.random.key(0), *[jnp.zeros(s) for s in shapes])))


# ------------------------------------------------------------------------------------------------ networks


def test_parameter_counts_match_otenims_definitions():
    assert _count(glcic.CompletionNetwork(), (1, 256, 256, 4)) == 6_072_131
    d = glcic.Discriminator()
    params = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros((1, 256, 256, 3)),
                                           jnp.zeros((1, 128, 128, 3))))["params"]
    sizes = {k: int(sum(np.prod(x.shape) for x in jax.tree.leaves(v))) for k, v in params.items()}
    assert sizes == {"local_branch": 19_253_248, "global_branch": 25_808_384, "head": 2_049}
    assert params["head"]["kernel"].shape == (2048, 1)
    assert params["global_branch"]["fc"]["kernel"].shape == (4 * 4 * 512, 1024)
    # otenim's CelebA architecture: 5 global blocks on 160², local 96²: 5×5×512 and 3×3×512 flattened.
    celeba = glcic.Discriminator(global_size=160, local_size=96, global_layers=5)
    p = jax.eval_shape(lambda: celeba.init(jax.random.key(0), jnp.zeros((1, 160, 160, 3)),
                                           jnp.zeros((1, 96, 96, 3))))["params"]
    assert p["global_branch"]["fc"]["kernel"].shape[0] == 5 * 5 * 512
    assert p["local_branch"]["fc"]["kernel"].shape[0] == 3 * 3 * 512


def test_completion_network_shapes_dilations_and_bn_order():
    assert [d for _, _, d, _, _ in glcic.COMPLETION_LAYERS if d > 1] == [2, 4, 8, 16]
    net = glcic.CompletionNetwork(width=4)
    x = jax.random.uniform(jax.random.key(1), (2, 24, 20, 4))
    variables = net.init(jax.random.key(0), x)
    y = net.apply(variables, x)
    assert y.shape == (2, 24, 20, 3) and float(y.min()) >= 0 and float(y.max()) <= 1
    train = net.apply(variables, x, train=True, mutable=["batch_stats"])[0]
    otenim = glcic.CompletionNetwork(width=4, bn_after_relu=True).apply(variables, x, train=True,
                                                                        mutable=["batch_stats"])[0]
    assert not np.allclose(train, otenim, atol=1e-3)  # same weights, other order: ReLU -> BN
    with pytest.raises(ValueError, match="multiples of 4"):
        net.apply(variables, x[:, :22])


# ------------------------------------------------------------------------------------------------ masks and crops


def test_box_hole_sampler_statistics():
    """otenim utils.py: one rectangle with sides U{96..128} inside a 128² area placed uniformly in 256²."""
    gen = masks.get("glcic")
    rng = np.random.default_rng(0)
    sides, corners = [], []
    for _ in range(400):
        m = gen(rng, 256, 256)
        y0, x0, y1, x1 = objective.hole_box(m)
        assert m[y0:y1, x0:x1].all() and m.sum() == (y1 - y0) * (x1 - x0)  # one filled rectangle
        sides += [y1 - y0, x1 - x0]
        corners.append((y0, x0))
    sides = np.array(sides)
    assert sides.min() >= 96 and sides.max() <= 128 and abs(sides.mean() - 112) < 1.5
    assert set(range(96, 129)) == set(sides.tolist())  # every side length occurs
    stats = masks.hole_ratio_stats(gen, 256, 400, seed=1)
    assert abs(stats["mean"] - 112 ** 2 / 256 ** 2) < 0.01  # E[w·h]/S² = 112²/256² for independent sides
    corners = np.array(corners)
    assert corners.min() >= 0 and corners.max() <= 256 - 96 and corners.std(axis=0).min() > 30
    two = masks.get("glcic", max_holes=2, area=64, min_size=10, max_size=20)(np.random.default_rng(3), 100, 100)
    y0, x0, y1, x1 = objective.hole_box(two)
    assert y1 - y0 <= 64 and x1 - x0 <= 64
    with pytest.raises(ValueError, match="max_size"):
        masks.get("glcic", area=64)


def test_local_patch_is_centred_on_the_hole_and_clipped():
    box = jnp.asarray([[10, 20, 30, 50], [0, 0, 4, 4], [60, 60, 64, 64]], jnp.int32)
    origin = np.asarray(objective.local_origin(box, 16, (64, 64)))
    np.testing.assert_array_equal(origin, [[12, 27], [0, 0], [48, 48]])
    images = jnp.arange(3 * 64 * 64 * 3, dtype=jnp.float32).reshape(3, 64, 64, 3)
    patches = np.asarray(objective.crop(images, jnp.asarray(origin), 16))
    for i, (y, x) in enumerate(origin):
        np.testing.assert_array_equal(patches[i], np.asarray(images)[i, y:y + 16, x:x + 16])


# ------------------------------------------------------------------------------------------------ losses and phases


def test_losses():
    config = _config()
    batch = _batch(config)
    nets = {n: net.module for n, net in systems.get("glcic").networks(config).items()}
    variables = {n: m.init(jax.random.key(i), *systems.get("glcic").networks(config)[n].init_args(batch))
                 for i, (n, m) in enumerate(nets.items())}
    x = objective.generator_input(batch, config.inference.mean)
    np.testing.assert_allclose(np.asarray(x[..., 3:]), np.asarray(batch["mask"]))
    np.testing.assert_array_equal(np.asarray(x[..., :3])[np.asarray(batch["mask"])[..., 0] > 0], 0.0)
    raw, _ = nets["generator"].apply(variables["generator"], x, train=True, mutable=["batch_stats"])
    raw, image, mask = (np.asarray(a, np.float64) for a in (raw, batch["image"], batch["mask"]))
    mse = np.mean((raw * mask - image * mask) ** 2)
    loss, metrics, _, _ = run_update(objective.completion_update, nets, variables, batch, config)
    np.testing.assert_allclose(float(loss), mse, rtol=1e-5)

    comp = raw * mask + image * (1 - mask)
    origin = objective.local_origin(batch["box"], 16, (32, 32))
    logits, _ = nets["discriminator"].apply(variables["discriminator"], jnp.asarray(comp, jnp.float32),
                                            objective.crop(jnp.asarray(comp, jnp.float32), origin, 16), train=True,
                                            mutable=["batch_stats"])
    bce = np.mean(np.log1p(np.exp(-np.asarray(logits, np.float64))))
    loss, metrics, _, _ = run_update(objective.joint_update, nets, variables, batch, config)
    np.testing.assert_allclose(float(metrics["adversarial"]), bce, rtol=1e-4)
    np.testing.assert_allclose(float(loss), mse + 4e-4 * bce, rtol=1e-5)

    loss, metrics, _, _ = run_update(objective.discriminator_update, nets, variables, batch, config)
    np.testing.assert_allclose(float(loss), float(metrics["bce_real"] + metrics["bce_fake"]), rtol=1e-6)
    config.losses.d_input = "sideways"
    with pytest.raises(ValueError, match="d_input"):
        run_update(objective.discriminator_update, nets, variables, batch, config)


def test_phases_change_only_their_networks():
    """Phase 1 changes C only, phase 2 D only (C's BatchNorm statistics stay), phase 3 both."""
    config = _config()
    config.schedule.completion_steps, config.schedule.discriminator_steps = 1, 1
    system, networks, phases = trainer.build(config)
    assert [p.name for p in phases] == ["completion", "discriminator", "joint"]
    assert [p.until for p in phases] == [1, 2, None]
    assert [[(u.name, u.trains) for u in p.updates] for p in phases] == [
        [("g", ("generator",))], [("d", ("discriminator",))], [("d", ("discriminator",)), ("g", ("generator",))]]
    txs = {n: optim.make(net.optimizer) for n, net in networks.items()}
    state = jax.jit(trainer.make_init_fn(config, networks, txs))(jax.random.key_data(jax.random.key(0)))
    batch = _batch(config)

    def changed(before, after):
        return {n: {"params": not all(jax.tree.leaves(jax.tree.map(np.array_equal, before.nets[n].params,
                                                                    after.nets[n].params))),
                    "state": not all(jax.tree.leaves(jax.tree.map(np.array_equal, before.nets[n].state,
                                                                   after.nets[n].state)))}
                for n in before.nets}

    expected = [{"generator": {"params": True, "state": True}, "discriminator": {"params": False, "state": False}},
                {"generator": {"params": False, "state": False}, "discriminator": {"params": True, "state": True}},
                {"generator": {"params": True, "state": True}, "discriminator": {"params": True, "state": True}}]
    for step, want in enumerate(expected):
        phase = contract.phase_at(phases, step)
        fn = jax.jit(trainer.make_train_step(config, system, networks, txs, phase))
        before = jax.tree.map(np.array, state)
        state, metrics = fn(state, batch, {})
        assert changed(before, state) == want, (phase.name, changed(before, state))
        assert int(state.step) == step + 1 and np.isfinite(float(metrics[f"{phase.updates[-1].name}/total"]))


def test_config_schedule_and_paper_settings():
    c = _config(None)
    assert (c.schedule.completion_steps, c.schedule.discriminator_steps, c.total_steps) == (90_000, 10_000, 500_000)
    assert objective.phase_lengths(c) == (90_000, 100_000)
    c.schedule.scale = 0.001  # one field scales all three lengths
    assert (objective.phase_lengths(c), c.total_steps) == ((90, 100), 500)
    assert c.g_optimizer.name == c.d_optimizer.name == "adadelta"
    assert (c.g_optimizer.lr, c.g_optimizer.rho, c.g_optimizer.eps) == (1.0, 0.9, 1e-6)
    assert (c.losses.alpha, c.input.batch_size, c.input.image_size) == (4e-4, 96, 256)
    assert (c.losses.d_input, c.losses.real_local) == ("composite", "aligned")
    celeba = _config("celeba")
    assert celeba.input.image_size == 160
    assert (celeba.discriminator.local_size, celeba.discriminator.global_layers) == (96, 5)
    bad = _config()
    bad.input.image_size = 48
    with pytest.raises(ValueError, match="global_size"):
        systems.get("glcic").networks(bad)


# ------------------------------------------------------------------------------------------------ post-processing


def _photo_and_hole():
    image = np.asarray(Image.open(photos.builtin_photo_paths()[1]).convert("RGB"))[:120, :150].copy()
    hole = np.zeros(image.shape[:2], bool)
    hole[40:75, 60:101] = True
    return image, hole


def test_postprocess_is_byte_equal_to_the_same_opencv_calls():
    image, hole = _photo_and_hole()
    filled = image.copy()
    filled[hole] = (90, 140, 60)  # a flat "network fill" the blending must adapt
    # inpaint.lua:89-117 and utils.lua's RGB <-> BGR swaps, written out with the same cv2 calls.
    bgr = np.ascontiguousarray(filled[..., ::-1])
    m = hole.astype(np.uint8) * 255
    ys, xs = np.nonzero(hole)
    centre = ((xs.min() + xs.max()) // 2, (ys.min() + ys.max()) // 2)
    dst = cv2.inpaint(bgr, m, 1, cv2.INPAINT_TELEA)
    expected = cv2.seamlessClone(bgr, dst, m, centre, cv2.NORMAL_CLONE)[..., ::-1]
    got = postprocess.postprocess(filled, hole)
    assert postprocess.blend_center(hole) == (80, 57)
    np.testing.assert_array_equal(got[hole], expected[hole])
    np.testing.assert_array_equal(got[~hole], filled[~hole])
    assert not np.array_equal(got[hole], filled[hole])
    np.testing.assert_array_equal(postprocess.postprocess(filled, np.zeros_like(hole)), filled)
    tiny = np.zeros_like(hole)
    tiny[5, 5] = True  # OpenCV cannot blend a 1-pixel hole: the network's fill stays
    np.testing.assert_array_equal(postprocess.postprocess(filled, tiny), filled)
    # The float batch wrapper returns bin centres that write back to exactly these bytes.
    batch = postprocess.postprocess_batch(filled[None] / 255.0, hole[None, ..., None])
    np.testing.assert_array_equal(np.clip(batch[0] * 255, 0, 255).astype(np.uint8), got)


def test_predict_with_postprocessing_on_the_host():
    config = _config()
    image, hole = _photo_and_hole()
    image, hole = image[:32, :64], hole[:32, :64]
    hole[:] = False
    hole[8:20, 20:40] = True
    nets = {"generator": glcic.CompletionNetwork(width=4)}
    batch = {"image": jnp.asarray(image[None] / 255.0, jnp.float32),
             "mask": jnp.asarray(hole[None, ..., None], jnp.float32)}
    variables = nets["generator"].init(jax.random.key(0), objective.generator_input(batch, config.inference.mean))

    def run(cfg):
        nets_ = contract.Nets(nets, {"generator": variables["params"]},
                              {"generator": {"batch_stats": variables["batch_stats"]}}, train=False)
        return jax.jit(lambda b: objective.predict(nets_, b, cfg))(batch)

    plain = run(config)
    post_config = config.copy_and_resolve_references()
    post_config.inference.postprocess = True
    post = run(post_config)
    np.testing.assert_array_equal(np.asarray(plain["composite"])[0][~hole], image[~hole] / np.float32(255))
    expected = postprocess.postprocess_batch(np.asarray(plain["composite"]), np.asarray(batch["mask"]))
    np.testing.assert_array_equal(np.asarray(post["pred"]), expected)


# ------------------------------------------------------------------------------------------------ end to end


def test_train_through_three_phases_and_inpaint(tmp_path):
    c = _config()
    c.schedule.completion_steps, c.schedule.discriminator_steps = 1, 1
    c.input.batch_size = 8  # the test session's 8 CPU devices
    c.total_steps = c.ckpt_every_steps = c.image_every_steps = 3
    c.log_every_steps = 1
    c.eval_every_steps = 0
    workdir = tmp_path / "run"
    state = trainer.train_and_evaluate(c, str(workdir))
    assert int(state.step) == 3
    rows = writers.read_jsonl(workdir / "metrics.jsonl")
    by_step = {r["step"]: r for r in rows if "nonfinite_params" in r}
    assert "g/mse" in by_step[1] and "d/total" not in by_step[1]
    assert "d/total" in by_step[2] and "g/mse" not in by_step[2]
    assert {"d/total", "g/mse", "g/adversarial"} <= set(by_step[3])
    assert os.listdir(workdir / "checkpoints") == ["3"]

    model = jaxinpaint.load(str(workdir))
    assert model.name == "glcic" and model.modulo == 4
    image, mask, result = inpaint_odd_sized(model)  # 30x27: not a multiple of the model's size: padded
    # The post-processing switched on at load time (a config.inference field), known pixels still untouched.
    post = jaxinpaint.load(str(workdir), postprocess=True)
    assert post.config.inference.postprocess and not model.config.inference.postprocess
    blended = post.inpaint(image, mask)
    np.testing.assert_array_equal(blended[~mask], image[~mask])
    assert not np.array_equal(blended[mask], result[mask])
    with pytest.raises(TypeError, match="inference options"):
        jaxinpaint.load(str(workdir), postprocessing=True)
