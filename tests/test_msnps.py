"""MSNPS (systems-more.md §5): mylbfgs, the CNNMRF texture term, the solver end to end, predict.

No reference fixtures exist for MSNPS (Torch7); the optimiser and the texture gradient are checked against
numpy transliterations of ``mylib/myoptimizer.lua`` and ``mylib/mrf.lua`` written here from their
descriptions (the update rule and the gradient formula), and the pipeline end to end on a content network
trained in the test by the trainer (``configs/msnps.py:smoke``, shrunk further) with a random, narrow VGG-19.
"""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxinpaint
from jaxinpaint.systems.context_encoder import model as ce_model
from jaxinpaint.systems.msnps import lbfgs, mrf, solver

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------------
# mylbfgs against a numpy transliteration of myoptimizer.lua's rule.
# ------------------------------------------------------------------------------------------------------------


def numpy_mylbfgs(grad, x, *, max_iter, n_correction, lr=1.0, tol_fun=0.0, tol_x=0.0):
    """The rule of ``mylib/myoptimizer.lua`` in float64, loop for loop; returns the iterate after each
    iteration that took a step (the objective value is 0, as MSNPS's wrapper returns)."""
    g = grad(x)
    if np.abs(g).sum() <= tol_fun:
        return []
    f = f_old = 0.0
    dirs, stps, iterates = [], [], []
    d = t = g_old = None
    hdiag = 1.0
    for n_iter in range(1, max_iter + 1):
        if n_iter == 1:
            d, hdiag = -g, 1.0
        else:
            y, s = g - g_old, d * t
            ys = y @ s
            if ys > 1e-10:
                if len(dirs) == n_correction:
                    dirs.pop(0)
                    stps.pop(0)
                dirs.append(s)
                stps.append(y)
                hdiag = ys / (y @ y)
            k = len(dirs)
            ro = [1.0 / (stps[i] @ dirs[i]) for i in range(k)]
            q, al = -g, [0.0] * k
            for i in range(k - 1, -1, -1):
                al[i] = dirs[i] @ q * ro[i]
                q = q - al[i] * stps[i]
            r = q * hdiag
            for i in range(k):
                be = stps[i] @ r * ro[i]
                r = r + (al[i] - be) * dirs[i]
            d = r
        g_old, f_old = g, f
        if g @ d > -tol_x:
            break
        t = min(1.0, 1.0 / np.abs(g).sum()) * lr if n_iter == 1 else lr
        x = x + t * d
        if n_iter != max_iter:
            g = grad(x)
        iterates.append(x)
        if n_iter == max_iter or np.abs(g).sum() <= tol_fun or np.abs(d * t).sum() <= tol_x or abs(f - f_old) < tol_x:
            break
    return iterates


def _quadratic(n=6, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = q @ np.diag(np.linspace(1.0, 10.0, n)) @ q.T
    b = rng.standard_normal(n)
    return a, b, rng.standard_normal(n)


def test_mylbfgs_iterates_match_the_lua_rule_on_a_quadratic():
    """8 iterations with history 3 (so the history shifts): every iterate within 1e-4 (float32 vs float64)."""
    a, b, x0 = _quadratic()
    expected = numpy_mylbfgs(lambda x: a @ x - b, x0, max_iter=8, n_correction=3)
    assert len(expected) == 8

    def opfunc(x):
        g = jnp.asarray(a, jnp.float32) @ x - jnp.asarray(b, jnp.float32)
        return jnp.zeros(()), g, {"f": 0.5 * x @ (a @ x) - b @ x}

    x, info = jax.jit(lambda x0: lbfgs.minimize(opfunc, x0, lbfgs.LBFGSConfig(max_iter=8, history=3), trace_x=True)
                      )(jnp.asarray(x0, jnp.float32))
    got = np.asarray(info["x"])
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(x), expected[-1], atol=1e-4)
    # The first step is the scaled one: min(1, 1/|g|_1) * -g.
    g0 = a @ x0 - b
    np.testing.assert_allclose(got[0], x0 - min(1.0, 1.0 / np.abs(g0).sum()) * g0, rtol=1e-5, atol=1e-6)
    assert int(info["n_iter"]) == 8
    f = np.asarray(info["aux"]["f"])
    assert f[-1] < f[0]  # the objective went down (not asserted monotone: no line search)


def test_mylbfgs_skips_pairs_that_fail_the_curvature_test():
    """A concave quadratic: every pair has y.s < 0, so the history stays empty and Hdiag 1 (plain -g steps)."""
    a, b, x0 = _quadratic(n=5, seed=2)
    a = -a
    expected = numpy_mylbfgs(lambda x: a @ x - b, x0, max_iter=4, n_correction=25)

    def opfunc(x):
        return jnp.zeros(()), jnp.asarray(a, jnp.float32) @ x - jnp.asarray(b, jnp.float32), {}

    _, info = lbfgs.minimize(opfunc, jnp.asarray(x0, jnp.float32), lbfgs.LBFGSConfig(max_iter=4), trace_x=True)
    np.testing.assert_allclose(np.asarray(info["x"]), np.stack(expected), rtol=1e-4, atol=1e-4)
    g1 = a @ expected[0] - b
    np.testing.assert_allclose(expected[1], expected[0] - g1, rtol=1e-12)  # d = -g, t = 1: no history was kept


def test_mylbfgs_stops_like_the_original():
    a, b, x0 = _quadratic(seed=1)
    # A zero gradient at the start: returns at once (tol_fun 0, sum|g| <= 0).
    xstar = np.linalg.solve(a, b).astype(np.float32)

    def opfunc(x):
        return jnp.zeros(()), jnp.zeros_like(x), {}

    x, info = lbfgs.minimize(opfunc, jnp.asarray(xstar), lbfgs.LBFGSConfig(max_iter=5))
    np.testing.assert_array_equal(np.asarray(x), xstar)
    assert int(info["n_iter"]) == 0
    # tol_fun large enough to stop after the first step; the numpy rule stops at the same place.
    expected = numpy_mylbfgs(lambda x: a @ x - b, x0, max_iter=10, n_correction=25, tol_fun=5.0)
    x, info = lbfgs.minimize(lambda x: (jnp.zeros(()), jnp.asarray(a, jnp.float32) @ x - jnp.asarray(b, jnp.float32),
                                        {}),
                             jnp.asarray(x0, jnp.float32), lbfgs.LBFGSConfig(max_iter=10, tol_fun=5.0))
    assert int(info["n_iter"]) == len(expected) < 10
    np.testing.assert_allclose(np.asarray(x), expected[-1], atol=1e-4)


# ------------------------------------------------------------------------------------------------------------
# The texture term.
# ------------------------------------------------------------------------------------------------------------


def numpy_mrf_gradient(feat, targets, ys, xs, index, confident, strength):
    """``mrf.lua``'s backward: gradTO += target - source over each confident patch, / (count + 1e-10),
    times -strength."""
    k = targets.shape[1]
    grad_to = np.zeros(feat.shape, np.float64)
    count = np.zeros(feat.shape[:2], np.float64) + 1e-10
    for y, x, i, c in zip(ys, xs, index, confident):
        if c:
            grad_to[y:y + k, x:x + k] += targets[i] - feat[y:y + k, x:x + k]
            count[y:y + k, x:x + k] += 1
    return -strength * grad_to / count[..., None]


def _features(seed, shape):
    rng = np.random.default_rng(seed)
    return np.maximum(rng.standard_normal(shape), 0.0).astype(np.float32) + 0.01  # ReLU-like, no zero patch


def test_mrf_matching_is_normalised_cross_correlation():
    feat = _features(0, (9, 10, 4))
    targets = np.asarray(mrf.target_patches([jnp.asarray(_features(1, (8, 8, 4))),
                                             jnp.asarray(_features(2, (7, 9, 4)))], 3, 2))
    # Grids with the last row/column added: 8 -> 0,2,4,5 and 7 -> 0,2,4; 9 -> 0,2,4,6.
    assert targets.shape == (4 * 4 + 3 * 4, 3, 3, 4)
    ys, xs = mrf.patch_origins(9, 10, 3, 2)
    assert list(mrf.grid(9, 3, 2)) == [0, 2, 4, 6] and list(mrf.grid(10, 3, 2)) == [0, 2, 4, 6, 7]
    index, confident = mrf.match(jnp.asarray(feat), jnp.asarray(targets), ys, xs, 0.0)
    src = np.stack([feat[y:y + 3, x:x + 3].ravel() for y, x in zip(ys, xs)]).astype(np.float64)
    tgt = targets.reshape(len(targets), -1).astype(np.float64)
    ncc = (src @ tgt.T) / np.linalg.norm(src, axis=1)[:, None] / np.linalg.norm(tgt, axis=1)[None]
    np.testing.assert_array_equal(np.asarray(index), ncc.argmax(axis=1))
    assert np.asarray(confident).all()
    # A threshold above every correlation leaves no confident patch (and a zero gradient).
    _, none = mrf.match(jnp.asarray(feat), jnp.asarray(targets), ys, xs, 1.01)
    assert not np.asarray(none).any()


def test_mrf_gradient_is_the_originals_formula_and_the_loss_derivative():
    feat = _features(3, (9, 10, 4))
    targets = mrf.target_patches([jnp.asarray(_features(4, (8, 8, 4)))], 3, 2)
    ys, xs = mrf.patch_origins(9, 10, 3, 2)
    index, confident = mrf.match(jnp.asarray(feat), targets, ys, xs, 0.0)
    confident = confident.at[3].set(False)  # one unconfident patch: it must not contribute or count
    weights = mrf.coverage_weights(feat.shape[:2], ys, xs, 3, confident)
    strength = 1e-4

    def loss(f):
        return mrf.mrf_loss(f, targets[index], ys, xs, confident, weights, strength)

    grad = np.asarray(jax.grad(loss)(jnp.asarray(feat)))
    expected = numpy_mrf_gradient(feat, np.asarray(targets), ys, xs, np.asarray(index), np.asarray(confident),
                                  strength)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-12)
    # Central differences of the (quadratic) loss at a few coordinates.
    rng = np.random.default_rng(5)
    for _ in range(4):
        pos = tuple(int(rng.integers(0, s)) for s in feat.shape)
        e = np.zeros_like(feat)
        e[pos] = 1e-1
        fd = (float(loss(jnp.asarray(feat + e))) - float(loss(jnp.asarray(feat - e)))) / 2e-1
        np.testing.assert_allclose(fd, expected[pos], rtol=2e-2, atol=1e-9)


def test_tv_gradient_is_tv_lua():
    """``mylib/tv.lua``'s backward: differences over the top-left (H-1)x(W-1) pixels only, times the weight."""
    x = np.random.default_rng(9).standard_normal((1, 6, 7, 3)).astype(np.float32)
    xd = x[:, :-1, :-1] - x[:, :-1, 1:]
    yd = x[:, :-1, :-1] - x[:, 1:, :-1]
    expected = np.zeros_like(x)
    expected[:, :-1, :-1] += xd + yd
    expected[:, :-1, 1:] -= xd
    expected[:, 1:, :-1] -= yd
    np.testing.assert_allclose(np.asarray(jax.grad(solver.total_variation)(jnp.asarray(x))), expected,
                               rtol=1e-5, atol=1e-6)
    # The Caffe preprocessing: BGR, x256, minus the mean; and back.
    rgb = np.array([[[0.2, 0.5, 0.9]]], np.float32)
    np.testing.assert_allclose(solver.to_caffe(rgb)[0, 0], [0.9 * 256 - 103.939, 0.5 * 256 - 116.779,
                                                            0.2 * 256 - 123.68], rtol=1e-6)
    np.testing.assert_allclose(solver.from_caffe(solver.to_caffe(rgb)), rgb, atol=1e-6)


def test_torch_image_scale_and_rotate():
    from jaxinpaint.systems.msnps import torch_image

    def along_width(values, n):
        x = np.asarray(values, np.float32)[None, :, None]
        return torch_image.scale(x, (1, n))[0, :, 0]

    # Enlarging: corners aligned (position d * 3 / 6).
    np.testing.assert_allclose(along_width([0, 1, 2, 3], 7), [0, 0.5, 1, 1.5, 2, 2.5, 3], atol=1e-6)
    # Shrinking: area averages with fractional ends, 5 -> 2: [0, 2.5) and [2.5, 5).
    x = [1.0, 2.0, 4.0, 8.0, 16.0]
    np.testing.assert_allclose(along_width(x, 2), [(1 + 2 + 0.5 * 4) / 2.5, (0.5 * 4 + 8 + 16) / 2.5], rtol=1e-6)
    np.testing.assert_allclose(along_width([0, 1, 2, 3], 2), [0.5, 2.5], atol=1e-6)
    np.testing.assert_array_equal(along_width(x, 5), x)
    img = np.random.default_rng(10).random((6, 5, 3)).astype(np.float32)
    both = torch_image.scale(img, (3, 9))
    np.testing.assert_allclose(both, torch_image.scale(torch_image.scale(img, (6, 9)), (3, 9)), atol=1e-6)
    assert torch_image.scale_longer_side(img, 8).shape == (8, 6, 3)  # int(5 * 8 / 6) = 6
    # Rotation by 0: odd width 5 -> xc = 2.5, a half-pixel shift (mean of columns i-1 and i), column 0 blank.
    r = torch_image.rotate(img, 0.0)
    np.testing.assert_allclose(r[:-1, 1:], 0.5 * (img[:-1, :-1] + img[:-1, 1:]), atol=1e-6)
    assert not r[:, 0].any() and not r[-1].any()
    # A quarter turn of a square even image moves pixels exactly (up to the blank border).
    sq = np.random.default_rng(11).random((6, 6, 1)).astype(np.float32)
    q = torch_image.rotate(sq, np.pi / 2)
    j, i = 2, 2  # samples (cos*(i-3) - sin*(j-3), cos*(j-3) + sin*(i-3)) + 3 = (4, 2): column 4, row 2
    np.testing.assert_allclose(q[j, i], sq[2, 4], atol=1e-5)
    assert not q[1, 2].any()  # would sample column 5, whose right neighbour is outside: blank


def test_texture_augmentation_and_fills():
    image = np.random.default_rng(6).random((40, 48, 3)).astype(np.float32)
    images = mrf.augment(image, num_rotations=1, rotation_step=np.pi / 24, num_scales=1, scale_step=1.05)
    assert len(images) == 9
    # Rotation 0, scale 1: Torch's rotate still zeroes the last row and column (even sizes), nothing else moves.
    np.testing.assert_array_equal(images[4][:-1, :-1], image[:-1, :-1])
    assert not images[4][-1].any() and not images[4][:, -1].any()
    assert max(images[3].shape[:2]) < max(images[4].shape[:2]) < max(images[5].shape[:2])
    # computeBB at 512², worked by hand: the rotated top edge crosses x = 1 at y = 32.4, and the rotated right
    # edge at that height at x = 484.7, so the box is [512 - 484.7, 484.7] x [32.4, 512 - 32.4], floored.
    assert mrf.rotation_box(512, 512, np.pi / 24) == (27, 32, 484, 479)
    assert mrf.rotation_box(48, 40, 0.0) == (1, 1, 48, 40)
    # The row fill reads no hole pixel and writes only hole pixels.
    hole = np.zeros((1, 40, 48, 1), np.float32)
    hole[:, 12:30, 10:40] = 1
    a = solver.fill_rows(image[None], hole)
    b = solver.fill_rows(np.where(hole > 0, 7.0, image[None]), hole)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[hole[..., 0] == 0], image[hole[0, ..., 0] == 0])
    np.testing.assert_array_equal(a[0, 12, 10:40], image[3, 10:40])  # upper half: rows above, shifted by 9


class _StubGenerator:
    """Stands in for the CE generator: records its input, returns a constant 64² prediction of 0.5."""

    fine_size = 128

    def apply(self, variables, x, train=False):
        self.seen = np.asarray(x)
        return jnp.full((x.shape[0], 64, 64, 3), 0.5, jnp.float32)


def test_content_image_geometry_is_the_released_512_paste():
    """run_content_network.lua at 512²: 128² input with the inner [36, 92) mean-filled, the 64² prediction
    upscaled to 256² and its inner 224² pasted at rows/columns [144, 368) (0-based)."""
    image = np.random.default_rng(7).random((1, 512, 512, 3)).astype(np.float32)
    hole = np.zeros((1, 512, 512, 1), np.float32)
    hole[:, 180:330, 180:330] = 1
    stub = _StubGenerator()
    content = solver.content_image(stub, None, 4, np.where(hole > 0, 123.0, image), hole)
    fill = np.asarray(ce_model.MEAN_FILL, np.float32)
    np.testing.assert_allclose(stub.seen[0, 36:92, 36:92], np.broadcast_to(fill, (56, 56, 3)), atol=1e-6)
    assert np.abs(stub.seen).max() <= 1.0  # no hole pixel (123) reached the network
    inside = np.zeros((512, 512), bool)
    inside[144:368, 144:368] = True
    np.testing.assert_allclose(content[0][inside], 0.75, atol=1e-6)  # (0.5 + 1) / 2
    np.testing.assert_allclose(content[0][~inside], image[0][~inside], atol=1e-6)
    assert solver.pyramid_sizes(512, 512, 3) == [(128, 128), (256, 256), (512, 512)]


# ------------------------------------------------------------------------------------------------------------
# End to end: a content network trained by the trainer, then the solver and predict.
# ------------------------------------------------------------------------------------------------------------


def _msnps_config(variant):
    spec = importlib.util.spec_from_file_location("_test_msnps_config", ROOT / "configs" / "msnps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def test_config_is_the_context_encoder_centre_generator_with_builtin_photos():
    c = _msnps_config(None)
    assert c.system == "context_encoder" and c.generator.center_only and c.generator.bottleneck == "fc"
    assert (c.generator.fine_size, c.generator.n_bottleneck, c.inference.overlap) == (128, 4000, 4)
    assert c.input.source == "builtin" and c.losses.wtl2 == 0.999
    smoke = _msnps_config("smoke")
    assert smoke.generator.fine_size == 128 and smoke.generator.nef == 8 and smoke.total_steps <= 60


#: The smoke preset (64 px, no augmentation: ``test_texture_augmentation_and_fills`` covers it) at two scales; the
#: content weight lowered because a random VGG's features have no Caffe scale (20 would dominate the texture).
OPTIONS = dict(vgg_weights="random", vgg_width_divisor=16, preset="smoke", num_scales=2, iterations=10,
               content_weight=1.0)


@pytest.fixture(scope="module")
def content_workdir(tmp_path_factory):
    from jaxinpaint.train import trainer

    c = _msnps_config("smoke")
    c.generator.fine_size = c.input.image_size = 32  # tinier than the smoke config, for the test's time budget
    c.discriminator.input_size = 16
    c.generator.nef = c.generator.ngf = c.discriminator.ndf = 4
    c.input.num_workers = 0
    c.total_steps = c.ckpt_every_steps = c.image_every_steps = 2
    workdir = tmp_path_factory.mktemp("msnps") / "content"
    trainer.train_and_evaluate(c, str(workdir))
    return str(workdir)


def _photo(size=(48, 64)):
    from jaxinpaint.data import photos

    image = photos.load_image(photos.builtin_photo_paths("holdout")[0])
    image = np.asarray(Image.fromarray(image if image.dtype == np.uint8 else
                                       np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)).resize(size[::-1]))
    mask = np.zeros(size, bool)
    mask[size[0] // 4 + 2:3 * size[0] // 4 - 2, size[1] // 4 + 2:3 * size[1] // 4 - 2] = True
    return image, mask


def test_msnps_end_to_end(content_workdir):
    model = jaxinpaint.load("msnps", content_model=content_workdir, **OPTIONS)
    image, mask = _photo()
    out = model.inpaint(image, mask)
    info = model.last_info
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], image[~mask])  # known pixels byte-identical
    assert not np.array_equal(out[mask], image[mask])
    # The content image: the trained generator's centre prediction pasted, the known pixels kept.
    content = info["content"][0]
    np.testing.assert_allclose(content[~mask], image[~mask] / 255.0, atol=1e-6)
    # The 48x64 image's centre half is rows [12, 36), columns [16, 48); the 16² prediction (fine_size 32) is
    # upscaled to 24x32 and pasted without its scaled 4-px overlap ring: rows [18, 30), columns [24, 40).
    fill01 = (np.asarray(ce_model.MEAN_FILL) + 1.0) / 2.0
    np.testing.assert_allclose(content[14:18, 18:46], np.broadcast_to(fill01, (4, 28, 3)), atol=1e-6)  # ring: fill
    assert np.abs(content[18:30, 24:40] - fill01).max() > 1e-3  # the generator's prediction, not the fill
    # Two scales of the 64-px working image (longer side max_size 64): 24x32 then 48x64.
    assert [tuple(int(v) for v in s) for s in info["sizes"]] == [(24, 32), (48, 64)]
    for tex in info["texture_loss"]:
        assert len(tex) == OPTIONS["iterations"] and np.all(np.isfinite(tex))
        assert tex[-1] < 0.95 * tex[0], tex  # the texture (MRF) loss falls at every scale
    # Same seed, same bytes; the output never depends on the hole's pixels.
    again = model.inpaint(np.where(mask[..., None], 255 - image, image), mask)
    np.testing.assert_array_equal(again, out)


def test_msnps_seed_and_errors(content_workdir):
    image, mask = _photo()
    a = jaxinpaint.load("msnps", content_model=content_workdir, seed=1, init="random", **OPTIONS)
    first = a.inpaint(image, mask)
    np.testing.assert_array_equal(a.inpaint(image, mask), first)
    b = jaxinpaint.load("msnps", content_model=content_workdir, seed=2, init="random", **OPTIONS)
    assert not np.array_equal(b.inpaint(image, mask), first)
    with pytest.raises(FileNotFoundError, match="nowhere.npz.*VGG_ILSVRC_19"):
        jaxinpaint.load("msnps", content_model=content_workdir, vgg_weights="/nowhere.npz")
    with pytest.raises(ValueError, match="content_model"):
        jaxinpaint.load("msnps", vgg_weights="random")
    with pytest.raises(TypeError, match="unknown option"):
        jaxinpaint.load("msnps", content_model=content_workdir, vgg_weigths="random")


def test_msnps_switches(content_workdir):
    """The content net's BN mode, the texture fill and the JPEG round trip each change the result, and none
    touches the known pixels."""
    image, mask = _photo()
    base = jaxinpaint.load("msnps", content_model=content_workdir, **OPTIONS).inpaint(image, mask)
    for switch in ({"texture_fill": "content"}, {"jpeg_round_trip": True}):
        out = jaxinpaint.load("msnps", content_model=content_workdir, **OPTIONS, **switch).inpaint(image, mask)
        np.testing.assert_array_equal(out[~mask], image[~mask])
        assert not np.array_equal(out, base), switch
    with pytest.raises(ValueError, match="content_bn"):
        jaxinpaint.load("msnps", content_model=content_workdir, **OPTIONS, content_bn="train")
    # Batch statistics: refused for one image, used for a batch (they differ from the running statistics).
    with pytest.raises(ValueError, match="content_bn='batch' needs several images"):
        jaxinpaint.load("msnps", content_model=content_workdir, **OPTIONS, content_bn="batch").inpaint(image, mask)
    module, variables, overlap = solver.load_content_model(solver.resolve(
        jaxinpaint.load("msnps", content_model=content_workdir, **OPTIONS).config))
    images = np.stack([image, image[::-1]]).astype(np.float32) / 255.0
    holes = np.broadcast_to(mask[None, ..., None], images.shape[:3] + (1,)).astype(np.float32)
    batch = solver.content_image(module, variables, overlap, images, holes, bn="batch")
    running = solver.content_image(module, variables, overlap, images, holes, bn="eval")
    assert batch.shape == images.shape and not np.allclose(batch, running)


def test_predict_command_with_options(content_workdir, tmp_path):
    from jaxinpaint.cli import predict

    image, mask = _photo()
    Image.fromarray(image).save(tmp_path / "photo.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "photo_mask.png")
    out = tmp_path / "out.png"
    argv = ["--model=msnps", f"--image={tmp_path / 'photo.png'}", f"--mask={tmp_path / 'photo_mask.png'}",
            f"--output={out}", "--option", f"content_model={content_workdir}"]
    for key, value in OPTIONS.items():
        argv += ["--option", f"{key}={value}"]
    assert predict.main(argv) == 0
    result = np.asarray(Image.open(out).convert("RGB"))
    np.testing.assert_array_equal(result[~mask], image[~mask])
    assert predict.main(argv[:4] + ["--option", "no_such_key=1"]) == 2
    # --option is for per-image methods only.
    assert predict.main([f"--model={content_workdir}"] + argv[1:4] + ["--option", "iterations=2"]) == 2
    assert predict.parse_options(["iterations=50", "tv_weight=1e-4", "vgg_weights=/a b/c.npz", "init=random",
                                  "jpeg_round_trip=True"]) == {
        "iterations": 50, "tv_weight": 1e-4, "vgg_weights": "/a b/c.npz", "init": "random", "jpeg_round_trip": True}
    with pytest.raises(predict.UsageError, match="KEY=VALUE"):
        predict.parse_options(["iterations"])


# ------------------------------------------------------------------------------------------------------------
# The Caffe VGG-19 reader, on a synthetic caffemodel written with a minimal protobuf encoder.
# ------------------------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob_bytes(array: np.ndarray, *, legacy: bool, packed: bool) -> bytes:
    out = b""
    if legacy:  # num/channels/height/width (the 2014 files)
        dims = list(array.shape) + [1] * (4 - array.ndim) if array.ndim < 4 else list(array.shape)
        if array.ndim == 1:
            dims = [1, 1, 1, array.shape[0]]
        for number, d in zip((1, 2, 3, 4), dims):
            out += _varint(number << 3) + _varint(d)
    else:
        out += _field(7, _field(1, b"".join(_varint(d) for d in array.shape)))
    data = array.astype("<f4").ravel()
    if packed:
        out += _field(5, data.tobytes())
    else:
        out += b"".join(_varint(5 << 3 | 5) + v.tobytes() for v in data)
    return out


def test_caffemodel_reader(tmp_path):
    from jaxinpaint.backbones import vgg
    from jaxinpaint.systems.msnps import caffe_vgg

    rng = np.random.default_rng(8)
    weights = {}
    net = _field(1, b"VGG_ILSVRC_19_layers")
    for i, name in enumerate(vgg.conv_names(19)):
        w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
        b = rng.standard_normal(2).astype(np.float32)
        weights[name] = (w, b)
        legacy = i % 2 == 0  # old V1LayerParameter (field 2: name 4, blobs 6) and new LayerParameter (100: 1, 7)
        blobs = b"".join(_field(6 if legacy else 7, _blob_bytes(a, legacy=legacy, packed=i % 3 != 0)) for a in (w, b))
        layer = _field(4 if legacy else 1, name.encode()) + _varint((5 if legacy else 2) << 3 | (0 if legacy else 2))
        layer += _varint(4) if legacy else _varint(len(b"Convolution")) + b"Convolution"
        net += _field(2 if legacy else 100, layer + blobs)
        net += _field(100, _field(1, name.replace("conv", "relu").encode()))  # a layer without blobs
    fc = rng.standard_normal((4, 8)).astype(np.float32)
    net += _field(100, _field(1, b"fc6") + _field(7, _blob_bytes(fc, legacy=False, packed=True)))
    path = tmp_path / "tiny.caffemodel"
    path.write_bytes(net)
    sd = caffe_vgg.torchvision_state_dict(str(path))
    assert len(sd) == 32
    for name, index in zip(vgg.conv_names(19), vgg.torchvision_conv_indices(19)):
        np.testing.assert_array_equal(sd[f"features.{index}.weight"], weights[name][0])
        np.testing.assert_array_equal(sd[f"features.{index}.bias"], weights[name][1])
    np.testing.assert_array_equal(caffe_vgg.read_layers(str(path))["fc6"][0], fc)
    assert caffe_vgg.main([str(path), str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_array_equal(z["features.0.weight"], weights["conv1_1"][0])
    (tmp_path / "bad.caffemodel").write_bytes(net[:-7])
    with pytest.raises(ValueError, match="bad.caffemodel"):
        caffe_vgg.read_layers(str(tmp_path / "bad.caffemodel"))
