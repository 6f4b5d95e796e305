"""The system contract before the new systems arrive: a toy system with a generator and two critics trained in
two phases with n critic steps on fresh batches, through the one trainer; a toy per-image solver through the one
inference path (``jaxinpaint.load``, ``predict``); the registry; and the Python API's input handling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from PIL import Image

import jaxinpaint
from jaxinpaint import config_lib, contract, systems, writers
from jaxinpaint import data as data_lib
from jaxinpaint.train import trainer

N_CRITIC = 3


class TinyConv(nn.Module):
    """One 3x3 convolution: enough to have parameters, gradients and a BatchNorm-free state."""

    features: int

    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.Conv(self.features, (3, 3), name="conv")(x)


class CountingCritic(nn.Module):
    """A critic that counts its training-mode calls in a mutable collection (like spectral-norm vectors)."""

    @nn.compact
    def __call__(self, x, *, train=False):
        calls = self.variable("calls", "n", lambda: jnp.zeros((), jnp.int32))
        if train and not self.is_initializing():
            calls.value += 1
        return jnp.mean(nn.Conv(1, (3, 3), name="conv")(x), axis=(1, 2, 3))


def _g_input(batch):
    return jnp.concatenate([batch["image"] * (1 - batch["mask"]), batch["mask"]], -1)


def _predict(nets, batch, config):
    del config
    pred = jax.nn.sigmoid(nets("generator", _g_input(batch)))
    return {"pred": pred, "composite": contract.composite(pred, batch["image"], batch["mask"])}


def _l1_update(ctx):
    pred = _predict(ctx.nets, ctx.batch, ctx.config)["pred"]
    return jnp.mean(jnp.abs(pred - ctx.batch["image"])), {"batch_mean": jnp.mean(ctx.batch["image"])}, {}


def _adversarial_g_update(ctx):
    out = _predict(ctx.nets, ctx.batch, ctx.config)
    adv = -jnp.mean(ctx.nets("critic_a", out["composite"])) - jnp.mean(ctx.nets("critic_b", out["pred"]))
    l1 = jnp.mean(jnp.abs(out["pred"] - ctx.batch["image"]))
    return l1 + 0.1 * adv, {"l1": l1, "adversarial": adv}, {}


def _critics_update(ctx):
    """WGAN-like losses of both critics on this repeat's own (fresh) batch."""
    fake = jax.lax.stop_gradient(_predict(ctx.nets, ctx.batch, ctx.config)["composite"])
    real = ctx.batch["image"]
    loss_a = jnp.mean(ctx.nets("critic_a", fake)) - jnp.mean(ctx.nets("critic_a", real))
    loss_b = jnp.mean(ctx.nets("critic_b", fake)) - jnp.mean(ctx.nets("critic_b", real))
    return loss_a + loss_b, {"a": loss_a, "b": loss_b, "batch_mean": jnp.mean(real)}, {}


def _toy_networks(config):
    opt = config.g_optimizer
    return {
        "generator": contract.Network(TinyConv(3), lambda b: (_g_input(b),), opt, ema=True),
        "critic_a": contract.Network(CountingCritic(), lambda b: (b["image"],), config.d_optimizer),
        "critic_b": contract.Network(CountingCritic(), lambda b: (b["image"],), config.d_optimizer),
    }


def _toy_phases(config):
    return [
        contract.Phase("warmup", (contract.Update("g", ("generator",), _l1_update),), until=config.warmup_steps),
        contract.Phase("adversarial", (
            contract.Update("critics", ("critic_a", "critic_b"), _critics_update, repeat=N_CRITIC,
                            fresh_batches=True),
            contract.Update("g", ("generator",), _adversarial_g_update),
        )),
    ]


TOY = contract.System(name="toy_two_critics", title="toy", models={"TinyConv": TinyConv,
                                                                  "CountingCritic": CountingCritic},
                      networks=_toy_networks, phases=_toy_phases, predict=_predict)


@pytest.fixture(scope="module", autouse=True)
def _registered():
    systems.register(TOY, replace=True)
    systems.register(TOY_SOLVER, replace=True)
    yield
    systems.unregister(TOY.name)
    systems.unregister(TOY_SOLVER.name)


def toy_config(**overrides):
    c = config_lib.base_config()
    c.system = TOY.name
    c.warmup_steps = 2
    c.g_optimizer = config_lib.optimizer("adam", 1e-2)
    c.d_optimizer = config_lib.optimizer("adam", 1e-3, b1=0.0, b2=0.9)
    c.input.image_size, c.input.batch_size, c.input.num_workers = 16, 8, 0
    c.input.mask.name = "center_box"
    c.input.eval_mask.name = "center_box"
    c.ema.decay = 0.5
    c.total_steps, c.log_every_steps, c.ckpt_every_steps, c.image_every_steps = 4, 1, 1, 0
    c.update(overrides)
    return c


def _opt_count(opt_state):
    counts = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
              if "count" in jax.tree_util.keystr(path)]
    return int(counts[0]) if counts else 0


def test_two_phases_two_critics_n_critic_steps_and_exact_resume(tmp_path):
    init = jax.tree.map(np.asarray, trainer.make_init_fn(
        toy_config(), TOY.networks(toy_config()),
        {n: trainer.optim.make(net.optimizer) for n, net in TOY.networks(toy_config()).items()})(
            jax.random.key_data(jax.random.key(0))).nets)

    # Phase 1 only (2 steps): the generator moves, the critics are never called or updated.
    warm = trainer.train_and_evaluate(toy_config(total_steps=2), str(tmp_path / "run"))
    for name in ("critic_a", "critic_b"):
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, warm.nets[name].params),
                     init[name].params)
        assert int(warm.nets[name].state["calls"]["n"]) == 0 and _opt_count(warm.nets[name].opt_state) == 0
    assert _opt_count(warm.nets["generator"].opt_state) == 2
    assert not np.allclose(warm.nets["generator"].params["conv"]["kernel"], init["generator"].params["conv"]["kernel"])

    # Resumed into phase 2 (2 more steps): each critic gets N_CRITIC updates per step, on fresh batches; the
    # generator one update per step; the critics' state counts every train-mode call (3 per repeat: 2 in
    # their own update, 1 in G's).
    resumed = trainer.train_and_evaluate(toy_config(), str(tmp_path / "run"))
    assert int(resumed.step) == 4
    for name in ("critic_a", "critic_b"):
        assert _opt_count(resumed.nets[name].opt_state) == 2 * N_CRITIC
        assert int(resumed.nets[name].state["calls"]["n"]) == 2 * (2 * N_CRITIC + 1)
        assert not np.allclose(resumed.nets[name].params["conv"]["kernel"], init[name].params["conv"]["kernel"])
    assert _opt_count(resumed.nets["generator"].opt_state) == 4
    # The EMA of the generator (declared by the system) is kept; the critics have none.
    assert resumed.nets["generator"].ema and not resumed.nets["critic_a"].ema

    rows = [r for r in writers.read_jsonl(tmp_path / "run" / "metrics.jsonl") if "g/total" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert "critics/total" not in rows[1] and {"critics/a", "critics/b", "g/adversarial"} <= set(rows[2])
    assert {"grad_norm/critic_a", "grad_norm/critic_b", "grad_norm/generator"} <= set(rows[3])

    # Interrupted in the middle of phase 2 and resumed == uninterrupted, bit for bit.
    full = trainer.train_and_evaluate(toy_config(), str(tmp_path / "full"))
    for a, b in zip(jax.tree.leaves(jax.tree.map(np.asarray, (full.nets, full.rng))),
                    jax.tree.leaves(jax.tree.map(np.asarray, (resumed.nets, resumed.rng)))):
        np.testing.assert_array_equal(a, b)


def test_fresh_batches_are_distinct_and_deterministic():
    config = toy_config()
    pipeline = data_lib.InputPipeline(config.input, seed=0)
    stack = pipeline.local_batch(5, batches_per_step=N_CRITIC)
    assert stack["image"].shape == (N_CRITIC, 8, 16, 16, 3)
    assert not np.allclose(stack["image"][0], stack["image"][1])
    again = next(pipeline.iterate(5, batches_per_step=N_CRITIC))[1]
    np.testing.assert_array_equal(stack["image"], again["image"])
    # One batch per step is the historical stream (the LaMa trainer's exact-resume tests rely on it).
    np.testing.assert_array_equal(pipeline.local_batch(5)["image"], next(pipeline.iterate(5))[1]["image"])


def test_schedule_and_update_checks():
    nets = TOY.networks(toy_config())
    with pytest.raises(ValueError, match="unknown network 'nope'"):
        contract.check_phases([contract.Phase("p", (contract.Update("x", ("nope",), _l1_update),))], nets)
    with pytest.raises(ValueError, match="not the last phase"):
        contract.check_phases([contract.Phase("a", ()), contract.Phase("b", ())], nets)
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        contract.Update("x", ("generator",), _l1_update, repeat=0)
    frozen = {**nets, "generator": contract.Network(TinyConv(3), lambda b: (_g_input(b),), None)}
    with pytest.raises(ValueError, match="no optimizer"):
        contract.check_phases(TOY.phases(toy_config()), frozen)
    phases = TOY.phases(toy_config())
    assert [contract.phase_at(phases, s).name for s in range(4)] == ["warmup", "warmup", "adversarial",
                                                                     "adversarial"]
    assert phases[1].batches_per_step == N_CRITIC


@pytest.mark.parametrize("name,kwargs", [("adam", {"b1": 0.0, "b2": 0.9}), ("adadelta", {"lr": 1.0, "eps": 1e-6}),
                                         ("rmsprop", {}), ("sgd", {"momentum": 0.9}),
                                         ("adamw", {"weight_decay": 1e-2})])
def test_optimizers_by_name_match_optax(name, kwargs):
    cfg = config_lib.optimizer(name, **{"lr": 0.1, **kwargs})
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = {"w": jnp.array([0.5, 0.1, -0.3])}
    tx = trainer.optim.make(cfg)
    reference = {"adam": optax.adam(0.1, b1=0.0, b2=0.9), "adadelta": optax.adadelta(1.0, rho=0.9, eps=1e-6),
                 "rmsprop": optax.rmsprop(0.1, decay=0.99, eps=1e-8), "sgd": optax.sgd(0.1, momentum=0.9),
                 "adamw": optax.adamw(0.1, weight_decay=1e-2)}[name]
    u1, _ = tx.update(grads, tx.init(params), params)
    u2, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


def test_schedules():
    lin = trainer.optim.learning_rate(config_lib.optimizer("adam", 1.0, schedule="linear_decay", decay_start=10,
                                                           decay_steps=10))
    assert [float(lin(s)) for s in (0, 10, 15, 20, 30)] == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0])
    pw = trainer.optim.learning_rate(config_lib.optimizer("adam", 1e-4, schedule="piecewise", boundaries=(0, 5),
                                                          scales=(1.0, 0.1)))
    assert float(pw(4)) == pytest.approx(1e-4) and float(pw(5)) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="not one of"):
        trainer.optim.make(config_lib.optimizer("lion"))


# ----------------------------------------------------------------------------------------------------------
# A per-image solver through the one inference path.
# ----------------------------------------------------------------------------------------------------------


def _toy_solve(resources, image, mask, config, rng):
    """Gradient descent from noise on the squared distance to the known pixels' mean colour (a lax.scan)."""
    del resources
    known = 1.0 - mask
    target = jnp.sum(image * known, axis=(1, 2), keepdims=True) / jnp.maximum(jnp.sum(known), 1.0)
    x0 = jax.random.uniform(rng, image.shape)

    def step(x, _):
        loss, g = jax.value_and_grad(lambda x: jnp.mean((x - target) ** 2))(x)
        return x - config.lr * g * x.size / 3, loss

    x, losses = jax.lax.scan(step, x0, None, length=config.iterations)
    return x, {"objective": losses}


TOY_SOLVER = contract.Solver(
    name="toy_mean_fill", title="toy", solve=_toy_solve,
    default_config=lambda: ml_collections.ConfigDict({"iterations": 30, "lr": 1.0}),
    iterations=lambda c: c.iterations)


def _photo(h=21, w=34, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _hole(h=21, w=34):
    m = np.zeros((h, w), bool)
    m[5:12, 8:20] = True
    return m


def test_solver_through_load_and_predict(tmp_path, capsys):
    from jaxinpaint.cli import predict

    assert TOY_SOLVER.name in systems.names("solver")
    model = jaxinpaint.load(TOY_SOLVER.name, iterations=40)
    image, hole = _photo(), _hole()
    out = model.inpaint(image, hole)
    np.testing.assert_array_equal(out[~hole], image[~hole])
    mean = image[~hole].mean(axis=0)
    assert np.abs(out[hole].astype(float) - mean).max() <= 2.0  # filled with the known pixels' mean colour
    assert model.last_info["objective"].shape == (40,) and model.last_info["objective"][-1] < 1e-3
    np.testing.assert_array_equal(jaxinpaint.load(TOY_SOLVER.name, iterations=40).inpaint(image, hole), out)
    with pytest.raises(TypeError, match="unknown option"):
        jaxinpaint.load(TOY_SOLVER.name, itrations=3)

    Image.fromarray(image).save(tmp_path / "x.png")
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "x_mask.png")
    assert predict.main([f"--model={TOY_SOLVER.name}", f"--image={tmp_path / 'x.png'}",
                         f"--mask={tmp_path / 'x_mask.png'}", f"--output={tmp_path / 'y.png'}"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "y.png"))[~hole], image[~hole])
    assert "objective" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
# The Python API's inputs and outputs (a trained toy model: a model directory written like a converter).
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory):
    from jaxinpaint.io import checkpoint

    module = TinyConv(3)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)))
    path = tmp_path_factory.mktemp("toy") / "model"
    checkpoint.save_models(path, TOY.name, {"generator": (module, variables)})
    return str(path)


def test_api_kinds_in_equal_kinds_out(toy_model_dir):
    model = jaxinpaint.load(toy_model_dir)
    assert model.name == TOY.name and model.kind == "trained" and model.modulo == 8
    image, hole = _photo(), _hole()

    out = model.inpaint(image, hole)  # numpy uint8 RGB, odd size
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert np.any(out[hole] != image[hole])

    pil = model.inpaint(Image.fromarray(image), Image.fromarray(hole.astype(np.uint8) * 255))  # PIL in, PIL out
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (34, 21)
    np.testing.assert_array_equal(np.asarray(pil), out)

    grey = image[..., 0]
    g = model.inpaint(Image.fromarray(grey), hole)
    assert g.mode == "L"
    np.testing.assert_array_equal(np.asarray(g)[~hole], grey[~hole])
    g2 = model.inpaint(grey, hole)
    assert g2.shape == grey.shape and g2.dtype == np.uint8

    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 77, np.uint8)], -1)
    r = model.inpaint(Image.fromarray(rgba, "RGBA"), hole)
    assert r.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(r)[..., 3], 77)  # alpha kept
    np.testing.assert_array_equal(np.asarray(r)[~hole], rgba[~hole])

    f = image.astype(np.float32) / 255
    fo = model.inpaint(f, hole.astype(np.float32))  # float in [0, 1] in, float out
    assert fo.dtype == np.float32 and 0.0 <= fo.min() and fo.max() <= 1.0
    np.testing.assert_array_equal(fo[~hole], f[~hole])
    np.testing.assert_allclose(fo[hole], out[hole] / 255.0, atol=1.0 / 255 + 1e-6)

    batch = model.inpaint([image, image[:, ::-1].copy(), _photo(16, 16)],
                          [hole, hole[:, ::-1].copy(), np.ones((16, 16), bool)])
    assert len(batch) == 3 and batch[2].shape == (16, 16, 3)
    np.testing.assert_array_equal(batch[0], out)


@pytest.mark.parametrize("image,mask,message", [
    (np.full((8, 8, 3), 255.0, np.float32), np.zeros((8, 8)), r"float pixels must lie in \[0, 1\].*255"),
    (np.zeros((8, 8, 3), np.uint16), np.zeros((8, 8)), "uint8 or float"),
    (np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8)), "expected"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9)), "does not match"),
    (np.full((8, 8, 3), np.nan, np.float32), np.zeros((8, 8)), "finite"),
])
def test_api_clear_errors(toy_model_dir, image, mask, message):
    from jaxinpaint.inference import InputError

    with pytest.raises(InputError, match=message):
        jaxinpaint.load(toy_model_dir).inpaint(image, mask)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a per-image method"):
        jaxinpaint.load(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither a training workdir .* nor a model directory"):
        jaxinpaint.load(str(tmp_path / "empty"))


def test_registry_refuses_unknown_names_and_kinds():
    with pytest.raises(systems.UnknownNameError, match="unknown system or solver 'os'"):
        systems.get("os")
    with pytest.raises(systems.UnknownNameError, match="unknown module kind"):
        systems.build_module("lama", {"kind": "lama.save_npz"})
    with pytest.raises(systems.UnknownNameError, match="no field"):
        systems.build_module("lama", {"kind": "FFCResNetGenerator", "ngf": 8, "evil": 1})
    spec = systems.module_spec("lama", systems.build_module("lama", {"kind": "FFCResNetGenerator", "ngf": 8}))
    assert spec["kind"] == "lama.FFCResNetGenerator" and spec["ngf"] == 8 and "dtype" not in spec
    assert {"lama", "pconv", "deepfill_v2"} <= set(systems.names("trained"))
    assert "lama_refine" in systems.names("solver")
