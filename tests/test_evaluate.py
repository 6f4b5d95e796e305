"""Tests for ``jaxinpaint evaluate``, ``jaxinpaint make_eval_set`` and LaMa's integral scores."""

import json
import warnings

import numpy as np
import pytest
from conftest import reference_file
from PIL import Image

from jaxinpaint import metrics
from jaxinpaint.backbones import inception
from jaxinpaint.cli import evaluate
from jaxinpaint.cli import make_eval_set as make_eval_set_cli
from jaxinpaint.data import images as image_io
from jaxinpaint.evaluation import eval_set as make_eval_set
from jaxinpaint.evaluation import lpips


def _photo(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    """Six photos of different sizes and formats (one in a sub-folder, one upper-case .JPG)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    specs = [("a.png", 80, 100), ("b.jpg", 100, 72), ("c.webp", 64, 64), ("sub/d.png", 90, 70),
             ("e.JPG", 70, 120), ("f.bmp", 48, 60)]
    for i, (name, h, w) in enumerate(specs):
        Image.fromarray(_photo(h, w, i)).save(root / name)
    return root


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    from jaxinpaint import convert
    from jaxinpaint.io import checkpoint

    model, variables = convert.load_lama_generator(reference_file("lama_small_seed0.npz"))
    out = tmp_path_factory.mktemp("gen") / "generator"
    checkpoint.save_models(out, "lama", {"generator": (model, variables)})
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    lpips.save_npz(lpips.random_variables(8, seed=0), root / "lpips_tiny.npz")
    inception.save_npz(inception.random_variables(16, seed=0), root / "fid_tiny.npz")
    return root


# ----------------------------------------------------------------------------------------------------------
# make_eval_set.
# ----------------------------------------------------------------------------------------------------------


def test_make_eval_set_names_sizes_and_area_filter(photos_dir, tmp_path):
    counts = make_eval_set.make_eval_set(photos_dir, tmp_path / "set", mask_name="lama_thick_256", seed=0,
                                         out_min_size=48)
    assert counts == {"images": 6, "written": 6, "unreadable": 0, "no_mask": 0}
    files = sorted(p.relative_to(tmp_path / "set").as_posix() for p in (tmp_path / "set").rglob("*.png"))
    stems = ["a", "b", "c", "e", "f", "sub/d"]
    assert files == sorted([f"{s}_crop000.png" for s in stems] + [f"{s}_crop000_mask000.png" for s in stems])
    for stem in stems:
        image = np.asarray(Image.open(tmp_path / "set" / f"{stem}_crop000.png"))
        mask = np.asarray(Image.open(tmp_path / "set" / f"{stem}_crop000_mask000.png"))
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 255}
        assert 0 < (mask > 0).mean() <= 0.5  # LaMa's max_tamper_area, and no empty masks
    pairs = image_io.find_pairs(tmp_path / "set")
    assert [p.name for p in pairs] == [f"{s}_crop000_mask000" for s in stems]
    # Reproducible: the same seed gives the same bytes; another seed other masks.
    make_eval_set.make_eval_set(photos_dir, tmp_path / "again", mask_name="lama_thick_256", seed=0,
                                out_min_size=48)
    make_eval_set.make_eval_set(photos_dir, tmp_path / "other", mask_name="lama_thick_256", seed=1,
                                out_min_size=48)
    name = "sub/d_crop000_mask000.png"
    assert (tmp_path / "set" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert any((tmp_path / "set" / f"{s}_crop000_mask000.png").read_bytes()
               != (tmp_path / "other" / f"{s}_crop000_mask000.png").read_bytes() for s in stems)


def test_make_eval_set_area_filter_drops_large_masks(photos_dir, tmp_path):
    counts = make_eval_set.make_eval_set(photos_dir, tmp_path / "set", mask_name="lama_thick_256",
                                         out_min_size=48, max_tamper_area=0.15)
    assert counts["written"] + counts["no_mask"] == 6
    for mask_file in (tmp_path / "set").rglob("*_mask000.png"):
        assert (np.asarray(Image.open(mask_file)) > 0).mean() <= 0.15


def test_make_eval_set_is_loud_on_empty_or_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=r"no image files.*\*\.jpg.*\*\.png"):
        make_eval_set.make_eval_set(tmp_path / "empty", tmp_path / "out")
    argv = ["--input_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")]
    assert make_eval_set_cli.main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(RuntimeError, match="1 unreadable"):
        make_eval_set.make_eval_set(tmp_path / "bad", tmp_path / "out2")


def test_square_crop_is_square_in_bounds_and_touches_the_hole():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = (64, int(rng.integers(65, 200))) if rng.random() < 0.5 else (int(rng.integers(65, 200)), 64)
        hole = np.zeros((h, w), bool)
        y, x = int(rng.integers(0, h - 10)), int(rng.integers(0, w - 10))
        hole[y:y + 10, x:x + 10] = True
        left, top, right, bottom = make_eval_set.propose_square_crop(hole, rng)
        assert right - left == bottom - top == 64
        assert 0 <= left and right <= w and 0 <= top and bottom <= h
        assert hole[top:bottom, left:right].any()


# ----------------------------------------------------------------------------------------------------------
# Reports.
# ----------------------------------------------------------------------------------------------------------


def test_lama_integral_scores():
    assert metrics.ssim_fid100_f1(0.8, 20.0) == pytest.approx(2 * 0.8 * 0.8 / (1.6 + 1e-3))
    assert metrics.ssim_fid100_f1(0.9, 150.0) == 0.0  # FID >= 100 counts as worthless
    assert metrics.lpips_fid100_f1(0.25, 10.0) == pytest.approx(2 * 0.75 * 0.9 / (0.75 + 0.9 + 1e-3))


def test_bucket_counts_add_up():
    area = np.array([0.0, 0.05, 0.1, 0.15, 0.35, 0.55, 0.65, 0.95, 1.0, 0.005])
    n = len(area)
    arrays = {"hole_area": area, "psnr": np.full(n, 20.0), "ssim": np.linspace(0.5, 0.9, n),
              "l1": np.full(n, 0.1), "l1_hole": np.full(n, 0.3)}
    report = evaluate.build_report([f"x{i}" for i in range(n)], arrays)
    lama = {k: v["n"] for k, v in report["lama_buckets"].items()}
    assert lama == {"0-10%": 3, "10-20%": 2, "20-30%": 0, "30-40%": 1, "40-50%": 0, "50-60%": 1, "60-70%": 1,
                    "70-80%": 0, "80-90%": 0, "90-100%": 2}
    nv = {k: v["n"] for k, v in report["nvidia_buckets"].items()}
    assert nv == {"1-10%": 2, "10-20%": 1, "20-30%": 0, "30-40%": 1, "40-50%": 0, "50-60%": 1, "outside": 5}
    assert sum(lama.values()) == sum(nv.values()) == report["total"]["n"] == n
    assert report["lama_buckets"]["10-20%"]["ssim"] == pytest.approx(arrays["ssim"][[2, 3]].mean())
    assert report["lama_buckets"]["20-30%"]["ssim"] is None
    json.dumps(report, allow_nan=False)  # strictly valid JSON


def _black_fill(images, holes):
    return np.where(holes[..., None], 0, images).astype(np.uint8)


def test_evaluate_metric_wiring_with_a_known_predictor(photos_dir, tmp_path):
    # Masks from a folder paired by name; the "model" paints the hole black, so L1 in the hole is the mean
    # target value there and PSNR/SSIM follow from the metric functions directly.
    masks_dir = tmp_path / "masks"
    (masks_dir / "sub").mkdir(parents=True)
    files = image_io.list_images(photos_dir)
    expected = {}
    for i, f in enumerate(files):
        rel = f.relative_to(photos_dir).as_posix()
        stem = rel[:-len(f.suffix)]
        hole = np.zeros((32, 32), bool)
        hole[4:4 + 3 * (i + 1), 2:30] = True
        Image.fromarray(hole.astype(np.uint8) * 255).save(masks_dir / f"{stem}_mask.png")
        image = image_io.load_rgb_uint8(f, 32)
        expected[stem + "_mask"] = (image, hole)
    args = evaluate._parser().parse_args(["--input_dir", str(photos_dir), "--mask_dir", str(masks_dir),
                                          "--image_size", "32", "--predictions_dir", "unused"])
    samples, _, fixed = evaluate.samples_from_args(args)
    assert fixed and sorted(s.name for s in samples) == sorted(expected)
    names, arrays = evaluate.evaluate(samples, predict=_black_fill, batch_size=4)
    for name, l1_hole, area in zip(names, arrays["l1_hole"], arrays["hole_area"]):
        image, hole = expected[name]
        assert area == pytest.approx(hole.mean())
        assert l1_hole == pytest.approx(image[hole].mean() / 255.0, rel=1e-5)
    image, hole = expected[names[0]]
    pred = _black_fill(image[None], hole[None])[0].astype(np.float32)[None] / 255
    assert arrays["ssim"][0] == pytest.approx(float(metrics.ssim(pred, image[None] / 255.0)[0]), rel=1e-5)


def test_exact_reconstructions_leave_psnr_averages(photos_dir):
    args = evaluate._parser().parse_args(["--input_dir", str(photos_dir), "--image_size", "32",
                                          "--max_images", "3"])
    samples, _, fixed = evaluate.samples_from_args(args)
    assert not fixed and len(samples) == 3
    names, arrays = evaluate.evaluate(samples, predict=lambda images, holes: images, batch_size=2)
    report = evaluate.build_report(names, arrays)
    assert report["total"]["psnr"] is None and report["total"]["psnr_exact"] == 3
    assert report["total"]["l1"] == 0 and report["total"]["ssim"] == pytest.approx(1.0)
    assert any("infinite PSNR" in w for w in report["warnings"])


def test_evaluate_cli_end_to_end(photos_dir, generator_dir, weights, tmp_path):
    out = tmp_path / "report.json"
    argv = ["--model", str(generator_dir), "--input_dir", str(photos_dir), "--masks", "lama_thick_256",
            "--seed", "0", "--image_size", "32", "--batch_size", "4", "--kid_subsets", "5",
            "--lpips_weights", str(weights / "lpips_tiny.npz"),
            "--fid_weights", str(weights / "fid_tiny.npz"),
            "--output", str(out), "--save_predictions", str(tmp_path / "preds"), "--per_image"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert evaluate.main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"config", "total", "lama_buckets", "nvidia_buckets", "warnings", "per_image"}
    total = report["total"]
    assert total["n"] == 6 and report["config"]["num_images"] == 6
    assert sum(b["n"] for b in report["lama_buckets"].values()) == 6
    assert sum(b["n"] for b in report["nvidia_buckets"].values()) == 6
    assert list(report["lama_buckets"]) == metrics.lama_bucket_names()
    assert 0 < total["psnr"] < 60 and 0 < total["ssim"] <= 1 and 0 < total["l1"] < total["l1_hole"] <= 1
    assert 0 < total["hole_area"] <= 0.5
    assert total["lpips"] > 0 and np.isfinite(total["fid"]) and total["fid"] >= -1e-6
    assert total["kid"] is not None and total["kid_std"] >= 0
    assert 0 <= total["ssim_fid100_f1"] <= 1 and 0 <= total["lpips_fid100_f1"] <= 1
    assert any("< 2048" in w for w in report["warnings"])
    assert len(report["per_image"]) == 6 and {"name", "psnr", "ssim", "lpips"} <= set(report["per_image"][0])
    saved = sorted(p.relative_to(tmp_path / "preds").as_posix() for p in (tmp_path / "preds").rglob("*.png"))
    assert saved == sorted(e["name"] + ".png" for e in report["per_image"])
    # A fixed seed gives the same masks, hence the same hole areas, on a second run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert evaluate.main(argv[:-5] + ["--output", str(tmp_path / "r2.json")]) == 0
    assert json.loads((tmp_path / "r2.json").read_text())["total"]["hole_area"] == total["hole_area"]


def test_eval_set_predictions_round_trip(photos_dir, generator_dir, tmp_path, capsys):
    make_eval_set.make_eval_set(photos_dir, tmp_path / "set", out_min_size=32, seed=3)
    common = ["--input_dir", str(tmp_path / "set"), "--batch_size", "4"]
    assert evaluate.main(["--model", str(generator_dir), "--save_predictions", str(tmp_path / "preds"),
                          "--output", str(tmp_path / "model.json")] + common) == 0
    assert evaluate.main(["--predictions_dir", str(tmp_path / "preds"),
                          "--output", str(tmp_path / "pred.json")] + common) == 0
    by_model = json.loads((tmp_path / "model.json").read_text())
    by_files = json.loads((tmp_path / "pred.json").read_text())
    assert by_model["total"] == by_files["total"] and by_model["total"]["n"] == 6
    assert by_model["lama_buckets"] == by_files["lama_buckets"]
    # LaMa's naming: one prediction per mask, named after the mask.
    assert (tmp_path / "preds" / "sub" / "d_crop000_mask000.png").is_file()
    (tmp_path / "preds" / "a_crop000_mask000.png").unlink()
    assert evaluate.main(["--predictions_dir", str(tmp_path / "preds")] + common) == 2
    assert "no prediction for 'a_crop000_mask000'" in capsys.readouterr().err
    # Predictions need fixed masks: refused for generated ones.
    assert evaluate.main(["--predictions_dir", str(tmp_path / "preds"), "--input_dir", str(photos_dir)]) == 2
    assert "needs fixed masks" in capsys.readouterr().err


def test_evaluate_reports_bad_arguments(photos_dir, tmp_path, capsys):
    assert evaluate.main(["--input_dir", str(photos_dir)]) == 2
    assert "exactly one of --model and --predictions_dir" in capsys.readouterr().err
    assert evaluate.main(["--model", "x", "--input_dir", str(photos_dir), "--fid_weights",
                          str(tmp_path / "nope.pth"), "--fid_min_samples", "2"]) == 2
    assert "FID Inception weights not found" in capsys.readouterr().err
    assert evaluate.main(["--model", "x", "--input_dir", str(photos_dir), "--fid_weights",
                          str(tmp_path / "nope.pth"), "--strict_fid"]) == 2
    assert "only 6 samples" in capsys.readouterr().err
    assert evaluate.main(["--model", "x", "--tfds", "nocolon"]) == 2
    assert "name:split" in capsys.readouterr().err


def test_tfds_source_without_tensorflow(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    args = evaluate._parser().parse_args(["--tfds", "places365_small:validation", "--image_size", "24",
                                          "--max_images", "3", "--seed", "1"])
    with tfds.testing.mock_data(num_examples=3):
        samples, desc, fixed = evaluate.samples_from_args(args)
        loaded = [s.load() for s in samples]
    assert not fixed and "places365_small:validation" in desc
    assert [s.name for s in samples] == [f"places365_small_validation_{i:07d}_mask000" for i in range(3)]
    for image, hole in loaded:
        assert image.shape == (24, 24, 3) and image.dtype == np.uint8 and hole.shape == (24, 24)
        assert 0 < hole.mean() <= 0.5


def test_fid_cli_folders_skip_eval_set_masks_but_keep_mask_named_predictions(tmp_path):
    from jaxinpaint.evaluation import fid

    (tmp_path / "set").mkdir()
    (tmp_path / "preds").mkdir()
    for name in ("set/x.png", "set/x_mask000.png", "preds/x_mask000.png", "preds/y_mask000.png"):
        Image.fromarray(_photo(20, 20, len(name))).save(tmp_path / name)
    assert len(list(fid._folder_images(str(tmp_path / "set"), 16))) == 1
    preds = list(fid._folder_images(str(tmp_path / "preds"), 16))
    assert len(preds) == 2 and preds[0].shape == (16, 16, 3)
