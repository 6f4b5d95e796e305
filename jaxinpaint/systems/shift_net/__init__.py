"""Shift-Net (Yan et al., ECCV 2018): a U-Net whose 32×32 decoder level copies, into every hole cell, the
encoder feature of its most similar known cell; guidance loss, PatchGAN with spectral norm.

* ``model.py``: the generator (U-Net with the shift connection) and the discriminator;
* ``objective.py``: L1, discounted hole L1, GAN, VGG style and content, the guidance gradient as a surrogate;
* ``convert.py``: the released generators (``latest_net_G.pth``, a plain PyTorch state dict).

One step: the D update, then the G update. Config: ``configs/shift_net.py`` (``:random``, ``:torch7``,
``:smoke``).
"""

from __future__ import annotations

import ml_collections
import numpy as np

from jaxinpaint import contract, systems
from jaxinpaint.data import holes
from jaxinpaint.systems.shift_net import objective
from jaxinpaint.systems.shift_net.model import Discriminator, Generator

MODELS = {"Generator": Generator, "Discriminator": Discriminator}


def lambda_schedule(opt: ml_collections.ConfigDict, *, niter: int, niter_decay: int, steps_per_epoch: int,
                    epoch_count: int = 1) -> ml_collections.ConfigDict:
    """A copy of the optimiser section with PyTorch Shift-Net's ``lr_policy lambda`` as a piecewise schedule.

    Epoch e (0-based) trains at ``lr · (1 - max(0, e + 1 + epoch_count - niter) / (niter_decay + 1))``
    (``models/networks.py::get_scheduler``; the +1 is not in pix2pix's rule): full lr for ``niter - 1`` epochs,
    then a linear decay over ``niter_decay + 1`` epochs that reaches 0 in the last one. With the defaults (30, 0)
    the 30th epoch trains at lr 0. Updates are counted per network; G and D both update once per step.
    """
    if min(niter, steps_per_epoch) < 1 or niter_decay < 0:
        raise ValueError(f"shift_net lr_policy 'lambda': need niter >= 1, niter_decay >= 0 and steps_per_epoch >= 1, "
                         f"got {niter}, {niter_decay}, {steps_per_epoch}")
    boundaries, scales = [0], [1.0]
    for epoch in range(niter + niter_decay):
        scale = 1.0 - max(0, epoch + 1 + epoch_count - niter) / float(niter_decay + 1)
        if scale != scales[-1]:
            boundaries.append(epoch * steps_per_epoch)
            scales.append(scale)
    opt = ml_collections.ConfigDict(opt.to_dict())
    opt.schedule, opt.boundaries, opt.scales = "piecewise", tuple(boundaries), tuple(scales)
    return opt


def _optimizer(config, section):
    if config.lr_policy == "none":
        return section
    if config.lr_policy != "lambda":
        raise ValueError(f"config.lr_policy must be 'lambda' or 'none', got {config.lr_policy!r}")
    return lambda_schedule(section, niter=int(config.niter), niter_decay=int(config.niter_decay),
                           steps_per_epoch=int(config.steps_per_epoch))


def networks(config) -> dict[str, contract.Network]:
    runtime = contract.runtime_fields(config)
    nets = {"generator": contract.Network(systems.build_module("shift_net", config.generator, **runtime),
                                          lambda b: (objective.generator_input(b),),
                                          _optimizer(config, config.g_optimizer), ema=True)}
    if config.discriminator.kind:
        nets["discriminator"] = contract.Network(systems.build_module("shift_net", config.discriminator, **runtime),
                                                 lambda b: (b["image"],), _optimizer(config, config.d_optimizer))
    return nets


def phases(config) -> list[contract.Phase]:
    updates = [contract.Update("g", ("generator",), objective.generator_update)]
    if config.discriminator.kind:
        updates.insert(0, contract.Update("d", ("discriminator",), objective.discriminator_update))
    return [contract.Phase("train", tuple(updates))]


def prepare_example(example: dict, config, *, train: bool) -> dict:
    """For the local losses (centre and ``rect`` masks): ``box``, the (top, left) of the ``local_size`` patch at
    the hole (the hole itself for those masks)."""
    if not train or not config.losses.local:
        return {}
    size = int(config.losses.local_size)
    if not 1 <= size <= min(example["mask"].shape[:2]):
        raise ValueError(f"config.losses.local_size={size} must fit the {example['mask'].shape[:2]} training crops "
                         "(Shift-Net: the centre hole, image_size/2 - 2*overlap = 120 at 256)")
    return {"box": holes.box_around_hole(np.asarray(example["mask"]), size)}


SYSTEM = contract.System(
    name="shift_net",
    title="Shift-Net: Image Inpainting via Deep Feature Rearrangement (Yan et al., ECCV 2018)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    frozen=objective.frozen_networks,
    prepare_example=prepare_example,
    default_inference=lambda: {"hole_fill": "zero"},
    load_original=contract.lazy("jaxinpaint.systems.shift_net.convert", "load_original"),
    recognizes=contract.lazy("jaxinpaint.systems.shift_net.convert", "recognizes"),
    licence="MIT (Zhaoyi-Yan/Shift-Net_pytorch)",
)
