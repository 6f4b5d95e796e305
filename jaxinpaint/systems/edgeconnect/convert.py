"""EdgeConnect's released weights (``knazeri/edge-connect``) -> jaxinpaint networks, without PyTorch.

The release (Places2, CelebA, Paris StreetView; Google Drive, or ``scripts/download_model.sh``) is a folder of
``torch.save`` pickles::

    EdgeModel_gen.pth        {'iteration': int, 'generator': state_dict}       -> edge_generator
    EdgeModel_dis.pth        {'discriminator': state_dict}                      -> edge_discriminator
    InpaintingModel_gen.pth  {'iteration': int, 'generator': state_dict}       -> inpaint_generator
    InpaintingModel_dis.pth  {'discriminator': state_dict}                      -> inpaint_discriminator

A source is that folder, or any one of its files (its siblings with the names above are read too, so that the
converted model holds both generators, as inference needs), or an ``.npz`` of one network's state dict (the
reference fixtures). Each file's network is recognised by its keys and shapes, not by its name: width,
residual blocks, input and output channels, spectral norm (``weight_orig``/``weight_u``/``weight_v``, kept as
state) or plain kernels (``weight``: the norm folded, or trained without it). A DataParallel ``module.``
prefix is stripped. The discriminators register their first block twice (``conv1.0.*`` and ``features.0.*``,
the same tensors): the alias is checked to be identical and dropped. Every key must be used and every variable
filled (``jaxinpaint.io.tree``), or a :class:`ConversionError` names what is wrong.

``fold_spectral_norm=True`` turns the generators' spectrally normalised kernels into plain ones,
``weight_orig / (uᵀ W v)`` with the stored vectors: what the original computes in evaluation mode, for an
inference-only model without spectral state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinpaint.io import tree as tree_lib
from jaxinpaint.systems.edgeconnect.model import Discriminator, EdgeGenerator, InpaintGenerator

StateDict = Mapping[str, np.ndarray]

#: The release's file names and the networks they hold.
RELEASE_FILES = {"EdgeModel_gen.pth": "edge_generator", "EdgeModel_dis.pth": "edge_discriminator",
                 "InpaintingModel_gen.pth": "inpaint_generator", "InpaintingModel_dis.pth": "inpaint_discriminator"}
#: Transposed convolutions of the generators (PyTorch weight (I, O, kh, kw), spectral-norm dim 1).
_TRANSPOSED = ("decoder_0", "decoder_3")
_SN_FIELDS = ("weight_u", "weight_v")


class ConversionError(ValueError):
    """The weights are not an EdgeConnect network this converter can build, or do not fill it exactly."""


# ----------------------------------------------------------------------------------------------------------
# Recognising a state dict.
# ----------------------------------------------------------------------------------------------------------


def _strip_module(sd: StateDict) -> dict[str, np.ndarray]:
    """Drops the file's wrapper (``jaxinpaint.io.torch_pickle`` reads ``{'iteration': n, 'generator': sd}`` as
    ``generator.<key>``) and DataParallel's ``module.`` prefix, each when every key has it."""
    sd = dict(sd)
    for prefix in ("generator.", "discriminator.", "module."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def network_kind(keys) -> str | None:
    """``'generator'``, ``'discriminator'`` or None for an EdgeConnect state dict's keys."""
    keys = set(_strip_module(dict.fromkeys(keys)))
    if {"encoder.1.bias", "decoder.7.weight", "decoder.7.bias"} <= keys and any(
            k.startswith("middle.0.conv_block.1.weight") for k in keys):
        return "generator"
    if {"conv1.0.weight_orig", "conv5.0.weight_orig"} <= keys or {"conv1.0.weight", "conv5.0.weight"} <= keys:
        return "discriminator"
    return None


def looks_like_edgeconnect(keys) -> bool:
    """Whether state-dict keys are an EdgeConnect generator or discriminator (``System.recognizes``)."""
    return network_kind(keys) is not None


def _drop_alias(sd: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Removes the discriminators' ``features.0.*`` keys after checking they equal ``conv1.0.*``."""
    out = {}
    for key, value in sd.items():
        if key.startswith("features.0."):
            twin = "conv1.0." + key[len("features.0."):]
            if twin not in sd or not np.array_equal(sd[twin], value):
                raise ConversionError(f"{source}: {key} should be an alias of {twin} (the original registers the "
                                      "first block as both conv1 and features) but differs from it")
            continue
        out[key] = value
    return out


def _flax_path(key: str) -> tuple[tuple[str, ...], str]:
    """``'middle.3.conv_block.5.weight_orig'`` -> (('middle_3', 'conv_block_5'), 'weight_orig')."""
    *parts, field = key.split(".")
    if len(parts) % 2 or not all(p.isdigit() for p in parts[1::2]):
        raise ConversionError(f"unexpected key {key!r}: expected <module>.<index>[.<module>.<index>].<field>")
    return tuple(f"{parts[i]}_{parts[i + 1]}" for i in range(0, len(parts), 2)), field


def infer_module(sd: StateDict, *, fold_spectral_norm: bool = False, source: str = "state dict"
                 ) -> tuple[str, nn.Module]:
    """``(network name, module)`` of the EdgeConnect network a (prefix-free, de-aliased) state dict holds.

    ``fold_spectral_norm`` applies to generators only: the discriminators' convolutions have no bias under
    spectral norm, and they are only needed for training, where the norm must stay.
    """
    kind = network_kind(sd)
    if kind == "discriminator":
        use_sn = "conv1.0.weight_orig" in sd
        first = sd["conv1.0.weight_orig" if use_sn else "conv1.0.weight"]
        names = {2: "edge_discriminator", 3: "inpaint_discriminator"}
        if first.ndim != 4 or first.shape[1] not in names:
            raise ConversionError(f"{source}: conv1.0 weight {first.shape}: expected (width, 2 or 3, 4, 4)")
        return names[first.shape[1]], Discriminator(width=int(first.shape[0]), use_spectral_norm=use_sn)
    if kind != "generator":
        raise ConversionError(f"{source}: not an EdgeConnect generator or discriminator (first keys: "
                              f"{sorted(sd)[:6]})")
    use_sn = "encoder.1.weight_orig" in sd
    first = sd["encoder.1.weight_orig" if use_sn else "encoder.1.weight"]
    out = sd["decoder.7.weight"]
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"middle\.(\d+)\.", k))})
    if blocks != list(range(len(blocks))):
        raise ConversionError(f"{source}: residual blocks middle.{blocks} are not numbered 0..{len(blocks) - 1}")
    classes = {(3, 1): ("edge_generator", EdgeGenerator), (4, 3): ("inpaint_generator", InpaintGenerator)}
    key = (int(first.shape[1]), int(out.shape[0]))
    if key not in classes:
        raise ConversionError(f"{source}: a generator with {key[0]} input and {key[1]} output channels is "
                              "neither EdgeConnect's edge generator (3 -> 1) nor its inpainting generator (4 -> 3)")
    name, cls = classes[key]
    module = cls(width=int(first.shape[0]), residual_blocks=len(blocks),
                 use_spectral_norm=use_sn and not fold_spectral_norm,
                 residual_bias="middle.0.conv_block.1.bias" in sd)
    return name, module


# ----------------------------------------------------------------------------------------------------------
# Converting.
# ----------------------------------------------------------------------------------------------------------


def _sn_matrix(weight: np.ndarray, transposed: bool) -> np.ndarray:
    """The (out, in·kh·kw) matrix PyTorch's spectral norm iterates on (``dim`` 1 for transposed convs)."""
    w = weight.transpose(1, 0, 2, 3) if transposed else weight
    return w.reshape(w.shape[0], -1)


def _kernel(weight: np.ndarray, transposed: bool) -> np.ndarray:
    """PyTorch weight -> the HWIO kernel of ``TorchSNConv2D`` / ``TorchSNConvTranspose2D``."""
    if transposed:  # (I, O, kh, kw) -> the flipped kernel of the equivalent forward convolution
        return weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)
    return weight.transpose(2, 3, 1, 0)


def variables_from_state_dict(sd: StateDict, module: nn.Module, *, source: str = "state dict") -> dict[str, Any]:
    """Flax variables of ``module`` from an EdgeConnect state dict (prefix-free, de-aliased), checked exactly.

    ``weight_orig`` with ``weight_u``/``weight_v`` become the kernel and the ``'spectral'`` u, v; when the module
    has no spectral norm they are folded into a plain kernel.
    """
    use_sn = bool(getattr(module, "use_spectral_norm", False))
    params: dict[tuple[str, ...], np.ndarray] = {}
    spectral: dict[tuple[str, ...], np.ndarray] = {}
    for key, value in sd.items():
        path, field = _flax_path(key)
        value = np.asarray(value, np.float32)
        transposed = path[-1] in _TRANSPOSED
        if field == "bias":
            params[path + ("bias",)] = value
        elif field == "weight":
            params[path + ("kernel",)] = _kernel(value, transposed)
        elif field == "weight_orig" and use_sn:
            params[path + ("kernel",)] = _kernel(value, transposed)
        elif field == "weight_orig":  # fold: W / sigma with the stored vectors (PyTorch's evaluation mode)
            prefix = key[:-len("weight_orig")]
            if any(prefix + f not in sd for f in _SN_FIELDS):
                raise ConversionError(f"{source}: {key} without {prefix}weight_u and {prefix}weight_v")
            u, v = (np.asarray(sd[prefix + f], np.float64) for f in _SN_FIELDS)
            sigma = float(u @ (_sn_matrix(value.astype(np.float64), transposed) @ v))
            params[path + ("kernel",)] = _kernel((value / sigma).astype(np.float32), transposed)
        elif field in _SN_FIELDS:
            if use_sn:
                spectral[path + (field[len("weight_"):],)] = value
        else:
            raise ConversionError(f"{source}: unexpected key {key!r}")
    variables = {"params": tree_lib.from_flat(params)}
    if spectral:
        variables["spectral"] = tree_lib.from_flat(spectral)
    expected = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(_example_shape(module, sd))))
    tree_lib.check(expected, variables, what=f"the {type(module).__name__}'s variables", source=source)
    return variables


def _example_shape(module: nn.Module, sd: StateDict) -> tuple[int, int, int, int]:
    if isinstance(module, Discriminator):
        first = sd.get("conv1.0.weight_orig", sd.get("conv1.0.weight"))
        return (1, 64, 64, int(first.shape[1]))
    return (1, 64, 64, module.in_channels)


def convert_state_dict(sd: StateDict, *, fold_spectral_norm: bool = False, source: str = "state dict"
                       ) -> tuple[str, nn.Module, dict[str, Any]]:
    """``(network name, module, variables)`` of one EdgeConnect network's state dict."""
    sd = _drop_alias(_strip_module(sd), source)
    name, module = infer_module(sd, fold_spectral_norm=fold_spectral_norm, source=source)
    return name, module, variables_from_state_dict(sd, module, source=source)


def _read(path: str) -> dict[str, np.ndarray]:
    from jaxinpaint.io import torch_pickle

    return torch_pickle.load_state_dict(path)  # {'generator': sd} files arrive as generator.<key> (stripped later)


def source_files(source: str | os.PathLike) -> list[str]:
    """The weight files a source stands for: a release folder's files, or a file and its release siblings."""
    path = os.fspath(source)
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in RELEASE_FILES if os.path.isfile(os.path.join(path, n))]
        if not files:
            raise FileNotFoundError(f"{path}: holds none of EdgeConnect's weight files ({', '.join(RELEASE_FILES)}); "
                                    "download a release folder (Places2, CelebA or Paris StreetView) from the "
                                    "knazeri/edge-connect README")
        return files
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file or folder (EdgeConnect's weights are not downloaded "
                                "automatically; see the knazeri/edge-connect README)")
    folder = os.path.dirname(os.path.abspath(path))
    siblings = [os.path.join(folder, n) for n in RELEASE_FILES if os.path.isfile(os.path.join(folder, n))]
    return [path] + [s for s in siblings if not os.path.samefile(s, path)]


def load_original(source, *, fold_spectral_norm: bool = False) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """``{network name: (module, variables)}`` of every EdgeConnect network a source holds.

    Args:
      source: a release folder, one of its files (its siblings are read too), an ``.npz`` state dict, or a
        mapping of one network's keys to arrays.
      fold_spectral_norm: plain kernels for the generators instead of spectral-norm state.

    Raises:
      FileNotFoundError: the source does not exist, or a folder holds no EdgeConnect file.
      ConversionError: a file is not an EdgeConnect network, two files hold the same network, or keys are
        missing, left over or of the wrong shape.
    """
    if isinstance(source, Mapping):
        name, module, variables = convert_state_dict(source, fold_spectral_norm=fold_spectral_norm,
                                                     source="<mapping>")
        return {name: (module, variables)}
    models: dict[str, tuple[nn.Module, dict[str, Any]]] = {}
    origin: dict[str, str] = {}
    for path in source_files(source):
        name, module, variables = convert_state_dict(_read(path), fold_spectral_norm=fold_spectral_norm,
                                                     source=path)
        if name in models:
            raise ConversionError(f"{path} and {origin[name]} both hold EdgeConnect's {name}")
        models[name], origin[name] = (module, variables), path
    return models
