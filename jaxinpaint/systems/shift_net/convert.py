"""Shift-Net's released generators (``latest_net_G.pth``, ``face_center_mask.pth``,
``paris_random_mask_20_30.pth``...): a plain PyTorch state dict of ``UnetGeneratorShiftTriple``, read without
PyTorch (``jaxinpaint.io.torch_pickle``).

    from jaxinpaint.systems.shift_net import convert
    module, variables = convert.load_generator("latest_net_G.pth")

The weights are not downloaded: the README of ``Zhaoyi-Yan/Shift-Net_pytorch`` links them
(``download_models.sh``: face and Paris StreetView, centre and random masks); rename nothing, pass the file.

Keys are the nested U-Net blocks' (``model.model.1.model.3.model.7.weight`` is the shift block's up-conv):
level k >= 2 lives under ``model.model.1`` + ``.model.3``·(k-2) + ``.model.``, with its down-conv at index 1,
its InstanceNorm at 2 and its up-conv / up-norm at 5 / 6 (3 / 4 in the innermost block, 7 / 8 in the shift
block); the outermost block is ``model.model.0`` (down) and ``model.model.3`` (up). The width, the depth and
the channel counts are read from the shapes. Every key must be used and every parameter filled.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxinpaint.io import tree
from jaxinpaint.systems.shift_net.model import SHIFT_LEVEL, Generator


class ConversionError(ValueError):
    """The file is not a Shift-Net generator state dict this converter can map."""


def read_state_dict(source) -> dict[str, np.ndarray]:
    """``{key: array}`` of a ``.pth``/``.pt``/``.npz`` file or a mapping; a DataParallel ``module.`` prefix is
    dropped."""
    if isinstance(source, Mapping):
        sd = {str(k): np.asarray(v) for k, v in source.items()}
    else:
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file. Pass Shift-Net's released generator (a plain state dict "
                                    "such as latest_net_G.pth, linked from the Shift-Net_pytorch README; it is not "
                                    "downloaded automatically)")
        from jaxinpaint.io import torch_pickle

        sd = torch_pickle.load_state_dict(path)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def looks_like_shift_net(keys) -> bool:
    """Whether state-dict keys hold Shift-Net's nested U-Net (its outermost conv and the level-3 block)."""
    keys = list(keys)
    return "model.model.0.weight" in keys and any(k.startswith("model.model.1.model.3.model.") for k in keys)


def _prefix(level: int) -> str:
    return "model.model.1" + ".model.3" * (level - 2) + ".model."


def _levels(sd) -> int:
    n = 1
    while any(k.startswith(_prefix(n + 1) + "1.") for k in sd):
        n += 1
    return n


def infer_config(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Generator fields (``kind`` included) from the shapes: ``ngf``, ``input_nc``, ``output_nc``, ``num_downs``."""
    if not looks_like_shift_net(sd):
        raise ConversionError("not a Shift-Net generator: expected the keys model.model.0.weight and "
                              f"model.model.1.model.3.model.* (first keys: {list(sd)[:5]})")
    first, last = sd["model.model.0.weight"], sd.get("model.model.3.weight")
    if first.ndim != 4 or last is None or last.ndim != 4:
        raise ConversionError("model.model.0.weight / model.model.3.weight must be 4-D convolution weights")
    return {"kind": "Generator", "ngf": int(first.shape[0]), "input_nc": int(first.shape[1]),
            "output_nc": int(last.shape[1]), "num_downs": _levels(sd)}


def _conv(w):
    return np.transpose(w, (2, 3, 1, 0))  # (O, I, kh, kw) -> HWIO


def _conv_transpose(w):
    return np.transpose(w[:, :, ::-1, ::-1], (2, 3, 0, 1))  # (I, O, kh, kw) -> flipped HWIO


def key_map(num_downs: int) -> dict[str, tuple[str, str]]:
    """``{torch module path: (flax module name, kind)}`` for a generator with ``num_downs`` levels."""
    n = num_downs
    table = {"model.model.0": ("down_0", "conv"), "model.model.3": ("up_0", "convT")}
    for k in range(2, n + 1):
        p = _prefix(k)
        table[p + "1"] = (f"down_{k - 1}", "conv")
        if k < n:
            table[p + "2"] = (f"down_norm_{k - 2}", "norm")
        up, norm = (3, 4) if k == n else (7, 8) if k == SHIFT_LEVEL else (5, 6)
        table[p + str(up)] = (f"up_{k - 1}", "convT")
        table[p + str(norm)] = (f"up_norm_{k - 2}", "norm")
    return table


def load_generator(source, **overrides) -> tuple[Generator, dict]:
    """``(module, variables)`` of a Shift-Net generator file (see the module docstring).

    Args:
      source: a state-dict ``.pth``/``.pt``, an ``.npz`` of the same keys (the reference fixtures), or a mapping.
      **overrides: fields the weights cannot tell (``mask_rule``, ``shift_eps``, ``dtype``).

    Raises:
      ConversionError: not a Shift-Net generator, or keys / shapes that do not fill the inferred model exactly.
    """
    sd = read_state_dict(source)
    name = "<mapping>" if isinstance(source, Mapping) else os.fspath(source)
    sd = {k: v for k, v in sd.items() if k.startswith("model.")}  # fixtures also hold inputs and outputs
    cfg = infer_config(sd)
    table = key_map(cfg["num_downs"])
    filled, unused = {}, []
    for key, value in sd.items():
        module, _, leaf = key.rpartition(".")
        if module not in table or leaf not in ("weight", "bias"):
            unused.append(key)
            continue
        flax_name, kind = table[module]
        value = np.asarray(value, np.float32)
        if leaf == "bias":
            filled[("params", flax_name, "bias")] = value
        elif kind == "norm":
            filled[("params", flax_name, "scale")] = value
        else:
            filled[("params", flax_name, "kernel")] = np.ascontiguousarray(
                _conv(value) if kind == "conv" else _conv_transpose(value))
    fields = {k: v for k, v in cfg.items() if k != "kind"}
    module = Generator(**{**fields, **overrides})
    size = module.size_multiple
    expected = jax.eval_shape(lambda: module.init(jax.random.key(0), np.zeros((1, size, size, module.input_nc),
                                                                              np.float32)))
    parts = tree.differences(expected, tree.from_flat(filled))
    if unused:
        parts.insert(0, f"{len(unused)} unused key(s): {sorted(unused)[:10]}")
    if parts:
        raise ConversionError(f"{name}: the weights do not fill Shift-Net's generator {fields}: " + "; ".join(parts))
    return module, tree.from_flat({k: jax.numpy.asarray(v) for k, v in filled.items()})


def load_original(source) -> dict[str, tuple[Generator, dict]]:
    """``{'generator': (module, variables)}``: the releases hold the generator only."""
    return {"generator": load_generator(source)}


def recognizes(keys) -> bool:
    return looks_like_shift_net(re.sub(r"^module\.", "", k) for k in keys)
