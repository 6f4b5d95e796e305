"""GLCIC (Iizuka, Simo-Serra, Ishikawa, SIGGRAPH 2017, "Globally and Locally Consistent Image Completion").

* ``model.py``: the dilated completion network and the global + local discriminator with its joint head;
* ``objective.py``: the three phases (completion MSE; discriminator; joint), the local patch around the
  hole, inference with the official preprocessing;
* ``postprocess.py``: the optional Telea + Poisson post-processing (OpenCV, host-side).

No converter yet: the official ``completionnet_*.t7`` files are Torch7 serialisations (systems-more.md §3.10).
Config: ``configs/glcic.py`` (``:celeba``, ``:smoke``).
"""

from __future__ import annotations

from jaxinpaint import contract, systems
from jaxinpaint.systems.glcic import objective
from jaxinpaint.systems.glcic.model import CompletionNetwork, Discriminator

MODELS = {"CompletionNetwork": CompletionNetwork, "Discriminator": Discriminator}


def networks(config) -> dict[str, contract.Network]:
    runtime = contract.runtime_fields(config)
    generator = systems.build_module("glcic", config.generator, **runtime)
    discriminator = systems.build_module("glcic", config.discriminator, **runtime)
    if "input" in config and config.input.image_size != discriminator.global_size:
        raise ValueError(f"config.input.image_size={config.input.image_size} must equal "
                         f"config.discriminator.global_size={discriminator.global_size} (its FC head fixes it)")
    size = discriminator.local_size
    return {
        "generator": contract.Network(generator, lambda b: (objective.generator_input(b, config.inference.mean),),
                                      config.g_optimizer, ema=True),
        "discriminator": contract.Network(discriminator, lambda b: (b["image"], b["image"][:, :size, :size]),
                                          config.d_optimizer),
    }


def phases(config) -> list[contract.Phase]:
    t_c, t_cd = objective.phase_lengths(config)
    d = contract.Update("d", ("discriminator",), objective.discriminator_update)
    return [
        contract.Phase("completion", (contract.Update("g", ("generator",), objective.completion_update),), until=t_c),
        contract.Phase("discriminator", (d,), until=t_cd),
        contract.Phase("joint", (d, contract.Update("g", ("generator",), objective.joint_update))),
    ]


SYSTEM = contract.System(
    name="glcic",
    title="Globally and Locally Consistent Image Completion (Iizuka et al., SIGGRAPH 2017)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    prepare_example=objective.prepare_example,
    default_inference=lambda: {"mean": (0.4560, 0.4472, 0.4155), "postprocess": False},
    size_multiple=lambda modules: CompletionNetwork.size_multiple,
    licence="see satoshiiizuka/siggraph2017_inpainting; this port is written from the specification",
)
