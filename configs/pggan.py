"""PGGAN (Demir & Ünal, arXiv 1803.07422, 2018), systems-more.md §4: design defaults, every one a field.

    python train.py --config=configs/pggan.py --workdir=workdirs/pggan \
        --config.input.source=folder --config.input.folder=/data/paris_streetview

    python train.py --config=configs/pggan.py:smoke --workdir=/tmp/pggan_smoke   # ~1 min on a CPU

Only the abstract was read: the discriminator's shared trunk with a global head and a PatchGAN head, and the
two adversarial losses, are verified; everything else is **unverified** (recalled or designed) and lives here:

* generator: ``ngf`` 64, ``n_blocks`` 9 dilated residual blocks at 64², ``dilations`` (1, 2, 4, 8) cycling,
  ``norm`` 'instance', ``upsample`` 'nearest' then a 3×3 conv (the paper's interpolated convolutions; the
  paper also reports a U-Net generator, not built);
* discriminator: trunk C64-C128-C256 (4×4 stride 2), PatchGAN head C512-C1 (30×30 logits at 256²), global
  head C512 stride-2 convs to 4×4 then FC → 1; ``norm`` 'instance';
* losses: ``l1`` 0.995 (whole-image L1 in [-1, 1] units), ``global_adv`` and ``patch_adv`` 0.0025 each
  (recalled, low confidence); ``gan`` 'vanilla' (or 'lsgan'); D judges the composite (``d_input``);
* Adam 2e-4, β1 0.5 for both networks (Context Encoder-like), batch 16, 256² crops; masks: GLCIC's box holes
  (96-128 px in a 128² area; the paper's masks were not recovered).
"""

import ml_collections

from jaxinpaint import config_lib


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, {"smoke"})
    c = config_lib.base_config()
    c.system = "pggan"
    c.generator = ml_collections.ConfigDict({"kind": "Generator", "ngf": 64, "n_blocks": 9,
                                             "dilations": (1, 2, 4, 8), "norm": "instance", "upsample": "nearest"})
    c.discriminator = ml_collections.ConfigDict({"kind": "Discriminator", "input_size": 256, "ndf": 64,
                                                 "norm": "instance"})
    c.losses = ml_collections.ConfigDict({"l1": 0.995, "global_adv": 0.0025, "patch_adv": 0.0025, "gan": "vanilla",
                                          "d_input": "composite"})
    c.g_optimizer = config_lib.optimizer("adam", 2e-4, b1=0.5, b2=0.999)
    c.d_optimizer = config_lib.optimizer("adam", 2e-4, b1=0.5, b2=0.999)
    c.input.image_size = 256
    c.input.batch_size = 16
    c.input.augment = "lama"
    c.input.mask = ml_collections.ConfigDict({
        "name": "glcic", "kwargs": ml_collections.ConfigDict({"area": 128, "min_size": 96, "max_size": 128}),
        "per_batch": False})
    c.total_steps = 300_000
    c.ckpt_every_steps = 10_000
    c.image_every_steps = 2_000
    c.eval_every_steps = 20_000
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """64² images, narrow networks, two residual blocks: a few dozen steps in about a minute on 2 CPU cores."""
    c.generator.ngf = 8
    c.generator.n_blocks = 2
    c.discriminator.ndf = 8
    c.discriminator.input_size = 64
    c.input.image_size = 64
    c.input.batch_size = 8
    c.input.mask.kwargs = ml_collections.ConfigDict({"area": 32, "min_size": 20, "max_size": 32})
    config_lib.smoke_schedule(c)
    c.eval_every_steps = 30
    c.eval_num_examples = 8
    c.g_optimizer.lr = 1e-3
    c.d_optimizer.lr = 1e-3
