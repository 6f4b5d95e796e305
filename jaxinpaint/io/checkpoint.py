"""Model directories (converted weights, exports) and reading training workdirs.

A model directory ``DIR``::

    DIR/jaxinpaint_models.json   {"format": 2, "system": "lama", "models": {"generator": {"kind":
                                  "lama.FFCResNetGenerator", ...fields}, ...}, "inference": {...}, "source": "..."}
    DIR/variables/               orbax StandardCheckpointer tree {"generator": {"params", "batch_stats"}, ...}

Written by ``jaxinpaint convert`` (the original authors' weights); read by ``jaxinpaint.load`` (inference)
and by ``--config.init_from`` (fine-tuning). Module kinds resolve only through the system registry
(``jaxinpaint.systems``). Writes are atomic: everything goes to a temporary sibling directory that is renamed
into place at the end, so a crash never leaves a half-written model under the final name.

A training workdir (``train.py --workdir``) holds ``config.json`` and orbax ``checkpoints/<step>/`` with the
whole training state, the config and the model description of that step; :func:`load_training_state` reads
the config stored *with the checkpoint step it loads*, so a later, different ``config.json`` cannot break it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

METADATA = "jaxinpaint_models.json"
FORMAT_VERSION = 2


class ModelDirError(ValueError):
    """A model directory or workdir that cannot be read (the message names the file and the field)."""


def save_models(directory: str | os.PathLike, system: str, models: Mapping[str, tuple[nn.Module, Any]], *,
                inference: Mapping[str, Any] | None = None, source: str | None = None,
                extra: Mapping[str, Any] | None = None) -> None:
    """Writes ``{name: (module, variables)}`` of ``system`` as a model directory (atomically)."""
    from jaxinpaint import systems

    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise FileExistsError(f"{directory} exists and is not an empty directory; choose a new output directory")
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    meta = {"format": FORMAT_VERSION, "system": system,
            "models": {n: systems.module_spec(system, m) for n, (m, _) in models.items()},
            "inference": dict(inference or {}), "source": source, **(extra or {})}
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(directory) + "-", dir=parent)
    try:
        tree = {name: jax.tree.map(np.asarray, variables) for name, (_, variables) in models.items()}
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, "variables"), tree)
            ckptr.wait_until_finished()
        with open(os.path.join(tmp, METADATA), "w") as f:
            json.dump(meta, f, indent=2)
        if os.path.exists(directory):
            os.rmdir(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_model_dir(path) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), METADATA))


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The model directory's JSON, checked for the fields the loaders use."""
    path = os.path.join(os.fspath(directory), METADATA)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory} is not a jaxinpaint model directory: {METADATA} is missing "
                                "(create one with `jaxinpaint convert SOURCE DIR`)")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelDirError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ModelDirError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") == 1:  # written before systems were recorded: every such directory is LaMa
        meta = {**meta, "format": FORMAT_VERSION, "system": meta.get("objective", "lama"),
                "models": {n: {**spec, "kind": _v1_kind(spec.get("kind"))} for n, spec in meta["models"].items()}}
    if meta.get("format") != FORMAT_VERSION:
        raise ModelDirError(f"{path}: unsupported format {meta.get('format')!r} (this version reads {FORMAT_VERSION})")
    if not isinstance(meta.get("system"), str):
        raise ModelDirError(f"{path}: field 'system' must be a system name, got {meta.get('system')!r}")
    models = meta.get("models")
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise ModelDirError(f"{path}: field 'models' must map network names to module descriptions")
    return meta


def _v1_kind(kind) -> str:
    return {"lama": "lama.FFCResNetGenerator", "pix2pixhd.GlobalGenerator": "lama.GlobalGenerator",
            "pix2pixhd.NLayerDiscriminator": "lama.NLayerDiscriminator"}.get(kind, str(kind))


def load_variables(directory: str | os.PathLike) -> dict[str, Any]:
    """All variable trees of a model directory as ``{name: variables}`` (numpy arrays)."""
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(os.path.join(os.path.abspath(os.fspath(directory)), "variables"))


def load_models(directory: str | os.PathLike, names: tuple[str, ...] | None = None
                ) -> tuple[str, dict[str, tuple[nn.Module, Any]], dict[str, Any]]:
    """``(system, {name: (module, variables)}, inference config)`` of a model directory.

    Every module is rebuilt through the system registry and its variables are checked against it.
    """
    from jaxinpaint import systems

    meta = read_metadata(directory)
    system = meta["system"]
    wanted = names or tuple(meta["models"])
    missing = [n for n in wanted if n not in meta["models"]]
    if missing:
        raise KeyError(f"{directory} holds no {', '.join(missing)} (it has: {sorted(meta['models'])})")
    variables = load_variables(directory)
    out = {}
    for name in wanted:
        try:
            module = systems.build_module(system, meta["models"][name])
        except (systems.UnknownNameError, TypeError) as e:
            raise ModelDirError(f"{os.path.join(os.fspath(directory), METADATA)}: models.{name}: {e}") from e
        if name not in variables:
            raise ModelDirError(f"{directory}: variables/ holds no {name!r} tree")
        out[name] = (module, jax.tree.map(jax.numpy.asarray, variables[name]))
    return system, out, dict(meta.get("inference") or {})


def load_model(directory: str | os.PathLike, name: str) -> tuple[nn.Module, Any]:
    """``(module, variables)`` of one network stored in a model directory."""
    _, models, _ = load_models(directory, (name,))
    return models[name]


def is_training_workdir(path) -> bool:
    """A ``train.py`` workdir: an orbax ``checkpoints/`` directory (and, normally, ``config.json``)."""
    path = os.fspath(path)
    return os.path.isdir(os.path.join(path, "checkpoints"))


def load_training_state(workdir: str | os.PathLike, step: int | None = None) -> tuple[dict, dict, int]:
    """``(config dict, raw TrainState tree of arrays, step)`` from a training workdir (latest step by default).

    The config is the one saved *with that checkpoint step* (falling back to ``config.json`` for older
    workdirs). The state is restored without a target (plain arrays), so callers pick what they need
    (``nets.generator.params``, ``.ema``, ``.state``...) without rebuilding the optimisers.
    """
    workdir = os.path.abspath(os.fspath(workdir))
    ckpt_dir = os.path.join(workdir, "checkpoints")
    with ocp.CheckpointManager(ckpt_dir) as manager:
        steps = manager.all_steps()
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir}: no checkpoint yet (checkpoints/ is empty)")
        if step not in steps:
            raise FileNotFoundError(f"{workdir}: no checkpoint for step {step} (have {sorted(steps)})")
        has_config = os.path.isdir(os.path.join(ckpt_dir, str(step), "config"))
        args = {"state": ocp.args.StandardRestore()}
        if has_config:
            args["config"] = ocp.args.JsonRestore()
        restored = manager.restore(step, args=ocp.args.Composite(**args))
    config = restored["config"] if has_config else None
    if config is None:
        config_path = os.path.join(workdir, "config.json")
        try:
            with open(config_path) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise ModelDirError(f"{workdir}: checkpoint {step} stores no config and {config_path} is not "
                                f"readable ({e})") from e
    return config, restored["state"], step
