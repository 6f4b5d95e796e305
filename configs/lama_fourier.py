"""LaMa-Fourier (the paper's main model): Big LaMa's recipe with 9 FFC residual blocks (27.05M parameters).

    python train.py --config=configs/lama_fourier.py --workdir=workdirs/lama_fourier
    python train.py --config=configs/lama_fourier.py:smoke --workdir=/tmp/smoke_fourier

LaMa trains it with batch 10 per GPU (configs/training/lama-fourier.yaml, generator ffc_resnet_075.yaml).
"""

from jaxinpaint import config_lib

big_lama = config_lib.load_module("big_lama", near=__file__)


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, {"smoke"})
    c = big_lama.get_config()
    c.generator.n_blocks = 9
    c.input.augment = "lama"
    if "smoke" in variants:
        big_lama.shrink_for_smoke(c)
    return c
