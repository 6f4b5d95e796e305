"""Write a fixed image/mask evaluation set the way LaMa's ``bin/gen_mask_dataset.py`` does.

``jaxinpaint make_eval_set --input_dir=IMGS --output_dir=OUT --masks=lama_thick_256 --seed=0``

For every image under ``--input_dir`` (recursive, sorted), following LaMa's pipeline
(``configs/data_gen/random_*.yaml``: ``out_min_size`` 256/512, ``handle_small_mode: upscale``,
``out_square_crop``, ``crop_min_overlap: 1``, ``variants_n: 5``, ``max_tamper_area: 0.5``, one mask kept):

1. RGB; BICUBIC resize so that the short side is ``out_min_size`` (upscaling small images too), rounding
   the long side;
2. draw ``variants_n`` masks on the whole resized image (the preset's generator without its own area
   filter, so the filter below applies after the crop, as in LaMa);
3. for each mask, a random square crop (side = short side) along the long axis placed to overlap the hole
   (LaMa's ``propose_random_square_crop(mask, min_overlap=1)``);
4. drop crops whose hole covers more than ``max_tamper_area``, keep one survivor at random; when none
   survives, retry with fresh variants (up to 10 attempts, as LaMa), then give up on that image loudly;
5. save ``<rel_stem>_crop000.png`` (RGB) and ``<rel_stem>_crop000_mask000.png`` (L, 0/255; 255 = hole),
   keeping the input's sub-folders. ``python -m jaxinpaint.evaluate --input_dir=OUT`` reads the pairs back
   with LaMa's naming rule (image = mask path up to ``_mask`` + ``.png``).

Differences from LaMa, on purpose:

* all common image extensions (case-insensitive) are read, not only ``--ext jpg`` (LaMa silently skips
  everything else, lama #126), and an input folder with no readable image is an error, not an empty set;
* each image's random stream is ``default_rng([seed, crc32(relative path)])``, so an image's crop and mask
  do not depend on which other files are in the folder or on worker scheduling; LaMa uses the global numpy
  state (not reproducible across runs);
* LaMa's "empty mask" check never fires (``len(np.unique(m)) == 0``); here crops whose mask has no hole
  pixel are dropped too, because they cannot be scored;
* an image that cannot be decoded is skipped with a warning (LaMa retries it 10 times, then crashes).

The procedure lives in ``jaxinpaint.evaluation.eval_set``; the shared image readers in
``jaxinpaint.data.images``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jaxinpaint import masks
from jaxinpaint.cli import common
from jaxinpaint.evaluation.eval_set import make_eval_set


def _parser() -> common.ArgumentParser:
    parser = common.ArgumentParser(prog="jaxinpaint make_eval_set", description=__doc__.split("\n")[0])
    parser.add_argument("--input_dir", required=True, help="folder of photos (recursive, any common format)")
    parser.add_argument("--output_dir", required=True, help="where to write <name>_crop000[_mask000].png")
    parser.add_argument("--masks", default="lama_thick_256",
                        help=f"mask generator name (jaxinpaint.masks.get): {', '.join(masks.names())}")
    parser.add_argument("--seed", type=int, default=0, help="seed of every image's crop and mask stream")
    parser.add_argument("--out_min_size", type=int, default=None,
                        help="short side / crop size (default: 512 for *_512 presets, else 256)")
    parser.add_argument("--variants_n", type=int, default=5, help="masks drawn per image before one is kept (LaMa)")
    parser.add_argument("--max_tamper_area", type=float, default=0.5,
                        help="crops whose hole covers more than this fraction are dropped (LaMa)")
    parser.add_argument("--max_images", type=int, default=None, help="use only the first N photos (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output_dir")
    common.add_verbose(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    common.setup_logging(args.verbose)
    try:
        counts = make_eval_set(args.input_dir, args.output_dir, mask_name=args.masks, seed=args.seed,
                               out_min_size=args.out_min_size, variants_n=args.variants_n,
                               max_tamper_area=args.max_tamper_area, max_images=args.max_images,
                               overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, RuntimeError, ValueError) as err:
        return common.fail(parser.prog, err)
    print(f"wrote {counts['written']} image/mask pairs to {args.output_dir} from {counts['images']} images "
          f"({counts['unreadable']} unreadable, {counts['no_mask']} without an acceptable mask)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
