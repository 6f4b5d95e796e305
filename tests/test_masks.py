"""Tests for jaxinpaint.masks: determinism, shapes, LaMa quirks, hole-area statistics, folders, overrides."""

import pickle

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import masks

REQUIRED_NAMES = (
    "lama_train", "lama_thin_256", "lama_medium_256", "lama_thick_256", "lama_thin_512", "lama_medium_512",
    "lama_thick_512", "deepfill_v2", "center_box", "lama_thin_bb", "outpainting", "superres",
    "lama_dumb_train", "lama_dumb_eval", "folder",
)
RANDOM_NAMES = tuple(n for n in REQUIRED_NAMES if n not in ("center_box", "lama_dumb_eval", "folder"))
FIXED_NAMES = ("center_box", "lama_dumb_eval")
EVAL_PRESETS = ("lama_thin_256", "lama_medium_256", "lama_thick_256", "lama_thin_512", "lama_medium_512",
                "lama_thick_512")

# data-masks-metrics.md §2.4: (mean, median, p10, p90); None where the doc gives no value.
DOC_STATS = {
    ("lama_train", ()): (0.354, 0.316, 0.104, 0.662),
    ("lama_thin_256", ()): (0.288, 0.302, 0.099, 0.455),
    ("lama_medium_256", ()): (0.242, 0.267, 0.036, 0.392),
    ("lama_thick_256", ()): (0.273, 0.276, 0.099, 0.446),
    ("deepfill_v2", (("box", False),)): (0.154, None, 0.048, 0.263),
    ("deepfill_v2", ()): (0.308, 0.299, 0.221, 0.402),
    ("lama_thin_512", ()): (0.292, 0.301, 0.102, 0.456),
    ("lama_medium_512", ()): (0.279, 0.304, 0.070, 0.458),
    ("lama_thick_512", ()): (0.257, 0.261, 0.068, 0.445),
}


def _draw(gen, seed, n, height, width):
    rng = np.random.default_rng(seed)
    return [gen(rng, height, width) for _ in range(n)]


def _bbox(mask):
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


# --------------------------------------------------------------------------------------------------------
# Registry, determinism, shapes.
# --------------------------------------------------------------------------------------------------------


def test_names_cover_the_required_presets():
    assert set(REQUIRED_NAMES) <= set(masks.names())
    assert masks.names() == sorted(masks.names())


@pytest.mark.parametrize("name", RANDOM_NAMES)
def test_seed_determinism(name):
    gen = masks.get(name)
    a = _draw(gen, 3, 4, 64, 64)
    b = _draw(gen, 3, 4, 64, 64)
    c = _draw(gen, 4, 4, 64, 64)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # Successive draws from one rng differ too (the state advances).
    assert not all(np.array_equal(a[0], x) for x in a[1:])


@pytest.mark.parametrize("name", FIXED_NAMES)
def test_fixed_generators_ignore_the_seed(name):
    gen = masks.get(name)
    assert np.array_equal(_draw(gen, 0, 1, 64, 48)[0], _draw(gen, 99, 1, 64, 48)[0])


@pytest.mark.parametrize("name", RANDOM_NAMES + FIXED_NAMES)
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (80, 48), (32, 32), (7, 5), (1, 1)])
def test_shape_and_dtype(name, size):
    for mask in _draw(masks.get(name), 0, 3, *size):
        assert mask.shape == size
        assert mask.dtype == np.bool_
    if min(size) >= 32:
        assert any(m.any() for m in _draw(masks.get(name), 0, 5, *size))


@pytest.mark.parametrize("name", ["lama_train", "lama_thick_256", "deepfill_v2", "outpainting"])
def test_generators_pickle(name):
    gen = masks.get(name)
    clone = pickle.loads(pickle.dumps(gen))
    assert np.array_equal(_draw(gen, 5, 1, 64, 64)[0], _draw(clone, 5, 1, 64, 64)[0])


def test_rng_and_size_validation():
    gen = masks.get("lama_train")
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        gen(np.random.RandomState(0), 64, 64)
    with pytest.raises(ValueError, match="height must be a positive int"):
        gen(np.random.default_rng(0), 0, 64)
    with pytest.raises(ValueError, match="width must be a positive int"):
        gen(np.random.default_rng(0), 64, 6.5)


def test_sample_batch_layout():
    batch = masks.sample_batch(masks.get("lama_train"), np.random.default_rng(0), 3, 40, 56)
    assert batch.shape == (3, 40, 56, 1) and batch.dtype == np.float32
    assert set(np.unique(batch)) <= {0.0, 1.0} and batch.sum() > 0
    with pytest.raises(ValueError, match="batch_size"):
        masks.sample_batch(masks.get("lama_train"), np.random.default_rng(0), 0, 40, 56)


# --------------------------------------------------------------------------------------------------------
# Overrides and validation.
# --------------------------------------------------------------------------------------------------------


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown mask generator 'nope'.*center_box.*lama_train"):
        masks.get("nope")


def test_unknown_override_lists_valid_parameters():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) bogus.*max_width"):
        masks.get("lama_thick_256", bogus=1)
    with pytest.raises(ValueError, match="has no parameters"):
        masks.get("center_box", size=3)


def test_invalid_override_value_names_the_field():
    with pytest.raises(ValueError, match=r"lama_train.*IrregularMask\.max_times"):
        masks.get("lama_train", max_times=-1)  # below min_times - 1 = 0
    with pytest.raises(ValueError, match=r"BoxMask\.bbox_max_size"):
        masks.get("lama_train", bbox_max_size=5)
    with pytest.raises(ValueError, match=r"MixedMask\.choices"):
        masks.get("lama_train", irregular_proba=0.0, box_proba=0.0)
    with pytest.raises(ValueError, match=r"IrregularMask\.draw_method"):
        masks.get("lama_train", draw_method="spline")


def test_overrides_change_the_output():
    base, wide = masks.get("lama_thick_256"), masks.get("lama_thick_256", max_width=50)
    a, b = _draw(base, 0, 20, 64, 64), _draw(wide, 0, 20, 64, 64)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_mixed_probabilities():
    # Boxes only, exactly one box: every mask is one solid rectangle inside the 10 px margin.
    for mask in _draw(masks.get("lama_train", irregular_proba=0.0, box_min_times=1, box_max_times=1), 0, 50,
                      64, 64):
        top, bottom, left, right = _bbox(mask)
        assert mask.sum() == (bottom - top) * (right - left)
        assert top >= 10 and left >= 10 and bottom <= 54 and right <= 54
    # Irregular only: strokes are (almost) never rectangles at 256 px.
    strokes = _draw(masks.get("lama_train", box_proba=0.0), 0, 50, 256, 256)
    rects = sum(m.sum() == np.prod(np.subtract(_bbox(m)[1::2], _bbox(m)[::2])) for m in strokes)
    assert rects < 3
    # The default is a 50/50 mix: with one box, about half of the masks are single rectangles.
    mixed = _draw(masks.get("lama_train", box_min_times=1, box_max_times=1), 0, 300, 256, 256)
    share = np.mean([m.sum() == np.prod(np.subtract(_bbox(m)[1::2], _bbox(m)[::2])) for m in mixed])
    assert 0.38 < share < 0.62


def test_invert_proba_one_inverts():
    plain = [_draw(masks.get("lama_train"), seed, 1, 48, 48)[0] for seed in range(4)]
    inverted = [_draw(masks.get("lama_train", invert_proba=1.0), seed, 1, 48, 48)[0] for seed in range(4)]
    # Same choice and strokes (the inversion draw comes after the mask), complemented.
    assert all(np.array_equal(~p, q) for p, q in zip(plain, inverted, strict=True))


# --------------------------------------------------------------------------------------------------------
# LaMa quirks.
# --------------------------------------------------------------------------------------------------------


def test_irregular_max_times_off_by_one():
    # min_times = max_times = 0 would always be empty without LaMa's off-by-one: the count is in [0, 1].
    gen = masks.IrregularMask(min_times=0, max_times=0)
    empty = [not m.any() for m in _draw(gen, 0, 60, 64, 64)]
    assert 10 < sum(empty) < 50


def test_irregular_x_uses_sin_and_y_uses_cos():
    # max_angle 1 -> angle 2*pi - 0.01 on the single (even) stroke: each 10 px segment moves y by 9 and x by
    # -1 (LaMa's int truncation of -0.1): near-vertical strokes. With x <-> y swapped they would be flat.
    gen = masks.IrregularMask(max_angle=1, max_len=1, max_width=1, min_times=1, max_times=0)
    tall = 0
    for mask in _draw(gen, 0, 40, 128, 128):
        top, bottom, left, right = _bbox(mask)
        assert right - left <= 7 + 5  # width 5 -> band of 2 * 3 + 1 px, plus <= 5 px truncation drift
        tall += (bottom - top) >= 15
    assert tall > 20


def test_irregular_even_stroke_angle_flip():
    # A single stroke has index 0 (even): angles become 2*pi - a, so sin < 0 and x only decreases; long
    # segments then pile up at the left border (clipped to 0), rarely at the right one.
    gen = masks.IrregularMask(max_angle=4, max_len=400, max_width=1, min_times=1, max_times=0)
    masks_ = _draw(gen, 0, 100, 64, 64)
    left = sum(m[:, 0].any() for m in masks_)
    right = sum(m[:, -1].any() for m in masks_)
    assert left > 60 and right < left / 3


# cv2.line(np.zeros((40, 40)), (5, 20), (30, 20), 1, t) from opencv-python-headless 5.0.0: hole rows and the
# first/last hole column of row 20.
CV2_HORIZONTAL = {5: (17, 23, 2, 33), 6: (17, 23, 2, 33), 7: (16, 24, 1, 34), 10: (15, 25, 0, 35),
                  11: (14, 26, 0, 36)}


@pytest.mark.parametrize("thickness", sorted(CV2_HORIZONTAL))
def test_thick_line_matches_cv2_extent(thickness):
    image, draw = masks.base.new_canvas(40, 40)
    masks.base.cv2_like_line(draw, (5, 20), (30, 20), thickness)
    mask = masks.base.as_bool(image)
    rows, cols = np.nonzero(mask[:, 18])[0], np.nonzero(mask[20])[0]
    assert (rows[0], rows[-1], cols[0], cols[-1]) == CV2_HORIZONTAL[thickness]


@pytest.mark.parametrize("method", ["circle", "square"])
def test_irregular_other_draw_methods(method):
    gen = masks.get("lama_train", box_proba=0.0, draw_method=method)
    line = masks.get("lama_train", box_proba=0.0)
    got = _draw(gen, 1, 10, 64, 64)
    assert all(m.any() for m in got)
    assert not all(np.array_equal(a, b) for a, b in zip(got, _draw(line, 1, 10, 64, 64), strict=True))


def test_square_draw_method_is_axis_aligned_squares():
    gen = masks.IrregularMask(max_angle=1, max_len=1, max_width=1, min_times=1, max_times=0,
                              draw_method="square")
    checked = 0
    for mask in _draw(gen, 0, 40, 128, 128):
        if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
            continue  # clipped at a border
        # Squares of side 2 * (5 // 2) = 4 at start points 9 rows apart: every hole row has 4 pixels.
        row_counts = mask.sum(1)
        assert set(np.unique(row_counts)) == {0, 4} and row_counts.sum() % 16 == 0
        checked += 1
    assert checked > 20


def test_box_sizes_inclusive_and_capped():
    gen = masks.BoxMask(margin=10, bbox_min_size=30, bbox_max_size=150, min_times=1, max_times=1)
    sides = np.array([np.subtract(_bbox(m)[1::2], _bbox(m)[::2]) for m in _draw(gen, 0, 1500, 256, 256)])
    assert sides.min() == 30 and sides.max() == 150  # bbox_max_size is reachable (LaMa's + 1)
    # 64 px canvas: capped at H - 2 * margin = 44 (exclusive) and kept inside the margins.
    for mask in _draw(gen, 0, 200, 64, 64):
        top, bottom, left, right = _bbox(mask)
        assert 30 <= bottom - top <= 43 and 30 <= right - left <= 43
        assert min(top, left) >= 10 and max(bottom, right) <= 54


def test_box_tiny_canvas_fallback():
    gen = masks.get("lama_train", irregular_proba=0.0)
    for mask in _draw(gen, 0, 20, 16, 24):
        assert mask.any()


# --------------------------------------------------------------------------------------------------------
# Statistics (data-masks-metrics.md §2.4; loose tolerances).
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,size,n", [
    (("lama_train", ()), 256, 1000),
    (("lama_thin_256", ()), 256, 600),
    (("lama_medium_256", ()), 256, 600),
    (("lama_thick_256", ()), 256, 600),
    (("deepfill_v2", (("box", False),)), 256, 600),
    (("deepfill_v2", ()), 256, 600),
    (("lama_thin_512", ()), 512, 300),
    (("lama_medium_512", ()), 512, 300),
    (("lama_thick_512", ()), 512, 300),
])
def test_hole_ratio_statistics(key, size, n):
    name, kw = key
    gen = masks.get(name, **dict(kw))
    ratios = np.array([m.mean() for m in _draw(gen, 123, n, size, size)])
    mean, median, p10, p90 = DOC_STATS[key]
    assert abs(ratios.mean() - mean) < 0.04
    if median is not None:
        assert abs(np.median(ratios) - median) < 0.06
    assert abs(np.percentile(ratios, 10) - p10) < 0.06
    assert abs(np.percentile(ratios, 90) - p90) < 0.06
    if name in EVAL_PRESETS:
        assert ratios.max() <= 0.5


@pytest.mark.parametrize("name", EVAL_PRESETS)
def test_eval_presets_never_exceed_half(name):
    for size in [(64, 64), (48, 96)]:
        ratios = [m.mean() for m in _draw(masks.get(name), 1, 60, *size)]
        assert max(ratios) <= 0.5 and min(ratios) > 0


def test_out_min_size_keeps_the_area_distribution_on_small_canvases():
    # Eval presets draw at their native 256/512 short side and resize, as LaMa's dataset tool resizes images.
    thick = [m.mean() for m in _draw(masks.get("lama_thick_256"), 0, 300, 64, 64)]
    assert abs(np.mean(thick) - 0.273) < 0.04
    # Training mixes draw at the requested size unless asked (LaMa trains on 256 crops).
    small = [m.mean() for m in _draw(masks.get("lama_train"), 0, 300, 64, 64)]
    native = [m.mean() for m in _draw(masks.get("lama_train", out_min_size=256), 0, 300, 64, 64)]
    assert np.mean(small) > 0.5 and abs(np.mean(native) - 0.354) < 0.05
    wide = masks.get("lama_train", out_min_size=256)(np.random.default_rng(0), 48, 96)
    assert wide.shape == (48, 96)
    with pytest.raises(ValueError, match=r"RescaledMask\.out_min_size"):
        masks.get("lama_train", out_min_size=0)


def test_filter_gives_up_after_the_cap():
    gen = masks.FilteredMask(masks.CenterBox(), variants_n=2, max_tamper_area=0.2, max_attempts=3)
    with pytest.raises(RuntimeError, match=r"6 masks .*max_tamper_area=0.2"):
        gen(np.random.default_rng(0), 64, 64)


# --------------------------------------------------------------------------------------------------------
# DeepFill, Context Encoders and the other LaMa generators.
# --------------------------------------------------------------------------------------------------------


def test_deepfill_box_is_96_to_128_px():
    sides = []
    for mask in _draw(masks.get("deepfill_v2", brush=False), 0, 300, 256, 256):
        top, bottom, left, right = _bbox(mask)
        assert mask.sum() == (bottom - top) * (right - left)
        sides += [bottom - top, right - left]
        assert bottom <= 256 and right <= 256
    assert min(sides) >= 96 and max(sides) <= 128
    assert min(sides) <= 100 and max(sides) >= 124  # the jitter covers its range


def test_center_box_exact():
    mask = masks.get("center_box")(np.random.default_rng(0), 128, 128)
    expected = np.zeros((128, 128), bool)
    expected[32:96, 32:96] = True
    assert np.array_equal(mask, expected) and mask.sum() == 64 * 64
    rect = masks.get("center_box")(np.random.default_rng(0), 40, 60)
    assert _bbox(rect) == (10, 30, 15, 45) and rect.sum() == 20 * 30


def test_outpainting_bands_touch_borders():
    for mask in _draw(masks.get("outpainting"), 0, 100, 64, 80):
        assert mask[:, 0].all() or mask[0].all() or mask[:, -1].all() or mask[-1].all()
        assert 0.0 < mask.mean() < 0.8


def test_superres_is_a_grid():
    for mask in _draw(masks.get("superres"), 0, 30, 32, 48):
        full_rows, full_cols = mask.all(1), mask.all(0)
        assert np.array_equal(mask, full_rows[:, None] | full_cols[None, :])
        assert full_rows.any() and full_cols.any()


def test_dumb_masks():
    central = masks.get("lama_dumb_eval")(np.random.default_rng(0), 256, 256)
    assert abs(central.mean() - 0.225) < 0.01 and _bbox(central) == (67, 189, 67, 189)
    for mask in _draw(masks.get("lama_dumb_train"), 0, 100, 64, 96):
        top, bottom, left, right = _bbox(mask)
        assert mask.sum() == (bottom - top) * (right - left)
        assert 0.09 <= mask.mean() <= 0.36


# --------------------------------------------------------------------------------------------------------
# Mask folders.
# --------------------------------------------------------------------------------------------------------


def _write_masks(folder):
    folder.mkdir(parents=True, exist_ok=True)
    left = np.zeros((20, 30), np.uint8)
    left[:, :15] = 255  # left half white
    top = np.zeros((20, 30), np.uint8)
    top[:10] = 200  # top half light grey (above the 0.5 threshold)
    Image.fromarray(left).save(folder / "a_left.png")
    (folder / "sub").mkdir(exist_ok=True)
    Image.fromarray(top).save(folder / "sub" / "b_top.PNG")
    (folder / "notes.txt").write_text("not an image")


def test_folder_masks_read_binarise_resize_invert(tmp_path):
    _write_masks(tmp_path / "m")
    source = masks.FolderMasks(tmp_path / "m")
    assert [p.name for p in source.files] == ["a_left.png", "b_top.PNG"]
    left = source.load(source.files[0], 40, 60)
    assert left.dtype == np.bool_ and left.shape == (40, 60)
    assert left[:, :30].all() and not left[:, 30:].any()
    top = source.load(source.files[1], 20, 30)
    assert top[:10].all() and not top[10:].any()
    assert not masks.FolderMasks(tmp_path / "m", threshold=0.9).load(source.files[1], 20, 30).any()
    inverted = masks.get("folder", root=str(tmp_path / "m"), invert=True)
    assert isinstance(inverted, masks.FolderMasks)
    assert np.array_equal(inverted.load(source.files[0], 40, 60), ~left)
    # Picks files with the rng: deterministic, and both files get used.
    a, b = _draw(source, 0, 20, 40, 60), _draw(source, 0, 20, 40, 60)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(m[:, 0].all() for m in a) and any(m[0].all() for m in a)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"empty.*holds no image files.*\.png"):
        masks.FolderMasks(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        masks.FolderMasks(tmp_path / "missing")
    with pytest.raises(ValueError, match="root= override"):
        masks.get("folder")
    with pytest.raises(ValueError, match="threshold"):
        masks.FolderMasks(tmp_path / "empty", threshold=2.0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        masks.FolderMasks(bad)(np.random.default_rng(0), 8, 8)
