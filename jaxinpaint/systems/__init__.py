"""The registry of inpainting systems and per-image solvers.

Every name a user, a config, a converted checkpoint or a workdir can give resolves here, and only here:
``get('lama')`` imports ``jaxinpaint.systems.lama`` from the fixed table below and returns its ``SYSTEM``; a
module kind such as ``"lama.FFCResNetGenerator"`` resolves through that system's ``models`` table. Nothing read
from a file can name any other code. Tests and user code may add their own systems in-process with
:func:`register`.

Layout: one package per system, ``jaxinpaint/systems/<name>/`` with ``model.py`` (its networks),
``objective.py`` (its losses and updates), ``convert.py`` (the original weights) and, where it has one, a
per-image solver; ``__init__.py`` assembles them into the :class:`jaxinpaint.contract.System`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from jaxinpaint.contract import Solver, System

#: name -> (module, attribute) of every built-in system and solver.
_BUILTIN: dict[str, tuple[str, str]] = {
    "lama": ("jaxinpaint.systems.lama", "SYSTEM"),
    "pconv": ("jaxinpaint.systems.pconv", "SYSTEM"),
    "deepfill_v2": ("jaxinpaint.systems.deepfill_v2", "SYSTEM"),
    "context_encoder": ("jaxinpaint.systems.context_encoder", "SYSTEM"),
    "glcic": ("jaxinpaint.systems.glcic", "SYSTEM"),
    "pggan": ("jaxinpaint.systems.pggan", "SYSTEM"),
    "deepfill_v1": ("jaxinpaint.systems.deepfill_v1", "SYSTEM"),
    "shift_net": ("jaxinpaint.systems.shift_net", "SYSTEM"),
    "edgeconnect": ("jaxinpaint.systems.edgeconnect", "SYSTEM"),
    "ctsdg": ("jaxinpaint.systems.ctsdg", "SYSTEM"),
    "lama_refine": ("jaxinpaint.systems.lama.refine", "SOLVER"),
    "tv": ("jaxinpaint.systems.tv", "SOLVER"),
    "hallucination": ("jaxinpaint.systems.hallucination", "SOLVER"),
    "msnps": ("jaxinpaint.systems.msnps", "SOLVER"),
    "dip": ("jaxinpaint.systems.dip", "SOLVER"),
}
_REGISTERED: dict[str, System | Solver] = {}


class UnknownNameError(ValueError):
    """A system, solver or module kind that is not in the registry."""


def names(kind: str | None = None) -> list[str]:
    """Registered names, optionally only ``'trained'`` systems or ``'solver'`` s."""
    all_names = sorted(set(_BUILTIN) | set(_REGISTERED))
    if kind is None:
        return all_names
    return [n for n in all_names if get(n).kind == kind]


def get(name: str) -> System | Solver:
    """The system or solver registered under ``name``."""
    if not isinstance(name, str):
        raise UnknownNameError(f"a system name must be a string, got {type(name).__name__}")
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise UnknownNameError(f"unknown system or solver {name!r}; known: {', '.join(names())}")
    module_name, attr = _BUILTIN[name]
    return getattr(importlib.import_module(module_name), attr)


def register(obj: System | Solver, *, replace: bool = False) -> System | Solver:
    """Adds a system or solver defined in user code (or a test) under ``obj.name``; returns it."""
    if not isinstance(obj, (System, Solver)):
        raise TypeError(f"register: expected a System or Solver, got {type(obj).__name__}")
    if (obj.name in _BUILTIN or obj.name in _REGISTERED) and not replace:
        raise ValueError(f"a system or solver named {obj.name!r} is already registered")
    _REGISTERED[obj.name] = obj
    return obj


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


def for_weights(path: str) -> System:
    """The trained system whose original released weights ``path`` holds, recognised by its keys.

    Raises:
      UnknownNameError: no registered system recognises the file (the message shows its first keys).
    """
    import numpy as np

    from jaxinpaint.io import torch_pickle

    if str(path).endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
    else:
        keys = list(torch_pickle.load_state_dict(path))
    for name in names("trained"):
        system = get(name)
        if system.load_original is not None and system.recognizes(keys):
            return system
    raise UnknownNameError(f"{path}: no system recognises these weights (first keys: {keys[:5]}); "
                           "name the system explicitly")


# ----------------------------------------------------------------------------------------------------------
# Module kinds: "<system>.<Class>" <-> linen module classes of that system.
# ----------------------------------------------------------------------------------------------------------

#: Fields that describe how a module runs, not what it is: never stored in checkpoints, never compared.
RUNTIME_FIELDS = ("parent", "name", "dtype", "bn_groups", "conv_impl")


def module_class(system: str, kind: str) -> type[nn.Module]:
    """The class named by ``kind`` (``"Class"`` or ``"<system>.Class"``) in ``system``'s models table."""
    sys_name, _, cls_name = kind.rpartition(".")
    sys_name = sys_name or system
    owner = get(sys_name)
    models = getattr(owner, "models", {})
    if cls_name not in models:
        raise UnknownNameError(f"unknown module kind {kind!r}: system {sys_name!r} has {sorted(models)}")
    return models[cls_name]


def module_fields(cls: type[nn.Module]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def build_module(system: str, spec: Mapping[str, Any], **runtime) -> nn.Module:
    """A module from ``{'kind': ..., **fields}`` (a config section or a checkpoint's JSON).

    ``runtime`` fields (``dtype``, ``bn_groups``...) are passed only to modules that declare them. Unknown
    fields are an error naming them, so a typo in a config or a tampered checkpoint cannot pass silently.
    """
    spec = dict(spec)
    if "kind" not in spec:
        raise UnknownNameError(f"module spec without a 'kind': {sorted(spec)}")
    cls = module_class(system, str(spec.pop("kind")))
    fields = set(module_fields(cls))
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise UnknownNameError(f"{cls.__name__} has no field(s) {unknown} (fields: {sorted(fields)})")
    kwargs = {**spec, **{k: v for k, v in runtime.items() if k in fields and v is not None}}
    return cls(**kwargs)


def module_spec(system: str, module: nn.Module) -> dict[str, Any]:
    """``{'kind': '<system>.<Class>', **fields}`` of a module (JSON-serialisable, runtime fields left out)."""
    owner = get(system)
    cls_name = next((n for n, c in owner.models.items() if c is type(module)), None)
    if cls_name is None:
        raise UnknownNameError(f"{type(module).__name__} is not a module of system {system!r}")
    fields = {f: _jsonable(getattr(module, f)) for f in module_fields(type(module)) if f not in RUNTIME_FIELDS}
    return {"kind": f"{system}.{cls_name}", **fields}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
