"""The main job: train briefly on the built-in photos, then inpaint a held-out photo.

    jaxinpaint demo --workdir=workdirs/demo                       # Big LaMa's smoke variant, a few minutes on 2 cores
    jaxinpaint demo --config=lama_regular:smoke --workdir=workdirs/demo_regular
    python -m jaxinpaint.demo --workdir=workdirs/demo             # the same

Everything runs offline: the photos ship inside the scikit-image / scikit-learn / matplotlib wheels, and the
config is the bundled one (found from any directory). The run writes the usual training outputs
(checkpoints, metrics.jsonl, TensorBoard events, sample grids) and then ``<workdir>/demo/{input,mask,
inpainted,comparison}.png`` for the held-out photo. Rerunning resumes the training (or skips it when
finished) and inpaints again.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxinpaint demo", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="big_lama:smoke",
                        help="training config: a bundled name or a configs/*.py path, with :variant")
    parser.add_argument("--workdir", default="workdirs/demo", help="where to train and write the demo images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s: %(message)s",
                        force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    from jaxinpaint import config_lib

    try:
        config = config_lib.get_config(args.config)
    except (FileNotFoundError, ValueError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2

    import jaxinpaint
    from jaxinpaint import metrics
    from jaxinpaint.train import trainer

    workdir = os.path.abspath(args.workdir)
    trainer.train_and_evaluate(config, workdir)

    model = jaxinpaint.load(workdir)
    path, image, mask = held_out_example(2 * config.input.image_size)
    result = model.inpaint(image, mask)

    out_dir = os.path.join(workdir, "demo")
    os.makedirs(out_dir, exist_ok=True)
    masked = np.where(mask[..., None], 255, image).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(out_dir, "input.png"))
    Image.fromarray((mask * 255).astype(np.uint8)).save(os.path.join(out_dir, "mask.png"))
    Image.fromarray(result).save(os.path.join(out_dir, "inpainted.png"))
    Image.fromarray(np.concatenate([masked, result, image], axis=1)).save(os.path.join(out_dir, "comparison.png"))

    a, b = result[None].astype(np.float32) / 255, image[None].astype(np.float32) / 255
    print(f"\nInpainted the held-out photo {os.path.basename(path)} ({image.shape[1]}x{image.shape[0]}, "
          f"{mask.mean():.0%} hole): PSNR {float(metrics.psnr(a, b)[0]):.2f} dB, "
          f"SSIM {float(metrics.ssim(a, b)[0]):.4f}")
    print(f"Wrote {out_dir}/comparison.png (masked input | inpainted | original) and inpainted.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
