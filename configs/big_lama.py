"""Big LaMa (Suvorov et al., WACV 2022; advimman/lama configs/training/big-lama.yaml).

    python train.py --config=configs/big_lama.py --workdir=workdirs/big_lama \
        --config.input.source=folder --config.input.folder=/data/places_standard \
        --config.losses.hrf_weights=/weights/ade20k/ade20k-resnet50dilated-ppm_deepsup/encoder_epoch_20.pth

    python train.py --config=configs/big_lama.py:smoke --workdir=/tmp/smoke   # a couple of minutes on a CPU

Generator: FFC ResNet, 18 blocks, ngf 64, 3 down-samplings, global ratio 0.75, no LFU (50.98M parameters).
Discriminator: NLayer PatchGAN, ndf 64, 4 layers (6.96M). Losses: L1 on known pixels x10, non-saturating
adversarial x10 with R1 (gamma 0.001) and mask-as-fake-target, feature matching x100, HRF perceptual (ADE20k
ResNet50-dilated) x30. Adam G 1e-3 / D 1e-4, gradient clipping 1, 256x256 crops, LaMa's training masks.
"""

import ml_collections

from jaxinpaint import config_lib


def lama_losses() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "l1_weight_known": 10.0,
        "l1_weight_missing": 0.0,
        "adversarial": 10.0,
        "r1_gamma": 0.001,
        "mask_as_fake_target": True,
        "feature_matching": 100.0,
        "hrf_perceptual": 30.0,
        # 'train': the encoder's BatchNorm uses batch statistics, as LaMa's Lightning training runs it (LaMa-exact);
        # 'eval': its running statistics.
        "hrf_bn_mode": "train",
        # LaMa's encoder_epoch_20.pth (or a converted .npz); '' = $JAXINPAINT_WEIGHTS/ade20k/...;
        # 'random' = a randomly initialised backbone (smoke tests only).
        "hrf_weights": "",
    })


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, {"smoke"})
    c = config_lib.base_config()
    c.system = "lama"
    c.generator = ml_collections.ConfigDict({
        "kind": "FFCResNetGenerator", "ngf": 64, "n_downsampling": 3, "n_blocks": 18, "resnet_ratio_gin": 0.75,
        "resnet_ratio_gout": 0.75, "enable_lfu": False, "add_out_act": "sigmoid"})
    c.discriminator = ml_collections.ConfigDict({"kind": "NLayerDiscriminator", "ndf": 64, "n_layers": 4})
    c.losses = lama_losses()
    # impl='torch': torch.optim.Adam's arithmetic and Lightning 1.2.9's clip, min(1, 1 / (norm + 1e-6)), as LaMa
    # trains (tests/test_train_parity.py); 'optax' is optax's formulas (the same cost, an ulp or so apart per step).
    c.g_optimizer = config_lib.optimizer("adam", 1e-3, clip_norm=1.0, impl="torch")
    c.d_optimizer = config_lib.optimizer("adam", 1e-4, clip_norm=1.0, impl="torch")
    # The D update's fakes: a second forward pass of the updated G ('regenerate', LaMa-exact) or the G
    # update's prediction ('reuse', one forward pass cheaper).
    c.d_fake = "regenerate"
    c.input.image_size = 256
    c.input.batch_size = 10 * 8  # LaMa: 10 per GPU on 8 GPUs (the paper's Big LaMa: 120)
    # LaMa's DDP training had no SyncBN: BatchNorm statistics over each GPU's 10 images. Eight statistics groups
    # of the global batch reproduce that on any number of devices (1 = statistics over the whole batch).
    c.bn_groups = 8
    c.input.augment = "distortions"
    c.input.mask.name = "lama_train"
    c.input.eval_mask.name = "lama_thick_256"
    c.eval_every_steps = 25_000  # LaMa: validation every epoch of 25,000 batches
    c.keep_best = 5
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """The same code paths, shrunk to finish a few dozen steps in a couple of minutes on 2 CPU cores."""
    c.generator.ngf = 8
    c.generator.n_downsampling = 2
    c.generator.n_blocks = 2
    c.discriminator.ndf = 8
    c.discriminator.n_layers = 3
    c.losses.hrf_weights = "random"
    c.input.image_size = 64
    c.input.batch_size = 8
    c.bn_groups = 1
    c.input.augment = "lama"
    c.input.mask.kwargs = ml_collections.ConfigDict({"out_min_size": 256})  # keep LaMa's 256-px hole statistics
    c.input.eval_mask.name = "lama_medium_256"
    config_lib.smoke_schedule(c)
    c.eval_every_steps = 30
    c.eval_num_examples = 16
    c.g_optimizer.lr = 2e-3
    c.d_optimizer.lr = 2e-4
