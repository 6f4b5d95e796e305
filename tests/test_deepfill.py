"""DeepFill v2: the models (systems/deepfill_v2/model.py), the objective (objective.py), the config.

Model variables for the unit tests are filled with numpy on the ``eval_shape`` tree: ``model.init`` compiles
one threefry initialiser per parameter shape, seconds each on the 2-core CPU. The end-to-end test goes through
the real trainer and inference.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import inpaint_odd_sized, run_update
from jax import lax

import jaxinpaint
from jaxinpaint import config_lib, writers
from jaxinpaint.nn import spectral_norm
from jaxinpaint.nn.gated_conv import resize_nearest_align_corners
from jaxinpaint.systems.deepfill_v2 import model as deepfill
from jaxinpaint.systems.deepfill_v2 import objective
from jaxinpaint.train import trainer


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """XLA without most optimisations for this module (restored afterwards), as the Flax example tests do.

    Compilation dominates these tests (the train step holds two generator passes and contextual attention);
    nothing here asserts on speed.
    """
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _random_variables(model, *args, seed=0, **kwargs):
    """Glorot-like kernels, small biases and unit-norm random ``u`` vectors, filled with numpy."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            bound = np.sqrt(6.0 / (np.prod(leaf.shape[:-1]) + leaf.shape[-1]))
            return rng.uniform(-bound, bound, leaf.shape).astype(np.float32)
        return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)

    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    return jax.tree_util.tree_map_with_path(fill, abstract)


def deepfill_config():
    return config_lib.load_module("deepfill_v2")


def _batch(n=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(n, size, size, 3)).astype(np.float32)
    mask = np.zeros((n, size, size, 1), np.float32)
    mask[:, size // 4: size // 2, size // 8: 3 * size // 4] = 1.0
    return {"image": image, "mask": mask}


# ------------------------------------------------------------------------------------------------ generator


def test_generator_shapes_range_and_input_checks():
    model = deepfill.Generator(cnum=8)
    batch = _batch()
    x = objective.generator_input(batch)
    assert x.shape == (2, 32, 32, 5)
    variables = _random_variables(model, x)
    apply = jax.jit(model.apply)
    coarse, fine = apply(variables, x)
    for out in (coarse, fine):
        assert out.shape == (2, 32, 32, 3) and out.dtype == jnp.float32
        assert float(jnp.min(out)) >= -1.0 and float(jnp.max(out)) <= 1.0
        assert float(jnp.std(out)) > 1e-3  # not collapsed to a constant
    assert not np.allclose(coarse, fine)
    # The mask is an input (channel 4, the paste between the stages, attention's usable patches): moving it
    # changes the output.
    other = dict(batch, mask=np.roll(batch["mask"], 8, axis=2))
    assert not np.allclose(apply(variables, objective.generator_input(other))[1], fine)

    with pytest.raises(ValueError, match="multiples of 8"):
        model.apply(variables, jnp.zeros((1, 36, 32, 5)))
    with pytest.raises(ValueError, match=r"\(N, H, W, 5\)"):
        model.apply(variables, jnp.zeros((1, 32, 32, 4)))
    with pytest.raises(ValueError, match="cnum must be a positive multiple of 4"):
        deepfill.Generator(cnum=6).init(jax.random.key(0), x)


def test_parameter_counts_and_discriminator_output_at_full_size():
    g = deepfill.Generator()
    g_vars = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, 256, 256, 5))))
    n_g = sum(x.size for x in jax.tree.leaves(g_vars["params"]))
    assert n_g == 4_052_478  # "about 4M" (LaMa Table 1: DeepFill v2 4.1M)
    d = deepfill.SNPatchGAN()
    d_vars = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros((1, 256, 256, 4))))
    assert sum(x.size for x in jax.tree.leaves(d_vars["params"])) == 5_946_816
    assert set(d_vars) == {"params", "spectral"}
    assert sorted(d_vars["spectral"]) == [f"conv{i}" for i in range(1, 7)]
    logits, features = jax.eval_shape(lambda v: d.apply(v, jnp.zeros((2, 256, 256, 4))), d_vars)
    assert logits.shape == (2, 4, 4, 256)
    assert [f.shape[1:] for f in features] == [(128, 128, 64), (64, 64, 128), (32, 32, 256), (16, 16, 256),
                                               (8, 8, 256)]


def test_mask_resize_follows_tf_align_corners_rule():
    # TF1 resize_nearest_neighbor(align_corners=True), 32 -> 8: round(o * 31 / 7) = 0 4 9 13 18 22 27 31.
    x = jnp.arange(32.0)[None, :, None, None] * jnp.ones((1, 1, 32, 1))
    rows = resize_nearest_align_corners(x, 8, 8)[0, :, 0, 0]
    np.testing.assert_array_equal(rows, [0, 4, 9, 13, 18, 22, 27, 31])


# --------------------------------------------------------------------------------------------- spectral norm


def test_spectral_norm_converges_and_updates_only_in_train_mode():
    layer = spectral_norm.SpectralConv2D(features=8, kernel_size=5, strides=2)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
    variables = _random_variables(layer, x)
    kernel, u0 = variables["params"]["kernel"], variables["spectral"]["u"]
    true_sigma = np.linalg.svd(np.asarray(kernel).reshape(-1, 8), compute_uv=False)[0]

    # Eval mode: the state is returned unchanged even when the collection is mutable.
    _, state = layer.apply(variables, x, train=False, mutable=["spectral"])
    np.testing.assert_array_equal(state["spectral"]["u"], u0)

    # Train mode: one power iteration per call, stored; after enough calls sigma(W / sigma) = 1.
    step = jax.jit(lambda v: layer.apply(v, x, train=True, mutable=["spectral"]))
    _, state = step(variables)
    assert not np.allclose(state["spectral"]["u"], u0)
    for _ in range(30):
        _, state = step({"params": variables["params"], **state})
    normalised, _, sigma = spectral_norm.spectral_normalize(kernel, state["spectral"]["u"])
    top = np.linalg.svd(np.asarray(normalised).reshape(-1, 8), compute_uv=False)[0]
    assert top == pytest.approx(1.0, abs=1e-3)
    assert float(sigma) == pytest.approx(true_sigma, rel=1e-3)

    # The layer's output is the plain convolution with the normalised kernel (from the stored u) plus bias.
    expected = lax.conv_general_dilated(x, spectral_norm.spectral_normalize(kernel, variables["spectral"]["u"])[0],
                                        (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y0 = layer.apply(variables, x, train=False)
    np.testing.assert_allclose(y0, expected + variables["params"]["bias"], atol=1e-5)


def test_discriminator_advances_every_layer_only_when_training():
    d = deepfill.SNPatchGAN(cnum=4)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 64, 64, 4)), jnp.float32)
    variables = _random_variables(d, x)
    (logits, features), state = d.apply(variables, x, train=True, mutable=["spectral"])
    assert logits.shape == (2, 1, 1, 16) and len(features) == 5
    for name in variables["spectral"]:
        assert not np.allclose(state["spectral"][name]["u"], variables["spectral"][name]["u"]), name
    _, state = d.apply(variables, x, train=False, mutable=["spectral"])
    jax.tree.map(np.testing.assert_array_equal, state["spectral"], variables["spectral"])


# ------------------------------------------------------------------------------------------------ objective


def test_objective_conversions_and_hinge_losses():
    batch = _batch(n=2, size=8)
    image, mask = batch["image"], batch["mask"]
    x = objective.generator_input(batch)
    np.testing.assert_allclose(x[..., :3], (2 * image - 1) * (1 - mask), atol=1e-6)
    np.testing.assert_array_equal(x[..., 3], 1.0)
    np.testing.assert_array_equal(x[..., 4:], mask)

    coarse = jnp.full(image.shape, 0.5)
    fine = jnp.full(image.shape, -0.5)
    out = objective.outputs((coarse, fine), batch)
    np.testing.assert_allclose(out["pred"], 0.25)
    np.testing.assert_allclose(out["coarse"], 0.75)
    np.testing.assert_allclose(out["composite"], np.where(mask > 0, 0.25, image), atol=1e-6)

    # D sees images in [-1, 1] ++ the mask, repeated when reals and fakes are stacked.
    d_in = objective.discriminator_input(jnp.concatenate([image, image]), batch)
    assert d_in.shape == (4, 8, 8, 4)
    np.testing.assert_array_equal(d_in[2:, ..., 3:], mask)
    np.testing.assert_allclose(d_in[:2, ..., :3], 2 * image - 1, atol=1e-6)

    class StubG(nn.Module):  # the fixed (coarse, fine) above
        @nn.compact
        def __call__(self, x, *, train=False):
            return jnp.full(x.shape[:3] + (3,), 0.5), jnp.full(x.shape[:3] + (3,), -0.5)

    class StubD(nn.Module):  # counts its train-mode calls; scores reals (first half) 2.0 and fakes -0.5
        fake_logits: tuple = ()

        @nn.compact
        def __call__(self, x, *, train=False):
            n = self.variable("calls", "n", lambda: jnp.zeros((), jnp.int32))
            if train and not self.is_initializing():
                n.value += 1
            if self.fake_logits:
                return jnp.asarray(self.fake_logits), []
            per_image = jnp.where(jnp.arange(x.shape[0]) < x.shape[0] // 2, 2.0, -0.5)
            return per_image[:, None, None, None] * jnp.ones((1, 2, 2, 3)), []

    cfg = deepfill_config().get_config()
    cfg.losses.adversarial = 0.5
    # Generator: whole-image L1 of both stages in [-1, 1] units + weighted hinge G loss on D(composite).
    fake_logits = ((0.2, -0.6), (1.0, 0.2))
    modules = {"generator": StubG(), "discriminator": StubD(fake_logits)}
    variables = {"generator": {"params": {}}, "discriminator": {"params": {}, "calls": {"n": 0}}}
    total, metrics, carry, states = run_update(objective.generator_update, modules, variables, batch, cfg)
    l1_coarse = np.mean(np.abs((2 * image - 1) - 0.5))
    l1_fine = np.mean(np.abs((2 * image - 1) + 0.5))
    assert float(metrics["l1_coarse"]) == pytest.approx(l1_coarse, rel=1e-5)
    assert float(metrics["l1_fine"]) == pytest.approx(l1_fine, rel=1e-5)
    assert float(metrics["adversarial"]) == pytest.approx(-0.2)
    assert float(total) == pytest.approx(l1_coarse + l1_fine + 0.5 * -0.2, rel=1e-5)
    np.testing.assert_allclose(carry["fake"], out["composite"], atol=1e-6)  # D's fakes: the composite
    assert int(states["discriminator"]["calls"]["n"]) == 1
    total_no_d, metrics, _, _ = run_update(objective.generator_update, {"generator": StubG()},
                                           {"generator": {"params": {}}}, batch, cfg)
    assert "adversarial" not in metrics and float(total_no_d) == pytest.approx(l1_coarse + l1_fine, rel=1e-5)

    # Discriminator: ONE call on reals ++ the G update's fakes (one power iteration), hinge on the halves.
    modules = {"discriminator": StubD()}
    loss, d_metrics, _, states = run_update(objective.discriminator_update, modules,
                                            {"discriminator": {"params": {}, "calls": {"n": 0}}}, batch, cfg,
                                            carry={"fake": jnp.asarray(image)})
    assert int(states["discriminator"]["calls"]["n"]) == 1
    # 0.5 * relu(1 - 2) + 0.5 * relu(1 - 0.5) = 0.25
    assert float(loss) == pytest.approx(0.25)
    assert float(d_metrics["real_logits"]) == pytest.approx(2.0)
    assert float(d_metrics["fake_logits"]) == pytest.approx(-0.5)


def test_full_config_matches_the_original_recipe():
    c = deepfill_config().get_config()
    assert c.system == "deepfill_v2" and c.generator.kind == "Generator" and c.generator.cnum == 48
    assert c.discriminator.kind == "SNPatchGAN" and c.discriminator.cnum == 64
    for opt in (c.g_optimizer, c.d_optimizer):
        assert (opt.lr, opt.b1, opt.b2, opt.clip_norm) == (1e-4, 0.5, 0.999, 0.0)
    assert (c.input.batch_size, c.input.image_size) == (16, 256)
    assert c.input.mask.name == "deepfill_v2" and c.input.mask.per_batch
    assert (c.losses.l1_coarse, c.losses.l1_fine, c.losses.adversarial) == (1.0, 1.0, 1.0)
    smoke = deepfill_config().get_config("smoke")
    assert smoke.input.image_size % deepfill.SIZE_MULTIPLE == 0 and smoke.total_steps <= 100
    with pytest.raises(ValueError, match="unknown config variant"):
        deepfill_config().get_config("tiny")


# ------------------------------------------------------------------------------------------------ end to end


def test_train_checkpoint_and_inpaint_end_to_end(tmp_path):
    c = deepfill_config().get_config("smoke")
    c.generator.cnum = 4
    c.discriminator.cnum = 4
    c.input.image_size = 32
    c.input.batch_size = 8
    c.input.num_workers = 0
    c.total_steps = 3
    c.log_every_steps = 1
    c.ckpt_every_steps = 3
    c.image_every_steps = 3
    workdir = tmp_path / "run"
    state = trainer.train_and_evaluate(c, str(workdir))
    assert int(state.step) == 3

    rows = [r for r in writers.read_jsonl(workdir / "metrics.jsonl") if "g/total" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    terms = {"g/total", "g/l1_coarse", "g/l1_fine", "g/adversarial", "d/total", "d/hinge", "d/real_logits",
             "d/fake_logits", "grad_norm/generator", "grad_norm/discriminator"}
    assert terms <= set(rows[0])
    assert all(np.isfinite(r[k]) for r in rows for k in terms)
    assert rows[-1]["g/total"] != rows[0]["g/total"]
    assert os.listdir(workdir / "checkpoints") == ["3"]
    assert list((workdir / "images").glob("samples_*.png"))
    assert sorted(state.nets["discriminator"].state["spectral"]) == [f"conv{i}" for i in range(1, 7)]

    model = jaxinpaint.load(str(workdir))
    module, _ = model.network("generator")
    assert model.name == "deepfill_v2" and isinstance(module, deepfill.Generator) and module.cnum == 4
    image, mask, result = inpaint_odd_sized(model)  # 30x27: not a multiple of the model's size: padded
    assert not np.array_equal(result[mask], image[mask])
