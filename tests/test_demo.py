"""The main job's comparison: the trained model beside total variation and Deep Image Prior, labelled, scored."""

import numpy as np
from PIL import Image

import jaxinpaint
from jaxinpaint.cli import demo


def test_comparison_sheet_labels_every_column():
    a = np.zeros((64, 40, 3), np.uint8)
    b = np.full((64, 50, 3), 200, np.uint8)
    sheet = demo.comparison_sheet([("left", a, "caption"), ("right", b, "")])
    assert sheet.height > 64 and sheet.width >= 90
    pixels = np.asarray(sheet)
    title_band = pixels[: (sheet.height - 64) // 2 - 1]
    assert (title_band < 128).any(), "no title drawn above the images"
    # The images are pasted unchanged between the bands.
    top = np.argmax((pixels[:, :40] == 0).all(axis=(1, 2)))
    assert (pixels[top:top + 64, :40] == a).all()


def test_inpaint_and_compare_writes_a_scored_sheet(tmp_path, tiny_lama_dir):
    table = demo.inpaint_and_compare(jaxinpaint.load(tiny_lama_dir), "tiny LaMa", str(tmp_path), size=64,
                                     dip_iterations=3)
    assert set(table) == {"mean-colour fill", "tiny LaMa", "total variation", "Deep Image Prior"}
    for psnr, ssim in table.values():
        assert np.isfinite(psnr) and 0 < ssim <= 1
    sheet = Image.open(tmp_path / "comparison.png")
    image = np.asarray(Image.open(tmp_path / "input.png"))
    assert sheet.height > image.shape[0] and sheet.width > 6 * image.shape[1]
    mask = np.asarray(Image.open(tmp_path / "mask.png")) > 0
    result = np.asarray(Image.open(tmp_path / "inpainted.png"))
    assert 0 < mask.mean() < 0.6
    assert (result[~mask] == image[~mask]).all()
