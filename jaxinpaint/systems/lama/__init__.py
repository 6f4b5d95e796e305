"""LaMa (Suvorov et al., WACV 2022): Fast Fourier Convolution generators, PatchGAN, HRF perceptual loss.

* ``model.py``: the FFC ResNet generator (Big LaMa, LaMa-Fourier); LaMa-Regular uses pix2pixHD's global
  generator and every variant the NLayer PatchGAN (both in ``jaxinpaint.nn.pix2pixhd``);
* ``objective.py``: the G and D updates exactly as LaMa's Lightning loop runs them;
* ``convert.py``: the released checkpoints (``big-lama/models/best.ckpt`` ...), read without PyTorch;
* ``refine.py``: LaMa's high-resolution refinement, a per-image solver (``jaxinpaint.load(src, refine=True)``).

Configs: ``configs/big_lama.py``, ``configs/lama_fourier.py``, ``configs/lama_regular.py``.
"""

from __future__ import annotations

from jaxinpaint import contract, systems
from jaxinpaint.nn.pix2pixhd import GlobalGenerator, NLayerDiscriminator
from jaxinpaint.systems.lama import objective
from jaxinpaint.systems.lama.model import FFCResNetGenerator

MODELS = {"FFCResNetGenerator": FFCResNetGenerator, "GlobalGenerator": GlobalGenerator,
          "NLayerDiscriminator": NLayerDiscriminator}


def networks(config) -> dict[str, contract.Network]:
    runtime = contract.runtime_fields(config)
    nets = {"generator": contract.Network(systems.build_module("lama", config.generator, **runtime),
                                          lambda b: (objective.generator_input(b),), config.g_optimizer, ema=True)}
    if config.discriminator.kind:
        nets["discriminator"] = contract.Network(systems.build_module("lama", config.discriminator, **runtime),
                                                 lambda b: (b["image"],), config.d_optimizer)
    return nets


def phases(config) -> list[contract.Phase]:
    updates = [contract.Update("g", ("generator",), objective.generator_update)]
    if config.discriminator.kind:
        updates.append(contract.Update("d", ("discriminator",), objective.discriminator_update))
    return [contract.Phase("train", tuple(updates))]


def _recognizes(keys) -> bool:
    from jaxinpaint.systems.lama import convert

    return convert.looks_like_lama(dict.fromkeys(keys))


SYSTEM = contract.System(
    name="lama",
    title="LaMa: Resolution-robust Large Mask Inpainting with Fourier Convolutions (Suvorov et al., WACV 2022)",
    models=MODELS,
    networks=networks,
    phases=phases,
    predict=objective.predict,
    frozen=objective.frozen_networks,
    load_original=contract.lazy("jaxinpaint.systems.lama.convert", "load_original"),
    recognizes=_recognizes,
    licence="Apache-2.0 (advimman/lama)",
)
