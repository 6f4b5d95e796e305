"""``python -m jaxinpaint.predict``: LaMa's folder layout, same-named masks, one image, failures and exit
codes, and ``--refine``, on a tiny random LaMa generator saved as a converted checkpoint directory."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxinpaint
from jaxinpaint import predict
from jaxinpaint.cli import predict as predict_cli
from jaxinpaint.io import checkpoint
from jaxinpaint.systems.lama.model import FFCResNetGenerator


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = FFCResNetGenerator(ngf=8, n_downsampling=2, n_blocks=1)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 4)))  # one compile, not per op
    path = tmp_path_factory.mktemp("model") / "converted"
    checkpoint.save_models(path, "lama", {"generator": (model, variables)})
    return str(path)


def _save(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _box_mask(h, w, box, channels=None, value=255):
    m = np.zeros((h, w) if channels is None else (h, w, channels), np.uint8)
    m[box[0]:box[1], box[2]:box[3]] = value
    return m


def _check_output(out_path, expected_rgb, hole):
    out = np.asarray(Image.open(out_path))
    assert out.shape == expected_rgb.shape and out.dtype == np.uint8, out_path
    np.testing.assert_array_equal(out[~hole], expected_rgb[~hole])  # byte for byte outside the hole
    assert np.any(out[hole] != expected_rgb[hole])  # the hole was filled with something else
    return out


def test_lama_layout_mixed_sizes_and_modes(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    indir, outdir = tmp_path / "in", tmp_path / "out"
    # 33x51 RGB with two masks; 40x29 RGBA (composited over white); 40x29 grey JPEG (no .png beside its
    # mask, so the .jpg is taken).
    rgb = rng.integers(0, 256, (33, 51, 3), dtype=np.uint8)
    _save(indir / "a.png", rgb)
    _save(indir / "a_mask000.png", _box_mask(33, 51, (5, 20, 10, 30)))
    _save(indir / "a_mask001.png", _box_mask(33, 51, (0, 33, 40, 51)))
    rgba = rng.integers(0, 256, (40, 29, 4), dtype=np.uint8)
    _save(indir / "sub" / "b.png", rgba, "RGBA")
    colour_mask = np.zeros((40, 29, 3), np.uint8)
    colour_mask[5:20, 10:20, 1] = 3  # RGB mask: a hole wherever any channel is > 0 (here green, value 3)
    _save(indir / "sub" / "b_mask.png", colour_mask)
    grey = rng.integers(0, 256, (40, 29), dtype=np.uint8)
    _save(indir / "sub" / "c.jpg", grey, "L")
    _save(indir / "sub" / "c_mask1.png", _box_mask(40, 29, (20, 35, 3, 25)))

    code = predict.main([f"--model={model_dir}", f"--input_dir={indir}", f"--output_dir={outdir}",
                         "--batch_size=2"])
    assert code == 0
    written = sorted(str(p.relative_to(outdir)) for p in outdir.rglob("*.png"))
    assert written == ["a_mask000.png", "a_mask001.png", "sub/b_mask.png", "sub/c_mask1.png"]

    hole_a0 = _box_mask(33, 51, (5, 20, 10, 30)) > 0
    _check_output(outdir / "a_mask000.png", rgb, hole_a0)
    _check_output(outdir / "a_mask001.png", rgb, _box_mask(33, 51, (0, 33, 40, 51)) > 0)
    alpha = rgba[..., 3:].astype(np.float32) / 255
    over_white = np.round((rgba[..., :3] / 255 * alpha + (1 - alpha)) * 255).astype(np.uint8)
    _check_output(outdir / "sub" / "b_mask.png", over_white, _box_mask(40, 29, (5, 20, 10, 20)) > 0)
    grey_rgb = predict_cli.load_rgb8(str(indir / "sub" / "c.jpg"))
    assert np.all(grey_rgb[..., 0] == grey_rgb[..., 1])  # grey replicated to three channels
    out_c = _check_output(outdir / "sub" / "c_mask1.png", grey_rgb, _box_mask(40, 29, (20, 35, 3, 25)) > 0)

    # b and c (both 40x29) went through the generator as one batch: same result as alone, up to float noise.
    alone = jaxinpaint.load(model_dir).inpaint(grey_rgb, _box_mask(40, 29, (20, 35, 3, 25)))
    assert np.abs(alone.astype(int) - out_c.astype(int)).max() <= 1


def test_mask_dir_mode(model_dir, tmp_path):
    rng = np.random.default_rng(1)
    indir, maskdir, outdir = tmp_path / "photos", tmp_path / "masks", tmp_path / "out"
    x = rng.integers(0, 256, (33, 51, 3), dtype=np.uint8)
    _save(indir / "x.png", x)
    _save(indir / "deep" / "y.png", x[:, ::-1].copy())
    _save(maskdir / "x.png", _box_mask(33, 51, (3, 9, 3, 9)))
    _save(maskdir / "deep" / "y.png", _box_mask(33, 51, (10, 30, 10, 30)))
    code = predict.main([f"--model={model_dir}", f"--input_dir={indir}", f"--mask_dir={maskdir}",
                         f"--output_dir={outdir}"])
    assert code == 0
    _check_output(outdir / "x.png", x, _box_mask(33, 51, (3, 9, 3, 9)) > 0)
    _check_output(outdir / "deep" / "y.png", x[:, ::-1], _box_mask(33, 51, (10, 30, 10, 30)) > 0)
    # An image without a mask is a failure (exit status 1); the others are still written.
    _save(indir / "z.png", x)
    code = predict.main([f"--model={model_dir}", f"--input_dir={indir}", f"--mask_dir={maskdir}",
                         f"--output_dir={tmp_path / 'out2'}"])
    assert code == 1
    assert (tmp_path / "out2" / "x.png").exists() and not (tmp_path / "out2" / "z.png").exists()


def test_single_image_mode(model_dir, tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (33, 51, 3), dtype=np.uint8)
    _save(tmp_path / "i.png", image)
    mask = _box_mask(33, 51, (10, 20, 0, 51), channels=4)  # RGBA mask: colour decides, alpha ignored
    mask[..., 3] = 255
    mask[0, 0, 3] = 0
    _save(tmp_path / "m.png", mask, "RGBA")
    code = predict.main([f"--model={model_dir}", f"--image={tmp_path / 'i.png'}",
                         f"--mask={tmp_path / 'm.png'}", f"--output={tmp_path / 'res' / 'o.png'}"])
    assert code == 0
    _check_output(tmp_path / "res" / "o.png", image, _box_mask(33, 51, (10, 20, 0, 51)) > 0)


def test_bad_files_are_skipped_and_reported(model_dir, tmp_path, capsys):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    good = np.random.default_rng(3).integers(0, 256, (33, 51, 3), dtype=np.uint8)
    _save(indir / "good.png", good)
    _save(indir / "good_mask.png", _box_mask(33, 51, (5, 10, 5, 10)))
    (indir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _save(indir / "corrupt_mask.png", _box_mask(33, 51, (5, 10, 5, 10)))
    _save(indir / "wrongsize.png", good)
    _save(indir / "wrongsize_mask.png", _box_mask(20, 20, (5, 10, 5, 10)))
    _save(indir / "orphan_mask.png", _box_mask(33, 51, (5, 10, 5, 10)))
    code = predict.main([f"--model={model_dir}", f"--input_dir={indir}", f"--output_dir={outdir}"])
    assert code == 1
    assert sorted(p.name for p in outdir.rglob("*.png")) == ["good_mask.png"]
    _check_output(outdir / "good_mask.png", good, _box_mask(33, 51, (5, 10, 5, 10)) > 0)
    out = capsys.readouterr().out
    assert "Inpainted 1 of 4 image(s)" in out
    assert "corrupt.png" in out and "cannot read image" in out
    assert "wrongsize_mask.png" in out and "20x20" in out
    assert "orphan_mask.png" in out and "no image for this mask" in out


def test_usage_errors(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "photo.png").write_bytes(b"")
    out_flag = f"--output_dir={tmp_path / 'o'}"
    assert predict.main([f"--model={model_dir}", f"--input_dir={empty}", out_flag]) == 2
    assert "**/*mask*.png" in capsys.readouterr().err
    missing = tmp_path / "no_such_model"
    assert predict.main([f"--model={missing}", f"--input_dir={empty}", out_flag]) == 2
    assert "no_such_model" in capsys.readouterr().err
    _save(empty / "x_mask.png", _box_mask(8, 8, (0, 4, 0, 4)))
    assert predict.main([f"--model={empty}", f"--input_dir={empty}", out_flag]) == 2
    assert "is neither a training workdir" in capsys.readouterr().err
    assert predict.main([f"--model={model_dir}", f"--image={empty / 'x_mask.png'}"]) == 2
    with pytest.raises(SystemExit) as e:  # argparse: unknown flag
        predict.main([f"--model={model_dir}", "--no_such_flag"])
    assert e.value.code == 2


def test_refine_flag(model_dir, tmp_path, capsys):
    yy, xx = np.mgrid[:96, :96]
    image = ((np.stack([np.sin(xx / 7.0), np.cos(yy / 9.0), np.sin((xx + yy) / 11.0)], -1) * 0.4 + 0.5) * 255
             ).astype(np.uint8)
    _save(tmp_path / "in" / "p.png", image)
    _save(tmp_path / "in" / "p_mask.png", _box_mask(96, 96, (20, 70, 30, 80)))
    # --refine_min_side=48 gives two scales (48 and 96 px), like test_refinement (shared compilation).
    code = predict.main([f"--model={model_dir}", f"--input_dir={tmp_path / 'in'}",
                         f"--output_dir={tmp_path / 'out'}", "--refine", "--refine_min_side=48"])
    assert code == 0
    _check_output(tmp_path / "out" / "p_mask.png", image, _box_mask(96, 96, (20, 70, 30, 80)) > 0)
    assert "refinement objective" in capsys.readouterr().out


def test_output_inside_input_is_not_rescanned(model_dir, tmp_path):
    image = np.random.default_rng(4).integers(0, 256, (33, 51, 3), dtype=np.uint8)
    _save(tmp_path / "x.png", image)
    _save(tmp_path / "x_mask.png", _box_mask(33, 51, (1, 5, 1, 5)))
    for _ in range(2):  # the second run must not take out/x_mask.png for a mask
        assert predict.main([f"--model={model_dir}", f"--input_dir={tmp_path}",
                             f"--output_dir={tmp_path / 'out'}"]) == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png")) == [
        "out/x_mask.png", "x.png", "x_mask.png"]
