"""Context Encoder (Pathak et al., CVPR 2016; ``pathak22/context-encoder``), systems-more.md §2.

    # Centre variant, the README's command (Paris StreetView, 128² crops of images resized to 350):
    python train.py --config=configs/context_encoder.py --workdir=workdirs/ce_center \
        --config.input.source=folder --config.input.folder=/data/paris_streetview

    # Random-region variant (train_random.lua; one noise-region mask per batch, composited at test time):
    python train.py --config=configs/context_encoder.py:random --workdir=workdirs/ce_random \
        --config.input.source=folder --config.input.folder=/data/paris_streetview

    python train.py --config=configs/context_encoder.py:smoke --workdir=/tmp/ce_smoke   # ~1 min on a CPU

Centre (the README's ``train.lua`` settings): 128² input (``fineSize``), the generator predicts the 64² centre;
the input's inner 56² ([36, 92), ``overlapPred`` 4) is filled with the mean colour (117, 104, 123)/255 and the
4-px ring of the centre stays real; L2 weight ``wtl2`` 0.999 with the ring weighted 10×, adversarial weight
1 - wtl2 = 0.001; the code's FC bottleneck with nB 4000 (G 71,124,544 parameters, D 2,765,568; no biases).
Adam β1 0.5, D lr 2e-4 and G lr 10× = 2e-3 (``train.lua:213-221``), batch 64, 500 epochs, short side resized to
``loadSize`` 350 then a random 128² crop and a horizontal flip. One D step, then one G step.

``:random`` (``train_random.lua``): the generator predicts the whole 128² image (its extra 64→64 layer), D
judges whole images; holes from the random-region pattern, hole fraction in (20 %, 30 %), one mask shared by
the batch; uniform L2 over the whole image (the README's ``useOverlapPred=0``: ``overlap_weight`` 1; set it to
10 for the file's ``useOverlapPred=1``, which weights the *known* pixels 10×). nB 4000 and wtl2 0.999 as in the
centre command (**unverified** for the random command).

Unverified (systems-more.md §12): Adam's β2 and ε (Torch ``optim.adam`` defaults 0.999, 1e-8), the paper's 7-px
overlap against the code's 4 px (``config.inference.overlap`` with ``input.mask.kwargs.overlap``), the bilinear
``image.scale`` of the loader. ``generator.bottleneck='channel_wise'`` is the paper's Fig. 9(b) layer (its mixing
conv size **unverified**, 1×1 here). Not ported: ``noiseGen`` and ``conditionAdv`` (off in every README command).
An epoch is ⌈N/64⌉ steps: ``total_steps`` below is 500 epochs of Paris StreetView's ~14,900 training images;
set it for other data. The generator's BatchNorm γ is drawn N(1, 0.02) and every kernel N(0, 0.02), as
``train.lua:58-67``.
"""

import math

import ml_collections

from jaxinpaint import config_lib

PARIS_TRAIN_IMAGES = 14_900
BATCH = 64


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, {"random", "smoke"})
    random = "random" in variants
    c = config_lib.base_config()
    c.system = "context_encoder"
    c.generator = ml_collections.ConfigDict({
        "kind": "Generator", "fine_size": 128, "center_only": not random, "nef": 64, "ngf": 64, "nc": 3,
        "n_bottleneck": 4000, "bottleneck": "fc"})
    # Judges the 64² centre (centre variant) or the whole image (random variant).
    c.discriminator = ml_collections.ConfigDict({"kind": "Discriminator", "input_size": 128 if random else 64,
                                                 "ndf": 64, "nc": 3})
    c.losses = ml_collections.ConfigDict({
        "wtl2": 0.999,  # L2 weight; the adversarial weight is 1 - wtl2 when 0 < wtl2 < 1 (train.lua:372-388)
        "overlap_weight": 1.0 if random else 10.0,  # weight of non-hole pixels in the L2 (ring / known pixels)
    })
    c.g_optimizer = config_lib.optimizer("adam", 2e-3, b1=0.5, b2=0.999, eps=1e-8)  # G lr = 10× D lr
    c.d_optimizer = config_lib.optimizer("adam", 2e-4, b1=0.5, b2=0.999, eps=1e-8)
    c.input.image_size = 128
    c.input.batch_size = BATCH
    c.input.augment = "lama"  # short side resized to loadSize 350, random 128² crop, horizontal flip
    c.input.short_side_range = (350 / 128, 350 / 128)
    if random:
        c.input.mask = ml_collections.ConfigDict({"name": "context_encoder_random",
                                                  "kwargs": ml_collections.ConfigDict(), "per_batch": True})
    else:
        c.input.mask = ml_collections.ConfigDict({"name": "context_encoder_center",
                                                  "kwargs": ml_collections.ConfigDict({"overlap": 4}),
                                                  "per_batch": False})
    c.inference.overlap = 4  # the inner box the centre generator fills: [F/4 + overlap, 3F/4 - overlap)
    epoch = math.ceil(PARIS_TRAIN_IMAGES / BATCH)
    c.total_steps = 500 * epoch
    c.ckpt_every_steps = 20 * epoch  # train.lua saves every 20 epochs
    c.image_every_steps = epoch
    c.eval_every_steps = 20 * epoch
    c.eval_num_examples = 100  # Paris StreetView's 100 test images
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """The same code paths at 64² with narrow networks: a few dozen steps in about a minute on 2 CPU cores."""
    c.generator.fine_size = 64
    c.generator.nef = c.generator.ngf = 8
    c.generator.n_bottleneck = 32
    c.discriminator.input_size = 64 if not c.generator.center_only else 32
    c.discriminator.ndf = 8
    c.input.image_size = 64
    c.input.batch_size = 8
    if c.generator.center_only:
        c.input.mask.kwargs.overlap = 2
        c.inference.overlap = 2
    config_lib.smoke_schedule(c)
    c.eval_every_steps = 30
    c.eval_num_examples = 8
