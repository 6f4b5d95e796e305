"""DeepFill v1 (Yu et al., CVPR 2018): contextual attention, local and global WGAN-GP critics.

* ``model.py``: the coarse-to-fine generator (plain convs, ELU, dilations, contextual attention, clipped
  outputs) and the critic (written from the specification; the original is CC BY-NC 4.0);
* ``objective.py``: the spatially discounted L1 on the box around the hole, the known-region L1, WGAN-GP with
  the penalty on hole pixels; BGR handled at this boundary only.

Per training step: five critic updates (both critics together), each on a fresh batch, then one generator
update on a sixth; an optional coarse-only phase first (``config.coarse_pretrain_steps``).

Config: ``configs/deepfill_v1.py`` (``:pretrain_coarse``, ``:smoke``).
"""

from __future__ import annotations

import functools

import numpy as np

from jaxinpaint import contract, systems
from jaxinpaint.data import holes
from jaxinpaint.systems.deepfill_v1 import objective
from jaxinpaint.systems.deepfill_v1.model import Critic, Generator

MODELS = {"Generator": Generator, "Critic": Critic}


def networks(config) -> dict[str, contract.Network]:
    runtime = contract.runtime_fields(config)
    size = int(config.losses.local_size)

    def build(section):
        return systems.build_module("deepfill_v1", section, **runtime)

    return {
        "generator": contract.Network(build(config.generator), lambda b: (objective.generator_input(b),),
                                      config.g_optimizer, ema=True),
        "local_critic": contract.Network(build(config.local_critic),
                                         lambda b: (b["image"][:, :size, :size],), config.d_optimizer),
        "global_critic": contract.Network(build(config.global_critic), lambda b: (b["image"],), config.d_optimizer),
    }


def phases(config) -> list[contract.Phase]:
    def step_updates(coarse_only: bool):
        return (contract.Update("d", objective.CRITICS,
                                functools.partial(objective.critics_update, coarse_only=coarse_only),
                                repeat=int(config.n_critic), fresh_batches=True),
                contract.Update("g", ("generator",),
                                functools.partial(objective.generator_update, coarse_only=coarse_only),
                                fresh_batches=True))

    pretrain = int(config.coarse_pretrain_steps)
    full = contract.Phase("train", step_updates(False))
    return [contract.Phase("coarse", step_updates(True), until=pretrain), full] if pretrain else [full]


def prepare_example(example: dict, config, *, train: bool) -> dict:
    """Training examples get ``box``, the (top, left) of the ``local_size`` box around the hole (int32[2])."""
    if not train:
        return {}
    size = int(config.losses.local_size)
    if not 1 <= size <= min(example["mask"].shape[:2]):
        raise ValueError(f"config.losses.local_size={size} must fit the {example['mask'].shape[:2]} training crops "
                         "(DeepFill v1: half the image side, 128 at 256)")
    return {"box": holes.box_around_hole(np.asarray(example["mask"]), size)}


SYSTEM = contract.System(
    name="deepfill_v1",
    title="Generative Image Inpainting with Contextual Attention (Yu et al., CVPR 2018)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    prepare_example=prepare_example,
    licence="CC BY-NC 4.0 (JiahuiYu/generative_inpainting); this port is written from the specification",
)
