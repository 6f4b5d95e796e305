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

import hashlib
import json
import logging
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
#: Where a training run moves checkpoints that failed verification (never deleted: they are the user's data).
CORRUPT_DIR = "checkpoints_corrupt"

log = logging.getLogger("jaxinpaint.checkpoint")


class ModelDirError(ValueError):
    """A model directory or workdir that cannot be read (the message names the file and the field)."""


class CorruptCheckpointError(ModelDirError):
    """A checkpoint that cannot be read back, or whose arrays differ from the checksums saved with them."""


# ------------------------------------------------------------------------------------------------------------
# Integrity: a checksum per saved array, checked on restore.
# ------------------------------------------------------------------------------------------------------------


def _path_name(path) -> str:
    """``nets/generator/params/conv/kernel``: the same for a TrainState and for its raw (dict) restore."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _host_leaves(tree: Any):
    """``(name, numpy array)`` of every leaf, fetched one at a time (peak host memory: the largest leaf)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            raise ValueError("not fully addressable")
        yield _path_name(path), np.asarray(jax.device_get(leaf))


def tree_checksums(tree: Any) -> dict[str, str]:
    """``{leaf path: 'sha256:<hex>'}`` over each leaf's dtype, shape and bytes ({} across several processes,
    where no process holds every array)."""
    out = {}
    try:
        for name, array in _host_leaves(tree):
            digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).data)
            out[name] = "sha256:" + digest.hexdigest()
    except ValueError:
        return {}
    return out


def verify_checksums(tree: Any, expected: Mapping[str, str] | None, where: str) -> None:
    """Raises :class:`CorruptCheckpointError` naming the arrays of ``tree`` that differ from ``expected``."""
    if not expected:
        return  # written before checksums existed, or by several processes
    actual = tree_checksums(tree)
    if not actual:
        return
    bad = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
    if bad:
        raise CorruptCheckpointError(f"{where}: {len(bad)} array(s) differ from the checksums saved with them "
                                     f"(corrupted on disk): {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")


def nonfinite_leaves(tree: Any) -> list[str]:
    """Paths of the floating-point leaves holding NaN or inf (checked on device, one scalar per leaf)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    floats = [(p, x) for p, x in flat if jax.numpy.issubdtype(jax.numpy.result_type(x), jax.numpy.inexact)]
    counts = [jax.numpy.sum(~jax.numpy.isfinite(x)) for _, x in floats]
    # A global (multi-process) sum is replicated: this process's own shard holds the whole value.
    counts = [np.asarray(c.addressable_shards[0].data if isinstance(c, jax.Array) and not c.is_fully_addressable
                         else c) for c in counts]
    return [_path_name(p) for (p, _), n in zip(floats, counts) if n]


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
    tree = {name: jax.tree.map(np.asarray, variables) for name, (_, variables) in models.items()}
    bad = nonfinite_leaves(tree)
    if bad:
        raise ValueError(f"refusing to write {directory}: non-finite values in {', '.join(bad[:5])}")
    meta = {"format": FORMAT_VERSION, "system": system,
            "models": {n: systems.module_spec(system, m) for n, (m, _) in models.items()},
            "inference": dict(inference or {}), "source": source, **(extra or {}),
            "checksums": tree_checksums(tree)}
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(directory) + "-", dir=parent)
    try:
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
    checksums = meta.get("checksums", {})
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise ModelDirError(f"{path}: field 'checksums' must map array paths to checksums")
    return meta


def _v1_kind(kind) -> str:
    return {"lama": "lama.FFCResNetGenerator", "pix2pixhd.GlobalGenerator": "lama.GlobalGenerator",
            "pix2pixhd.NLayerDiscriminator": "lama.NLayerDiscriminator"}.get(kind, str(kind))


def load_variables(directory: str | os.PathLike) -> dict[str, Any]:
    """All variable trees of a model directory as ``{name: variables}`` (numpy arrays), checked against the
    checksums its JSON records (directories written before checksums existed are read as they are)."""
    where = os.path.join(os.path.abspath(os.fspath(directory)), "variables")
    expected = read_metadata(directory).get("checksums") if is_model_dir(directory) else None
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(where)
    except Exception as e:  # orbax/tensorstore report damaged files with many exception types
        raise CorruptCheckpointError(f"{where}: cannot be read ({_first_line(e)}); the directory is damaged: "
                                     "convert the weights again") from e
    verify_checksums(tree, expected, where)
    return tree


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


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
    modules = {}
    for name in wanted:  # every name the JSON gives resolves through the registry, before any array is read
        try:
            modules[name] = systems.build_module(system, meta["models"][name])
        except (systems.UnknownNameError, TypeError) as e:
            kind = meta["models"][name].get("kind")
            raise ModelDirError(f"{os.path.join(os.fspath(directory), METADATA)}: models.{name} (kind {kind!r}) is "
                                f"refused: {e}") from e
    variables = load_variables(directory)
    out = {}
    for name, module in modules.items():
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


def restore_step(manager: ocp.CheckpointManager, step: int, target: Any = None,
                 check_models: Any = None) -> dict[str, Any]:
    """``{'state', 'config', 'models'}`` of one training checkpoint, verified against its checksums.

    ``target`` (abstract arrays with shardings) restores onto devices, ``None`` as numpy arrays.
    ``check_models(models)`` runs on the stored model description before the arrays are read (it raises
    when the checkpoint holds another model: that is a mistake, not corruption, and is not caught here).

    Raises:
      CorruptCheckpointError: the step cannot be read back or its arrays differ from their checksums.
    """
    where = os.path.join(os.fspath(manager.directory), str(step))
    items = set(os.listdir(where)) if os.path.isdir(where) else set()
    json_items = {k: ocp.args.JsonRestore() for k in ("config", "models", "checksums") if k in items}
    try:
        meta = manager.restore(step, args=ocp.args.Composite(**json_items)) if json_items else {}
        meta = {k: meta[k] for k in json_items}
    except Exception as e:  # orbax reports damaged JSON items with many exception types
        raise CorruptCheckpointError(f"checkpoint {where}: its metadata cannot be read ({_first_line(e)})") from e
    if check_models is not None and meta.get("models") is not None:
        check_models(meta["models"])
    try:
        restore = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
        state = manager.restore(step, args=ocp.args.Composite(state=restore))["state"]
    except Exception as e:  # truncated or missing array files, an empty _METADATA, ...
        raise CorruptCheckpointError(f"checkpoint {where}: its arrays cannot be read ({_first_line(e)})") from e
    verify_checksums(state, meta.get("checksums"), f"checkpoint {where}")
    return {"state": state, "config": meta.get("config"), "models": meta.get("models")}


def restore_newest_valid(manager: ocp.CheckpointManager, target: Any = None, check_models: Any = None
                         ) -> tuple[int, dict[str, Any], list[tuple[int, str]]] | None:
    """The newest checkpoint that reads back and verifies: ``(step, restore_step(...), [(bad step, why)])``.

    Newer checkpoints that fail are skipped with a warning saying which and why, so a run killed while a
    disk filled up, or a file damaged since, falls back to the previous good one. None when there is no
    checkpoint at all.

    Raises:
      CorruptCheckpointError: there are checkpoints but none is valid (the message lists each and why).
    """
    steps = sorted(manager.all_steps(), reverse=True)
    skipped: list[tuple[int, str]] = []
    for step in steps:
        try:
            restored = restore_step(manager, step, target, check_models)
        except CorruptCheckpointError as e:
            skipped.append((step, str(e)))
            log.warning("%s", e)
            continue
        if skipped:
            log.warning("using checkpoint step %d instead: the newest valid one (skipped %s)", step,
                        ", ".join(str(s) for s, _ in skipped))
        return step, restored, skipped
    if skipped:
        raise CorruptCheckpointError(f"{manager.directory}: no valid checkpoint: "
                                     + "; ".join(why for _, why in skipped))
    return None


def quarantine(ckpt_dir: str | os.PathLike, steps: list[int]) -> list[str]:
    """Moves damaged step directories out of ``checkpoints/`` into ``checkpoints_corrupt/`` (kept for the user,
    never read again by training or inference); returns where they went."""
    ckpt_dir = os.path.abspath(os.fspath(ckpt_dir))
    target_root = os.path.join(os.path.dirname(ckpt_dir), CORRUPT_DIR)
    moved = []
    for step in steps:
        os.makedirs(target_root, exist_ok=True)
        target = os.path.join(target_root, str(step))
        n = 1
        while os.path.exists(target):
            target, n = os.path.join(target_root, f"{step}.{n}"), n + 1
        os.replace(os.path.join(ckpt_dir, str(step)), target)
        moved.append(target)
    return moved


def load_training_state(workdir: str | os.PathLike, step: int | None = None) -> tuple[dict, dict, int]:
    """``(config dict, raw TrainState tree of arrays, step)`` from a training workdir (latest step by default).

    The config is the one saved *with that checkpoint step* (falling back to ``config.json`` for older
    workdirs). The state is restored without a target (plain arrays), so callers pick what they need
    (``nets.generator.params``, ``.ema``, ``.state``...) without rebuilding the optimisers. Arrays are checked
    against the checksums saved with them; when the latest checkpoint fails, the newest valid one is used
    and a warning says so (an explicit ``step`` that fails is an error).
    """
    workdir = os.path.abspath(os.fspath(workdir))
    ckpt_dir = os.path.join(workdir, "checkpoints")
    with ocp.CheckpointManager(ckpt_dir) as manager:
        steps = manager.all_steps()
        if step is None:
            found = restore_newest_valid(manager)
            if found is None:
                raise FileNotFoundError(f"{workdir}: no checkpoint yet (checkpoints/ is empty)")
            step, restored, _ = found
        else:
            if step not in steps:
                raise FileNotFoundError(f"{workdir}: no checkpoint for step {step} (have {sorted(steps)})")
            restored = restore_step(manager, step)
    config = restored["config"]
    if config is None:
        config_path = os.path.join(workdir, "config.json")
        try:
            with open(config_path) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise ModelDirError(f"{workdir}: checkpoint {step} stores no config and {config_path} is not "
                                f"readable ({e})") from e
    if not isinstance(config, dict):
        raise ModelDirError(f"{workdir}: checkpoint {step}'s config is a {type(config).__name__}, not an object")
    return config, restored["state"], step
