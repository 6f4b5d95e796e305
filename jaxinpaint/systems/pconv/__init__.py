"""The PConv U-Net (Liu et al., ECCV 2018): partial convolutions, no discriminator.

* ``model.py``: the U-Net of partial convolutions (``jaxinpaint.nn.partial_conv``), frozen-encoder-BN
  fine-tuning;
* ``objective.py``: valid/hole L1, VGG16 perceptual and style, total variation.

Config: ``configs/pconv_unet.py`` (``:finetune``, ``:nvidia_masks``, ``:smoke``).
"""

from __future__ import annotations

from jaxinpaint import contract, systems
from jaxinpaint.systems.pconv import objective
from jaxinpaint.systems.pconv.model import PConvUNet

MODELS = {"PConvUNet": PConvUNet}


def networks(config) -> dict[str, contract.Network]:
    module = systems.build_module("pconv", config.generator, **contract.runtime_fields(config))
    return {"generator": contract.Network(module, lambda b: (objective.generator_input(b),), config.g_optimizer,
                                          ema=True)}


def phases(config) -> list[contract.Phase]:
    del config
    return [contract.Phase("train", (contract.Update("g", ("generator",), objective.generator_update),))]


SYSTEM = contract.System(
    name="pconv",
    title="Image Inpainting for Irregular Holes Using Partial Convolutions (Liu et al., ECCV 2018)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    frozen=objective.frozen_networks,
    licence="NVIDIA Source Code License (NVIDIA/partialconv); naoto0804's port MIT",
)
