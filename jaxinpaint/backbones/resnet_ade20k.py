"""LaMa's high-receptive-field perceptual loss (HRF-PL) and its frozen ADE20k ResNet50-dilated backbone.

LaMa (``saicinpainting/training/losses/perceptual.py::ResNetPL``) compares images in the feature space of
the *encoder* of MIT CSAIL's ADE20k scene-parsing model ``ade20k-resnet50dilated-ppm_deepsup`` (LaMa
vendors it as ``models/ade20k/{base,resnet}.py``, from ``CSAILVision/semantic-segmentation-pytorch``):

* a "deep stem": three 3×3 convs 3→64 (stride 2), 64→64, 64→128, each with BN and ReLU, then a 3×3
  stride-2 max-pool with padding 1;
* ResNet-50 bottleneck stages [3, 4, 6, 3] of widths 64/128/256/512 (×4 expansion); the stride sits on
  the middle 3×3 conv; every first block has a 1×1 conv + BN projection (``downsample``), layer1's too,
  because the stem ends with 128 channels;
* ``ResnetDilated(dilate_scale=8)`` rewrites layer3 and layer4 in place (``_nostride_dilate``): stride-2
  convs become stride 1 (the first block's 3×3 conv then gets dilation = padding = d/2, the 1×1
  projection just loses its stride) and every other 3×3 conv gets dilation = padding = d, with d = 2 in
  layer3 and d = 4 in layer4. The output stride is therefore 8 instead of 32;
* BatchNorm eps 1e-5 (eval mode: running statistics; LaMa's training runs it in train mode, see
  ``jaxinpaint.losses.hrf_perceptual``); no avgpool / fc.

The encoder returns the 4 maps after layer1..layer4 (256/512/1024/2048 channels at strides 4/8/8/8) and
the loss is Σ_l MSE(φ_l(n(pred)), φ_l(n(target))), n = ImageNet normalisation (weight 30 in Big-LaMa,
applied by the trainer).

Weights are a user-supplied file (this package never downloads): ``encoder_epoch_20.pth`` as published by
CSAIL, read without torch by ``jaxinpaint.io.torch_pickle``, or a ``.npz`` of the same keys.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinpaint.nn.norm import BatchNorm

Array = jax.Array

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Where LaMa's README tells users to put the file, relative to a weights root such as $JAXINPAINT_WEIGHTS.
WEIGHTS_RELPATH = "ade20k/ade20k-resnet50dilated-ppm_deepsup/encoder_epoch_20.pth"
WEIGHTS_URL = ("http://sceneparsing.csail.mit.edu/model/pytorch/"
               "ade20k-resnet50dilated-ppm_deepsup/encoder_epoch_20.pth")

_BN_EPS = 1e-5
# torch's BatchNorm momentum 0.1 is Flax's 0.9; only matters if someone trains the backbone.
_BN_MOMENTUM = 0.9


def _norm(name: str, train: bool) -> nn.Module:
    # torch's BatchNorm2d: in train mode (LaMa's HRF loss, hrf_bn_mode='train') the running variance moves
    # with the unbiased batch variance, as in LaMa's own training step.
    return BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPS,
                     unbiased_running_var=True, name=name)


def _conv(features: int, kernel: int, name: str, stride: int = 1, dilation: int = 1) -> nn.Conv:
    # torch pads a 3x3 conv by its dilation (padding = dilation in every 3x3 conv of this network) and a
    # 1x1 conv by 0; explicit padding keeps odd input sizes identical to torch's floor arithmetic.
    pad = dilation * (kernel // 2)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), kernel_dilation=(dilation, dilation),
                   padding=((pad, pad), (pad, pad)), use_bias=False, name=name)


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (1×1, 3×3 with the stride and dilation, 1×1 ×4), torch-named submodules."""

    planes: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        out = nn.relu(_norm("bn1", train)(_conv(self.planes, 1, "conv1")(x)))
        out = _conv(self.planes, 3, "conv2", stride=self.stride, dilation=self.dilation)(out)
        out = nn.relu(_norm("bn2", train)(out))
        out = _norm("bn3", train)(_conv(self.planes * 4, 1, "conv3")(out))
        residual = x
        if self.downsample:
            residual = _conv(self.planes * 4, 1, "downsample_conv", stride=self.stride)(x)
            residual = _norm("downsample_bn", train)(residual)
        return nn.relu(out + residual)


def block_settings(layer: int, index: int, dilate_scale: int = 8) -> tuple[int, int]:
    """(stride, dilation) of the 3×3 conv of block ``index`` in ``layer`` (1..4), after ``_nostride_dilate``.

    Plain ResNet: stride 2 in the first block of layers 2-4, dilation 1. ``dilate_scale`` 8 dilates layer3
    by 2 and layer4 by 4; 16 only layer4 by 2; the first block of a dilated layer keeps half the dilation.
    """
    stride = 2 if (layer > 1 and index == 0) else 1
    dilate = {8: {3: 2, 4: 4}, 16: {4: 2}, 32: {}}[dilate_scale].get(layer)
    if dilate is None:
        return stride, 1
    if stride == 2:
        return 1, dilate // 2
    return 1, dilate


class Model(nn.Module):
    """CSAIL's ``ResnetDilated`` encoder (deep stem ResNet-50, dilate_scale 8) in NHWC.

    Attributes:
      layers: bottleneck blocks per stage; (3, 4, 6, 3) is ResNet-50. Smaller values serve tests.
      width: planes of layer1 (64); layer k has width·2^(k-1) planes and 4× as many output channels.
      stem_width: channels of the first two stem convs (64); the third has 2× as many.
      dilate_scale: 8 (LaMa), 16, or 32 (no dilation).

    ``__call__(x, train=False)`` takes an ImageNet-normalised NHWC image and returns the list of the 4
    feature maps after layer1..layer4. Parameters are ``{'params', 'batch_stats'}`` with torch-like names
    (``conv1``, ``bn1``, ``layer3_5/conv2``, ``layer1_0/downsample_conv`` ...).
    """

    layers: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    stem_width: int = 64
    dilate_scale: int = 8

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> list[Array]:
        if self.dilate_scale not in (8, 16, 32):
            raise ValueError(f"resnet_ade20k: dilate_scale must be 8, 16 or 32, got {self.dilate_scale}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"resnet_ade20k.Model: expected an NHWC RGB batch (B, H, W, 3), got {x.shape}")
        x = nn.relu(_norm("bn1", train)(_conv(self.stem_width, 3, "conv1", stride=2)(x)))
        x = nn.relu(_norm("bn2", train)(_conv(self.stem_width, 3, "conv2")(x)))
        x = nn.relu(_norm("bn3", train)(_conv(2 * self.stem_width, 3, "conv3")(x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        in_channels = 2 * self.stem_width
        feature_maps = []
        for layer, n_blocks in enumerate(self.layers, start=1):
            planes = self.width * 2 ** (layer - 1)
            for index in range(n_blocks):
                stride, dilation = block_settings(layer, index, self.dilate_scale)
                # torch's _make_layer decides the projection on the *original* stride (before dilation).
                orig_stride = 2 if (layer > 1 and index == 0) else 1
                downsample = index == 0 and (orig_stride != 1 or in_channels != planes * 4)
                x = Bottleneck(planes, stride=stride, dilation=dilation, downsample=downsample,
                               name=f"layer{layer}_{index}")(x, train=train)
                in_channels = planes * 4
            feature_maps.append(x)
        return feature_maps


# ----------------------------------------------------------------------------------------------------------
# Weight conversion.
# ----------------------------------------------------------------------------------------------------------

_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _bn_keys(torch_prefix: str, flax_path: tuple[str, ...], channels: int) -> dict:
    return {f"{torch_prefix}.{field}": (collection, flax_path + (leaf,), (channels,))
            for field, (collection, leaf) in _BN_FIELDS.items()}


def _conv_keys(torch_prefix: str, flax_path: tuple[str, ...], cout: int, cin: int, k: int) -> dict:
    return {f"{torch_prefix}.weight": ("params", flax_path + ("kernel",), (cout, cin, k, k))}


def key_map(model: Model | None = None) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """torch key -> (collection, flax path, torch shape) for every tensor of the encoder's state dict.

    ``num_batches_tracked`` buffers are not listed: they carry no numbers the forward pass uses.
    """
    model = model or Model()
    keys: dict = {}
    sw = model.stem_width
    for i, (cin, cout) in enumerate([(3, sw), (sw, sw), (sw, 2 * sw)], start=1):
        keys.update(_conv_keys(f"conv{i}", (f"conv{i}",), cout, cin, 3))
        keys.update(_bn_keys(f"bn{i}", (f"bn{i}",), cout))
    in_channels = 2 * sw
    for layer, n_blocks in enumerate(model.layers, start=1):
        planes = model.width * 2 ** (layer - 1)
        for index in range(n_blocks):
            tp, fp = f"layer{layer}.{index}", (f"layer{layer}_{index}",)
            keys.update(_conv_keys(f"{tp}.conv1", fp + ("conv1",), planes, in_channels, 1))
            keys.update(_bn_keys(f"{tp}.bn1", fp + ("bn1",), planes))
            keys.update(_conv_keys(f"{tp}.conv2", fp + ("conv2",), planes, planes, 3))
            keys.update(_bn_keys(f"{tp}.bn2", fp + ("bn2",), planes))
            keys.update(_conv_keys(f"{tp}.conv3", fp + ("conv3",), 4 * planes, planes, 1))
            keys.update(_bn_keys(f"{tp}.bn3", fp + ("bn3",), 4 * planes))
            orig_stride = 2 if (layer > 1 and index == 0) else 1
            if index == 0 and (orig_stride != 1 or in_channels != planes * 4):
                keys.update(_conv_keys(f"{tp}.downsample.0", fp + ("downsample_conv",), 4 * planes,
                                       in_channels, 1))
                keys.update(_bn_keys(f"{tp}.downsample.1", fp + ("downsample_bn",), 4 * planes))
            in_channels = 4 * planes
    return keys


def _strip_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Accepts keys saved from a DataParallel / wrapper (``module.conv1.weight``) by dropping the prefix."""
    for prefix in ("module.", "encoder."):
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def variables_from_state_dict(sd: Mapping[str, np.ndarray], *, model: Model | None = None,
                              source: str = "state dict") -> dict:
    """Converts the CSAIL/LaMa encoder state dict (torch names, NCHW/OIHW) into Flax variables.

    Every expected key must be present with the expected shape and every key of ``sd`` must be used
    (``num_batches_tracked`` excepted): LaMa itself loads with ``strict=False``, which would silently leave
    a randomly initialised layer in a loss that is supposed to be pretrained.

    Args:
      sd: torch key -> numpy array, e.g. from ``jaxinpaint.io.torch_pickle.load_state_dict``.
      model: the architecture the weights are for (default: ResNet-50 dilated, LaMa's).
      source: where ``sd`` came from, for error messages.

    Returns:
      ``{'params': ..., 'batch_stats': ...}`` nested dicts of float32 numpy arrays.
    """
    sd = _strip_prefix(sd)
    expected = key_map(model)
    ignored = {k for k in sd if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected) - ignored)
    if missing or unexpected:
        raise ValueError(
            f"resnet_ade20k: {source} does not match the ADE20k ResNet50-dilated encoder: "
            f"{len(missing)} missing key(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}. "
            f"Expected the {len(expected)} tensors of {WEIGHTS_RELPATH} (e.g. conv1.weight, "
            "layer1.0.downsample.0.weight).")
    variables: dict = {"params": {}, "batch_stats": {}}
    for key, (collection, path, shape) in expected.items():
        value = np.asarray(sd[key])
        if value.shape != shape:
            raise ValueError(f"resnet_ade20k: {source}: {key} has shape {value.shape}, expected {shape}")
        if path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        node = variables[collection]
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value.astype(np.float32)
    return variables


def _missing_weights_error(path: pathlib.Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"ADE20k ResNet50-dilated weights for LaMa's HRF perceptual loss not found at {path}. "
        "jaxinpaint does not download weights. Get the encoder of CSAIL's ade20k-resnet50dilated-ppm_deepsup "
        f"model, as the LaMa README says: download {WEIGHTS_URL} and place it at "
        f"$JAXINPAINT_WEIGHTS/{WEIGHTS_RELPATH} (any directory works), then point the training config at "
        "that file or at a converted .npz (LaMa configs: --config.losses.hrf_weights=PATH). Set the HRF "
        "loss weight to 0 to train without it.")


def resolve_weights_path(path: str | os.PathLike | None = None) -> pathlib.Path:
    """The weights file to use: ``path`` if given, else ``$JAXINPAINT_WEIGHTS/`` + ``WEIGHTS_RELPATH``.

    A directory is taken as a weights root (``<dir>/ade20k/...``). Raises a FileNotFoundError explaining
    where to get the file when it does not exist.
    """
    if path is None:
        root = os.environ.get("JAXINPAINT_WEIGHTS")
        if not root:
            raise _missing_weights_error(pathlib.Path("$JAXINPAINT_WEIGHTS (unset)") / WEIGHTS_RELPATH)
        path = pathlib.Path(root) / WEIGHTS_RELPATH
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_RELPATH
    if not path.is_file():
        raise _missing_weights_error(path)
    return path


def load(path: str | os.PathLike | None = None, *, model: Model | None = None) -> dict:
    """Loads the encoder weights from the original ``encoder_epoch_20.pth`` or a ``.npz`` of its keys.

    Args:
      path: the file (``.pth`` torch pickle, zip or legacy, read without torch; or ``.npz``), a weights
        root directory, or None for ``$JAXINPAINT_WEIGHTS``.
      model: architecture (default LaMa's ResNet-50 dilated).

    Returns:
      Flax variables ``{'params', 'batch_stats'}`` for ``Model``.
    """
    from jaxinpaint.io import torch_pickle  # Imported here: only weight loading needs the pickle reader.

    path = resolve_weights_path(path)
    sd = torch_pickle.load_state_dict(str(path))
    return variables_from_state_dict(sd, model=model, source=str(path))


def save_npz(variables: Mapping[str, Any], path: str | os.PathLike, *, model: Model | None = None) -> None:
    """Writes variables back under the original torch key names (OIHW), a torch-free ``.npz`` for ``load``."""
    arrays = {}
    for key, (collection, fpath, _) in key_map(model).items():
        node = variables[collection]
        for name in fpath:
            node = node[name]
        value = np.asarray(node)
        arrays[key] = value.transpose(3, 2, 0, 1) if fpath[-1] == "kernel" else value
    np.savez(path, **arrays)


def random_variables(*, model: Model | None = None, seed: int = 0) -> dict:
    """Random encoder variables for tests and smoke runs, built with numpy in well under a second.

    ``Model().init`` would do, but compiling its threefry initialisers takes 10-20 s on a 2-core CPU.
    Convs are He-normal; BN has scale in [0.5, 1], small shifts and running statistics near (0, 1).
    The features of such a network are random projections: a loss built on them is only a smoke test.
    """
    rng = np.random.default_rng(seed)
    sd = {}
    for key, (_, _, shape) in key_map(model).items():
        field = key.rsplit(".", 1)[1]
        if len(shape) == 4:
            std = np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
            sd[key] = rng.standard_normal(shape, dtype=np.float32) * std
        elif field == "weight":
            sd[key] = rng.uniform(0.5, 1.0, shape).astype(np.float32)
        elif field == "running_var":
            sd[key] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        else:
            sd[key] = rng.normal(0.0, 0.05, shape).astype(np.float32)
    return variables_from_state_dict(sd, model=model, source="random_variables")


# ----------------------------------------------------------------------------------------------------------
# The loss.
# ----------------------------------------------------------------------------------------------------------


def normalize_imagenet(images: Array) -> Array:
    """[0, 1] RGB -> ImageNet mean/std normalised, the input both CSAIL and torchvision backbones expect."""
    mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
    std = jnp.asarray(IMAGENET_STD, images.dtype)
    return (images - mean) / std
