"""The main job: train briefly on the built-in photos, then inpaint a held-out photo.

    jaxinpaint demo --workdir=workdirs/demo                       # Big LaMa's smoke variant, a few minutes on 2 cores
    jaxinpaint demo --config=lama_regular:smoke --workdir=workdirs/demo_regular
    python -m jaxinpaint.demo --workdir=workdirs/demo             # the same

Everything runs offline: the photos ship inside the scikit-image / scikit-learn / matplotlib wheels, and the
config is the bundled one (found from any directory). The run writes the usual training outputs
(checkpoints, metrics.jsonl, TensorBoard events, sample grids), then inpaints the held-out photo (256 px) with
the model it trained *and* with two per-image methods that need no training set — total variation and Deep
Image Prior — and writes ``<workdir>/demo/comparison.png``: labelled columns (masked input, mean-colour fill,
the trained model, TV, DIP, original) with PSNR/SSIM under each, plus ``input.png``, ``mask.png`` and
``inpainted.png``. A smoke config's few dozen steps prove the pipeline, not the method: the demo says so.
Rerunning resumes the training (or skips it when finished) and inpaints again.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxinpaint.cli import common

log = logging.getLogger("jaxinpaint.demo")


def held_out_example(size: int, seed: int = 0):
    """The held-out built-in photo resized so its short side is ``size``, and a fixed LaMa 'thick' mask."""
    from jaxinpaint import masks
    from jaxinpaint.data import photos

    path = photos.builtin_photo_paths("holdout")[0]
    image = Image.open(path).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    pixels = np.asarray(image)
    mask = masks.get("lama_thick_256")(np.random.default_rng(seed), pixels.shape[0], pixels.shape[1])
    return path, pixels, mask


#: The per-image methods the demo runs beside the trained model, with settings that finish within its budget
#: on 2 CPU cores at 256 px (total variation: seconds; Deep Image Prior's 'library' network: about 2 minutes).
SOLVERS = (("total variation", "tv", {}), ("Deep Image Prior", "dip", {"iterations": 500}))


def comparison_sheet(columns: Sequence[tuple[str, np.ndarray, str]]) -> Image.Image:
    """One labelled picture: each column a title above its image and a caption (metrics) below.

    Args:
      columns: ``(title, uint8 HxWx3 image, caption)``; every image has the same height.
    """
    from PIL import ImageDraw, ImageFont

    height = columns[0][1].shape[0]
    font = ImageFont.load_default(size=max(12, height // 18))
    line = int(font.size * 1.5)
    gap = 8
    width = sum(c[1].shape[1] for c in columns) + gap * (len(columns) - 1)
    sheet = Image.new("RGB", (width, height + 2 * line + gap), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for title, pixels, caption in columns:
        w = pixels.shape[1]
        sheet.paste(Image.fromarray(pixels), (x, line))
        for text, y in ((title, 0), (caption, line + height + gap // 2)):
            tw = draw.textlength(text, font=font)
            draw.text((x + max(0, (w - tw) / 2), y + (line - font.size) / 2), text, fill="black", font=font)
        x += w + gap
    return sheet


def inpaint_and_compare(model, label: str, out_dir: str, *, size: int = 256,
                        dip_iterations: int | None = SOLVERS[1][2]["iterations"]) -> dict[str, tuple[float, float]]:
    """Inpaints the held-out photo with ``model`` (and TV and DIP unless ``dip_iterations`` is None), writes
    ``out_dir/{input,mask,inpainted,comparison}.png`` and returns ``{column title: (PSNR, SSIM)}``."""
    import jaxinpaint
    from jaxinpaint import metrics

    path, image, mask = held_out_example(size)
    target = image[None].astype(np.float32) / 255
    hole = mask.astype(bool)

    def scores(result: np.ndarray) -> tuple[float, float]:
        pred = result[None].astype(np.float32) / 255
        return float(metrics.psnr(pred, target)[0]), float(metrics.ssim(pred, target)[0])

    results = [(label, model.inpaint(image, mask))]
    if dip_iterations is not None:
        for title, name, options in SOLVERS:
            options = dict(options, iterations=dip_iterations) if name == "dip" else options
            start = time.perf_counter()
            results.append((title, jaxinpaint.load(name, seed=0, progress="auto", **options).inpaint(image, mask)))
            log.info("%s: %.1f s at %dx%d", title, time.perf_counter() - start, image.shape[1], image.shape[0])
    mean_fill = np.where(hole[..., None], image[~hole].mean(axis=0).round(), image).astype(np.uint8)

    os.makedirs(out_dir, exist_ok=True)
    masked = np.where(hole[..., None], 255, image).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(out_dir, "input.png"))
    Image.fromarray((hole * 255).astype(np.uint8)).save(os.path.join(out_dir, "mask.png"))
    Image.fromarray(results[0][1]).save(os.path.join(out_dir, "inpainted.png"))
    table = {title: scores(pixels) for title, pixels in [("mean-colour fill", mean_fill), *results]}
    columns = [(f"masked input ({hole.mean():.0%} hole)", masked, "")]
    columns += [(title, pixels, "PSNR {:.2f} dB  SSIM {:.3f}".format(*table[title]))
                for title, pixels in [("mean-colour fill", mean_fill), *results]]
    columns.append(("original", image, ""))
    comparison_sheet(columns).save(os.path.join(out_dir, "comparison.png"))

    print(f"\nHeld-out photo {os.path.basename(path)} ({image.shape[1]}x{image.shape[0]}, {hole.mean():.0%} hole):")
    for title, (psnr, ssim) in table.items():
        print(f"  {title:<32s} PSNR {psnr:6.2f} dB   SSIM {ssim:.4f}")
    print(f"Wrote {out_dir}/comparison.png (labelled columns, metrics under each) and inpainted.png")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxinpaint demo", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="big_lama:smoke",
                        help="training config: a bundled name or a configs/*.py path, with :variant")
    parser.add_argument("--workdir", default="workdirs/demo", help="where to train and write the demo images")
    parser.add_argument("--size", type=int, default=256, help="short side of the held-out photo, in pixels")
    parser.add_argument("--dip_iterations", type=int, default=SOLVERS[1][2]["iterations"],
                        help="Deep Image Prior's optimisation steps (its paper runs 3,000-6,000)")
    parser.add_argument("--no_solvers", action="store_true",
                        help="only the trained model (skip total variation and Deep Image Prior)")
    common.add_verbose(parser)
    args = parser.parse_args(argv)
    # Ours at INFO on stdout; JAX's backend probing (libtpu) and orbax's lines only with --verbose.
    common.setup_logging(args.verbose, stream=sys.stdout, fmt="%(asctime)s %(name)s: %(message)s")
    from jaxinpaint import config_lib

    try:
        config = config_lib.get_config(args.config)
    except (FileNotFoundError, ValueError) as e:
        return common.fail(parser.prog, e)

    import jaxinpaint
    from jaxinpaint.train import trainer

    workdir = os.path.abspath(args.workdir)
    trainer.train_and_evaluate(config, workdir)

    steps = int(config.total_steps)
    trained_label = f"{args.config}, {steps} steps"
    out_dir = os.path.join(workdir, "demo")
    inpaint_and_compare(jaxinpaint.load(workdir), trained_label, out_dir, size=args.size,
                        dip_iterations=None if args.no_solvers else args.dip_iterations)
    if steps < 10_000:
        print(f"Note: {trained_label} is a smoke run that shows the pipeline works end to end; it is NOT a trained "
              f"model (Big LaMa trains for days on millions of images). Use the released weights for real results: "
              f"see the README, 'Using the released weights'.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
