"""DeepFill v2 (Yu et al., ICCV 2019): gated convolutions, contextual attention, SN-PatchGAN.

* ``model.py``: the coarse-to-fine gated generator and the SN-PatchGAN (written from the specification;
  the original is CC BY-NC 4.0);
* ``objective.py``: whole-image L1 on both stages, hinge GAN on the composite.

Config: ``configs/deepfill_v2.py`` (``:smoke``).
"""

from __future__ import annotations

from jaxinpaint import contract, systems
from jaxinpaint.systems.deepfill_v2 import objective
from jaxinpaint.systems.deepfill_v2.model import Generator, SNPatchGAN

MODELS = {"Generator": Generator, "SNPatchGAN": SNPatchGAN}


def networks(config) -> dict[str, contract.Network]:
    runtime = contract.runtime_fields(config)
    nets = {"generator": contract.Network(systems.build_module("deepfill_v2", config.generator, **runtime),
                                          lambda b: (objective.generator_input(b),), config.g_optimizer, ema=True)}
    if config.discriminator.kind:
        nets["discriminator"] = contract.Network(
            systems.build_module("deepfill_v2", config.discriminator, **runtime),
            lambda b: (objective.discriminator_input(b["image"], b),), config.d_optimizer)
    return nets


def phases(config) -> list[contract.Phase]:
    updates = [contract.Update("g", ("generator",), objective.generator_update)]
    if config.discriminator.kind:
        updates.append(contract.Update("d", ("discriminator",), objective.discriminator_update))
    return [contract.Phase("train", tuple(updates))]


SYSTEM = contract.System(
    name="deepfill_v2",
    title="Free-Form Image Inpainting with Gated Convolution (Yu et al., ICCV 2019)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    licence="CC BY-NC 4.0 (JiahuiYu/generative_inpainting); this port is written from the specification",
)
