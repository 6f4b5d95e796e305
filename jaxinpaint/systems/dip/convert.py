"""The original ``skip()`` network's state dict -> :class:`jaxinpaint.systems.dip.model.Skip` variables.

DIP has no released weights (every run starts from a random network), so this exists for the parity tests
against the reference fixtures and for anyone who saved a torch DIP network (``torch.save(net.state_dict())``)
and wants to continue or inspect it in JAX.

Key layout of the original (``models/common.py`` adds children with ``str(len(self) + 1)``, so its
``Sequential`` s count from ``1``; the ``(pad, conv)`` pairs that ``conv()`` returns are a plain
``nn.Sequential`` counting from ``0``, the conv at ``1`` after a ``ReflectionPad2d`` and at ``0`` with
``pad='zero'``). For the container ``P`` of scale ``i`` (the top-level ``Sequential`` for i = 0, then
``<deeper of scale i-1>.7.``):

* ``P1.`` is ``deeper``, or with skip channels a ``Concat`` whose ``P1.0.`` is ``skip`` and ``P1.1.`` ``deeper``;
* ``deeper``: ``1`` down conv (stride 2), ``2`` BN, ``4`` conv, ``5`` BN, ``7`` the next scale's container;
* ``skip``: ``1`` conv, ``2`` BN;
* ``P2`` BN after the concatenation, ``P3`` up conv, ``P4`` BN, and with ``need1x1_up`` ``P6`` conv 1x1, ``P7`` BN;
* the final 1x1 conv follows scale 0's layers in the top-level container (``6.`` or ``9.``).

Mapping: conv ``weight`` (O, I, kh, kw) -> ``kernel`` (kh, kw, I, O), ``bias`` -> ``bias``; BN ``weight``/``bias`` ->
``scale``/``bias``, ``running_mean``/``running_var`` -> ``batch_stats`` ``mean``/``var``; ``num_batches_tracked``
is dropped. Every key must be consumed and every variable filled with the right shape, or a
``ConversionError`` lists what is missing, left over or misshapen.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxinpaint.systems.dip.model import Skip
from jaxinpaint.systems.lama.convert import ConversionError

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
       "running_var": ("batch_stats", "var")}


def module_keys(module: Skip) -> dict[str, tuple[str, str]]:
    """``{torch module prefix: (flax module name, 'conv' | 'bn')}`` for every layer with weights."""
    c = "1" if module.pad == "reflection" else "0"
    out: dict[str, tuple[str, str]] = {}
    container = ""
    for i in range(module.n_scales):
        if module.num_channels_skip[i]:
            skip, deeper = f"{container}1.0.", f"{container}1.1."
            out[f"{skip}1.{c}"] = (f"s{i}_skip", "conv")
            out[f"{skip}2"] = (f"s{i}_skip_bn", "bn")
        else:
            deeper = f"{container}1."
        out[f"{deeper}1.{c}"] = (f"s{i}_down1", "conv")
        out[f"{deeper}2"] = (f"s{i}_down1_bn", "bn")
        out[f"{deeper}4.{c}"] = (f"s{i}_down2", "conv")
        out[f"{deeper}5"] = (f"s{i}_down2_bn", "bn")
        out[f"{container}2"] = (f"s{i}_bn", "bn")
        out[f"{container}3.{c}"] = (f"s{i}_up", "conv")
        out[f"{container}4"] = (f"s{i}_up_bn", "bn")
        if module.need1x1_up:
            out[f"{container}6.{c}"] = (f"s{i}_up1x1", "conv")
            out[f"{container}7"] = (f"s{i}_up1x1_bn", "bn")
        container = f"{deeper}7."
    out[f"{9 if module.need1x1_up else 6}.{c}"] = ("out", "conv")
    return out


def convert(state_dict: Mapping[str, np.ndarray], module: Skip) -> dict:
    """``{'params': ..., 'batch_stats': ...}`` for ``module`` from the original's ``state_dict`` (other arrays, e.g.
    a fixture's ``input``/``output``, are ignored when their key is not a parameter key of the network)."""
    layers = module_keys(module)
    variables: dict = {"params": {}, "batch_stats": {}}
    used = set()
    for prefix, (name, kind) in layers.items():
        fields = {"weight": ("params", "kernel"), "bias": ("params", "bias")} if kind == "conv" else _BN
        for leaf, (collection, var) in fields.items():
            key = f"{prefix}.{leaf}"
            if key not in state_dict:
                if kind == "conv" and leaf == "bias" and not module.need_bias:
                    continue
                raise ConversionError(f"DIP skip(): missing key {key!r} (for {collection}/{name}/{var})")
            a = np.asarray(state_dict[key], np.float32)
            if kind == "conv" and leaf == "weight":
                a = a.transpose(2, 3, 1, 0)
            variables[collection].setdefault(name, {})[var] = jnp.asarray(a)
            used.add(key)
        used.add(f"{prefix}.num_batches_tracked")
    # Keys that look like network keys (dotted numbers) but were not consumed are an error.
    leftover = sorted(k for k in state_dict if k not in used and k.split(".")[0].isdigit())
    if leftover:
        raise ConversionError(f"DIP skip(): {len(leftover)} unused key(s), e.g. {leftover[:5]} (wrong architecture "
                              "arguments?)")
    expected = jax.eval_shape(module.init, jax.random.key(0),
                              jnp.zeros((1, module.size_multiple, module.size_multiple, _in_channels(variables))))
    bad = []
    for collection in ("params", "batch_stats"):
        flat_e = _flatten(expected[collection])
        flat_g = _flatten(variables[collection])
        missing = sorted(set(flat_e) - set(flat_g))
        if missing:
            raise ConversionError(f"DIP skip(): no weights for {missing[:5]}")
        bad += [f"{p}: {flat_g[p].shape} vs {flat_e[p].shape}" for p in flat_e if flat_g[p].shape != flat_e[p].shape]
    if bad:
        raise ConversionError(f"DIP skip(): misshapen weights: {bad[:5]}")
    return variables


def _in_channels(variables) -> int:
    return int(variables["params"]["s0_down1"]["kernel"].shape[2])


def _flatten(tree, prefix="") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out
