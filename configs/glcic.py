"""GLCIC (Iizuka et al., SIGGRAPH 2017), systems-more.md §3.

    # Places2, the paper's setting (256² crops of images with a short side in [256, 384], 96-128 px holes):
    python train.py --config=configs/glcic.py --workdir=workdirs/glcic \
        --config.input.source=folder --config.input.folder=/data/places2

    # CelebA (otenim's architecture: 160² images, 96² local patches, 48-96 px holes):
    python train.py --config=configs/glcic.py:celeba --workdir=workdirs/glcic_celeba \
        --config.input.source=tfds --config.input.tfds_name=celeb_a

    # All three phases shortened by a factor (here 1/1000: 90 / 10 / 400 steps):
    python train.py --config=configs/glcic.py --config.schedule.scale=0.001 ...

    python train.py --config=configs/glcic.py:smoke --workdir=/tmp/glcic_smoke   # ~1 min on a CPU

Completion network: 17 layers with dilations 2, 4, 8, 16 (6,072,131 parameters), conv → BN → ReLU (the
official t7's order; ``generator.bn_after_relu=True`` for otenim's). Discriminator: global (6 blocks on 256²)
and local (5 blocks on 128²) branches, FC 1024 each, joint FC 2048 → 1 (45,063,681 parameters). Loss: hole MSE
+ α·BCE, α = 4e-4 (otenim ``--alpha``). Three phases: completion only for T_C = 90,000 iterations, D only for
T_D = 10,000, then both to 500,000 in total (otenim/mmagic [3rd]; ``schedule.scale`` multiplies all three).
Adadelta with PyTorch's defaults (lr 1.0, ρ 0.9, ε 1e-6) for both networks, batch 96 (the paper; otenim 16).
Input preprocessing as the official code: minus the Places2 mean pixel, holes at 0. Inference composites; with
``inference.postprocess=True`` the official Telea + Poisson post-processing runs on the host (OpenCV).

Switches (all **unverified** in the paper, systems-more.md §3.5-3.7): ``losses.d_input`` 'composite' (mmagic,
default) or 'raw' (otenim); ``losses.real_local`` 'aligned' (the real local patch at the fake one's window,
mmagic, default) or 'independent' (otenim); ``losses.d_weight`` scales D's BCE (otenim: 1/2 then α).
Unverified too: α, the phase lengths, batch 96, Adadelta, the 256/128 crop sizes, the BN order in D, the
dilation rates.
"""

import ml_collections
from ml_collections import config_dict

from jaxinpaint import config_lib

PLACES2_MEAN = (0.4560, 0.4472, 0.4155)  # the official t7's mean pixel (yangwangx inpaint.py:27 [3rd])
T_C, T_D, T_TRAIN = 90_000, 10_000, 500_000


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, {"celeba", "smoke"})
    c = config_lib.base_config()
    c.system = "glcic"
    c.generator = ml_collections.ConfigDict({"kind": "CompletionNetwork", "width": 64, "bn_after_relu": False})
    c.discriminator = ml_collections.ConfigDict({
        "kind": "Discriminator", "global_size": 256, "local_size": 128, "global_layers": 6, "local_layers": 5,
        "width": 64, "bn_after_relu": False})
    c.losses = ml_collections.ConfigDict({"alpha": 4e-4, "d_weight": 1.0, "d_input": "composite",
                                          "real_local": "aligned"})
    scale = config_dict.FieldReference(1.0)
    c.schedule = ml_collections.ConfigDict({"completion_steps": T_C, "discriminator_steps": T_D, "scale": scale})
    c.total_steps = (scale * T_TRAIN).to_int()
    c.g_optimizer = config_lib.optimizer("adadelta", 1.0, rho=0.9, eps=1e-6)
    c.d_optimizer = config_lib.optimizer("adadelta", 1.0, rho=0.9, eps=1e-6)
    c.input.image_size = 256
    c.input.batch_size = 96
    c.input.augment = "lama"
    c.input.short_side_range = (1.0, 1.5)  # Places2 images with a short side in [256, 384], random 256² crop
    c.input.mask = ml_collections.ConfigDict({
        "name": "glcic", "kwargs": ml_collections.ConfigDict({"area": 128, "min_size": 96, "max_size": 128}),
        "per_batch": False})
    c.inference.mean = PLACES2_MEAN
    c.inference.postprocess = False
    c.ckpt_every_steps = 10_000
    c.image_every_steps = 2_000
    c.eval_every_steps = 50_000
    if "celeba" in variants:
        c.discriminator.global_size = 160
        c.discriminator.local_size = 96
        c.discriminator.global_layers = 5
        c.input.image_size = 160
        c.input.short_side_range = (1.0, 178 / 160)  # faces with a short side in [160, 178]
        c.input.mask.kwargs = ml_collections.ConfigDict({"area": 96, "min_size": 48, "max_size": 96})
    if "smoke" in variants:
        shrink_for_smoke(c)
    return c


def shrink_for_smoke(c):
    """64² images, 32² local patches, narrow networks; the three phases in 20 / 10 / 30 steps."""
    c.generator.width = 8
    c.discriminator.width = 8
    c.discriminator.global_size = 64
    c.discriminator.local_size = 32
    c.discriminator.global_layers = 4
    c.discriminator.local_layers = 3
    c.input.image_size = 64
    c.input.batch_size = 8
    c.input.mask.kwargs = ml_collections.ConfigDict({"area": 32, "min_size": 20, "max_size": 32})
    config_lib.smoke_schedule(c)
    c.schedule.completion_steps = 20
    c.schedule.discriminator_steps = 10
    c.total_steps = 60
    c.eval_every_steps = 30
    c.eval_num_examples = 8
