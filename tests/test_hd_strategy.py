"""Large photos (IOPaint's HD strategies) through the API: crops around the holes with margin (shifted inside at
the borders, overlapping crops merged, only each group's hole pasted back), or a resized copy; pixels outside
the hole are the input's whatever the strategy. A recording inpainter stands in for a model (no compilation)."""

import numpy as np
import pytest

from jaxinpaint import api, inference


class Recorder(api.Inpainter):
    """Fills the hole with a constant and records the (padded) sizes it was asked for."""

    name = "recorder"
    kind = "trained"

    def __init__(self, value=0.25):
        super().__init__(modulo=8)
        self.value = value
        self.calls = []

    def predict(self, images, holes):
        self.calls.append(images.shape[1:3])
        return np.full_like(images, self.value)


def _photo(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_crop_windows_margin_borders_and_merging():
    hole = np.zeros((400, 600), bool)
    hole[100:120, 100:130] = True  # A: far from the borders
    hole[380:400, 580:600] = True  # B: in the bottom-right corner
    hole[100:110, 160:170] = True  # C: 30 px right of A: their windows overlap, so they share one
    windows = inference.crop_windows(hole, margin=32, round_to=1)
    assert len(windows) == 2
    (a_box, a_pixels), (b_box, b_pixels) = sorted(windows, key=lambda w: w[0])
    assert a_box == (110 - 42, 110 + 42, 135 - 67, 135 + 67)  # the union box of A and C, 32 px margin around
    assert a_pixels.sum() == 20 * 30 + 10 * 10 and not a_pixels[380:, 580:].any()
    assert b_box == (400 - 84, 400, 600 - 84, 600)  # shifted inwards: still 20 + 2 * 32 px of context
    assert b_pixels.sum() == 400
    rounded = inference.crop_windows(hole, margin=32, round_to=64)
    assert all((b - t) % 64 == 0 and (r - left) % 64 == 0 for (t, b, left, r), _ in rounded)


def test_crop_strategy_runs_on_crops_and_keeps_known_pixels():
    image = _photo(300, 1000)
    hole = np.zeros((300, 1000), bool)
    hole[50:80, 40:90] = True
    hole[200:260, 800:900] = True
    model = Recorder()
    out = model.inpaint(image, hole, hd_strategy={"mode": "crop", "crop_trigger": 800, "crop_margin": 16,
                                                   "crop_round": 8})
    assert sorted(model.calls) == [(64, 88), (96, 136)]  # two crops, never the whole photo
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert np.all(out[hole] == int(0.25 * 255))
    model.calls.clear()
    small = model.inpaint(image[:, :700], hole[:, :700], hd_strategy="crop")  # under the trigger: whole photo
    assert model.calls == [(304, 704)] and small.shape == (300, 700, 3)


def test_resize_strategy_runs_on_a_smaller_copy():
    image = _photo(500, 2000)
    hole = np.zeros((500, 2000), bool)
    hole[100:103, 1000:1003] = True  # a tiny hole still has a hole in the 4x smaller copy
    model = Recorder(0.5)
    model.hd_strategy = inference.HDStrategy("resize", resize_limit=500)  # as load(..., hd_strategy=) sets it
    out = model.inpaint(image, hole)
    assert model.calls == [(128, 504)]  # 125 x 500, padded to multiples of 8
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert np.all(np.abs(out[hole].astype(int) - 127) <= 1)
    model.calls.clear()
    model.inpaint(image, hole, hd_strategy="original")
    assert model.calls == [(504, 2000)]


def test_bad_strategies_are_clear_errors():
    with pytest.raises(inference.InputError, match="unknown mode 'tiles'"):
        inference.HDStrategy.of("tiles")
    with pytest.raises(inference.InputError, match="crop_margin must be a non-negative integer"):
        inference.HDStrategy("crop", crop_margin=-1)
    with pytest.raises(inference.InputError, match="unknown field"):
        inference.HDStrategy.of({"mode": "crop", "margin": 3})
    with pytest.raises(inference.InputError):
        api.load("no_such_solver_or_path", hd_strategy="tiles")
