"""EdgeConnect (Nazeri et al., ICCV-W 2019; ``knazeri/edge-connect``): draw the edges, then paint.

* ``model.py``: the edge generator (spectral norm), the inpainting generator, the 70×70 PatchGAN;
* ``objective.py``: Canny inputs, the losses of each stage, the update order, inference;
* ``convert.py``: the released ``EdgeModel_*.pth`` / ``InpaintingModel_*.pth`` files, read without PyTorch.

Written from the specification (``shared/docs/systems-more.md`` §8); the original is CC BY-NC 4.0.

Networks by ``config.stage``: ``'edge'`` trains ``edge_generator`` and ``edge_discriminator``; ``'inpaint'``
trains ``inpaint_generator`` and ``inpaint_discriminator``; ``'joint'`` keeps ``edge_generator`` frozen (no
optimiser) beside the inpainting pair. A converted model holds both generators (and the discriminators when
the release has them). Config: ``configs/edgeconnect.py`` (``:edge``, ``:inpaint``, ``:joint``, ``:smoke``).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxinpaint import contract, systems
from jaxinpaint.systems.edgeconnect import objective
from jaxinpaint.systems.edgeconnect.model import SIZE_MULTIPLE, Discriminator, EdgeGenerator, InpaintGenerator
from jaxinpaint.systems.edgeconnect.objective import EDGE_D, EDGE_G, INPAINT_D, INPAINT_G

MODELS = {"EdgeGenerator": EdgeGenerator, "InpaintGenerator": InpaintGenerator, "Discriminator": Discriminator}


def _discriminator(config, section):
    """The config's discriminator, with the sigmoid the GAN loss needs (none for hinge, as the original)."""
    return systems.build_module("edgeconnect", {**section, "use_sigmoid": config.losses.gan_type != "hinge"})


def networks(config) -> dict[str, contract.Network]:
    objective.check_config(config)
    stage = config.stage
    nets = {}
    if stage in ("edge", "joint"):
        trains = stage == "edge"
        nets[EDGE_G] = contract.Network(
            systems.build_module("edgeconnect", config.edge_generator),
            lambda b: (objective.edge_generator_input(b["grey"], b["edge"], b["mask"]),),
            config.g_optimizer if trains else None, ema=trains)
    if stage == "edge":
        nets[EDGE_D] = contract.Network(_discriminator(config, config.edge_discriminator),
                                        lambda b: (jnp.concatenate([b["grey"], b["edge"]], axis=-1),),
                                        config.d_optimizer)
    if stage in ("inpaint", "joint"):
        nets[INPAINT_G] = contract.Network(
            systems.build_module("edgeconnect", config.inpaint_generator),
            lambda b: (objective.inpaint_generator_input(b["image"], b["edge"], b["mask"]),),
            config.g_optimizer, ema=True)
        nets[INPAINT_D] = contract.Network(_discriminator(config, config.inpaint_discriminator),
                                           lambda b: (b["image"],), config.d_optimizer)
    return nets


def phases(config) -> list[contract.Phase]:
    """One phase per stage: the generator update (through the pre-update D), then the D update."""
    objective.check_config(config)
    if config.stage == "edge":
        updates = (contract.Update("g1", (EDGE_G,), objective.edge_generator_update),
                   contract.Update("d1", (EDGE_D,), objective.edge_discriminator_update))
    else:
        if config.stage == "joint" and not config.init_from:
            raise ValueError("config.stage='joint' trains the inpainting generator on a frozen, trained edge "
                             "generator: set config.init_from to the edge stage's and the inpaint stage's "
                             "workdirs (comma-separated), or to converted EdgeConnect weights")
        updates = (contract.Update("g2", (INPAINT_G,), objective.inpaint_generator_update),
                   contract.Update("d2", (INPAINT_D,), objective.inpaint_discriminator_update))
    return [contract.Phase(config.stage, updates)]


SYSTEM = contract.System(
    name="edgeconnect",
    title="EdgeConnect: Generative Image Inpainting with Adversarial Edge Learning (Nazeri et al., ICCV-W 2019)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    frozen=objective.frozen_networks,
    prepare_example=objective.prepare_example,
    inference_networks=(EDGE_G, INPAINT_G),
    default_inference=objective.default_inference,
    load_original=contract.lazy("jaxinpaint.systems.edgeconnect.convert", "load_original"),
    recognizes=contract.lazy("jaxinpaint.systems.edgeconnect.convert", "looks_like_edgeconnect"),
    size_multiple=lambda modules: SIZE_MULTIPLE,
    licence="CC BY-NC 4.0 (knazeri/edge-connect); this port is written from the specification",
)
