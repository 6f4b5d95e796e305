"""EdgeConnect (Nazeri et al., ICCV-W 2019; ``knazeri/edge-connect``), systems-more.md §8.

Three stages, each its own run (the original's ``--model 1/2/3``), the third starting from the first two:

    python train.py --config=configs/edgeconnect.py:edge --workdir=workdirs/edgeconnect_edge \
        --config.input.source=folder --config.input.folder=/data/places2
    python train.py --config=configs/edgeconnect.py:inpaint --workdir=workdirs/edgeconnect_inpaint \
        --config.input.source=folder --config.input.folder=/data/places2 \
        --config.losses.vgg_weights=/weights/vgg19-dcbb9e9d.pth
    python train.py --config=configs/edgeconnect.py:joint --workdir=workdirs/edgeconnect_joint \
        --config.input.source=folder --config.input.folder=/data/places2 \
        --config.losses.vgg_weights=/weights/vgg19-dcbb9e9d.pth
        # init_from defaults to workdirs/edgeconnect_edge,workdirs/edgeconnect_inpaint

    # The same three stages shrunk (60 steps, a few minutes each on a 2-core CPU); plain :smoke is the edge
    # stage. The joint one starts from the other two's workdirs.
    python train.py --config=configs/edgeconnect.py:edge,smoke --workdir=workdirs/edgeconnect_edge_smoke
    python train.py --config=configs/edgeconnect.py:inpaint,smoke --workdir=workdirs/edgeconnect_inpaint_smoke
    python train.py --config=configs/edgeconnect.py:joint,smoke --workdir=workdirs/edgeconnect_joint_smoke

Stages (``config.stage``): ``edge`` trains the edge generator G1 (spectral norm) with D1 on ground-truth Canny
edges; ``inpaint`` trains the inpainting generator G2 with D2, G2 fed the full ground-truth Canny map;
``joint`` (the original's "edge-inpaint" model 3) freezes G1, pastes its output into the hole of the
ground-truth edges and trains G2 and D2 on that. ``config.init_from`` (comma-separated) names where the
joint stage's networks come from: the two stage workdirs by default, or converted EdgeConnect weights.

Recipe (``config.yml.example``, which the authors aligned with the paper in commit 826f2b8): width 64, 8
residual blocks, 70×70 PatchGANs with spectral norm; nsgan (sigmoid + BCE) GAN loss; G1: adversarial ×1,
feature matching ×10; G2: L1 ×1 divided by the batch's hole fraction, VGG19 perceptual ×0.1 (relu1_1..5_1)
and style ×250 (relu2_2, 3_4, 4_4, 5_2 on the masked images), adversarial ×0.1; Adam lr 1e-4 with betas
(0, 0.9) for G, D at ``d2g_lr`` = 0.1 of it; batch 8 at 256², Canny σ 2; seed 10. ``--config.lr`` sets both
learning rates (the paper lowered it to 1e-5 for the last part of each stage; the code leaves that to the
user). G's loss goes through the pre-update D, and every D call in training mode runs one spectral-norm
power iteration (three per step).

Data: the photos are resized (short side 256) and randomly cropped to 256² with a horizontal flip; the
original centre-crops (a design difference: a random crop along the long side). Canny runs on the whole
image in training and on the known region at evaluation and inference (``inference.sigma``, shared by both:
the maintainers insist they match). Masks default to LaMa's training mix; the original trained on file masks
(the NVIDIA irregular test masks, augmented to 60,000), which ``:file_masks`` reads from
``--config.input.mask.kwargs.root=DIR`` with the original's ``> 0`` threshold (resized nearest after
thresholding, where the original thresholds after a bilinear resize).

VGG19 (``config.losses.vgg_weights``, stages inpaint and joint) is a local file, never downloaded: torchvision's
``vgg19`` ImageNet state dict (``torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1').state_dict(),
path)``, or a ``.npz`` of its keys), fed [0, 1] images without ImageNet normalisation, as the original.
"""

import ml_collections
from ml_collections import config_dict

from jaxinpaint import config_lib

STAGES = ("edge", "inpaint", "joint")
VARIANTS = set(STAGES) | {"smoke", "file_masks"}
#: The workdirs the joint stage starts from (the commands above; ``_smoke`` appended for ``:joint,smoke``).
STAGE_WORKDIRS = ("workdirs/edgeconnect_edge", "workdirs/edgeconnect_inpaint")


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, VARIANTS)
    stages = [s for s in STAGES if s in variants]
    if len(stages) > 1:
        raise ValueError(f"configs/edgeconnect.py: choose one stage, got {stages}")
    c = config_lib.base_config()
    c.system = "edgeconnect"
    c.stage = stages[0] if stages else "edge"
    c.seed = 10
    c.edge_generator = ml_collections.ConfigDict({"kind": "EdgeGenerator", "width": 64, "residual_blocks": 8,
                                                  "use_spectral_norm": True, "init_std": 0.02})
    c.inpaint_generator = ml_collections.ConfigDict({"kind": "InpaintGenerator", "width": 64,
                                                     "residual_blocks": 8, "init_std": 0.02})
    # use_sigmoid follows losses.gan_type (no sigmoid for hinge), as in the original.
    c.edge_discriminator = ml_collections.ConfigDict({"kind": "Discriminator", "width": 64,
                                                      "use_spectral_norm": True, "init_std": 0.02})
    c.inpaint_discriminator = ml_collections.ConfigDict(c.edge_discriminator.to_dict())
    c.losses = ml_collections.ConfigDict({
        "gan_type": "nsgan",  # 'nsgan' | 'lsgan' | 'hinge'
        "edge_adversarial": 1.0,  # G1's adversarial term (unweighted in the original)
        "fm": 10.0,  # FM_LOSS_WEIGHT
        "l1": 1.0,  # L1_LOSS_WEIGHT
        "perceptual": 0.1,  # CONTENT_LOSS_WEIGHT
        "style": 250.0,  # STYLE_LOSS_WEIGHT
        "inpaint_adversarial": 0.1,  # INPAINT_ADV_LOSS_WEIGHT
        # torchvision vgg19 .pth / .npz; 'random' for smoke tests only.
        "vgg_weights": "",
        "vgg_width_divisor": 1,  # > 1 only with 'random' weights
    })
    c.lr = 1e-4  # LR
    c.d2g_lr = 0.1  # D2G_LR: the discriminators' lr is lr * d2g_lr
    c.g_optimizer = config_lib.optimizer("adam", 1e-4, b1=0.0, b2=0.9)
    c.d_optimizer = config_lib.optimizer("adam", 1e-5, b1=0.0, b2=0.9)
    c.g_optimizer.lr = c.get_ref("lr")
    c.d_optimizer.lr = c.get_ref("lr") * c.get_ref("d2g_lr")
    c.inference = ml_collections.ConfigDict({
        "sigma": 2.0,  # Canny σ (SIGMA), in training too; -1 = no edges
        "composite_edges": False,  # False: G1's raw output into G2, as the original's test(); True: pasted
    })
    c.input.image_size = 256
    c.input.batch_size = 8
    c.input.augment = "lama"
    c.input.short_side_range = (1.0, 1.0)  # resize the short side to image_size, crop, flip
    c.input.mask.name = "lama_train"
    c.input.eval_mask.name = "lama_thick_256"
    c.total_steps = 2_000_000  # MAX_ITERS
    c.ckpt_every_steps = 1000  # SAVE_INTERVAL
    c.image_every_steps = 1000  # SAMPLE_INTERVAL
    c.log_every_steps = 10  # LOG_INTERVAL
    if c.stage == "joint":
        c.init_from = ",".join(STAGE_WORKDIRS)
    if "file_masks" in variants:
        c.input.mask.name = "folder"
        c.input.mask.kwargs = ml_collections.ConfigDict({"root": config_dict.placeholder(str), "threshold": 0.0,
                                                         "invert": False})
        c.input.eval_mask.name = None  # the same folder
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """The same code paths, shrunk to finish 60 steps in a few minutes on 2 CPU cores."""
    for section in (c.edge_generator, c.inpaint_generator):
        section.width = 8
        section.residual_blocks = 2
    for section in (c.edge_discriminator, c.inpaint_discriminator):
        section.width = 8
    c.losses.vgg_weights = "random"
    c.losses.vgg_width_divisor = 8
    c.input.image_size = 64
    c.input.batch_size = 8
    if c.input.mask.name == "lama_train":
        c.input.mask.kwargs = ml_collections.ConfigDict({"out_min_size": 256})  # LaMa's 256-px hole sizes
        c.input.eval_mask.name = "lama_medium_256"
    config_lib.smoke_schedule(c)
    # A few dozen steps must show progress: G2's reconstruction losses fall fastest at 1e-3, while G1's
    # adversarial and feature-matching objective (Adam with beta1 = 0) oscillates there and falls steadily at
    # the original 1e-4 (measured over 60 steps).
    c.lr = 1e-4 if c.stage == "edge" else 1e-3
    if c.stage == "joint":
        c.init_from = ",".join(w + "_smoke" for w in STAGE_WORKDIRS)
