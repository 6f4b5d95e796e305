"""Classifier-prior ("hallucination") inpainting, systems-more.md §6: the deep-dream step against a numpy port of
``google/deepdream``'s ``make_step``, the regularisers' gradients against finite differences, fixed known pixels,
determinism, the smoke preset and the command line. Random narrow VGGs at 32-64 px keep it fast.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxinpaint
from conftest import photo_crop
from jaxinpaint.backbones import vgg
from jaxinpaint.cli import predict
from jaxinpaint.systems import hallucination as hal

#: A cheap deep-dream run for the behavioural tests (one compilation shared by them): the smoke preset's random
#: narrow VGG-19, the L2 activation objective at relu2_1, 3 steps per octave.
CHEAP = {"preset": "smoke", "objective": "activation", "layer": "relu2_1", "iterations": 3}


# ------------------------------------------------------------------------------------------------------------
# The ascent step against deep dream's make_step.
# ------------------------------------------------------------------------------------------------------------

_BIAS = np.array([104.0, 116.0, 122.0])  # deep dream's Caffe mean: the clip range is [-bias, 255 - bias]


def _np_make_step(src, grad_of_src, ox, oy, step_size=1.5, clip=True):
    """``google/deepdream: dream.ipynb`` ``make_step`` in numpy, on its (3, H, W) mean-subtracted ``src.data[0]``;
    ``grad_of_src`` plays ``net.forward``/``objective``/``net.backward`` (the gradient at the shifted image)."""
    src = np.roll(np.roll(src, ox, -1), oy, -2)  # apply jitter shift
    g = grad_of_src(src)
    src = src + step_size / np.abs(g).mean() * g  # normalised ascent step
    src = np.roll(np.roll(src, -ox, -1), -oy, -2)  # unshift image
    if clip:
        bias = _BIAS[:, None, None]
        src = np.clip(src, -bias, 255 - bias)
    return src


def _np_masked_step(x, grad_of_x, ox, oy, mask, base, step_size, reg_grad):
    """The design's step (module docstring of the solver) in numpy on (H, W, 3) pixels: deep dream's step with
    the gradient masked to the hole, normalised over the hole's values, and the known pixels reset."""
    rolled = np.roll(np.roll(x, ox, 1), oy, 0)
    g = np.roll(np.roll(grad_of_x(rolled), -ox, 1), -oy, 0) - reg_grad
    g = g * mask
    x = x + step_size / (np.abs(g).sum() / (mask.sum() * 3)) * g
    x = np.clip(x, 0, 255)
    return mask * x + (1 - mask) * base


def _weights(h, w, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 2.0, (h, w, 3))


@pytest.mark.parametrize("ox, oy", [(0, 0), (5, -3), (-7, 11)])
def test_full_hole_step_is_deepdreams_make_step(ox, oy):
    # The objective 1/2 sum w x^2 has gradient w x at the shifted image; w varies over the image, so the roll
    # and unroll matter. With the whole image as hole the design's step is deep dream's step exactly.
    h, w = 12, 16
    rng = np.random.default_rng(1)
    x = rng.uniform(-20, 275, (h, w, 3))  # some values outside [0, 255], so the clip acts
    weights = _weights(h, w)
    w_chw = weights.transpose(2, 0, 1)
    ref = _np_make_step((x - _BIAS).transpose(2, 0, 1), lambda s: w_chw * (s + _BIAS[:, None, None]),
                        ox, oy).transpose(1, 2, 0) + _BIAS

    def score_grad(xr):
        return 0.5 * jnp.sum(jnp.asarray(weights)[None] * xr * xr), jnp.asarray(weights)[None] * xr

    mask = jnp.ones((1, h, w, 1))
    out, _ = hal.ascent_step(jnp.asarray(x[None], jnp.float32), score_grad, lambda x: jnp.zeros_like(x),
                             jnp.asarray([ox, oy]), mask, jnp.zeros((1, h, w, 3)), 1.5)
    np.testing.assert_allclose(np.asarray(out[0]), ref, rtol=1e-5, atol=1e-3)  # float32 vs float64


def test_masked_step_matches_numpy_port():
    h, w = 12, 16
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 255, (h, w, 3))
    mask = np.zeros((h, w, 1))
    mask[3:9, 4:11] = 1
    x = mask * rng.uniform(0, 255, (h, w, 3)) + (1 - mask) * base
    weights = _weights(h, w, seed=3)
    reg = rng.normal(0, 0.3, (h, w, 3))
    ref = _np_masked_step(x, lambda xr: weights * xr, 4, -6, mask, base, 1.5, reg)

    def score_grad(xr):
        return jnp.float32(0), jnp.asarray(weights, jnp.float32)[None] * xr

    out, _ = hal.ascent_step(jnp.asarray(x[None], jnp.float32), score_grad,
                             lambda _: jnp.asarray(reg[None], jnp.float32),
                             jnp.asarray([4, -6]), jnp.asarray(mask[None], jnp.float32),
                             jnp.asarray(base[None], jnp.float32), 1.5)
    np.testing.assert_allclose(np.asarray(out[0]), ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(out[0])[mask[..., 0] == 0], base.astype(np.float32)[mask[..., 0] == 0])


# ------------------------------------------------------------------------------------------------------------
# The regularisers' gradients.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("term", [hal.tv_h, hal.graph_smoothness])
def test_regulariser_gradients_match_finite_differences(term):
    rng = np.random.default_rng(4)
    h, w = 7, 9
    x = rng.uniform(0, 1, (1, h, w, 3)).astype(np.float32)
    mask = np.zeros((1, h, w, 1), np.float32)
    mask[0, 2:5, 3:6] = 1
    f = jax.jit(lambda x: term(x, jnp.asarray(mask)))
    grad = np.asarray(jax.grad(lambda x: term(x, jnp.asarray(mask)))(jnp.asarray(x)))
    eps = 1e-3  # TV is piecewise linear: exact unless a difference changes sign (values differ by >> eps)
    for (i, j) in [(2, 3), (3, 4), (4, 5), (1, 3), (3, 6), (0, 0), (6, 8), (2, 2)]:
        for c in range(3):
            xp, xm = x.copy(), x.copy()
            xp[0, i, j, c] += eps
            xm[0, i, j, c] -= eps
            fd = (float(f(xp)) - float(f(xm))) / (2 * eps)
            np.testing.assert_allclose(grad[0, i, j, c], fd, rtol=2e-2, atol=2e-4, err_msg=f"pixel {(i, j, c)}")
    # Pixels with no neighbour in the hole take no part: exactly zero gradient.
    assert grad[0, 0, 0].tolist() == [0.0, 0.0, 0.0] and grad[0, 6, 8].tolist() == [0.0, 0.0, 0.0]
    assert np.count_nonzero(grad[0, 2:5, 3:6]) > 14  # most hole values move (signs may cancel for a few)


def test_regularisers_of_a_known_image():
    # A hole of one pixel valued 1 among zeros: four pairs touch it, each a difference of 1 in one channel.
    x = np.zeros((1, 3, 3, 3), np.float32)
    x[0, 1, 1, 0] = 1.0
    mask = np.zeros((1, 3, 3, 1), np.float32)
    mask[0, 1, 1] = 1
    assert float(hal.tv_h(jnp.asarray(x), jnp.asarray(mask))) == pytest.approx(4 / 12)
    assert float(hal.graph_smoothness(jnp.asarray(2 * x), jnp.asarray(mask))) == pytest.approx(16 / 12)


# ------------------------------------------------------------------------------------------------------------
# The solver.
# ------------------------------------------------------------------------------------------------------------


def test_known_pixels_never_change_and_same_seed_same_bytes():
    image, mask = photo_crop(64, 1)
    model = jaxinpaint.load("hallucination", seed=3, **CHEAP)
    a = model.inpaint(image, mask)
    info = model.last_info
    b = jaxinpaint.load("hallucination", seed=3, **CHEAP).inpaint(image, mask)
    c = jaxinpaint.load("hallucination", seed=4, **CHEAP).inpaint(image, mask)
    assert np.array_equal(a[mask == 0], image[mask == 0])
    assert np.array_equal(a, b)
    assert not np.array_equal(a[mask > 0], c[mask > 0])  # the jitter comes from the seed
    assert info["objective"].shape == (6,)  # 2 octaves (64, 46 px) x 3 steps
    assert info["score_end"] > info["score_start"]  # the ascent raises the activation's energy


def test_solve_keeps_known_values_exactly_at_every_octave():
    image, mask = photo_crop(64, 1)
    config = jaxinpaint.api._solver_config(hal.SOLVER, CHEAP)
    variables = hal.load_resources(config)
    x = jnp.asarray(image[None] / 255.0, jnp.float32)
    m = jnp.asarray(mask[None, ..., None], jnp.float32)
    # The program the previous test compiled (same settings), called directly.
    pred, _ = jaxinpaint.api._jitted_solve(hal.SOLVER, config)(variables, x, m, jax.random.key(0))
    known = mask == 0
    # Known pixels are reset to their values after every step (not only composited at the end).
    np.testing.assert_allclose(np.asarray(pred[0])[known], np.asarray(x[0])[known], atol=1e-6)
    assert np.abs(np.asarray(pred[0])[~known] - np.asarray(x[0])[~known]).max() > 0.05


def test_logit_objective_smoke():
    image, mask = photo_crop(64, 1)
    model = jaxinpaint.load("hallucination", preset="smoke", octaves=1, iterations=3, jitter=0)
    out = model.inpaint(image, mask)
    info = model.last_info
    assert 0 <= int(info["class_index"]) < 1000
    assert info["score_end"] > info["score_start"]  # the class logit goes up
    np.testing.assert_allclose(info["score"][0], info["score_start"], rtol=1e-4)  # unjittered, from the fill
    assert np.array_equal(out[mask == 0], image[mask == 0])


def test_octave_sizes_follow_deepdream_and_drop_small_octaves():
    config = hal.default_config()
    assert hal.octave_sizes(224, 300, config, 19) == [(81, 109), (114, 153), (160, 214), (224, 300)]
    # 64 px: 64 / 1.4^3 = 23 px is below the logits' 32 px minimum; deep dream's other octaves remain.
    assert hal.octave_sizes(64, 64, config, 19) == [(33, 33), (46, 46), (64, 64)]
    config.objective = "activation"
    config.layer = "relu2_1"
    assert hal.min_side(config, 19) == 2
    with pytest.raises(ValueError, match="minimum"):
        hal.octave_sizes(16, 16, hal.default_config(), 19)


def test_missing_weights_error_names_the_file_and_the_url(tmp_path):
    with pytest.raises(ValueError, match="vgg19-dcbb9e9d.pth"):
        jaxinpaint.load("hallucination")
    missing = tmp_path / "vgg19.pth"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*vgg19-dcbb9e9d.pth"):
        jaxinpaint.load("hallucination", weights=str(missing))
    with pytest.raises(ValueError, match="unknown preset"):
        jaxinpaint.load("hallucination", preset="huge")


def test_classifier_head_matches_numpy():
    # Adaptive pooling to 7x7 (torch's bins, repeating cells of a 2x2 map) and torch's (C, H, W) flatten order.
    variables = vgg.random_classifier_variables(depth=16, width_divisor=16, num_classes=10, seed=5)
    net = vgg.Classifier(depth=16, width_divisor=16, num_classes=10, taps=("pool5",))
    x = jnp.asarray(np.random.default_rng(6).uniform(0, 1, (1, 64, 80, 3)), jnp.float32)
    logits, taps = net.apply(variables, x)
    p5 = np.asarray(taps["pool5"][0], np.float64)  # (2, 2, 32)
    pooled = np.zeros((7, 7, p5.shape[-1]))
    for i in range(7):
        for j in range(7):
            a, b = (i * 2) // 7, -((-(i + 1) * 2) // 7)
            c, d = (j * 2) // 7, -((-(j + 1) * 2) // 7)
            pooled[i, j] = p5[a:b, c:d].mean(axis=(0, 1))
    h = pooled.transpose(2, 0, 1).reshape(-1)
    params = variables["params"]
    for name in ("fc6", "fc7", "fc8"):
        h = h @ params[name]["kernel"] + params[name]["bias"]
        if name != "fc8":
            h = np.maximum(h, 0)
    np.testing.assert_allclose(np.asarray(logits[0]), h, rtol=1e-4, atol=1e-4)


def test_classifier_weights_need_the_whole_torchvision_model():
    sd = {}
    for index, (cin, cout) in zip(vgg.torchvision_conv_indices(16), vgg._conv_channels(16)):
        sd[f"features.{index}.weight"] = np.zeros((cout, cin, 3, 3), np.float32)
        sd[f"features.{index}.bias"] = np.zeros((cout,), np.float32)
    with pytest.raises(ValueError, match="conv trunk only.*vgg19-dcbb9e9d"):
        vgg.classifier_variables_from_torchvision(sd, source="trunk.pth")
    # A head of the wrong width is refused naming the layer (the full 4096-wide head is 120M values: not built here).
    for index, shape in ((0, (16, 25088)), (3, (16, 16)), (6, (10, 16))):
        sd[f"classifier.{index}.weight"] = np.zeros(shape, np.float32)
        sd[f"classifier.{index}.bias"] = np.zeros(shape[0], np.float32)
    with pytest.raises(ValueError, match=r"classifier.0 has weight \(16, 25088\).*fc6"):
        vgg.classifier_variables_from_torchvision(sd, source="narrow.pth")


def test_predict_cli_on_a_real_photo(tmp_path):
    image, mask = photo_crop(64, 1)
    Image.fromarray(image).save(tmp_path / "i.png")
    Image.fromarray(mask * 255).save(tmp_path / "m.png")
    options = [f"--option={k}={v}" for k, v in CHEAP.items()]
    outs = []
    for name in ("a.png", "b.png"):
        assert predict.main(["--model=hallucination", f"--image={tmp_path / 'i.png'}", f"--mask={tmp_path / 'm.png'}",
                             f"--output={tmp_path / name}", "--progress=none", *options]) == 0
        outs.append(np.asarray(Image.open(tmp_path / name)))
    assert np.array_equal(outs[0][mask == 0], image[mask == 0])
    assert np.array_equal(outs[0], outs[1])
    # Without weights the method cannot load: a usage error (exit status 2) whose message names the option.
    assert predict.main(["--model=hallucination", f"--image={tmp_path / 'i.png'}", f"--mask={tmp_path / 'm.png'}",
                         f"--output={tmp_path / 'c.png'}"]) == 2
