"""PGGAN (Demir & Ünal, arXiv 1803.07422, 2018, "Patch-Based Image Inpainting with Generative Adversarial
Networks"): no code or weights were released; every unverified choice is a config field.

* ``model.py``: the dilated residual generator with interpolation-then-convolution upsampling, and the
  discriminator whose shared trunk feeds a global head and a PatchGAN head;
* ``objective.py``: a D update (both heads' losses summed), then a G update (L1 + two adversarial terms).

Config: ``configs/pggan.py`` (``:smoke``).
"""

from __future__ import annotations

from jaxinpaint import contract, systems
from jaxinpaint.systems.pggan import objective
from jaxinpaint.systems.pggan.model import Discriminator, Generator

MODELS = {"Generator": Generator, "Discriminator": Discriminator}


def networks(config) -> dict[str, contract.Network]:
    runtime = contract.runtime_fields(config)
    generator = systems.build_module("pggan", config.generator, **runtime)
    discriminator = systems.build_module("pggan", config.discriminator, **runtime)
    if "input" in config and config.input.image_size != discriminator.input_size:
        raise ValueError(f"config.input.image_size={config.input.image_size} must equal "
                         f"config.discriminator.input_size={discriminator.input_size} (its global FC fixes it)")
    return {"generator": contract.Network(generator, lambda b: (objective.generator_input(b),), config.g_optimizer,
                                          ema=True),
            "discriminator": contract.Network(discriminator, lambda b: (b["image"],), config.d_optimizer)}


def phases(config) -> list[contract.Phase]:
    del config
    return [contract.Phase("train", (contract.Update("d", ("discriminator",), objective.discriminator_update),
                                     contract.Update("g", ("generator",), objective.generator_update)))]


SYSTEM = contract.System(
    name="pggan",
    title="Patch-Based Image Inpainting with Generative Adversarial Networks (Demir & Ünal, 2018)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    size_multiple=lambda modules: Generator.size_multiple,
    licence="no original code; this design follows the paper's abstract (systems-more.md §4)",
)
