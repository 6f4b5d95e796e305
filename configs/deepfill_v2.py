"""DeepFill v2 (Yu et al., ICCV 2019; JiahuiYu/generative_inpainting v2.0.0 ``inpaint.yml``).

    python train.py --config=configs/deepfill_v2.py --workdir=workdirs/deepfill_v2 \
        --config.input.source=folder --config.input.folder=/data/places_standard

    python train.py --config=configs/deepfill_v2.py:smoke --workdir=/tmp/deepfill_smoke   # ~2 min on a CPU

Generator: two-stage gated convolutions with contextual attention, cnum 48 (4,052,478 parameters).
Discriminator: SN-PatchGAN, 6 spectral-normalised 5x5 stride-2 convs, cnum 64 (5,946,816 parameters).
Losses: whole-image L1 on the coarse and the fine output (x1 each, in [-1, 1] units) + hinge GAN x1 on the
composite. Adam 1e-4, betas (0.5, 0.999) for G and D, no gradient clipping, batch 16 at 256x256. Training
masks: DeepFill's box ∪ brush, one mask shared by the whole batch as in the original
(``--config.input.mask.per_batch=False`` draws one per sample instead).

The original updates D on the fakes of the G it judged (no second G pass): the D update reuses them.
Image sizes must be multiples of 8 (two stride-2 stages, then contextual attention at rate 2).
"""

import ml_collections

from jaxinpaint import config_lib


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, {"smoke"})
    c = config_lib.base_config()
    c.system = "deepfill_v2"
    c.generator = ml_collections.ConfigDict({"kind": "Generator", "cnum": 48, "padding": "same",
                                             "align_corners": True})
    c.discriminator = ml_collections.ConfigDict({"kind": "SNPatchGAN", "cnum": 64})
    c.losses = ml_collections.ConfigDict({"l1_coarse": 1.0, "l1_fine": 1.0, "adversarial": 1.0})
    c.g_optimizer = config_lib.optimizer("adam", 1e-4, b1=0.5, b2=0.999)
    c.d_optimizer = config_lib.optimizer("adam", 1e-4, b1=0.5, b2=0.999)
    c.input.image_size = 256
    c.input.batch_size = 16
    c.input.augment = "lama"  # resize + random 256 crop (the original random-crops Places2)
    c.input.mask.name = "deepfill_v2"
    c.input.mask.per_batch = True
    c.input.eval_mask.name = "deepfill_v2"
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """The same code paths, shrunk to finish a few dozen steps in about two minutes on 2 CPU cores."""
    c.generator.cnum = 12
    c.discriminator.cnum = 16
    c.input.image_size = 64
    c.input.batch_size = 8
    # DeepFill's brush widths (12-40 px) are meant for 256 px images: scale them to 64 px.
    c.input.mask.kwargs = ml_collections.ConfigDict({"min_brush_width": 3.0, "max_brush_width": 10.0})
    c.input.eval_mask.kwargs = ml_collections.ConfigDict({"min_brush_width": 3.0, "max_brush_width": 10.0})
    config_lib.smoke_schedule(c)
    c.g_optimizer.lr = 1e-3
    c.d_optimizer.lr = 1e-3
