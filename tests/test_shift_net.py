"""Shift-Net: parity with the original PyTorch code, the shift and guidance mechanics, masks, schedule, configs,
and the smoke run through the trainer, ``jaxinpaint.load`` and ``predict``.

Parity tolerances (the fixture README's float32 bounds): the generator output <= 1e-4 max abs (measured ~3e-6),
the 768-channel tensor entering the shift block's up-conv and the U-Net blocks' outputs <= 1e-4 relative to their
max |value|, the shift's source indices and the feature-level hole exactly.
"""

import collections
import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import SHARED_REFERENCE, reference_file, run_update
from PIL import Image
from test_torch_pickle import _Storage, _Tensor, _torch_pickle_bytes, _write_torch_zip

import jaxinpaint
from jaxinpaint import config_lib, masks, predict, systems, writers
from jaxinpaint.cli import convert as convert_cli
from jaxinpaint.cli import predict as predict_cli
from jaxinpaint.data import photos
from jaxinpaint.systems import shift_net
from jaxinpaint.systems.shift_net import convert, objective
from jaxinpaint.systems.shift_net import model as sn
from jaxinpaint.train import optim, trainer

FIXTURE = "shiftnet_ngf8_center.npz"


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """XLA without most optimisations for this module (compilation dominates; nothing asserts on speed)."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def nhwc(a):
    return np.asarray(a).transpose(0, 2, 3, 1)


def write_torch_state_dict(path, state_dict):
    """A plain ``torch.save(state_dict)`` zip file (an OrderedDict of float32 tensors), written without torch."""
    tensors, records = collections.OrderedDict(), []
    for i, (key, value) in enumerate(state_dict.items()):
        value = np.ascontiguousarray(value, "<f4")
        strides = tuple(int(s) // 4 for s in value.strides)
        tensors[key] = _Tensor(_Storage(str(i), value.size), 0, value.shape, strides)
        records.append((str(i), value.tobytes()))
    _write_torch_zip(path, _torch_pickle_bytes(tensors), records)


# ----------------------------------------------------------------------------------------------- parity


def test_generator_parity_with_pytorch_through_a_state_dict_file(tmp_path):
    ref = np.load(reference_file(FIXTURE))
    cfg = json.loads(str(ref["config_json"]))
    state_dict = {k: ref[k] for k in ref.files if k.startswith("model.")}
    assert len(state_dict) == cfg["n_state"]
    path = tmp_path / "latest_net_G.pth"
    write_torch_state_dict(path, state_dict)

    assert systems.for_weights(str(path)).name == "shift_net"
    module, variables = convert.load_generator(path)
    g = cfg["define_G"]
    assert (module.ngf, module.input_nc, module.output_nc, module.num_downs) == (
        g["ngf"], g["input_nc"], g["output_nc"], g["num_downs"])
    assert sum(x.size for x in jax.tree.leaves(variables)) == cfg["n_params"]

    out, feats = jax.jit(lambda v, x: module.apply(v, x, return_features=True))(variables, nhwc(ref["input"]))
    assert np.abs(np.asarray(out) - nhwc(ref["output"])).max() <= 1e-4

    # The feature-level hole (torch nearest: pixel 8i) and the shift's sources, exactly.
    flag = np.asarray(feats["flag"])
    np.testing.assert_array_equal(flag, nhwc(ref["shift_mask_feat"]))
    np.testing.assert_array_equal(flag.reshape(flag.shape[0], -1), ref["shift_flag"])
    index = np.asarray(feats["index"])
    sources = np.stack([index[b][ref["shift_flag"][b] == 1] for b in range(index.shape[0])])
    assert sources.shape[1] == cfg["n_hole_positions_feat"][0]
    np.testing.assert_array_equal(sources, ref["shift_src_index"])

    # The tensor entering the shift block's up-conv: [decoder, skip] ++ shifted (3·4ngf channels).
    expected = np.concatenate([nhwc(ref["shift_in"]), nhwc(ref["shift_shifted"])], axis=-1)
    assert feats["shift_out"].shape[-1] == 3 * 4 * g["ngf"]
    assert np.abs(np.asarray(feats["shift_out"]) - expected).max() <= 1e-4 * np.abs(expected).max()
    # act_level<j> is the output of the block whose output is 256/2^j wide: [u_{j+1}, LReLU(e_j)].
    levels = sorted(int(k[len("act_level"):]) for k in ref.files if k.startswith("act_level"))
    assert levels == list(range(2, g["num_downs"]))
    for j in levels:
        want = nhwc(ref[f"act_level{j}"])
        got = np.asarray(feats[f"block_{j}"])
        assert got.shape == want.shape, j
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), f"act_level{j}"

    # `jaxinpaint convert` recognises the file and writes a model directory with the same weights.
    out_dir = tmp_path / "converted"
    assert convert_cli.main([str(path), str(out_dir)]) == 0
    converted = jaxinpaint.load(str(out_dir))
    assert converted.name == "shift_net" and converted.config.inference.hole_fill == "zero"
    jax.tree.map(np.testing.assert_array_equal, converted.network("generator")[1], variables)

    # The same file through the public API: recognised by its keys, composited, known pixels untouched.
    model = jaxinpaint.load(str(path))
    assert model.name == "shift_net" and model.modulo == 2 ** g["num_downs"]
    image = (np.clip(nhwc(ref["image"])[0] * 0.5 + 0.5, 0, 1) * 255).round().astype(np.uint8)
    hole = nhwc(ref["mask_global"])[0, ..., 0] > 0
    result = model.inpaint(image[:200, :230], hole[:200, :230])  # padded to 256 inside
    np.testing.assert_array_equal(result[~hole[:200, :230]], image[:200, :230][~hole[:200, :230]])


def test_full_width_key_list_converts_and_parameter_counts():
    text = reference_file("shiftnet_keys.txt").read_text()
    header = re.search(r"(\d+) parameters", text)
    shapes = {m[1]: tuple(int(d) for d in m[2].split(",") if d.strip())
              for m in re.finditer(r"^(model\.\S+)\t\(([^)]*)\)", text, re.M)}
    state_dict = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    module, variables = convert.load_generator(state_dict)
    n = sum(x.size for x in jax.tree.leaves(variables))
    assert n == int(header[1]) == 54_944_771
    assert module.ngf == 64 and module.num_downs == 8
    # The same count from the config's model, by shape only.
    c = config_lib.get_config("shift_net")
    g = systems.build_module("shift_net", c.generator)
    shapes_g = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, 256, 256, 4))))
    assert sum(x.size for x in jax.tree.leaves(shapes_g)) == 54_944_771
    d = systems.build_module("shift_net", c.discriminator)
    d_vars = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros((1, 120, 120, 3))))
    assert sum(x.size for x in jax.tree.leaves(d_vars["params"])) == 2_766_529
    logits = jax.eval_shape(lambda v: d.apply(v, jnp.zeros((1, 120, 120, 3))), d_vars)
    assert logits.shape == (1, 13, 13, 1)
    assert sorted(d_vars["spectral"]) == [f"conv{i}" for i in range(5)]

    # Leftover or missing keys are refused, naming them.
    with pytest.raises(convert.ConversionError, match="unused key"):
        convert.load_generator({**state_dict, "model.model.1.model.9.weight": np.zeros((2,), np.float32)})
    del state_dict["model.model.3.bias"]
    with pytest.raises(convert.ConversionError, match="missing"):
        convert.load_generator(state_dict)
    with pytest.raises(convert.ConversionError, match="not a Shift-Net generator"):
        convert.load_generator({"model.1.weight": np.zeros((2, 2, 1, 1), np.float32)})
    with pytest.raises(FileNotFoundError, match="latest_net_G.pth"):
        convert.load_generator(SHARED_REFERENCE / "no" / "latest_net_G.pth")


# ------------------------------------------------------------------------------------ shift and guidance


def test_shift_is_a_stop_gradient_gather_matching_the_definition():
    rng = np.random.default_rng(0)
    former = np.maximum(rng.normal(size=(2, 6, 6, 5)), 0).astype(np.float32) + 0.01
    latter = np.maximum(rng.normal(size=(2, 6, 6, 5)), 0).astype(np.float32) + 0.01
    flag = np.zeros((2, 6, 6, 1), np.float32)
    flag[:, 2:4, 1:5] = 1
    shifted, index = sn.shift(jnp.asarray(former), jnp.asarray(latter), jnp.asarray(flag))

    f, lat, hole = former.reshape(2, 36, 5), latter.reshape(2, 36, 5), flag.reshape(2, 36) > 0
    want = np.zeros_like(f)
    for b in range(2):
        known = np.flatnonzero(~hole[b])
        for p in np.flatnonzero(hole[b]):
            cos = lat[b, known] @ f[b, p] / np.sqrt((f[b, p] @ f[b, p]) * np.sum(lat[b, known] ** 2, -1))
            q = known[np.argmax(cos)]
            assert index[b, p] == q
            want[b, p] = lat[b, q]
    np.testing.assert_allclose(np.asarray(shifted).reshape(2, 36, 5), want, rtol=1e-6)

    # Backward: latter receives Wᵀ·g at the copied sources, former nothing through the shift.
    g = rng.normal(size=shifted.shape).astype(np.float32)
    d_former, d_latter = jax.grad(lambda a, b: jnp.sum(sn.shift(a, b, jnp.asarray(flag))[0] * g), (0, 1))(
        jnp.asarray(former), jnp.asarray(latter))
    assert not np.any(np.asarray(d_former))
    want_latter = np.zeros_like(lat)
    gf = g.reshape(2, 36, 5)
    for b in range(2):
        for p in np.flatnonzero(hole[b]):
            want_latter[b, index[b, p]] += gf[b, p]
    np.testing.assert_allclose(np.asarray(d_latter).reshape(2, 36, 5), want_latter, rtol=1e-6)


def test_guidance_surrogate_injects_the_original_gradient():
    rng = np.random.default_rng(1)
    former = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
    flag = jnp.asarray((rng.random((2, 4, 4, 1)) < 0.5).astype(np.float32))
    n = former.size

    mse, _ = objective.guidance(former, flag, target, masked=False)
    grad = jax.grad(lambda f: objective.guidance(f, flag, target, masked=False)[1])(former)
    np.testing.assert_allclose(float(mse), np.mean((np.asarray(former * flag) - np.asarray(target)) ** 2), rtol=1e-6)
    # PyTorch quirk: 2(former·M - target)/N everywhere, not multiplied by M (non-zero outside the hole).
    np.testing.assert_allclose(grad, 2 * (former * flag - target) / n, rtol=1e-6)
    assert np.any(np.asarray(grad)[np.broadcast_to(np.asarray(flag), grad.shape) == 0] != 0)
    # Torch7: masked on both sides, the gradient of the masked MSE (zero outside the hole).
    grad_masked = jax.grad(lambda f: objective.guidance(f, flag, target, masked=True)[1])(former)
    np.testing.assert_allclose(grad_masked, 2 * (former * flag - target * flag) * flag / n, rtol=1e-6)


def test_feature_mask_rules():
    hole = masks.get("shift_net_center")(np.random.default_rng(0), 256, 256)[None, :, :, None].astype(np.float32)
    nearest = np.asarray(sn.feature_mask(jnp.asarray(hole), 32, 32, "nearest"))[0, ..., 0]
    rows, cols = np.nonzero(nearest)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (9, 23, 9, 23)  # cells 8i in [68, 188)
    np.testing.assert_array_equal(nearest, hole[0, ::8, ::8, 0])
    # Torch7: three 4x4/s2/p1 box filters and > 5/16; cell 8 (pixels 64..71, the hole from 68) counts as hole.
    box = np.asarray(sn.feature_mask(jnp.asarray(hole), 32, 32, "box"))[0, ..., 0]
    rows, cols = np.nonzero(box)
    assert (rows.min(), rows.max()) == (8, 23) and np.array_equal(box, box.T)
    with pytest.raises(ValueError, match="mask_rule"):
        sn.feature_mask(jnp.asarray(hole), 32, 32, "bilinear")


# ------------------------------------------------------------------------------------ objective, masks


class _StubG(sn.Generator):
    """The real generator with a fixed output (0.25 everywhere) and feature dict, for exact loss formulas."""

    def __call__(self, x, *, train=False, return_features=False):
        out = jnp.full(x.shape[:3] + (3,), 0.25)
        feats = {"former": jnp.ones((x.shape[0], 2, 2, 1)), "flag": jnp.ones((x.shape[0], 2, 2, 1))}
        return (out, feats) if return_features else out

    def guidance_target(self, x, *, train=False):
        return jnp.zeros((x.shape[0], 2, 2, 1))


def test_losses_on_known_values():
    c = config_lib.get_config("shift_net:smoke")
    c.losses.style = c.losses.content = 0.0
    rng = np.random.default_rng(2)
    image = rng.random((2, 64, 64, 3)).astype(np.float32)
    mask = masks.sample_batch(masks.get("shift_net_center"), rng, 2, 64, 64)
    box = np.stack([shift_net.prepare_example({"image": image[i], "mask": mask[i]}, c, train=True)["box"]
                    for i in range(2)])
    np.testing.assert_array_equal(box, [[17, 17], [17, 17]])  # the centre hole's corner (64/4 + 1)
    batch = {"image": jnp.asarray(image), "mask": jnp.asarray(mask), "box": jnp.asarray(box)}

    class StubD(sn.Discriminator):
        def __call__(self, x, *, train=False):
            return jnp.full((x.shape[0], 3, 3, 1), 0.5)

    modules = {"generator": _StubG(), "discriminator": StubD()}
    variables = {"generator": {"params": {}}, "discriminator": {"params": {}}}
    total, metrics, _, _ = run_update(objective.generator_update, modules, variables, batch, c)
    real = 2 * image - 1
    crop = real[:, 17:47, 17:47]
    i = np.arange(30)
    discount = np.maximum(0.9 ** np.minimum(i, 30 - i)[:, None], 0.9 ** np.minimum(i, 30 - i)[None, :])
    expected = {"l1": np.mean(np.abs(0.25 - real)),
                "hole_l1": np.mean(np.abs(0.25 - crop) * discount[None, :, :, None]),
                "adversarial": np.log1p(np.exp(-0.5)), "guidance": 1.0}
    for name, value in expected.items():
        assert float(metrics[name]) == pytest.approx(value, rel=1e-5), name
    assert float(total) == pytest.approx(100 * expected["l1"] + 400 * expected["hole_l1"]
                                         + 0.2 * expected["adversarial"], rel=1e-5)  # guidance: gradient only
    d_loss, d_metrics, _, _ = run_update(objective.discriminator_update, modules, variables, batch, c)
    assert float(d_loss) == pytest.approx(0.5 * (np.log1p(np.exp(-0.5)) + np.log1p(np.exp(0.5))), rel=1e-5)

    # Inputs: RGB in [-1, 1] with the hole zeroed (or CE's mean colour) ++ the known-pixel channel.
    x = np.asarray(objective.generator_input(batch))
    np.testing.assert_allclose(x[..., :3], real * (1 - mask), atol=1e-6)
    np.testing.assert_array_equal(x[..., 3:], 1 - mask)
    x = np.asarray(objective.generator_input(batch, "mean_colour"))
    np.testing.assert_allclose(x[0, 30, 30, :3], 2 * np.array([117, 104, 123]) / 255 - 1, atol=1e-6)


def test_masks_registered_with_their_statistics():
    rng = np.random.default_rng(0)
    center = masks.get("shift_net_center")(rng, 256, 256)
    rows, cols = np.nonzero(center)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (68, 188, 68, 188)
    for _ in range(50):  # rect: a 120² square with its corner in [4, 124)
        rect = masks.get("shift_net_rect")(rng, 256, 256)
        rows, cols = np.nonzero(rect)
        assert rect.sum() == 120 * 120 and 4 <= rows.min() < 124 and 4 <= cols.min() < 124
    stats = masks.hole_ratio_stats(masks.get("shift_net_rect"), 64, 50)
    assert stats["mean"] == stats["max"] == pytest.approx(30 * 30 / 64**2)
    # The island pattern: < 0.25 after bilinear smoothing of a 21x21 uniform grid leaves ~11 % holes on
    # average (the 20-30 % window is rarely met in the two draws the original allows).
    stats = masks.hole_ratio_stats(masks.get("shift_net_island"), 256, 300)
    assert 0.09 < stats["mean"] < 0.13 and stats["max"] < 0.35
    with pytest.raises(ValueError, match="overlap_frac"):
        masks.get("shift_net_center", overlap_frac=0.3)


def test_lambda_schedule_per_epoch():
    base = optim.optimizer_config("adam", 2e-4)
    lr = optim.learning_rate(shift_net.lambda_schedule(base, niter=30, niter_decay=0, steps_per_epoch=10))
    assert float(lr(0)) == pytest.approx(2e-4) and float(lr(289)) == pytest.approx(2e-4)
    assert float(lr(290)) == 0.0  # the 30th epoch trains at lr 0 (the +1 of Shift-Net's rule)
    # The pre-2018-12 defaults: niter 20, niter_decay 100: epoch e at 1 - max(0, e + 2 - 20) / 101.
    lr = optim.learning_rate(shift_net.lambda_schedule(base, niter=20, niter_decay=100, steps_per_epoch=3))
    for epoch in (0, 18, 19, 60, 119):
        for step in (3 * epoch, 3 * epoch + 2):
            assert float(lr(step)) == pytest.approx(2e-4 * (1 - max(0, epoch + 2 - 20) / 101), rel=1e-6, abs=1e-12)


def test_configs():
    c = config_lib.get_config("shift_net")
    assert (c.losses.l1, c.losses.hole_l1, c.losses.adversarial, c.losses.style, c.losses.content,
            c.losses.guidance) == (100, 400, 0.2, 10, 1, 1)
    assert (c.g_optimizer.lr, c.g_optimizer.b1, c.g_optimizer.b2, c.input.batch_size) == (2e-4, 0.5, 0.999, 1)
    assert c.total_steps == 30 * 14_900 and c.input.mask.name == "shift_net_center" and c.input.mask.per_batch
    c.steps_per_epoch = 100  # total_steps follows, as a command-line override would
    assert c.total_steps == 3000
    nets = shift_net.networks(c)
    assert nets["generator"].optimizer.boundaries == (0, 2900) and nets["generator"].optimizer.scales == (1.0, 0.0)
    random = config_lib.get_config("shift_net:random")
    assert random.input.mask.name == "shift_net_island" and not random.losses.local
    t7 = config_lib.get_config("shift_net:torch7")
    assert t7.inference.hole_fill == "mean_colour" and t7.generator.mask_rule == "box"
    assert (t7.discriminator.norm, t7.discriminator.use_sn, t7.losses.guidance_masked) == ("batch", False, True)
    assert ml_collections.ConfigDict(t7.to_dict()).to_json()
    with pytest.raises(ValueError, match="unknown config variant"):
        config_lib.get_config("shift_net:big")


# ------------------------------------------------------------------------------------------ end to end


def predict_real_photos(model_dir, tmp_path, sizes=((61, 75), (47, 90))):
    """``python -m jaxinpaint.predict`` on odd-sized crops of real photos: known pixels byte-identical."""
    indir, outdir = tmp_path / "photos", tmp_path / "inpainted"
    indir.mkdir()
    expected = {}
    for i, ((h, w), src) in enumerate(zip(sizes, photos.builtin_photo_paths("all"))):
        rgb = np.asarray(Image.open(src).convert("RGB"))[:h, :w]
        hole = np.zeros((h, w), bool)
        hole[h // 4:h // 4 + h // 3, w // 3:w // 3 + w // 4] = True
        Image.fromarray(rgb).save(indir / f"p{i}.png")
        Image.fromarray(hole.astype(np.uint8) * 255).save(indir / f"p{i}_mask.png")
        expected[f"p{i}_mask.png"] = (predict_cli.load_rgb8(str(indir / f"p{i}.png")), hole)
    assert predict.main([f"--model={model_dir}", f"--input_dir={indir}", f"--output_dir={outdir}"]) == 0
    for name, (rgb, hole) in expected.items():
        out = np.asarray(Image.open(outdir / name))
        assert out.shape == rgb.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[~hole], rgb[~hole])
        assert np.any(out[hole] != rgb[hole])


def test_smoke_training_loss_falls_then_load_and_predict(tmp_path):
    c = config_lib.get_config("shift_net:smoke")
    c.generator.update({"ngf": 4, "num_downs": 5})
    c.discriminator.update({"ndf": 4, "n_layers": 2})  # two stride-2 layers fit the 15² hole patch
    c.input.update({"image_size": 32, "batch_size": 8, "num_workers": 0})
    c.losses.local_size = 15
    c.total_steps, c.log_every_steps, c.ckpt_every_steps, c.image_every_steps = 12, 1, 12, 12
    workdir = tmp_path / "run"
    state = trainer.train_and_evaluate(c, str(workdir))
    assert int(state.step) == 12
    rows = [r for r in writers.read_jsonl(workdir / "metrics.jsonl") if "g/total" in r]
    terms = ["g/l1", "g/hole_l1", "g/adversarial", "g/style", "g/content", "g/guidance", "d/bce"]
    assert all(np.isfinite(r[t]) for r in rows for t in terms)
    first, last = np.mean([r["g/l1"] for r in rows[:3]]), np.mean([r["g/l1"] for r in rows[-3:]])
    assert last < first, (first, last)
    # PyTorch-style spectral norm: u and v of every D conv are state (advanced by every train-mode call).
    spectral = state.nets["discriminator"].state["spectral"]
    assert sorted(spectral) == [f"conv{i}" for i in range(c.discriminator.n_layers + 2)]
    assert all(np.linalg.norm(np.asarray(v["u"])) == pytest.approx(1.0, rel=1e-5) for v in spectral.values())

    model = jaxinpaint.load(str(workdir))
    assert model.name == "shift_net" and model.modulo == 32
    predict_real_photos(str(workdir), tmp_path)
    assert os.listdir(workdir / "checkpoints") == ["12"]
