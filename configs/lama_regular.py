"""LaMa-Regular: pix2pixHD global generator with 9 plain residual blocks and a sigmoid (46M parameters),
trained with LaMa's losses (configs/training/lama-regular.yaml, generator pix2pixhd_global_sigmoid.yaml).

    python train.py --config=configs/lama_regular.py --workdir=workdirs/lama_regular
    python train.py --config=configs/lama_regular.py:smoke --workdir=/tmp/smoke_regular
"""

import ml_collections

from jaxinpaint import config_lib

big_lama = config_lib.load_module("big_lama", near=__file__)


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, {"smoke"})
    c = big_lama.get_config()
    c.generator = ml_collections.ConfigDict({"kind": "GlobalGenerator", "ngf": 64, "n_downsampling": 3,
                                             "n_blocks": 9, "add_out_act": "sigmoid"})
    c.input.augment = "lama"
    if "smoke" in variants:
        big_lama.shrink_for_smoke(c)
    return c
