"""LaMa's high-resolution refinement (jaxinpaint.systems.lama.refine): pyramid operators with torch/kornia/OpenCV
semantics, and the optimisation itself on a tiny random generator (objective decreases, known pixels kept)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint.systems.lama import refine as refinement
from jaxinpaint.systems.lama.model import FFCResNetGenerator


@pytest.fixture(scope="module")
def tiny():
    model = FFCResNetGenerator(ngf=8, n_downsampling=2, n_blocks=1)
    return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 4)))  # one compile, not per op


def smooth_image(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.stack([np.sin(xx / 7.0), np.cos(yy / 9.0), np.sin((xx + yy) / 11.0)], -1) * 0.4 + 0.5
    return (img * 255).astype(np.uint8)


def test_n_scales_formula():
    # 1 + round(max(0, log2(min_side_of_image / 512))), capped at 3.
    assert refinement.n_scales_for(300, 2000) == 1
    assert refinement.n_scales_for(700, 700) == 1  # log2(1.37) = 0.45 rounds to 0
    assert refinement.n_scales_for(800, 900) == 2  # log2(1.56) = 0.64 rounds to 1
    assert refinement.n_scales_for(1024, 1024) == 2
    assert refinement.n_scales_for(2048, 4096) == 3
    assert refinement.n_scales_for(8192, 8192) == 3
    assert refinement.n_scales_for(8192, 8192, max_scales=5) == 5


def test_ellipse_kernel_matches_opencv():
    # cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)) and the row widths of the 15x15 one.
    expected5 = np.array([[0, 0, 1, 0, 0]] + [[1, 1, 1, 1, 1]] * 3 + [[0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(refinement.ellipse_kernel(5), expected5.astype(bool))
    k = refinement.ellipse_kernel(15)
    np.testing.assert_array_equal(k.sum(1), [1, 9, 11, 13, 13, 15, 15, 15, 15, 15, 13, 13, 11, 9, 1])
    np.testing.assert_array_equal(k, k[::-1, ::-1])  # (OpenCV's ellipse is not transpose-symmetric)


def test_resize_matches_torch_bilinear():
    x = np.arange(2 * 6 * 5 * 1, dtype=np.float32).reshape(2, 6, 5, 1)
    # No anti-aliasing (torch's F.interpolate, align_corners=False): samples at (i + 0.5) * in / out - 0.5.
    half = refinement.resize_bilinear(x, (3, 2))
    # Rows: 6 -> 3 gives sources 0.5, 2.5, 4.5; columns: 5 -> 2 gives sources 0.75, 3.25.
    rows = np.array([0.5, 2.5, 4.5])
    cols = np.array([0.75, 3.25])
    expected = (rows[:, None] * 5 + cols[None, :])  # x[n, i, j] = 30 n + 5 i + j is linear, so exact
    np.testing.assert_allclose(half[0, ..., 0], expected, atol=1e-4)
    np.testing.assert_allclose(half[1, ..., 0], expected + 30, atol=1e-4)
    # Enlarging clamps at the borders: a constant stays constant, numpy and JAX agree.
    up_np = refinement.resize_bilinear(x, (13, 11))
    up_jax = np.asarray(refinement.resize_bilinear(jnp.asarray(x), (13, 11)))
    np.testing.assert_allclose(up_np, up_jax, atol=1e-4)
    assert up_np[0, 0, 0, 0] == x[0, 0, 0, 0] and up_np[0, -1, -1, 0] == x[0, -1, -1, 0]


def test_pyrdown_blurs_then_halves():
    rng = np.random.default_rng(0)
    x = rng.random((1, 20, 14, 3)).astype(np.float32)
    y = refinement.pyrdown(x)
    assert y.shape == (1, 10, 7, 3)
    np.testing.assert_allclose(y, np.asarray(refinement.pyrdown(jnp.asarray(x))), atol=1e-6)
    # A constant image is a fixed point (the blur's weights sum to 1, reflect border).
    np.testing.assert_allclose(refinement.pyrdown(np.full((1, 8, 8, 1), 0.3, np.float32)), 0.3, atol=1e-6)
    # Mask levels: round_up keeps any trace of hole; the strict variant only full-hole pixels.
    m = np.zeros((1, 16, 16, 1), np.float32)
    m[0, 4, 4] = 1.0
    assert refinement.pyrdown_mask(m).sum() > 1
    assert refinement.pyrdown_mask(m, blur=False, round_up=False).sum() == 0


def test_erosion_keeps_image_border():
    m = np.zeros((1, 40, 40, 1), np.float32)
    m[0, :, :20] = 1.0  # a hole touching the left border
    e = refinement.erode(m, refinement.ellipse_kernel(15))
    assert e[0, 20, 0, 0] == 1 and e[0, 0, 0, 0] == 1  # the image border does not erode (geodesic)
    assert e[0, 20, 12, 0] == 1 and e[0, 20, 13, 0] == 0  # the inner edge moves 7 px
    assert e[0, 20, 20, 0] == 0


def test_refinement_lowers_objective_and_keeps_known_pixels(tiny):
    model, variables = tiny
    image = smooth_image(96)
    mask = np.zeros((96, 96), bool)
    mask[20:70, 30:80] = True
    config = refinement.RefineConfig(n_scales=2)
    out, result = refinement.refine_inpaint(model, variables, image, mask, config=config)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert result.sizes == [(48, 48), (96, 96)]
    assert result.objectives[0].size == 0  # the coarsest scale is a plain forward pass
    objective = result.objectives[1]
    assert objective.shape == (15,) and np.all(np.isfinite(objective))
    assert objective[-1] < objective[0]
    assert np.all(np.diff(objective) < 0)  # small Adam steps on a smooth objective: monotone here
    # The refined prediction differs from the plain one (the features moved).
    from jaxinpaint import api, config_lib, systems

    config = config_lib.ml_collections.ConfigDict({"system": "lama", "inference": {}})
    plain = api.ModelInpainter(systems.get("lama"), config, {"generator": (model, variables)}).inpaint(image, mask)
    assert np.any(out[mask] != plain[mask])


def test_refinement_reports_progress(tiny):
    # Same settings and sizes as the test above: the cached scale programs are reused, nothing recompiles.
    from jaxinpaint import contract

    class Recorder(contract.ProgressSink):
        def __init__(self):
            self.updates = []

        def update(self, done, total, values):
            self.updates.append((done, total, values["objective"]))

    model, variables = tiny
    image = smooth_image(96)
    mask = np.zeros((96, 96), bool)
    mask[20:70, 30:80] = True
    recorder = Recorder()
    previous = contract.set_progress_sink(recorder)
    try:
        result = refinement.refine(model, variables, image, mask, config=refinement.RefineConfig(n_scales=2))
        jax.effects_barrier()
    finally:
        contract.set_progress_sink(previous)
    # One report per Adam step of the finer scale (14: n_iters - 1; the last forward pass is not a step).
    assert [u[0] for u in recorder.updates] == list(range(1, 15))
    assert {u[1] for u in recorder.updates} == {14}
    np.testing.assert_allclose([u[2] for u in recorder.updates], result.objectives[1][:14], rtol=1e-6)


def test_empty_eroded_hole_is_not_nan(tiny):
    model, variables = tiny
    image = smooth_image(96)
    mask = np.zeros((96, 96), bool)
    mask[40:43, 40:43] = True  # vanishes under the 15x15 erosion at the coarser scale
    out, result = refinement.refine_inpaint(model, variables, image, mask,
                                            config=refinement.RefineConfig(n_scales=2))
    assert np.all(np.isfinite(result.objectives[1]))
    np.testing.assert_array_equal(out[~mask], image[~mask])


def test_pixel_budget_resizes_and_returns_input_size(tiny):
    model, variables = tiny
    image = smooth_image(40)
    mask = np.zeros((40, 40), bool)
    mask[10:25, 5:30] = True
    out, result = refinement.refine_inpaint(model, variables, image, mask,
                                            config=refinement.RefineConfig(px_budget=32 * 32, n_scales=1))
    assert result.sizes == [(32, 32)]
    assert out.shape == (40, 40, 3)
    np.testing.assert_array_equal(out[~mask], image[~mask])


def test_bad_inputs():
    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            return x

    with pytest.raises(TypeError, match="front"):
        refinement.refine(Plain(), {}, np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), bool))
    model = FFCResNetGenerator(ngf=8, n_downsampling=2, n_blocks=1)
    with pytest.raises(ValueError, match="differ in size"):
        refinement.refine(model, {}, np.zeros((64, 64, 3), np.uint8), np.zeros((64, 60), bool))
    with pytest.raises(ValueError, match="coarsest side"):
        refinement.refine(model, {}, np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), bool),
                          config=refinement.RefineConfig(n_scales=5))
    with pytest.raises(ValueError, match="n_iters"):
        refinement.RefineConfig(n_iters=0)
