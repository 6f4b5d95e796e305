"""Context Encoder (Pathak et al., CVPR 2016, "Context Encoders: Feature Learning by Inpainting").

* ``model.py``: the encoder-bottleneck-decoder generator (centre or whole-image output, the code's FC or the
  paper's channel-wise bottleneck, bias-free) and DCGAN's discriminator;
* ``objective.py``: a D step then a G step per batch, the overlap-weighted L2 and the adversarial BCE as
  ``train.lua`` applies them, and inference on any image size.

No converter: the released ``*_inpaintCenter.t7`` files are Torch7 serialisations (systems-more.md §2.8).
Config: ``configs/context_encoder.py`` (``:random``, ``:smoke``).
"""

from __future__ import annotations

from jaxinpaint import contract, systems
from jaxinpaint.systems.context_encoder import objective
from jaxinpaint.systems.context_encoder.model import Discriminator, Generator

MODELS = {"Generator": Generator, "Discriminator": Discriminator}
CENTER_MASK = "context_encoder_center"


def check_config(config, generator: Generator, discriminator: Discriminator | None) -> None:
    """Raises ValueError naming the config fields that disagree (sizes, the centre mask and its overlap)."""
    if "input" in config and config.input.image_size != generator.fine_size:
        raise ValueError(f"config.input.image_size={config.input.image_size} must equal "
                         f"config.generator.fine_size={generator.fine_size}: the network takes fixed-size images")
    if discriminator is not None and discriminator.input_size != generator.output_size:
        raise ValueError(f"config.discriminator.input_size={discriminator.input_size} must equal the generator's "
                         f"output size {generator.output_size}")
    if generator.center_only and "input" in config:
        mask = config.input.mask
        if mask.name != CENTER_MASK:
            raise ValueError(f"config.input.mask.name={mask.name!r}: the centre Context Encoder trains on "
                             f"{CENTER_MASK!r} (use the ':random' config for other holes)")
        overlap = mask.kwargs.get("overlap", 4)
        if overlap != config.inference.overlap:
            raise ValueError(f"config.input.mask.kwargs.overlap={overlap} and config.inference.overlap="
                             f"{config.inference.overlap} must agree (the inner box the network learns to fill)")


def networks(config) -> dict[str, contract.Network]:
    runtime = contract.runtime_fields(config)
    generator = systems.build_module("context_encoder", config.generator, **runtime)
    nets = {"generator": contract.Network(generator, lambda b: (objective.to_signed(b["image"]),),
                                          config.g_optimizer, ema=True)}
    discriminator = None
    if config.discriminator.kind:
        discriminator = systems.build_module("context_encoder", config.discriminator, **runtime)
        size = generator.output_size
        nets["discriminator"] = contract.Network(discriminator, lambda b: (b["image"][:, :size, :size],),
                                                 config.d_optimizer)
    check_config(config, generator, discriminator)
    return nets


def phases(config) -> list[contract.Phase]:
    g = contract.Update("g", ("generator",), objective.generator_update)
    if not config.discriminator.kind:
        return [contract.Phase("train", (g,))]
    return [contract.Phase("train", (contract.Update("d", ("discriminator",), objective.discriminator_update), g))]


SYSTEM = contract.System(
    name="context_encoder",
    title="Context Encoders: Feature Learning by Inpainting (Pathak et al., CVPR 2016)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    prepare_example=objective.prepare_example,
    default_inference=lambda: {"overlap": 4},
    size_multiple=lambda modules: 1,  # predict resamples a window onto the network's fixed input
    licence="see pathak22/context-encoder; this port is written from the specification",
)
