"""CTSDG (Guo, Yang, Huang, ICCV 2021): conditional texture and structure dual generation.

* ``model.py``: the two-stream partial-convolution generator (cross-wired decoders, Bi-GFF, CFA) and the
  two-branch discriminator with its learned edge detector;
* ``inputs.py``: greyscale and Canny edges on the host, with the original's uint8 wrap as an option;
* ``objective.py``: the G update (D frozen, its statistics moving), then the D update;
* ``convert.py``: the released ``.pt`` checkpoints (``generator`` / ``discriminator``), read without PyTorch.

Config: ``configs/ctsdg.py`` (``:finetune``, ``:corrected_edges``, ``:nvidia_masks``, ``:smoke``).
"""

from __future__ import annotations

from jaxinpaint import contract, systems
from jaxinpaint.systems.ctsdg import inputs, objective
from jaxinpaint.systems.ctsdg.model import Discriminator, Generator

MODELS = {"Generator": Generator, "Discriminator": Discriminator}


def networks(config) -> dict[str, contract.Network]:
    runtime = contract.runtime_fields(config)
    generator = systems.build_module("ctsdg", config.generator, **runtime)
    nets = {"generator": contract.Network(generator, objective.generator_inputs, config.g_optimizer, ema=True)}
    if config.discriminator.kind:
        nets["discriminator"] = contract.Network(systems.build_module("ctsdg", config.discriminator, **runtime),
                                                 objective.discriminator_inputs, config.d_optimizer)
    return nets


def phases(config) -> list[contract.Phase]:
    if config.generator.get("freeze_bn") and not config.get("init_from"):
        raise ValueError("config.generator.freeze_bn=True is CTSDG's fine-tuning stage (:finetune): it needs "
                         "--config.init_from=<the first stage's workdir, a converted model or the authors' .pt>")
    updates = [contract.Update("g", ("generator",), objective.generator_update)]
    if config.discriminator.kind:
        updates.append(contract.Update("d", ("discriminator",), objective.discriminator_update))
    return [contract.Phase("train", tuple(updates))]


def default_inference() -> dict:
    """For converted weights: the released models were trained on the original's wrapped grey/edge input."""
    return {"uint8_wrap": True, "canny_sigma": 2.0}


SYSTEM = contract.System(
    name="ctsdg",
    title="Image Inpainting via Conditional Texture and Structure Dual Generation (Guo et al., ICCV 2021)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    frozen=objective.frozen_networks,
    prepare_example=inputs.prepare_example,
    default_inference=default_inference,
    load_original=contract.lazy("jaxinpaint.systems.ctsdg.convert", "load_original"),
    recognizes=contract.lazy("jaxinpaint.systems.ctsdg.convert", "looks_like_ctsdg"),
    licence="MIT (xiefan-guo/ctsdg)",
)
