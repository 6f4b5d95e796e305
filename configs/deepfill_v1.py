"""DeepFill v1 (Yu et al., CVPR 2018; JiahuiYu/generative_inpainting v1.0.0 ``inpaint.yml``), systems-more.md §10.

    python train.py --config=configs/deepfill_v1.py --workdir=workdirs/deepfill_v1 \
        --config.input.source=folder --config.input.folder=/data/places2

    # Coarse network only (the yml's PRETRAIN_COARSE_NETWORK: no adversarial term in G, critics on x1):
    python train.py --config=configs/deepfill_v1.py:pretrain_coarse --workdir=workdirs/deepfill_v1_coarse ...
    # or both in one run: --config.coarse_pretrain_steps=N trains coarse-only for the first N steps.

    python train.py --config=configs/deepfill_v1.py:smoke --workdir=/tmp/deepfill_v1_smoke   # ~1 min on a CPU

Generator: coarse + refinement, plain convs with ELU, dilations 2/4/8/16, contextual attention, outputs clipped
to [-1, 1], cnum 32 (3,601,542 parameters). Critics: WGAN-GP, a local one on the 128² box around the hole
(4,339,329) and a global one on the 256² image (2,733,441), no normalisation. Losses: spatially discounted L1
on the box (γ 0.9, coarse ×1.2) ×1.2, known-region L1 ×1.2, WGAN ×0.001 (global ×1), gradient penalty ×10 on
hole pixels. Five critic updates per generator update, each on a fresh batch and mask. Adam 1e-4, betas
(0.5, 0.9), batch 16 at 256², 1M iterations, no lr decay, no clipping. Masks: one 128² box per batch, shrunk by
0-16 px on opposite sides (``deepfill_v1``).

Deviations and unverified points (each a config field):

* ``losses.gamma`` 0.9 is the code's value; the paper reportedly says 0.99 (a third-party summary, unverified).
* The original uses ONE TF1 Adam for G and both critics; that TF1 then shares the bias-correction powers
  across the two minimise ops is inferred, not checked. Here each network has its own Adam (the same
  settings), so each corrects its own moments; the difference fades within a few hundred steps.
* Augmentation: LaMa's resize + random crop (the original random-crops Places2 and resizes CelebA-HQ) plus a
  horizontal flip that the original does not do.
* Inputs are RGB everywhere outside the system; the networks see BGR, like the released TF1 weights.
"""

import ml_collections

from jaxinpaint import config_lib

VARIANTS = {"smoke", "pretrain_coarse"}


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, VARIANTS)
    c = config_lib.base_config()
    c.system = "deepfill_v1"
    c.generator = ml_collections.ConfigDict({"kind": "Generator", "cnum": 32})
    c.local_critic = ml_collections.ConfigDict({"kind": "Critic", "cnum": 64, "last_multiplier": 8})
    c.global_critic = ml_collections.ConfigDict({"kind": "Critic", "cnum": 64, "last_multiplier": 4})
    c.losses = ml_collections.ConfigDict({
        "l1": 1.2,  # L1_LOSS_ALPHA: the discounted L1 on the local box
        "ae": 1.2,  # AE_LOSS_ALPHA: the known-region L1
        "coarse_l1": 1.2,  # COARSE_L1_ALPHA: the coarse output's share of both
        "adversarial": 0.001,  # GAN_LOSS_ALPHA
        "global_adversarial": 1.0,  # GLOBAL_WGAN_LOSS_ALPHA
        "gp": 10.0,  # WGAN_GP_LAMBDA
        "gamma": 0.9,  # SPATIAL_DISCOUNTING_GAMMA (code); the paper: 0.99 (unverified)
        "local_size": 128,  # the local box (HEIGHT, WIDTH): half the image side
    })
    c.n_critic = 5  # critic updates per generator update, each on a fresh batch
    c.coarse_pretrain_steps = 0  # > 0: coarse-only generator loss for these first steps
    c.g_optimizer = config_lib.optimizer("adam", 1e-4, b1=0.5, b2=0.9)
    c.d_optimizer = config_lib.optimizer("adam", 1e-4, b1=0.5, b2=0.9)
    c.input.image_size = 256
    c.input.batch_size = 16
    c.input.augment = "lama"
    c.input.mask.name = "deepfill_v1"
    c.input.mask.per_batch = True  # one bbox mask for the whole batch, as the original
    c.input.eval_mask.name = "deepfill_v1"
    c.total_steps = 1_000_000
    c.ckpt_every_steps = 10_000  # TRAIN_SPE
    if "pretrain_coarse" in variants:
        c.coarse_pretrain_steps = c.get_ref("total_steps")  # the whole run, whatever total_steps becomes
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """The same code paths at 64² with narrow networks: a few dozen steps in about a minute on 2 CPU cores."""
    c.generator.cnum = 8
    c.local_critic.cnum = 8
    c.global_critic.cnum = 8
    c.losses.local_size = 32
    c.input.image_size = 64
    c.input.batch_size = 4
    config_lib.smoke_schedule(c)
    c.g_optimizer.lr = 1e-3
    c.d_optimizer.lr = 1e-3
