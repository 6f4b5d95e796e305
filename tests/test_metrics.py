"""Tests for jaxinpaint.metrics: LaMa-exact SSIM, PSNR, MAE, hole areas and bucketing."""

import jax
import numpy as np
import pytest
from scipy.signal import correlate

from jaxinpaint import metrics

# LaMa's 1-D window as produced by its own code (saicinpainting/evaluation/losses/ssim.py::_gaussian,
# run with torch 2.13.0): gauss / gauss.sum() in float32.
LAMA_GAUSS_1D = np.array(
    [0.001028380123898387, 0.0075987582094967365, 0.036000773310661316, 0.10936068743467331,
     0.21300552785396576, 0.26601171493530273, 0.21300552785396576, 0.10936068743467331,
     0.036000773310661316, 0.0075987582094967365, 0.001028380123898387],
    dtype=np.float32,
)


def _direct_ssim(x, y, pad_mode="constant"):
    """Obviously-correct float64 SSIM: explicit padding, 2-D correlation with LaMa's window, per channel."""
    w = metrics.gaussian_window().astype(np.float64)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    c1, c2 = 0.01**2, 0.03**2
    scores = []
    for n in range(x.shape[0]):
        maps = []
        for c in range(x.shape[-1]):
            def filt(z):
                return correlate(np.pad(z, 5, mode=pad_mode), w, mode="valid")

            a, b = x[n, :, :, c], y[n, :, :, c]
            mu_a, mu_b = filt(a), filt(b)
            var_a = filt(a * a) - mu_a**2
            var_b = filt(b * b) - mu_b**2
            cov = filt(a * b) - mu_a * mu_b
            maps.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                        / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
        scores.append(np.mean(maps))
    return np.array(scores)


def _pair(rng, shape, noise=0.15):
    x = rng.random(shape, dtype=np.float32)
    y = np.clip(x + noise * rng.standard_normal(shape).astype(np.float32), 0, 1)
    return x, y


def test_gaussian_window_is_bit_identical_to_lamas():
    w = metrics.gaussian_window()
    assert w.shape == (11, 11) and w.dtype == np.float32
    np.testing.assert_array_equal(w, np.outer(LAMA_GAUSS_1D, LAMA_GAUSS_1D))
    np.testing.assert_allclose(w.sum(), 1.0, atol=1e-6)


def test_ssim_matches_direct_implementation_on_random_images():
    rng = np.random.default_rng(0)
    x, y = _pair(rng, (3, 37, 45, 3))
    got = np.asarray(metrics.ssim(x, y))
    assert got.shape == (3,) and got.dtype == np.float32
    np.testing.assert_allclose(got, _direct_ssim(x, y), rtol=0, atol=1e-6)
    # The check discriminates the padding: a reflect-padded SSIM is clearly different on these sizes.
    assert np.abs(_direct_ssim(x, y, pad_mode="reflect") - got).max() > 1e-3


def test_ssim_matches_direct_implementation_on_real_photo_crop():
    from jaxinpaint.data import photos

    try:
        paths = photos.builtin_photo_paths("all")
    except FileNotFoundError as exc:  # pragma: no cover - only without the photo-carrying wheels
        pytest.skip(str(exc))
    path = next((p for p in paths if p.name == "astronaut.png"), paths[0])
    photo = photos.load_image(path)
    x = photo[100:164, 200:264][None].astype(np.float32)
    # A plausible "inpainting": the crop with a blurred, noisy square in the middle.
    rng = np.random.default_rng(1)
    y = x.copy()
    y[:, 16:48, 16:48] = np.clip(x[:, 16:48, 16:48].mean() + 0.05 * rng.standard_normal((1, 32, 32, 3)), 0, 1)
    y = y.astype(np.float32)
    got = np.asarray(metrics.ssim(x, y))
    np.testing.assert_allclose(got, _direct_ssim(x, y), rtol=0, atol=1e-6)
    assert 0.2 < got[0] < 0.95


def test_ssim_matches_values_from_lamas_torch_code():
    # Output of LaMa's SSIM(window_size=11, size_average=False) forward, run with torch 2.13.0 (CPU, one
    # thread) on these exact inputs (numpy's PCG64 stream is stable across versions).
    rng = np.random.default_rng(123)
    x = rng.random((2, 32, 40, 3), dtype=np.float32)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape).astype(np.float32), 0, 1).astype(np.float32)
    torch_values = [0.9513607025146484, 0.9517009854316711]
    np.testing.assert_allclose(np.asarray(metrics.ssim(x, y)), torch_values, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 33, 17, 1), (1, 7, 5, 3), (2, 64, 48, 3)])
def test_ssim_of_identical_images_is_exactly_one(shape):
    # With zero padding the borders have odd local statistics, but numerator and denominator are built
    # from identical terms when a == b, so the map is exactly 1 everywhere.
    x = np.random.default_rng(2).random(shape, dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(metrics.ssim(x, x)), np.ones(shape[0], np.float32))
    np.testing.assert_array_equal(np.asarray(jax.jit(metrics.ssim)(x, x)), np.ones(shape[0], np.float32))


def test_ssim_zero_padding_pulls_border_down():
    # Two constant images: a 'valid' SSIM would be the same at every pixel; with zero padding the
    # border pixels see a smaller mean, so the score differs from the interior value.
    x = np.full((1, 32, 32, 1), 0.6, np.float32)
    y = np.full((1, 32, 32, 1), 0.4, np.float32)
    mu_x, mu_y = 0.6, 0.4
    interior = (2 * mu_x * mu_y + 1e-4) / (mu_x**2 + mu_y**2 + 1e-4)
    got = float(metrics.ssim(x, y)[0])
    assert abs(got - interior) > 1e-3
    # Looser than elsewhere: for flat images sigma^2 = G*(x^2) - mu^2 is pure float32 cancellation noise
    # (~1e-8) divided by C2 = 9e-4, an error LaMa's float32 torch code has too.
    np.testing.assert_allclose(got, _direct_ssim(x, y)[0], atol=1e-4)


def test_psnr_matches_textbook_formula():
    rng = np.random.default_rng(3)
    x, y = _pair(rng, (4, 16, 24, 3), noise=0.05)
    mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(metrics.psnr(x, y)), 10 * np.log10(1.0 / mse), rtol=1e-5)
    # The same images on a 0-255 scale give the same PSNR with max_val=255.
    np.testing.assert_allclose(np.asarray(metrics.psnr(255 * x, 255 * y, max_val=255.0)),
                               10 * np.log10(1.0 / mse), rtol=1e-4)
    # A uniform error of 0.1 is exactly 20 dB.
    z = np.zeros((1, 8, 8, 3), np.float32)
    np.testing.assert_allclose(np.asarray(metrics.psnr(z, z + 0.1)), [20.0], rtol=1e-5)


def test_psnr_identical_is_inf():
    x = np.random.default_rng(4).random((2, 8, 8, 3), dtype=np.float32)
    got = np.asarray(metrics.psnr(x, x))
    assert np.all(np.isposinf(got))


def test_metrics_are_batch_independent():
    rng = np.random.default_rng(5)
    x, y = _pair(rng, (3, 32, 32, 3))
    for fn in (metrics.ssim, metrics.psnr, metrics.mae):
        batch = np.asarray(fn(x, y))
        single = np.array([float(fn(x[i:i + 1], y[i:i + 1])[0]) for i in range(3)])
        np.testing.assert_allclose(batch, single, rtol=1e-6, atol=1e-7)
        # Changing image 2 must not move the scores of images 0 and 1.
        y2 = y.copy()
        y2[2] = 1.0 - y2[2]
        changed = np.asarray(fn(x, y2))
        np.testing.assert_allclose(changed[:2], batch[:2], rtol=1e-6, atol=1e-7)
        assert abs(changed[2] - batch[2]) > 1e-3


def test_metrics_work_under_jit():
    rng = np.random.default_rng(6)
    x, y = _pair(rng, (2, 24, 24, 3))
    mask = (rng.random((2, 24, 24, 1)) > 0.5).astype(np.float32)
    for fn, args in [(metrics.ssim, (x, y)), (metrics.psnr, (x, y)), (metrics.mae, (x, y, mask)),
                     (metrics.hole_area, (mask,))]:
        np.testing.assert_allclose(np.asarray(jax.jit(fn)(*args)), np.asarray(fn(*args)), rtol=1e-6)


def test_mae_plain_and_masked():
    a = np.zeros((3, 2, 2, 3), np.float32)
    b = np.zeros((3, 2, 2, 3), np.float32)
    b[:, 0, 0] = 0.8  # error only in pixel (0, 0)
    np.testing.assert_allclose(np.asarray(metrics.mae(a, b)), [0.2, 0.2, 0.2], rtol=1e-6)
    mask = np.zeros((3, 2, 2), bool)
    mask[0, 0, 0] = True  # hole = the wrong pixel -> error 0.8
    mask[1, 1, 1] = True  # hole = a correct pixel -> error 0
    mask[1, 0, 0] = True  # ... plus the wrong one -> mean 0.4
    # image 2: no hole at all -> 0 by convention
    np.testing.assert_allclose(np.asarray(metrics.mae(a, b, mask)), [0.8, 0.4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(metrics.mae(a, b, mask[..., None].astype(np.float32))),
                               [0.8, 0.4, 0.0], rtol=1e-6)


def test_hole_area():
    mask = np.zeros((2, 4, 5, 1), np.float32)
    mask[0, :2] = 1  # 10 of 20 pixels
    np.testing.assert_allclose(np.asarray(metrics.hole_area(mask)), [0.5, 0.0])
    np.testing.assert_allclose(np.asarray(metrics.hole_area(mask[..., 0] > 0)), [0.5, 0.0])


def test_lama_bucket_offline_and_online_rules():
    area = [0.0, 0.05, 0.1, 0.0999, 0.55, 0.9, 1.0]
    np.testing.assert_array_equal(metrics.lama_bucket(area), [0, 0, 1, 0, 5, 9, 9])
    np.testing.assert_array_equal(metrics.lama_bucket(area, online=True), [0, 0, 0, 0, 5, 8, 9])
    assert metrics.lama_bucket_names() == [f"{10 * i}-{10 * i + 10}%" for i in range(10)]
    with pytest.raises(ValueError, match="lama_bucket"):
        metrics.lama_bucket([1.5])


def test_nvidia_bucket():
    area = [0.0, 0.01, 0.0100001, 0.1, 0.15, 0.6, 0.61, 1.0]
    np.testing.assert_array_equal(metrics.nvidia_bucket(area), [-1, -1, 0, 0, 1, 5, -1, -1])
    assert len(metrics.NVIDIA_BUCKET_NAMES) == len(metrics.NVIDIA_BUCKET_EDGES) - 1 == 6


def test_bad_shapes_give_clear_errors():
    x = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match=r"ssim: .*same shape"):
        metrics.ssim(x, np.zeros((1, 8, 9, 3), np.float32))
    with pytest.raises(ValueError, match=r"psnr: .*4 dims"):
        metrics.psnr(x[0], x[0])
    with pytest.raises(ValueError, match=r"mae: mask"):
        metrics.mae(x, x, np.zeros((1, 8, 8, 3), np.float32))
