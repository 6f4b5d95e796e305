"""PConv U-Net: the model (systems/pconv/model.py), its objective (objective.py) and config.

Model variables are filled with numpy on the ``eval_shape`` tree (``model.init`` compiles threefry
initialisers for seconds on the 2-core CPU); the end-to-end test goes through the real trainer and inference.
"""

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import run_update
from jax import lax

import jaxinpaint
from jaxinpaint import config_lib, losses, writers
from jaxinpaint.backbones import vgg
from jaxinpaint.layers import PartialConv2D
from jaxinpaint.systems.pconv import objective as pconv
from jaxinpaint.systems.pconv.model import IMAGENET_STD, PConvUNet, encoder_kernel_size
from jaxinpaint.train import trainer

TINY = dict(layer_size=6, width=4)  # 64 px inputs; widths 4, 8, 16, 32, 32, 32


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """XLA without most optimisations for this module (restored afterwards), as the Flax example tests do.

    Compiling the threefry initialisers and the train step dominates these tests; unoptimised, it is about
    6x cheaper on the 2-core CPU, and nothing here asserts on speed.
    """
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _random_variables(model, x, seed=0):
    """Well-scaled random variables with non-trivial BatchNorm statistics, filled with numpy."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            bound = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
            return rng.uniform(-bound, bound, leaf.shape).astype(np.float32)
        if "var" in name or "scale" in name:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, jax.random.key(0), x))


def _hole_mask(n, size, seed=0):
    """(n, size, size, 1) float masks, 1 = hole: one random rectangle per image, about a quarter of it."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        y, x = rng.integers(0, size // 2, 2)
        mask[i, y:y + size // 2, x:x + size // 2] = 1.0
    return mask


def _batch(n=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 1, (n, size, size, 3)).astype(np.float32)
    return {"image": image, "mask": _hole_mask(n, size, seed)}


# ----------------------------------------------------------------------------------------------------------
# Model.
# ----------------------------------------------------------------------------------------------------------


def test_param_tree_shapes_and_published_sizes():
    model = PConvUNet(**TINY)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 6)))["params"]
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert sorted(shapes) == sorted([f"enc_{i}" for i in range(1, 7)] + [f"dec_{i}" for i in range(1, 7)])
    # Kernels 7, 5, 5, 3...; widths 4·2^i capped at 8·4; no conv bias (BatchNorm follows) but in dec_1.
    assert shapes["enc_1"] == {"conv": {"kernel": (7, 7, 3, 4)}}  # no BatchNorm on the first layer
    assert shapes["enc_2"]["conv"] == {"kernel": (5, 5, 4, 8)}
    assert shapes["enc_3"]["conv"] == {"kernel": (5, 5, 8, 16)}
    assert shapes["enc_4"]["conv"] == {"kernel": (3, 3, 16, 32)}
    assert shapes["enc_6"]["conv"] == {"kernel": (3, 3, 32, 32)}
    assert shapes["enc_6"]["bn"] == {"scale": (32,), "bias": (32,)}
    assert shapes["dec_6"]["conv"] == {"kernel": (3, 3, 64, 32)}  # up(enc_6) ++ enc_5
    assert shapes["dec_4"]["conv"] == {"kernel": (3, 3, 32 + 16, 16)}
    assert shapes["dec_2"]["conv"] == {"kernel": (3, 3, 8 + 4, 4)}
    assert shapes["dec_1"] == {"conv": {"kernel": (3, 3, 4 + 3, 3), "bias": (3,)}}  # linear output layer
    assert [encoder_kernel_size(i) for i in range(1, 9)] == [7, 5, 5, 3, 3, 3, 3, 3]

    # Any multiple of 2**layer_size; the full models have the published sizes (naoto0804's 256² net and the
    # paper's 8+8-layer 512² net, mask convolutions not counted as they have no parameters).
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), jnp.zeros((2, 128, 192, 6))),
                                             jnp.zeros((2, 128, 192, 6))))
    assert out.shape == (2, 128, 192, 3) and out.dtype == jnp.float32
    for layer_size, size, count in ((7, 256, 25_779_796), (8, 512, 32_859_732)):
        full = PConvUNet(layer_size=layer_size)
        tree = jax.eval_shape(full.init, jax.random.key(0), jnp.zeros((1, size, size, 6)))["params"]
        assert sum(a.size for a in jax.tree.leaves(tree)) == count


def test_bad_inputs_are_clear_errors():
    model = PConvUNet(**TINY)
    with pytest.raises(ValueError, match="multiples of 2\\*\\*layer_size = 64"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 96, 6)))
    with pytest.raises(ValueError, match="image \\+\\+ valid mask"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 5)))


def _max_pool_mask(mask, kernel):
    """Where a stride-2 window (zero padding kernel//2) of ``mask`` holds a valid pixel."""
    pad = kernel // 2
    return lax.reduce_window(mask, 0.0, lax.max, (1, kernel, kernel, 1), (1, 2, 2, 1),
                             ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def test_mask_path_shrinks_holes_and_ignores_hole_pixels():
    model = PConvUNet(**TINY)
    batch = _batch(n=2, size=64)
    batch["mask"][1] = 0.0
    batch["mask"][1, 4:60, 4:60] = 1.0  # a big hole: it needs several layers to close
    x = pconv.generator_input(batch)
    variables = _random_variables(model, x)

    def run(inp):
        return model.apply(variables, inp, mutable=["intermediates"],
                           capture_intermediates=lambda mdl, _: isinstance(mdl, PartialConv2D))

    run = jax.jit(run)
    out, inter = run(x)
    inter = inter["intermediates"]
    valid = np.asarray(x[..., 3:4])
    hole_fractions = [1.0 - valid.mean(axis=(1, 2, 3))]
    for i in range(1, 7):
        new = np.asarray(inter[f"enc_{i}"]["conv"]["__call__"][0][1])
        assert new.shape[-1] == model.width * 2 ** min(i - 1, 3)  # NVIDIA multi-channel: one per output
        np.testing.assert_array_equal(new[..., :1], _max_pool_mask(valid, encoder_kernel_size(i)))
        valid = new[..., :1]
        hole_fractions.append(1.0 - valid.mean(axis=(1, 2, 3)))
    hole_fractions = np.array(hole_fractions)  # (layers + 1, batch)
    assert np.all(np.diff(hole_fractions, axis=0) <= 0)
    assert hole_fractions[0, 1] > 0.7 and 0 < hole_fractions[2, 1] < hole_fractions[0, 1]
    assert hole_fractions[-1, 0] == 0 and hole_fractions[-1, 1] == 0  # closed at the bottleneck
    # The last layer's mask is all valid: every output pixel is predicted.
    assert np.all(np.asarray(inter["dec_1"]["conv"]["__call__"][0][1]) == 1)

    # Values under the hole never reach the network, at the first layer nor anywhere after it.
    noise = np.random.default_rng(1).uniform(-5, 5, batch["image"].shape).astype(np.float32)
    perturbed = np.asarray(x).copy()
    perturbed[..., :3] = np.where(batch["mask"] > 0, noise, batch["image"])
    out2, inter2 = run(jnp.asarray(perturbed))
    inter2 = inter2["intermediates"]
    np.testing.assert_array_equal(np.asarray(inter2["enc_1"]["conv"]["__call__"][0][0]),
                                  np.asarray(inter["enc_1"]["conv"]["__call__"][0][0]))
    np.testing.assert_array_equal(np.asarray(out2), np.asarray(out))
    # ... while a known pixel does change the output.
    perturbed[0, 0, 0, :3] += 0.5
    assert not np.array_equal(np.asarray(run(jnp.asarray(perturbed))[0]), np.asarray(out))


def _stats(tree, prefix):
    return {k: v for k, v in tree.items() if k.startswith(prefix)}


def test_freeze_encoder_bn_keeps_encoder_statistics_in_train_mode():
    batch = _batch(n=4, size=64)
    x = pconv.generator_input(batch)
    before = _random_variables(PConvUNet(**TINY), x)
    results = {}
    for freeze in (False, True):
        model = PConvUNet(**TINY, freeze_encoder_bn=freeze)
        out, new = jax.jit(lambda v, inp: model.apply(v, inp, train=True, mutable=["batch_stats"]))(before, x)
        results[freeze] = (np.asarray(out), jax.tree.map(np.asarray, new["batch_stats"]))
    old = jax.tree.map(np.asarray, before["batch_stats"])
    frozen_stats, live_stats = results[True][1], results[False][1]
    for name in _stats(old, "enc_"):
        np.testing.assert_array_equal(frozen_stats[name]["bn"]["mean"], old[name]["bn"]["mean"])
        np.testing.assert_array_equal(frozen_stats[name]["bn"]["var"], old[name]["bn"]["var"])
        assert not np.allclose(live_stats[name]["bn"]["mean"], old[name]["bn"]["mean"])
    for name in _stats(old, "dec_"):  # the decoder keeps training its statistics
        assert not np.allclose(frozen_stats[name]["bn"]["mean"], old[name]["bn"]["mean"])
    assert not np.allclose(results[True][0], results[False][0])  # running vs batch statistics


# ----------------------------------------------------------------------------------------------------------
# Objective.
# ----------------------------------------------------------------------------------------------------------


pconv_config = config_lib.load_module("pconv_unet")


def _loss_cfg(**overrides):
    """A config with only the losses section (what the objective reads)."""
    cfg = pconv_config.pconv_losses()
    cfg.vgg_weights = "random"
    cfg.vgg_width_divisor = 8
    cfg.update(overrides)
    return ml_collections.ConfigDict({"losses": cfg})


class _FixedOutput(nn.Module):
    """A stand-in generator whose raw output is a given array."""

    value: Any

    @nn.compact
    def __call__(self, x, *, train=False):
        return jnp.asarray(self.value, jnp.float32)


def _loss(cfg, raw, batch, frozen=None):
    frozen = pconv.frozen_networks(cfg) if frozen is None else frozen
    total, metrics, _, _ = run_update(pconv.generator_update, {"generator": _FixedOutput(np.asarray(raw))},
                                      {"generator": {"params": {}}}, batch, cfg, frozen=frozen)
    return total, metrics


def test_generator_input_flips_polarity_and_outputs_composite():
    batch = _batch(n=2, size=32)
    x = np.asarray(pconv.generator_input(batch))
    assert x.shape == (2, 32, 32, 6)
    np.testing.assert_array_equal(x[..., 3:], np.broadcast_to(1.0 - batch["mask"], (2, 32, 32, 3)))
    np.testing.assert_array_equal(x[..., :3], batch["image"] * (1.0 - batch["mask"]))
    raw = np.full((2, 32, 32, 3), 1.7, np.float32)
    out = pconv.outputs(jnp.asarray(raw), batch)
    assert set(out) == {"raw", "pred", "composite"}
    np.testing.assert_array_equal(out["pred"], 1.0)  # clipped for display / inference
    np.testing.assert_array_equal(out["raw"], raw)  # the losses see the linear output
    hole = batch["mask"] > 0
    np.testing.assert_array_equal(np.asarray(out["composite"])[~hole[..., 0]], batch["image"][~hole[..., 0]])
    np.testing.assert_array_equal(np.asarray(out["composite"])[hole[..., 0]], 1.0)


def test_loss_terms_on_known_values():
    batch = _batch(n=2, size=32)
    image, mask = batch["image"], batch["mask"]
    frac = mask.mean()
    inv_std = np.mean(1.0 / np.asarray(IMAGENET_STD))
    cfg = _loss_cfg()

    # Perfect output: every term but TV is exactly 0; the total is the weighted sum.
    total, m = _loss(cfg, image, batch)
    assert set(m) == set(pconv.LOSS_TERMS)
    for name in ("valid", "hole", "perceptual", "style"):
        assert float(m[name]) == 0.0, name
    np.testing.assert_allclose(float(m["tv"]), float(losses.total_variation(image=image / np.asarray(
        IMAGENET_STD, np.float32))), rtol=1e-6)
    np.testing.assert_allclose(float(total), 0.1 * float(m["tv"]), rtol=1e-6)

    # +delta inside the hole only: hole L1 = delta·hole fraction (÷ std in ImageNet space), valid 0.
    delta = 0.25
    _, m = _loss(cfg, image + delta * mask, batch)
    assert float(m["valid"]) == 0.0
    np.testing.assert_allclose(float(m["hole"]), delta * frac * inv_std, rtol=1e-5)
    _, m_unit = _loss(_loss_cfg(pixel_loss_space="unit"), image + delta * mask, batch)
    np.testing.assert_allclose(float(m_unit["hole"]), delta * frac, rtol=1e-5)
    # ... and outside it: valid L1 and no change to the composite-only TV term.
    _, m = _loss(_loss_cfg(pixel_loss_space="unit"), image + delta * (1 - mask), batch)
    assert float(m["hole"]) == 0.0
    np.testing.assert_allclose(float(m["valid"]), delta * (1 - frac), rtol=1e-5)
    np.testing.assert_allclose(float(m["tv"]), float(losses.total_variation(image=image)), rtol=1e-6)
    total, m = _loss(_loss_cfg(), image + delta * (1 - mask) - 0.1 * mask, batch)
    weights = {"valid": 1.0, "hole": 6.0, "perceptual": 0.05, "style": 120.0, "tv": 0.1}
    np.testing.assert_allclose(float(total), sum(w * float(m[k]) for k, w in weights.items()), rtol=1e-6)


def test_tv_on_a_ramp_and_hole_only_variant():
    ramp = np.broadcast_to(np.arange(32, dtype=np.float32)[None, None, :, None] / 64, (2, 32, 32, 3)).copy()
    batch = {"image": ramp, "mask": _hole_mask(2, 32)}
    _, m = _loss(_loss_cfg(pixel_loss_space="unit", perceptual=0.0, style=0.0), ramp, batch)
    np.testing.assert_allclose(float(m["tv"]), 1 / 64, rtol=1e-5)  # horizontal steps only
    _, m = _loss(_loss_cfg(perceptual=0.0, style=0.0, tv_hole_only=True), ramp, batch)
    expected = losses.total_variation(image=ramp / np.asarray(IMAGENET_STD, np.float32), mask=batch["mask"])
    np.testing.assert_allclose(float(m["tv"]), float(expected), rtol=1e-6)
    assert 0 < float(m["tv"]) < np.mean(1 / np.asarray(IMAGENET_STD)) / 64


def test_perceptual_and_style_use_output_and_composite():
    batch = _batch(n=2, size=32)
    image, mask = batch["image"], batch["mask"]
    cfg = _loss_cfg()
    frozen = pconv.frozen_networks(cfg)
    extractor = vgg.Model(width_divisor=8)
    feats = lambda img: [extractor.apply(frozen["vgg"], jnp.asarray(img))[t] for t in vgg.PCONV_TAPS]  # noqa

    # A change in the valid region only: the composite equals the ground truth; only the output terms count.
    raw = image + 0.3 * (1 - mask)
    _, m = _loss(cfg, raw, batch, frozen)
    np.testing.assert_allclose(float(m["perceptual"]), float(losses.perceptual_l1(
        fake_features=feats(raw), real_features=feats(image))), rtol=1e-5)
    np.testing.assert_allclose(float(m["style"]), float(losses.style_loss(
        fake_features=feats(raw), real_features=feats(image))), rtol=1e-5)
    assert float(m["perceptual"]) > 0 and float(m["style"]) > 0

    # A change in the hole: output and composite are the same image, so each term doubles.
    raw = image + 0.3 * mask
    _, m = _loss(cfg, raw, batch, frozen)
    np.testing.assert_allclose(float(m["perceptual"]), 2 * float(losses.perceptual_l1(
        fake_features=feats(raw), real_features=feats(image))), rtol=1e-5)
    np.testing.assert_allclose(float(m["style"]), 2 * float(losses.style_loss(
        fake_features=feats(raw), real_features=feats(image))), rtol=1e-5)


def test_frozen_networks_and_missing_weights(tmp_path):
    assert set(pconv.frozen_networks(_loss_cfg())) == {"vgg"}
    assert pconv.frozen_networks(_loss_cfg(perceptual=0.0, style=0.0)) == {}
    params = pconv.random_vgg_variables(width_divisor=8)["params"]
    assert params["conv3_3"]["kernel"].shape == (3, 3, 32, 32) and "conv4_1" not in params
    missing = str(tmp_path / "vgg16.pth")
    with pytest.raises(FileNotFoundError, match="config.losses.vgg_weights.*vgg16.pth.*lpips"):
        pconv.frozen_networks(_loss_cfg(vgg_weights=missing, vgg_width_divisor=1))
    with pytest.raises(FileNotFoundError, match="config.losses.vgg_weights is empty"):
        pconv.frozen_networks(_loss_cfg(vgg_weights="", vgg_width_divisor=1))
    with pytest.raises(ValueError, match="vgg_width_divisor"):
        pconv.frozen_networks(_loss_cfg(vgg_weights=missing))
    not_vgg = tmp_path / "other.npz"
    np.savez(not_vgg, **{"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match="config.losses.vgg_weights.*other.npz.*not a torchvision vgg16"):
        pconv.frozen_networks(_loss_cfg(vgg_weights=str(not_vgg), vgg_width_divisor=1))
    with pytest.raises(ValueError, match="pixel_loss_space"):
        _loss(_loss_cfg(pixel_loss_space="rgb", perceptual=0.0, style=0.0), np.zeros((1, 32, 32, 3)),
              _batch(1, 32))


# ----------------------------------------------------------------------------------------------------------
# Config and the trainer end to end.
# ----------------------------------------------------------------------------------------------------------


def test_configs():
    c = pconv_config.get_config()
    assert (c.system, c.generator.kind) == ("pconv", "PConvUNet") and "discriminator" not in c
    assert (c.losses.valid, c.losses.hole, c.losses.perceptual, c.losses.style, c.losses.tv) == (
        1.0, 6.0, 0.05, 120.0, 0.1)
    assert c.g_optimizer.lr == 2e-4 and c.input.batch_size == 16 and c.generator.layer_size == 7
    assert not c.generator.freeze_encoder_bn
    f = pconv_config.get_config("finetune")
    assert f.g_optimizer.lr == 5e-5 and f.generator.freeze_encoder_bn
    n = pconv_config.get_config("finetune,nvidia_masks")
    assert n.input.mask.name == "folder" and n.input.mask.kwargs.invert and n.generator.freeze_encoder_bn
    n.lock()
    n.input.mask.kwargs.root = "/data/irregular_mask"  # an override on the locked config works
    s = pconv_config.get_config("smoke")
    assert s.input.image_size % 2 ** s.generator.layer_size == 0 and s.losses.vgg_weights == "random"
    with pytest.raises(ValueError, match=r"unknown config variant.*'big'"):
        pconv_config.get_config("smoke,big")


def test_train_end_to_end_then_inpaint(tmp_path):
    c = pconv_config.get_config("smoke")
    c.generator.layer_size, c.generator.width = 5, 4
    c.losses.vgg_width_divisor = 8
    c.input.image_size, c.input.batch_size, c.input.num_workers = 32, 8, 0
    c.total_steps, c.log_every_steps, c.ckpt_every_steps, c.image_every_steps = 3, 1, 3, 3
    c.eval_every_steps = 0  # the trainer's own tests cover evaluation; it would double the compile time
    workdir = str(tmp_path / "run")
    state = trainer.train_and_evaluate(c, workdir)
    assert int(state.step) == 3 and set(state.nets) == {"generator"}

    rows = [r for r in writers.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "g/total" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        for key in ["g/total"] + [f"g/{t}" for t in pconv.LOSS_TERMS]:
            assert np.isfinite(row[key]), key
        assert row["g/perceptual"] > 0 and row["g/style"] > 0 and row["g/hole"] > 0
        assert "d/total" not in row
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]
    assert list((tmp_path / "run" / "images").glob("samples_*.png"))

    model = jaxinpaint.load(workdir)
    assert model.name == "pconv" and isinstance(model.network("generator")[0], PConvUNet)
    assert model.modulo == 2 ** c.generator.layer_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:25, 12:30] = 255
    result = model.inpaint(image, mask)
    assert result.shape == image.shape and result.dtype == np.uint8
    np.testing.assert_array_equal(result[mask == 0], image[mask == 0])
    assert not np.array_equal(result[mask > 0], image[mask > 0])


def test_config_field_types_are_json_friendly():
    """Model fields come from config kwargs, which the trainer stores as JSON next to the checkpoints."""
    c = pconv_config.get_config()
    kwargs = {k: v for k, v in c.generator.to_dict().items() if k != "kind"}
    assert PConvUNet(**kwargs).size_multiple == 128
    assert ml_collections.ConfigDict(c.to_dict()).to_json()
