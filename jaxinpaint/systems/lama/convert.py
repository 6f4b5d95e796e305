"""Weight import from the original PyTorch LaMa code (``jaxinpaint convert`` for LaMa files).

Public API::

    from jaxinpaint.convert import load_lama_generator, load_lama_discriminator
    model, variables = load_lama_generator("big-lama/models/best.ckpt")
    pred = model.apply(variables, jnp.concatenate([image * (1 - mask), mask], -1), train=False)

    model, variables = load_lama_discriminator("big-lama-with-discr/models/best.ckpt")
    logits, features = model.apply(variables, image, train=False)

A *source* is any of:
  * a PyTorch Lightning ``.ckpt`` (the released ``big-lama/models/best.ckpt``: generator keys under
    ``generator.``, discriminator keys under ``discriminator.``; other entries such as ``loss_resnet_pl.*`` and
    the pickled OmegaConf ``hyper_parameters`` are ignored);
  * a plain state-dict ``.pth``/``.pt``, or a ``.safetensors`` file;
  * the TorchScript ``big-lama.pt`` that IOPaint and lama-cleaner cache (LaMa's ``bin/to_jit.py`` output): its
    tensors are read as data, its code is never run (``jaxinpaint.io.torch_pickle``);
  * an ``.npz`` of arrays keyed by the original names (e.g. the reference fixtures);
  * a directory written by this module's converter (``python -m jaxinpaint.convert``) or a training workdir;
  * a mapping from the original names to numpy arrays.

``.ckpt``/``.pth`` files are read by ``jaxinpaint.io.torch_pickle``, which needs no PyTorch and never executes
pickled code. The architecture (generator family, widths, numbers of layers and blocks, global ratios, LFU,
SE, gating, spectral positional encoding) is inferred from the key names and shapes; what the weights cannot tell
(the output activation, ``dtype``) can be passed as keyword overrides. Every original key is consumed and every
parameter of the JAX model is filled, or a ``ConversionError`` lists what is left over or missing.

Command: ``jaxinpaint convert SOURCE OUTPUT_DIR`` (``python -m jaxinpaint.convert``) writes a model directory
(``jaxinpaint.io.checkpoint``), which ``train.py`` (``--config.init_from=OUTPUT_DIR``, fine-tuning with the
discriminator), ``jaxinpaint.load`` and ``jaxinpaint predict --model=OUTPUT_DIR`` start from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np


Variables = dict[str, Any]
StateDict = Mapping[str, np.ndarray]

_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


class ConversionError(ValueError):
    """The weights do not describe a model this module can build, or do not fill it exactly."""


# ----------------------------------------------------------------------------------------------------------------
# Reading sources.
# ----------------------------------------------------------------------------------------------------------------


def read_state_dict(source: str | os.PathLike | StateDict) -> dict[str, np.ndarray]:
    """All tensors of a source as ``{original key: numpy array}`` (no prefix stripping)."""
    if isinstance(source, Mapping):
        return {str(k): np.asarray(v) for k, v in source.items()}
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no such file. Pass a LaMa checkpoint (e.g. big-lama/models/best.ckpt from the LaMa README; "
            "it is not downloaded automatically), a state-dict .pth/.pt, an .npz or a converted directory.")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    from jaxinpaint.io import torch_pickle

    return torch_pickle.load_state_dict(path)


def _select(sd: dict[str, np.ndarray], prefix: str, marker: str, what: str, source) -> dict[str, np.ndarray]:
    """Keys of one network: those under ``prefix`` (Lightning checkpoints) or ``model.<prefix>`` (the TorchScript
    ``big-lama.pt`` of IOPaint / lama-cleaner: LaMa's ``to_jit.py`` wraps the training module as ``model``),
    else those matching the regex ``marker`` (a plain state dict or an .npz, where other arrays are ignored)."""
    for p in (prefix, "model." + prefix):
        if any(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    selected = {k: v for k, v in sd.items() if re.match(marker, k)}
    if not selected:
        prefixes = sorted({k.split(".")[0] + "." for k in sd})
        raise ConversionError(
            f"{_describe(source)}: no {what} weights found (looked for keys starting with {prefix!r} or "
            f"matching {marker!r}); top-level key prefixes present: {prefixes[:20]}")
    return selected


def _describe(source) -> str:
    return "<mapping>" if isinstance(source, Mapping) else os.fspath(source)


def _is_converted_dir(source) -> bool:
    return not isinstance(source, Mapping) and os.path.isdir(os.fspath(source))


# ----------------------------------------------------------------------------------------------------------------
# Architecture inference.
# ----------------------------------------------------------------------------------------------------------------


def _indices(sd, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _ratio(part: int, total: int) -> float:
    """A ratio r with int(total * r) == part, as the original computes channel splits."""
    r = part / total
    if int(total * r) != part:
        r = (part + 1e-6) / total
    return r


def infer_generator_config(sd: StateDict) -> dict[str, Any]:
    """Constructor kwargs (including ``kind``) of the generator described by an original state dict."""
    if any(re.match(r"model\.\d+\.conv1\.ffc\.", k) for k in sd):
        return _infer_ffc_generator(sd)
    if any(re.match(r"model\.\d+\.conv_block\.", k) for k in sd):
        return _infer_global_generator(sd)
    raise ConversionError("the keys describe neither an FFC ResNet generator (model.<i>.conv1.ffc.*) nor a "
                          "pix2pixHD global generator (model.<i>.conv_block.*)")


def _infer_ffc_generator(sd) -> dict[str, Any]:
    if "model.1.ffc.convl2l.weight" not in sd:
        raise ConversionError("FFC generator without its stem weight model.1.ffc.convl2l.weight")
    stem = sd["model.1.ffc.convl2l.weight"]
    blocks = _indices(sd, r"model\.(\d+)\.conv1\.ffc\.")
    down = [i for i in _indices(sd, r"model\.(\d+)\.ffc\.") if i != 1]
    n_down, n_blocks = len(down), len(blocks)
    if down != list(range(2, 2 + n_down)) or blocks != list(range(2 + n_down, 2 + n_down + n_blocks)):
        raise ConversionError(f"unexpected layer indices: down-sampling {down}, residual blocks {blocks}")
    first = f"model.{blocks[0]}.conv1.ffc" if blocks else None
    cfg: dict[str, Any] = dict(kind="FFCResNetGenerator", input_nc=int(stem.shape[1]), ngf=int(stem.shape[0]),
                               n_downsampling=n_down, n_blocks=n_blocks)
    last_down = f"model.{down[-1]}.ffc" if down else "model.1.ffc"
    local = sd[f"{last_down}.convl2l.weight"].shape[0] if f"{last_down}.convl2l.weight" in sd else 0
    glob = sd[f"{last_down}.convl2g.weight"].shape[0] if f"{last_down}.convl2g.weight" in sd else 0
    dim = local + glob
    if dim != cfg["ngf"] * 2**n_down:
        cfg["max_features"] = dim
    cfg["resnet_ratio_gin"] = _ratio(glob, dim)
    if first is not None:
        out_g = sd[f"{first}.convl2g.weight"].shape[0] if f"{first}.convl2g.weight" in sd else 0
        cfg["resnet_ratio_gout"] = _ratio(out_g, dim)
        cfg["resnet_enable_lfu"] = any(k.startswith(f"{first}.convg2g.lfu.") for k in sd)
        cfg["use_se"] = any(k.startswith(f"{first}.convg2g.fu.se.") for k in sd)
        cfg["gated"] = any(k.startswith(f"{first}.gate.") for k in sd)
        fu = sd.get(f"{first}.convg2g.fu.conv_layer.weight")
        if fu is not None:
            cfg["spectral_pos_encoding"] = fu.shape[1] == fu.shape[0] + 2
    head = max(_indices(sd, r"model\.(\d+)\.weight$"))
    cfg["output_nc"] = int(sd[f"model.{head}.weight"].shape[0])
    expected_head = 2 + n_down + n_blocks + 1 + 3 * n_down + 1
    if head != expected_head:
        raise ConversionError(f"output conv at model.{head}, expected model.{expected_head} (out_ffc models and "
                              "spatial-transform wrappers are not supported)")
    return cfg


def _infer_global_generator(sd) -> dict[str, Any]:
    stem = sd["model.1.weight"]
    blocks = _indices(sd, r"model\.(\d+)\.conv_block\.")
    n_blocks = len(blocks)
    n_down = (blocks[0] - 4) // 3
    bottleneck = sd[f"model.{blocks[0]}.conv_block.1.weight"].shape[0]
    cfg: dict[str, Any] = dict(kind="GlobalGenerator", input_nc=int(stem.shape[1]), ngf=int(stem.shape[0]),
                               n_downsampling=n_down, n_blocks=n_blocks)
    if bottleneck != cfg["ngf"] * 2**n_down:
        cfg["max_features"] = int(bottleneck)
    head = max(_indices(sd, r"model\.(\d+)\.weight$"))
    cfg["output_nc"] = int(sd[f"model.{head}.weight"].shape[0])
    return cfg


def infer_discriminator_config(sd: StateDict) -> dict[str, Any]:
    """Constructor kwargs (including ``kind``) of the NLayer discriminator described by a state dict."""
    layers = _indices(sd, r"model(\d+)\.")
    if not layers or layers != list(range(len(layers))) or len(layers) < 3:
        raise ConversionError(f"NLayerDiscriminator keys model0..model<n+1> expected, found layers {layers}")
    first = sd["model0.0.weight"]
    return dict(kind="NLayerDiscriminator", input_nc=int(first.shape[1]), ndf=int(first.shape[0]),
                n_layers=len(layers) - 2, use_norm="model1.1.running_mean" in sd)


# ----------------------------------------------------------------------------------------------------------------
# Key mapping: original key -> (collection, flax path, transform).
# ----------------------------------------------------------------------------------------------------------------


def _conv(w):
    return np.transpose(w, (2, 3, 1, 0))  # (O, I, kh, kw) -> HWIO


def _conv_transpose(w):
    return np.transpose(w[:, :, ::-1, ::-1], (2, 3, 0, 1))  # (I, O, kh, kw) -> flipped HWIO


def _linear(w):
    return np.transpose(w)


def _leaf(path: list[str], name: str, kind: str):
    """Maps a final attribute (weight/bias/running_*) of a conv/BN/linear module to a flax leaf."""
    if kind == "bn":
        if name == "num_batches_tracked":
            return None
        collection, leaf = _BN_FIELDS[name]
        return collection, (*path, leaf), np.asarray
    if name == "bias":
        return "params", (*path, "bias"), np.asarray
    fn = {"conv": _conv, "convT": _conv_transpose, "linear": _linear}[kind]
    return "params", (*path, "kernel"), fn


def _map_ffc_bn_act(rest: str) -> tuple[list[str], str] | None:
    """Maps a key inside an FFC_BN_ACT module to (flax path, kind); returns None for unknown keys."""
    rules = [
        (r"ffc\.(convl2l|convl2g|convg2l|gate)$", lambda m: (["ffc", m[1]], "conv")),
        (r"ffc\.convg2g\.conv1\.0$", lambda m: (["ffc", "convg2g", "conv1"], "conv")),
        (r"ffc\.convg2g\.conv1\.1$", lambda m: (["ffc", "convg2g", "conv1_bn"], "bn")),
        (r"ffc\.convg2g\.conv2$", lambda m: (["ffc", "convg2g", "conv2"], "conv")),
        (r"ffc\.convg2g\.(fu|lfu)\.conv_layer$", lambda m: (["ffc", "convg2g", m[1], "conv_layer"], "conv")),
        (r"ffc\.convg2g\.(fu|lfu)\.bn$", lambda m: (["ffc", "convg2g", m[1], "bn"], "bn")),
        (r"ffc\.convg2g\.(fu|lfu)\.se\.fc\.(0|2)$",
         lambda m: (["ffc", "convg2g", m[1], "se", "fc1" if m[2] == "0" else "fc2"], "linear")),
        (r"(bn_l|bn_g)$", lambda m: ([m[1]], "bn")),
    ]
    for pattern, fn in rules:
        if m := re.fullmatch(pattern, rest):
            return fn(m)
    return None


def generator_key_map(cfg: Mapping[str, Any]):
    """Returns ``fn(original_key) -> (collection, path, transform) | None`` for the generator ``cfg``."""
    nd, nb = cfg["n_downsampling"], cfg["n_blocks"]
    ffc = cfg["kind"] == "FFCResNetGenerator"
    if ffc:
        first_block, first_up = 2 + nd, 2 + nd + nb + 1
    else:
        first_block, first_up = 4 + 3 * nd, 4 + 3 * nd + nb
    head = first_up + 3 * nd + 1

    def module_of(index: int, rest: str):
        """(flax path, kind) of the original module ``model.<index>.<rest>``."""
        if first_up <= index < head - 1:
            j, r = divmod(index - first_up, 3)
            return ([f"up_{j}", "conv"], "convT") if r == 0 and rest == "" else \
                ([f"up_{j}", "bn"], "bn") if r == 1 and rest == "" else None
        if index == head and rest == "":
            return ["head"], "conv"
        if ffc:
            if index == 1:
                sub = _map_ffc_bn_act(rest)
                return (["stem", *sub[0]], sub[1]) if sub else None
            if 2 <= index < first_block:
                sub = _map_ffc_bn_act(rest)
                return ([f"down_{index - 2}", *sub[0]], sub[1]) if sub else None
            if first_block <= index < first_block + nb:
                m = re.fullmatch(r"(conv1|conv2)\.(.*)", rest)
                sub = _map_ffc_bn_act(m[2]) if m else None
                return ([f"block_{index - first_block}", m[1], *sub[0]], sub[1]) if sub else None
            return None
        # pix2pixHD global generator.
        if index in (1, 2) and rest == "":
            return (["stem", "conv"], "conv") if index == 1 else (["stem", "bn"], "bn")
        if 4 <= index < first_block:
            j, r = divmod(index - 4, 3)
            return ([f"down_{j}", "conv"], "conv") if r == 0 and rest == "" else \
                ([f"down_{j}", "bn"], "bn") if r == 1 and rest == "" else None
        if first_block <= index < first_block + nb:
            names = {"conv_block.1": ("conv1", "conv"), "conv_block.2": ("bn1", "bn"),
                     "conv_block.5": ("conv2", "conv"), "conv_block.6": ("bn2", "bn")}
            if rest in names:
                return [f"block_{index - first_block}", names[rest][0]], names[rest][1]
        return None

    def fn(key: str):
        m = re.fullmatch(r"model\.(\d+)\.(?:(.*)\.)?(\w+)", key)
        if not m:
            return None
        found = module_of(int(m[1]), m[2] or "")
        return _leaf(found[0], m[3], found[1]) if found and _valid_leaf(m[3], found[1]) else None

    return fn


def _valid_leaf(name: str, kind: str) -> bool:
    return name in (_BN_FIELDS.keys() | {"num_batches_tracked"} if kind == "bn" else {"weight", "bias"})


def discriminator_key_map(cfg: Mapping[str, Any]):
    def fn(key: str):
        m = re.fullmatch(r"model(\d+)\.(0|1)\.(\w+)", key)
        if not m or not _valid_leaf(m[3], "conv" if m[2] == "0" else "bn"):
            return None
        kind = "conv" if m[2] == "0" else "bn"
        return _leaf([f"layer_{m[1]}_{'conv' if kind == 'conv' else 'bn'}"], m[3], kind)

    return fn


# ----------------------------------------------------------------------------------------------------------------
# Building variables.
# ----------------------------------------------------------------------------------------------------------------


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """The linen module for a config produced by the ``infer_*`` functions (``kind`` + kwargs)."""
    from jaxinpaint import systems

    return systems.build_module("lama", cfg)


def _abstract_variables(model: nn.Module, input_channels: int, size: int = 64):
    x = jax.ShapeDtypeStruct((1, size, size, input_channels), np.float32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros(x.shape, x.dtype)))


def variables_from_state_dict(sd: StateDict, model: nn.Module, key_map, input_channels: int,
                              source_name: str = "<mapping>") -> Variables:
    """Fills the model's variables from the original state dict; every key consumed, every leaf filled."""
    from jaxinpaint.io import tree

    filled: dict[tuple, np.ndarray] = {}
    unknown = []
    for key, value in sd.items():
        target = key_map(key)
        if target is None:
            if key.rsplit(".", 1)[-1] == "num_batches_tracked" and key_map(key.replace("num_batches_tracked",
                                                                                        "running_mean")):
                continue  # BatchNorm's counter: no JAX counterpart (momentum is fixed).
            unknown.append(key)
            continue
        collection, path, transform = target
        filled[(collection, *path)] = np.ascontiguousarray(transform(np.asarray(value, dtype=np.float32)))
    expected = _abstract_variables(model, input_channels)
    parts = tree.differences(expected, tree.from_flat(filled))
    if unknown:
        parts.insert(0, f"{len(unknown)} unused key(s): {sorted(unknown)[:10]}")
    if parts:
        raise ConversionError(f"{source_name}: weights do not match the inferred model "
                              f"{type(model).__name__}: " + "; ".join(parts))
    return tree.from_flat({k: jax.numpy.asarray(v) for k, v in filled.items()})


def load_lama_generator(source, **overrides) -> tuple[nn.Module, Variables]:
    """Loads a LaMa generator (FFC ResNet or pix2pixHD global) from a source (see the module docstring).

    Args:
      source: path to a ``.ckpt``/``.pth``/``.pt``/``.npz`` file or converted directory, or a mapping of original
        key names to arrays.
      **overrides: constructor fields the weights cannot tell, e.g. ``add_out_act='sigmoid'`` (LaMa's released
        models; the default) or ``dtype=jnp.bfloat16``.

    Returns:
      ``(model, variables)`` with ``model.apply(variables, x, train=False)`` mapping ``x`` (N, H, W, 4) =
      concat(image*(1-mask), mask) to the (N, H, W, 3) prediction in [0, 1].
    """
    if _is_converted_dir(source):
        from jaxinpaint.io import checkpoint

        return checkpoint.load_model(source, "generator", **overrides)
    sd = _select(read_state_dict(source), "generator.", r"model\.\d+\.", "generator", source)
    cfg = {**infer_generator_config(sd), **overrides}
    model = build_model(cfg)
    variables = variables_from_state_dict(sd, model, generator_key_map(cfg), cfg["input_nc"], _describe(source))
    return model, variables


def load_lama_discriminator(source, **overrides) -> tuple[nn.Module, Variables]:
    """Loads LaMa's NLayer PatchGAN discriminator from a source (see the module docstring).

    Returns:
      ``(model, variables)`` with ``model.apply(variables, image, train=False)`` returning ``(logits, features)``:
      logits (N, h, w, 1) and the list of intermediate activations (NHWC) in the original's order.
    """
    if _is_converted_dir(source):
        from jaxinpaint.io import checkpoint

        return checkpoint.load_model(source, "discriminator", **overrides)
    sd = _select(read_state_dict(source), "discriminator.", r"model\d+\.", "discriminator", source)
    cfg = {**infer_discriminator_config(sd), **overrides}
    model = build_model(cfg)
    variables = variables_from_state_dict(sd, model, discriminator_key_map(cfg), cfg["input_nc"],
                                          _describe(source))
    return model, variables


def _from_model_dir(directory, name: str, overrides) -> tuple[nn.Module, Variables]:
    from jaxinpaint.io import checkpoint

    module, variables = checkpoint.load_model(directory, name)
    return (module.clone(**overrides) if overrides else module), variables


def load_original(source) -> dict[str, tuple[nn.Module, Variables]]:
    """``{'generator': ..., 'discriminator': ...}`` from an original LaMa file (D only when it holds one)."""
    sd = read_state_dict(source)
    models = {"generator": load_lama_generator(sd)}
    if any(k.startswith(("discriminator.", "model.discriminator.", "model0.")) for k in sd):
        models["discriminator"] = load_lama_discriminator(sd)
    return models


def looks_like_lama(sd: Mapping[str, Any]) -> bool:
    """Whether a state dict holds LaMa generator keys (a Lightning checkpoint or a plain generator)."""
    return any(re.match(r"(model\.)?(generator\.)?model\.1\.(ffc\.convl2l|weight)", k) for k in sd)
