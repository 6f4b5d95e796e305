"""CTSDG's released weights -> jaxinpaint (``jaxinpaint convert``, ``jaxinpaint.load``, ``--config.init_from``).

The original saves ``torch.save({'n_iter': i, 'generator': G.state_dict(), 'discriminator': D.state_dict()},
f'{i:06d}.pt')`` (``trainer.py``), and ``test.py`` reads ``['generator']``. A *source* here is such a file
(read without PyTorch and without running pickled code, by ``jaxinpaint.io.torch_pickle``: keys
``generator.<key>`` and ``discriminator.<key>``), a bare state dict of either network, an ``.npz`` of the
original keys (e.g. the reference fixtures; other arrays in it are ignored), or a mapping of those keys.

Every key of a network is consumed and every variable of the JAX model filled, or a ``ConversionError`` lists
what is missing, left over or misshapen. Widths and depth are read from the shapes. Mapping:

* ``<conv>.weight`` (O, I, kh, kw) -> ``<conv>/kernel`` (kh, kw, I, O); ``.bias`` -> ``bias``;
* BatchNorm ``weight``/``bias`` -> ``scale``/``bias``, ``running_mean``/``running_var`` -> ``batch_stats``
  ``mean``/``var``; ``num_batches_tracked`` is dropped (momentum is fixed);
* single-conv ``nn.Sequential`` indices disappear (``fusion_layer1.0`` -> ``fusion_layer1``), the MSFA weight
  branch keeps them (``cfa.msfa.weight_calc.2`` -> ``cfa/msfa/weight_calc_2``), as do the edge detector's
  layers (``edge_detector.res_layer.3`` -> ``edge_detector/res_layer_3``);
* spectral norm: ``weight_orig`` -> ``kernel``, ``weight_u``/``weight_v`` -> the ``spectral`` collection's
  ``u``/``v``; the branches' ``features.0.*`` keys alias ``conv1.0.*`` (one module under two names) and must
  equal them.

Mask polarity: the networks keep the original's convention (1 = valid); the system's objective flips the
project's 1 = hole mask at its boundary, so converted weights need no change.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxinpaint.systems.lama.convert import ConversionError

StateDict = Mapping[str, np.ndarray]

_GENERATOR_KEY = re.compile(r"(ec|dc)_(texture|structure)_\d+\.|(texture|structure)_feature_projection\.|bigff\.|"
                            r"fusion_layer[12]\.|cfa\.|out_layer\.")
_DISCRIMINATOR_KEY = re.compile(r"(texture_branch|structure_branch|edge_detector)\.")
_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}

# (module regex, flax path template, kind) for every module of the original with weights.
GENERATOR_MODULES = [
    (r"((?:ec|dc)_(?:texture|structure)_\d+)\.conv", r"\1/conv", "conv"),
    (r"((?:ec|dc)_(?:texture|structure)_\d+)\.bn", r"\1/bn", "bn"),
    (r"((?:texture|structure)_feature_projection)\.((?:texture|structure)_resolver)\.(conv[12])", r"\1/\2/\3", "conv"),
    (r"((?:texture|structure)_feature_projection)\.((?:texture|structure)_resolver)\.(bn[12])", r"\1/\2/\3", "bn"),
    (r"((?:texture|structure)_feature_projection)\.out_layer\.0", r"\1/out_layer", "conv"),
    (r"bigff\.(structure_gate|texture_gate)\.0", r"bigff/\1", "conv"),
    (r"(fusion_layer1|fusion_layer2|out_layer)\.0", r"\1", "conv"),
    (r"cfa\.msfa\.(dilated_conv_\d)\.0", r"cfa/msfa/\1", "conv"),
    (r"cfa\.msfa\.weight_calc\.([02])", r"cfa/msfa/weight_calc_\1", "conv"),
]
DISCRIMINATOR_MODULES = [
    (r"(texture_branch|structure_branch)\.(conv[1-5])\.0", r"\1/\2", "sn"),
    (r"edge_detector\.(projection|res_layer)\.([03])", r"edge_detector/\1_\2", "conv"),
    (r"edge_detector\.(projection|res_layer)\.([14])", r"edge_detector/\1_\2", "bn"),
    (r"edge_detector\.out_layer\.0", r"edge_detector/out_layer", "conv"),
]


# ----------------------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------------------


def read_state_dict(source: str | os.PathLike | StateDict) -> dict[str, np.ndarray]:
    """Every tensor of a source as ``{original key: array}`` (bundled networks under ``generator.`` etc.)."""
    if isinstance(source, Mapping):
        return {str(k): np.asarray(v) for k, v in source.items()}
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no such file. Pass a CTSDG checkpoint (e.g. the authors' Places2, CelebA or Paris "
            "StreetView .pt from the Google Drive folder linked in xiefan-guo/ctsdg's README; it is not "
            "downloaded automatically), a generator state dict, or an .npz of the original keys.")
    from jaxinpaint.io import torch_pickle

    return torch_pickle.load_state_dict(path)


def split_networks(sd: StateDict) -> dict[str, dict[str, np.ndarray]]:
    """``{'generator': sd, 'discriminator': sd}`` (those present) of a bundled file or a bare state dict."""
    out = {}
    for name, marker in (("generator", _GENERATOR_KEY), ("discriminator", _DISCRIMINATOR_KEY)):
        prefix = name + "."
        if any(k.startswith(prefix) for k in sd):
            out[name] = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        else:
            selected = {k: v for k, v in sd.items() if marker.match(k)}
            if selected:
                out[name] = selected
    return out


def looks_like_ctsdg(keys) -> bool:
    """Whether state-dict keys hold a CTSDG generator (bundled or bare): what inference and ``convert`` need.
    A discriminator-only file still converts with ``--system=ctsdg`` and loads through ``init_from``."""
    return any(re.fullmatch(r"(generator\.)?ec_texture_1\.conv\.weight", k) for k in keys)


# ----------------------------------------------------------------------------------------------------------
# Mapping.
# ----------------------------------------------------------------------------------------------------------


def _target(key: str, rules, value: np.ndarray):
    """``(collection, flax path, array)`` for one original key, ``()`` for keys to drop, None if unknown."""
    if "." not in key:
        return None
    module, leaf = key.rsplit(".", 1)
    if module == "bigff" and leaf in ("texture_gamma", "structure_gamma"):
        return "params", ("bigff", leaf), value
    for pattern, template, kind in rules:
        if not re.fullmatch(pattern, module):
            continue
        path = tuple(re.sub(pattern, template, module).split("/"))
        if kind == "bn":
            if leaf == "num_batches_tracked":
                return ()
            if leaf in _BN_FIELDS:
                collection, name = _BN_FIELDS[leaf]
                return collection, (*path, name), value
        elif kind == "sn" and leaf in ("weight_orig", "weight_u", "weight_v"):
            if leaf == "weight_orig":
                return "params", (*path, "kernel"), value.transpose(2, 3, 1, 0)
            return "spectral", (*path, leaf[-1]), value
        elif kind == "conv" and leaf in ("weight", "bias"):
            return "params", (*path, "kernel" if leaf == "weight" else "bias"), \
                value.transpose(2, 3, 1, 0) if leaf == "weight" else value
        return None
    return None


def drop_aliases(sd: StateDict, what: str) -> dict[str, np.ndarray]:
    """Drops the branches' ``features.0.*`` keys after checking they equal ``conv1.0.*`` (the same module)."""
    kept = {}
    for key, value in sd.items():
        m = re.fullmatch(r"(texture_branch|structure_branch)\.features\.0\.(weight_orig|weight_u|weight_v)", key)
        if not m:
            kept[key] = value
            continue
        twin = f"{m[1]}.conv1.0.{m[2]}"
        if twin not in sd or not np.array_equal(np.asarray(sd[twin]), np.asarray(value)):
            raise ConversionError(f"{what}: {key} must equal {twin} (in the original they are one module)")
    return kept


def map_state_dict(sd: StateDict, rules) -> tuple[dict[tuple[str, ...], np.ndarray], list[str]]:
    """``({(collection, *flax path): array}, unknown keys)`` of an original state dict (arrays not copied)."""
    filled, unknown = {}, []
    for key, value in sd.items():
        target = _target(key, rules, np.asarray(value))
        if target is None:
            unknown.append(key)
        elif target:
            collection, path, array = target
            filled[(collection, *path)] = array
    return filled, unknown


def variables_from_state_dict(sd: StateDict, module, rules, inputs: tuple, what: str) -> dict[str, Any]:
    """Fills ``module``'s variables from an original state dict; every key used, every variable filled."""
    from jaxinpaint.io import tree

    filled, unknown = map_state_dict(sd, rules)
    expected = jax.eval_shape(lambda *xs: module.init(jax.random.key(0), *xs), *inputs)
    parts = tree.differences(expected, tree.from_flat(filled))
    if unknown:
        parts.insert(0, f"{len(unknown)} unused key(s): {sorted(unknown)[:10]}")
    if parts:
        raise ConversionError(f"{what}: the weights do not match CTSDG's {type(module).__name__} "
                              f"{_describe_module(module)}: " + "; ".join(parts))
    return tree.from_flat({k: jax.numpy.asarray(np.asarray(v, np.float32)) for k, v in filled.items()})


def _describe_module(module) -> str:
    fields = ("width", "depth", "edge_width")
    return "(" + ", ".join(f"{f}={getattr(module, f)}" for f in fields if hasattr(module, f)) + ")"


def _shape(sd: StateDict, key: str, what: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConversionError(f"{what}: no {key!r}; the keys do not describe a CTSDG network "
                              f"(first keys: {sorted(sd)[:5]})")
    return tuple(np.shape(sd[key]))


def load_generator(sd: StateDict, what: str = "<state dict>"):
    """``(Generator, variables)`` from the original generator's state dict (width, depth from the shapes)."""
    from jaxinpaint.systems.ctsdg.model import Generator

    width, image_channels = _shape(sd, "ec_texture_1.conv.weight", what)[:2]
    structure_channels = _shape(sd, "ec_structure_1.conv.weight", what)[1]
    depth = len([k for k in sd if re.fullmatch(r"ec_texture_\d+\.conv\.weight", k)])
    out_channels = _shape(sd, "out_layer.0.weight", what)[0]
    module = Generator(width=int(width), depth=depth, out_channels=int(out_channels))
    size = module.size_multiple
    inputs = tuple(jax.ShapeDtypeStruct((1, size, size, c), np.float32)
                   for c in (image_channels, structure_channels, 1))
    return module, variables_from_state_dict(sd, module, GENERATOR_MODULES, inputs, what)


def load_discriminator(sd: StateDict, what: str = "<state dict>"):
    """``(Discriminator, variables)`` from the original discriminator's state dict."""
    from jaxinpaint.systems.ctsdg.model import Discriminator

    sd = drop_aliases(sd, what)
    width, image_channels = _shape(sd, "texture_branch.conv1.0.weight_orig", what)[:2]
    structure_channels = _shape(sd, "structure_branch.conv1.0.weight_orig", what)[1]
    edge_width = _shape(sd, "edge_detector.projection.0.weight", what)[0]
    if structure_channels != 2:
        raise ConversionError(f"{what}: the structure branch takes {structure_channels} channels; CTSDG's takes "
                              "2 (edge ++ grey)")
    module = Discriminator(width=int(width), edge_width=int(edge_width))
    inputs = (jax.ShapeDtypeStruct((1, 64, 64, image_channels), np.float32),
              jax.ShapeDtypeStruct((1, 64, 64, 1), np.float32), jax.ShapeDtypeStruct((1, 64, 64, 1), np.float32))
    return module, variables_from_state_dict(sd, module, DISCRIMINATOR_MODULES, inputs, what)


def load_original(source) -> dict[str, tuple[Any, dict[str, Any]]]:
    """``{'generator': (module, variables), 'discriminator': ...}`` (those in the source) from CTSDG weights."""
    what = "<mapping>" if isinstance(source, Mapping) else os.fspath(source)
    networks = split_networks(read_state_dict(source))
    if not networks:
        raise ConversionError(f"{what}: no CTSDG generator (ec_texture_1.conv.weight ...) or discriminator "
                              "(texture_branch.conv1.0.weight_orig ...) keys found")
    loaders = {"generator": load_generator, "discriminator": load_discriminator}
    return {name: loaders[name](sd, f"{what} [{name}]") for name, sd in networks.items()}
