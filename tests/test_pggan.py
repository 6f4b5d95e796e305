"""PGGAN: shapes (a 30×30 patch map and one global logit at 256²), both heads sharing the trunk, D loss = the
sum of both heads, G loss weights as configured, the config's documented fields, end to end.

No code or weights of PGGAN exist (systems-more.md §4): the tests check this design against the page.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import inpaint_odd_sized, run_update

import jaxinpaint
from jaxinpaint import config_lib, systems, writers
from jaxinpaint.systems.pggan import model as pggan
from jaxinpaint.systems.pggan import objective
from jaxinpaint.train import trainer


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """XLA without most optimisations for this module (restored afterwards); nothing here times anything."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _config():
    c = config_lib.get_config("configs/pggan.py:smoke")
    c.generator.ngf = c.discriminator.ndf = 4
    c.generator.n_blocks = 2
    c.input.image_size = c.discriminator.input_size = 32
    c.input.mask.kwargs.area, c.input.mask.kwargs.min_size, c.input.mask.kwargs.max_size = 16, 8, 14
    c.input.batch_size = 8
    c.input.num_workers = 0
    return c


def _batch(n=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, size, size, 1), np.float32)
    mask[:, 8:20, 10:24] = 1
    return {"image": jnp.asarray(rng.uniform(size=(n, size, size, 3)), jnp.float32), "mask": jnp.asarray(mask)}


def _nets(config, batch):
    networks = systems.get("pggan").networks(config)
    return ({n: net.module for n, net in networks.items()},
            {n: net.module.init(jax.random.key(i), *net.init_args(batch))
             for i, (n, net) in enumerate(networks.items())})


def test_shapes_at_256():
    g = pggan.Generator()
    x = jnp.zeros((2, 256, 256, 4))
    gv = jax.eval_shape(lambda: g.init(jax.random.key(0), x))
    assert jax.eval_shape(lambda v: g.apply(v, x), gv).shape == (2, 256, 256, 3)
    assert sum(k.startswith("res") and k.endswith("_a") for k in gv["params"]) == 9
    d = pggan.Discriminator()
    img = jnp.zeros((2, 256, 256, 3))
    dv = jax.eval_shape(lambda: d.init(jax.random.key(0), img))
    global_logits, patch_logits = jax.eval_shape(lambda v: d.apply(v, img), dv)
    assert global_logits.shape == (2,) and patch_logits.shape == (2, 30, 30)
    assert sorted(k for k in dv["params"] if k.startswith("global") and not k.endswith("norm")) == [
        "global0", "global1", "global2", "global_fc"]  # 32² trunk output -> 16, 8, 4 -> FC
    with pytest.raises(ValueError, match="input_size"):
        pggan.Discriminator(input_size=96).init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)))


def test_generator_dilations_norms_and_upsampling_are_fields():
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 4))
    outs = {}
    for name, kwargs in {"base": {}, "batch": {"norm": "batch"}, "bilinear": {"upsample": "bilinear"},
                         "dilated": {"dilations": (2,)}}.items():
        g = pggan.Generator(ngf=4, n_blocks=2, **kwargs)
        v = g.init(jax.random.key(0), x)
        outs[name] = np.asarray(g.apply(v, x, train=True, mutable=["batch_stats"])[0] if name == "batch" else
                                g.apply(v, x))
        assert outs[name].shape == (2, 16, 16, 3) and np.abs(outs[name]).max() <= 1
    for name in ("batch", "bilinear", "dilated"):
        assert not np.allclose(outs[name], outs["base"], atol=1e-4), name
    with pytest.raises(ValueError, match="norm"):
        pggan.Generator(ngf=4, n_blocks=1, norm="group").init(jax.random.key(0), x)


def test_both_heads_share_the_trunk():
    d = pggan.Discriminator(input_size=32, ndf=4)
    img = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    v = d.init(jax.random.key(0), img)
    assert [k for k in v["params"] if k.startswith("trunk") and not k.endswith("norm")] == ["trunk0", "trunk1",
                                                                                           "trunk2"]
    grads = [jax.grad(lambda p, i=i: jnp.sum(d.apply({"params": p}, img)[i]))(v["params"]) for i in (0, 1)]
    for i, head in enumerate(("global", "patch")):
        for k in ("trunk0", "trunk1", "trunk2"):
            assert float(jnp.abs(grads[i][k]["kernel"]).sum()) > 0, (head, k)
    assert float(jnp.abs(grads[0]["patch0"]["kernel"]).sum()) == 0  # the global logit ignores the patch head
    assert float(jnp.abs(grads[1]["global_fc"]["kernel"]).sum()) == 0


@pytest.mark.parametrize("gan", ["vanilla", "lsgan"])
def test_discriminator_loss_is_the_sum_of_both_heads(gan):
    config = _config()
    config.losses.gan = gan
    batch = _batch()
    nets, variables = _nets(config, batch)
    g, d = nets["generator"], nets["discriminator"]
    raw = g.apply(variables["generator"], objective.generator_input(batch))
    composite = np.asarray(batch["mask"]) * (np.asarray(raw) + 1) / 2 + (1 - np.asarray(batch["mask"])) * np.asarray(
        batch["image"])
    rg, rp = (np.asarray(a, np.float64) for a in d.apply(variables["discriminator"], batch["image"] * 2 - 1))
    fg, fp = (np.asarray(a, np.float64) for a in d.apply(variables["discriminator"], jnp.asarray(composite) * 2 - 1))
    sp = lambda z: np.log1p(np.exp(z))  # noqa: E731
    if gan == "vanilla":
        head = lambda r, f: np.mean(sp(-r)) + np.mean(sp(f))  # noqa: E731
    else:
        head = lambda r, f: np.mean((r - 1) ** 2) + np.mean(f ** 2)  # noqa: E731
    loss, metrics, _, _ = run_update(objective.discriminator_update, nets, variables, batch, config)
    np.testing.assert_allclose(float(metrics["global"]), head(rg, fg), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["patch"]), head(rp, fp), rtol=1e-4)
    np.testing.assert_allclose(float(loss), head(rg, fg) + head(rp, fp), rtol=1e-4)


def test_generator_loss_weights_as_configured():
    config = _config()
    batch = _batch()
    nets, variables = _nets(config, batch)
    loss, metrics, _, _ = run_update(objective.generator_update, nets, variables, batch, config)
    raw = np.asarray(nets["generator"].apply(variables["generator"], objective.generator_input(batch)))
    np.testing.assert_allclose(float(metrics["l1"]), np.mean(np.abs(raw - (np.asarray(batch["image"]) * 2 - 1))),
                               rtol=1e-5)
    np.testing.assert_allclose(float(loss), 0.995 * metrics["l1"] + 0.0025 * (metrics["global_adv"]
                                                                              + metrics["patch_adv"]), rtol=1e-5)
    config.losses.l1, config.losses.global_adv, config.losses.patch_adv = 2.0, 0.5, 0.0
    loss2, metrics2, _, _ = run_update(objective.generator_update, nets, variables, batch, config)
    np.testing.assert_allclose(float(loss2), 2.0 * metrics2["l1"] + 0.5 * metrics2["global_adv"], rtol=1e-5)


def test_config_documents_every_unverified_choice():
    c = config_lib.get_config("configs/pggan.py")
    assert (c.generator.n_blocks, tuple(c.generator.dilations), c.generator.norm, c.generator.upsample) == (
        9, (1, 2, 4, 8), "instance", "nearest")
    assert (c.losses.l1, c.losses.global_adv, c.losses.patch_adv, c.losses.gan) == (0.995, 0.0025, 0.0025, "vanilla")
    assert (c.discriminator.norm, c.input.image_size, c.g_optimizer.lr, c.g_optimizer.b1) == ("instance", 256, 2e-4,
                                                                                                0.5)
    bad = _config()
    bad.losses.gan = "wgan"
    batch = _batch()
    nets, variables = _nets(bad, batch)
    with pytest.raises(ValueError, match="losses.gan"):
        run_update(objective.generator_update, nets, variables, batch, bad)


def test_train_checkpoint_and_inpaint_end_to_end(tmp_path):
    c = _config()
    c.total_steps = c.ckpt_every_steps = c.image_every_steps = 3
    c.log_every_steps = 1
    c.eval_every_steps = 0
    workdir = tmp_path / "run"
    state = trainer.train_and_evaluate(c, str(workdir))
    assert int(state.step) == 3
    rows = [r for r in writers.read_jsonl(workdir / "metrics.jsonl") if "g/total" in r]
    assert {"g/l1", "g/global_adv", "g/patch_adv", "d/global", "d/patch"} <= set(rows[0])
    assert os.listdir(workdir / "checkpoints") == ["3"]
    model = jaxinpaint.load(str(workdir))
    assert model.name == "pggan" and model.modulo == 4
    image, mask, result = inpaint_odd_sized(model)  # 30x27: not a multiple of the model's size: padded
