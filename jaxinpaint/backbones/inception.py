"""Inception-v3 as pytorch-fid builds it for FID/KID: the 2048-d pool3 features, in linen.

FID numbers are only comparable when computed with the same network *and* the same quirks, so this is
pytorch-fid's ``fid_inception_v3()`` (``mseitzer/pytorch-fid: src/pytorch_fid/inception.py``), which LaMa
also uses (``saicinpainting/evaluation/losses/fid/inception.py``), rather than torchvision's Inception-v3:

* every conv is ``BasicConv2d``: conv without bias, BatchNorm with **eps 1e-3** (TF's value), ReLU;
* ``Mixed_5b/5c/5d`` (``FIDInceptionA``), ``Mixed_6b..6e`` (``FIDInceptionC``) and ``Mixed_7b``
  (``FIDInceptionE_1``) average-pool their pool branch with ``count_include_pad=False`` (TF's average pool
  ignores the zero padding);
* ``Mixed_7c`` (``FIDInceptionE_2``) **max-pools** its pool branch (a quirk of the TF graph the weights
  come from, kept by pytorch-fid);
* ``Mixed_6a`` and ``Mixed_7a`` are torchvision's InceptionB / InceptionD unchanged; no aux classifier;
* the input is resized to 299×299 with **bilinear, align_corners=False, no antialiasing** (torch's
  ``F.interpolate``), then mapped from [0, 1] to [-1, 1]; the output is the global average pool (N, 2048).

Parameter names mirror the torch module tree (``Mixed_5b/branch1x1/conv/kernel``,
``.../bn/{scale,bias}`` in ``params`` and ``.../bn/{mean,var}`` in ``batch_stats``), so conversion is a
renaming plus an OIHW -> HWIO transpose. Weights are never downloaded: :func:`load_variables` reads a
user-supplied file:

* pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (read without torch by ``jaxinpaint.io.torch_pickle``;
  ``fc.*`` and ``num_batches_tracked`` are ignored);
* jax-fid / fidax's ``inception_v3_weights_fid.pickle`` (nested dicts ``Mixed_5b/branch1x1/{conv:{kernel},
  bn:{scale,bias,mean,var}}`` in Flax layout; a plain pickle, read with the same code-free unpickler);
* the ``.npz`` written by :func:`save_npz` (flat ``params/...`` and ``batch_stats/...`` keys).

``width_divisor`` divides every width (1 is the real network); tests use 16 to run a real forward pass at
299×299 quickly with random weights. The loaders infer it from the stem's width.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

#: Resolution the FID network was trained at; pytorch-fid resizes every input to it.
INPUT_SIZE = 299
#: BatchNorm epsilon of the TF-ported weights.
BN_EPS = 1e-3
#: Width of the stem's first conv at width_divisor 1 (used to infer width_divisor from weights).
STEM_WIDTH = 32
#: Feature dimension at width_divisor 1.
FEATURE_DIM = 2048

WEIGHTS_HELP = (
    "jaxinpaint never downloads weights. On a machine with internet access fetch pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth (https://github.com/mseitzer/pytorch-fid/releases/download/"
    "fid_weights/pt_inception-2015-12-05-6726825d.pth) or jax-fid's inception_v3_weights_fid.pickle, copy "
    "it here and pass its path (optionally convert it once with `python -m jaxinpaint.evaluation.fid convert SRC "
    "OUT.npz`)."
)


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3, running statistics) + ReLU, torchvision's ``BasicConv2d``."""

    features: int
    kernel_size: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel_size, strides=self.strides, padding=((ph, ph), (pw, pw)),
                    use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x: Array) -> Array:
    """3×3 stride-1 average pool that ignores the padding (pytorch-fid's ``count_include_pad=False``)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s1(x: Array) -> Array:
    """Mixed_7c's pool branch: a 3×3 stride-1 *max* pool, padding 1 (the pytorch-fid / TF-graph quirk)."""
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x: Array) -> Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """``FIDInceptionA``: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1; out 224 + pool_features."""

    pool_features: int
    div: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = self.div
        b1 = BasicConv2d(64 // d, name="branch1x1")(x)
        b5 = BasicConv2d(48 // d, name="branch5x5_1")(x)
        b5 = BasicConv2d(64 // d, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv2d(64 // d, name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96 // d, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96 // d, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features // d, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """torchvision ``InceptionB`` (Mixed_6a): grid reduction 35 -> 17; out 384 + 96 + C_in."""

    div: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = self.div
        b3 = BasicConv2d(384 // d, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = BasicConv2d(64 // d, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96 // d, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96 // d, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """``FIDInceptionC``: factorised 7×7 branches; out 4 × 192."""

    channels_7x7: int
    div: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = self.div
        c7 = self.channels_7x7 // d
        b1 = BasicConv2d(192 // d, name="branch1x1")(x)
        b7 = BasicConv2d(c7, name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192 // d, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192 // d, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192 // d, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """torchvision ``InceptionD`` (Mixed_7a): grid reduction 17 -> 8; out 320 + 192 + C_in."""

    div: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = self.div
        b3 = BasicConv2d(192 // d, name="branch3x3_1")(x)
        b3 = BasicConv2d(320 // d, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = BasicConv2d(192 // d, name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192 // d, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192 // d, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192 // d, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """``FIDInceptionE_1`` (avg pool, Mixed_7b) or ``FIDInceptionE_2`` (max pool, Mixed_7c); out 2048."""

    max_pool_branch: bool = False
    div: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = self.div
        b1 = BasicConv2d(320 // d, name="branch1x1")(x)
        b3 = BasicConv2d(384 // d, name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            BasicConv2d(384 // d, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
            BasicConv2d(384 // d, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv2d(448 // d, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384 // d, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv2d(384 // d, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
            BasicConv2d(384 // d, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        pooled = _max_pool_3x3_s1(x) if self.max_pool_branch else _avg_pool_3x3(x)
        bp = BasicConv2d(192 // d, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's Inception-v3 up to the final average pool: [0, 1] NHWC images -> (N, 2048) features.

    Attributes:
      resize_input: bilinearly resize to 299×299 first (pytorch-fid's default; torch's ``F.interpolate``
        without antialiasing, which is what the published FID numbers used).
      normalize_input: map [0, 1] to [-1, 1] (the range the TF weights expect).
      width_divisor: divides every width (1 = the real network; larger values give tiny test models).
    """

    resize_input: bool = True
    normalize_input: bool = True
    width_divisor: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"FIDInceptionV3: expected an NHWC RGB batch (N, H, W, 3), got {x.shape}")
        d = self.width_divisor
        if d < 1 or STEM_WIDTH % d or 80 % d or 48 % d:
            raise ValueError(f"FIDInceptionV3: width_divisor must divide every width (1, 2, 4, 8 or 16), "
                             f"got {d}")
        x = x.astype(jnp.float32)
        if self.resize_input and x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
            x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), "bilinear", antialias=False)
        if self.normalize_input:
            x = 2.0 * x - 1.0
        x = BasicConv2d(32 // d, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32 // d, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64 // d, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv2d(80 // d, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192 // d, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(32, d, name="Mixed_5b")(x)
        x = InceptionA(64, d, name="Mixed_5c")(x)
        x = InceptionA(64, d, name="Mixed_5d")(x)
        x = InceptionB(d, name="Mixed_6a")(x)
        x = InceptionC(128, d, name="Mixed_6b")(x)
        x = InceptionC(160, d, name="Mixed_6c")(x)
        x = InceptionC(160, d, name="Mixed_6d")(x)
        x = InceptionC(192, d, name="Mixed_6e")(x)
        x = InceptionD(d, name="Mixed_7a")(x)
        x = InceptionE(False, d, name="Mixed_7b")(x)
        x = InceptionE(True, d, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


# ----------------------------------------------------------------------------------------------------------
# Weight conversion.
# ----------------------------------------------------------------------------------------------------------

_TORCH_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
_JAX_FID_BN = {"scale": ("params", "scale"), "bias": ("params", "bias"),
               "mean": ("batch_stats", "mean"), "var": ("batch_stats", "var")}
# Parts of the classifier network that FID never uses.
_IGNORED_TOP = ("fc", "AuxLogits")


def abstract_variables(width_divisor: int = 1) -> dict:
    """Shapes of the model's variables (``jax.ShapeDtypeStruct`` leaves), without initialising anything."""
    model = FIDInceptionV3(width_divisor=width_divisor)
    dummy = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), dummy)


def random_variables(width_divisor: int = 1, seed: int = 0) -> dict:
    """Random variables of the right shapes, drawn with numpy (for tests and smoke runs).

    ``model.init`` of this 94-conv network is slow to compile on CPU, and FID tests only need *some*
    fixed network: He-normal kernels, BatchNorm scale ~1, small biases, zero mean and unit variance.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in flax.traverse_util.flatten_dict(abstract_variables(width_divisor)).items():
        name = path[-1]
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape)
        elif name == "scale":
            value = rng.uniform(0.8, 1.2, leaf.shape)
        elif name == "bias":
            value = rng.normal(0.0, 0.1, leaf.shape)
        elif name == "var":
            value = np.ones(leaf.shape)
        else:
            value = np.zeros(leaf.shape)
        out[path] = value.astype(np.float32)
    return flax.traverse_util.unflatten_dict(out)


def _check_and_build(flat: dict[tuple[str, ...], np.ndarray], width_divisor: int, source: str) -> dict:
    """Validates a flat {path: array} tree against the model's abstract variables; returns nested float32."""
    from jaxinpaint.io import tree

    built = tree.from_flat({k: np.asarray(v, np.float32) for k, v in flat.items()})
    tree.check(abstract_variables(width_divisor), built, source=f"FID Inception weights {source}",
               what=f"pytorch-fid's InceptionV3 (width_divisor {width_divisor}) variables")
    return built


def _infer_divisor(stem_out: int, source: str) -> int:
    if stem_out < 1 or STEM_WIDTH % stem_out:
        raise ValueError(f"{source}: the first conv (Conv2d_1a_3x3) has {stem_out} output channels; "
                         f"pytorch-fid's InceptionV3 has {STEM_WIDTH}")
    return STEM_WIDTH // stem_out


def variables_from_pytorch_fid(sd: Mapping[str, np.ndarray], *, source: str = "state dict") -> dict:
    """pytorch-fid ``FIDInceptionV3`` state dict (``Mixed_5b.branch1x1.conv.weight``, ...) -> variables.

    Keys of the classifier (``fc.*``, ``AuxLogits.*``) and BatchNorm's ``num_batches_tracked`` are
    ignored; a missing, unexpected or mis-shaped tensor raises ValueError naming it.

    Returns:
      ``{'params': ..., 'batch_stats': ...}`` as numpy float32 arrays.
    """
    stem = sd.get("Conv2d_1a_3x3.conv.weight")
    if stem is None:
        raise ValueError(f"{source} is not pytorch-fid's Inception state dict: it has no "
                         f"'Conv2d_1a_3x3.conv.weight' (first keys: {list(sd)[:6]})")
    divisor = _infer_divisor(np.shape(stem)[0], source)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] in _IGNORED_TOP or parts[-1] == "num_batches_tracked":
            continue
        value = np.asarray(value)
        if len(parts) >= 3 and parts[-2] == "conv" and parts[-1] == "weight":
            if value.ndim != 4:
                raise ValueError(f"{source}: {key} must be a 4-D conv weight, got shape {value.shape}")
            flat[("params", *parts[:-1], "kernel")] = value.transpose(2, 3, 1, 0)
        elif len(parts) >= 3 and parts[-2] == "bn" and parts[-1] in _TORCH_BN:
            collection, leaf = _TORCH_BN[parts[-1]]
            flat[(collection, *parts[:-1], leaf)] = value
        else:
            flat[("unknown", *parts)] = value  # reported as unexpected by the check below
    return _check_and_build(flat, divisor, source)


def variables_from_jax_fid(tree: Mapping[str, Any], *, source: str = "jax-fid pickle") -> dict:
    """jax-fid / fidax ``inception_v3_weights_fid.pickle`` (nested dicts, Flax layout) -> variables.

    Each ``BasicConv2d`` is ``{'conv': {'kernel': HWIO[, 'bias']}, 'bn': {'scale', 'bias', 'mean',
    'var'}}``. A conv ``bias`` (jax-fid's convs have none in use) is accepted only when it is all zeros.
    """
    if not isinstance(tree, Mapping) or not isinstance(tree.get("Conv2d_1a_3x3"), Mapping):
        keys = sorted(tree)[:8] if isinstance(tree, Mapping) else type(tree).__name__
        raise ValueError(f"{source} is not jax-fid's Inception pickle: no 'Conv2d_1a_3x3' entry ({keys})")
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for path, value in flax.traverse_util.flatten_dict(dict(tree)).items():
        path = tuple(str(p) for p in path)
        value = np.asarray(value)
        if path[0] in _IGNORED_TOP:
            continue
        if len(path) >= 3 and path[-2] == "conv" and path[-1] == "kernel":
            flat[("params", *path)] = value
        elif len(path) >= 3 and path[-2] == "conv" and path[-1] == "bias":
            if np.any(value != 0):
                raise ValueError(f"{source}: {'/'.join(path)} is a non-zero conv bias, which pytorch-fid's "
                                 "InceptionV3 does not have")
        elif len(path) >= 3 and path[-2] == "bn" and path[-1] in _JAX_FID_BN:
            collection, leaf = _JAX_FID_BN[path[-1]]
            flat[(collection, *path[:-1], leaf)] = value
        else:
            flat[("unknown", *path)] = value
    kernel = flat.get(("params", "Conv2d_1a_3x3", "conv", "kernel"))
    if kernel is None or kernel.ndim != 4:
        raise ValueError(f"{source}: Conv2d_1a_3x3/conv/kernel is missing or not 4-D")
    return _check_and_build(flat, _infer_divisor(kernel.shape[-1], source), source)


def save_npz(variables: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Writes variables as an ``.npz`` of flat ``params/...`` / ``batch_stats/...`` keys (no pickle)."""
    flat = flax.traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(variables)), sep="/")
    with open(path, "wb") as f:
        np.savez(f, **flat)


def _variables_from_npz(arrays: Mapping[str, np.ndarray], source: str) -> dict:
    flat = {tuple(k.split("/")): np.asarray(v) for k, v in arrays.items()}
    kernel = flat.get(("params", "Conv2d_1a_3x3", "conv", "kernel"))
    if kernel is None or kernel.ndim != 4:
        raise ValueError(f"{source}: params/Conv2d_1a_3x3/conv/kernel is missing or not 4-D")
    return _check_and_build(flat, _infer_divisor(kernel.shape[-1], source), source)


def width_divisor_of(variables: Mapping[str, Any]) -> int:
    """The ``width_divisor`` a variables tree was built for (from the stem conv's width)."""
    kernel = variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"]
    return _infer_divisor(kernel.shape[-1], "variables")


def load_variables(path: str | os.PathLike) -> dict:
    """FID Inception variables from a pytorch-fid ``.pth``, a jax-fid ``.pickle`` or a converted ``.npz``.

    The format is detected from the content, not the suffix.

    Raises:
      FileNotFoundError: no such file (the message says where to get the weights).
      ValueError: the file is not one of the formats above, or its tensors do not fit the network.
    """
    from jaxinpaint.io import torch_pickle  # Imported here: only weight loading needs the pickle reader.

    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights not found at {path}. {WEIGHTS_HELP}")
    with open(path, "rb") as f:
        is_zip = f.read(2) == b"PK"
    if is_zip:  # torch >= 1.6 zip checkpoint, or an .npz
        sd = torch_pickle.load_state_dict(str(path))
        if any(k.startswith(("params/", "batch_stats/")) for k in sd):
            return _variables_from_npz(sd, str(path))
        return variables_from_pytorch_fid(sd, source=str(path))
    obj = torch_pickle.load(str(path))  # legacy torch file or plain pickle (jax-fid), never runs code
    if isinstance(obj, Mapping) and isinstance(obj.get("Conv2d_1a_3x3"), Mapping):
        return variables_from_jax_fid(obj, source=str(path))
    return variables_from_pytorch_fid(torch_pickle.load_state_dict(str(path)), source=str(path))


def load(path: str | os.PathLike) -> tuple[FIDInceptionV3, dict]:
    """``(model, variables)`` from a weights file (see :func:`load_variables`), width inferred."""
    variables = load_variables(path)
    return FIDInceptionV3(width_divisor=width_divisor_of(variables)), jax.tree.map(jnp.asarray, variables)
