"""Take a trained model elsewhere: ``jaxinpaint export SOURCE OUT`` (``python -m jaxinpaint.export``).

``SOURCE`` is anything ``jaxinpaint.load`` takes that holds a trained system (a training workdir, a converted
directory, an original weight file, another export). ``OUT`` (written atomically; it must not exist or be
empty) holds the inference networks alone, with the EMA weights when the workdir kept them:

* ``model.safetensors``: every variable of the inference networks, keyed ``<network>/<collection>/<path>``
  (e.g. ``generator/params/model_1/ffc/convl2l/kernel``, ``generator/batch_stats/.../mean``), NHWC/HWIO
  float32 arrays. No pickle, no code: any safetensors reader opens it.
* ``config.json``: ``{"format": "jaxinpaint-export", "version": 1, "system", "models": {network: {"kind", fields}},
  "inference": {...}, "size_multiple", "stablehlo": {...}, "provenance": {...}, "training": {...},
  "metrics": {...}, "licence"}``. Module kinds resolve through the system registry when jaxinpaint reads it back
  (``jaxinpaint.load(OUT)``), as for converted directories.
* ``model.stablehlo``: the whole inference as a ``jax.export`` artefact with symbolic batch, height and width,
  for a process that has JAX but not jaxinpaint::

      from jax import export
      from safetensors.numpy import load_file
      exported = export.deserialize(open("OUT/model.stablehlo", "rb").read())
      result = exported.call(load_file("OUT/model.safetensors"), image, mask)

  ``image`` f32[N, H, W, 3] in [0, 1], ``mask`` f32[N, H, W, 1] (1 = hole), H and W multiples of
  ``size_multiple`` and at least twice it (pad bottom/right with numpy's ``'symmetric'`` mode as jaxinpaint
  does, and crop the result back); the result is f32[N, H, W, 3]: the prediction in the hole, the input
  elsewhere. Lowered for the platforms named at export (default CPU, CUDA and TPU). LaMa's Fourier units
  run as DFT matrix products in this artefact, because XLA's FFT needs constant lengths
  (``jaxinpaint.nn.ffc``); the result matches the FFT model to float32 rounding.
* ``README.md``: the model card (system and paper, licence of the original system, where the weights come
  from, training data and steps, the last evaluation's metrics, how to run it).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FORMAT = "jaxinpaint-export"
VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STABLEHLO = "model.stablehlo"
CARD = "README.md"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")

log = logging.getLogger("jaxinpaint.export")


class ExportError(ValueError):
    """A source that cannot be exported, or an export directory that cannot be read (the message says why)."""


# ------------------------------------------------------------------------------------------------------------
# Reading an export back.
# ------------------------------------------------------------------------------------------------------------


def is_export_dir(path) -> bool:
    """A directory written by :func:`export` (its ``config.json`` says ``"format": "jaxinpaint-export"``)."""
    config = os.path.join(os.fspath(path), CONFIG)
    if not os.path.isfile(config) or not os.path.isfile(os.path.join(os.fspath(path), WEIGHTS)):
        return False
    try:
        with open(config) as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_config(directory) -> dict[str, Any]:
    """The export's ``config.json``, checked for the fields the loader uses."""
    path = os.path.join(os.fspath(directory), CONFIG)
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{path}: not a jaxinpaint export (field 'format' must be {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise ExportError(f"{path}: unsupported version {meta.get('version')!r} (this jaxinpaint reads {VERSION})")
    if not isinstance(meta.get("system"), str):
        raise ExportError(f"{path}: field 'system' must be a system name, got {meta.get('system')!r}")
    models = meta.get("models")
    if not isinstance(models, dict) or not models or not all(isinstance(v, dict) for v in models.values()):
        raise ExportError(f"{path}: field 'models' must map network names to module descriptions")
    if not isinstance(meta.get("inference", {}), dict):
        raise ExportError(f"{path}: field 'inference' must be an object")
    return meta


def load_export(directory) -> tuple[str, dict[str, tuple[Any, Any]], dict[str, Any], dict[str, Any]]:
    """``(system, {network: (module, variables)}, inference config, config.json)`` of an export directory.

    Modules are rebuilt through the system registry; every network named in ``config.json`` must have
    variables in ``model.safetensors`` and the file may hold nothing else.
    """
    import flax
    import jax.numpy as jnp
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from jaxinpaint import systems

    meta = read_config(directory)
    path = os.path.join(os.fspath(directory), WEIGHTS)
    try:
        flat = load_file(path)
    except (OSError, SafetensorError, ValueError) as e:
        raise ExportError(f"{path}: not a readable safetensors file ({e})") from e
    trees = flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    extra = sorted(set(trees) - set(meta["models"]))
    if extra:
        raise ExportError(f"{path}: holds networks {extra} that {CONFIG} does not describe")
    models = {}
    for name, spec in meta["models"].items():
        try:
            module = systems.build_module(meta["system"], spec)
        except (systems.UnknownNameError, TypeError) as e:
            raise ExportError(f"{os.path.join(os.fspath(directory), CONFIG)}: models.{name}: {e}") from e
        if name not in trees or "params" not in trees[name]:
            raise ExportError(f"{path}: no variables for network {name!r} (keys '{name}/params/...')")
        models[name] = (module, {k: _tree_map(jnp.asarray, v) for k, v in trees[name].items()})
    return meta["system"], models, dict(meta.get("inference") or {}), meta


def _tree_map(fn, tree):
    import jax

    return jax.tree.map(fn, tree)


# ------------------------------------------------------------------------------------------------------------
# Writing.
# ------------------------------------------------------------------------------------------------------------


def flatten_variables(models: Mapping[str, tuple[Any, Any]]) -> dict[str, np.ndarray]:
    """``{"<network>/<collection>/<path>": array}`` of the given networks (the safetensors layout)."""
    import flax

    flat = {}
    for name, (_, variables) in models.items():
        for key, leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(variables)).items():
            flat["/".join((name, *key))] = np.ascontiguousarray(np.asarray(leaf))
    return flat


def symbolic_inputs(size_multiple: int):
    """Abstract image and mask with symbolic batch, height and width (multiples of ``size_multiple``, at least
    twice it, so that reflection padding at a U-Net's or LaMa's bottleneck stays defined)."""
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export

    b, h, w = jax_export.symbolic_shape(f"b, {size_multiple}*h, {size_multiple}*w",
                                        constraints=("h >= 2", "w >= 2"))
    return (jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32), jax.ShapeDtypeStruct((b, h, w, 1), jnp.float32))


def stablehlo_function(model):
    """``infer(weights, image, mask) -> image`` of a loaded :class:`jaxinpaint.api.ModelInpainter`: the flat
    safetensors dict in, the composited result out (what ``model.inpaint`` returns for float input)."""
    import flax
    import jax.numpy as jnp

    def infer(weights, image, mask):
        trees = flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in weights.items()})
        params = {n: t["params"] for n, t in trees.items()}
        states = {n: {k: c for k, c in t.items() if k != "params"} for n, t in trees.items()}
        pred = model.apply(params, states, {"image": image, "mask": mask})
        return jnp.where(mask > 0, jnp.clip(pred, 0.0, 1.0), image)

    return infer


def _stablehlo(model, weights: Mapping[str, np.ndarray], platforms: Sequence[str]) -> bytes:
    import jax
    from jax import export as jax_export

    prepared = model.system.prepare_example({"image": np.zeros((16, 16, 3), np.float32),
                                             "mask": np.zeros((16, 16, 1), np.float32)}, model.config, train=False)
    extra = sorted(set(prepared) - {"image", "mask"})
    if extra:
        raise ExportError(f"system {model.name!r} prepares extra inputs on the host ({', '.join(extra)}), which a "
                          "StableHLO artefact cannot compute; export with --no_stablehlo (safetensors and config "
                          "only)")
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()}
    exported = jax_export.export(jax.jit(stablehlo_function(model)), platforms=tuple(platforms))(
        abstract, *symbolic_inputs(model.modulo))
    return exported.serialize()


def _last_eval(workdir: str, step: int) -> dict[str, Any]:
    """The last ``eval/*`` metrics at or before ``step`` in a workdir's ``metrics.jsonl`` (empty if none)."""
    from jaxinpaint import writers

    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return {}
    last: dict[str, Any] = {}
    for record in writers.read_jsonl(path):
        if record["step"] <= step and any(k.startswith("eval/") for k in record):
            last = {"step": record["step"], **{k: v for k, v in record.items() if k.startswith("eval/")}}
    return last


def _training_facts(config) -> dict[str, Any]:
    """What a model card says about the training data and schedule, from a training config."""
    facts: dict[str, Any] = {}
    if "input" in config:
        data = config.input
        facts["data"] = {k: data.get(k) for k in ("source", "folder", "tfds_name", "split", "image_size",
                                                  "batch_size") if data.get(k) not in (None, "")}
        if "mask" in data:
            facts["training_masks"] = data.mask.get("name")
    for key in ("total_steps", "seed"):
        if key in config:
            facts[key] = config[key]
    return facts


def _describe(model) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(provenance, training, metrics)`` of a loaded model for the config and the card."""
    prov = dict(model.provenance)
    training: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    if "export" in prov:  # re-exporting an export: carry its facts over
        meta = read_config(prov["export"])
        return dict(meta.get("provenance", {})), dict(meta.get("training", {})), dict(meta.get("metrics", {}))
    if "workdir" in prov:
        training = {**_training_facts(model.config), "step": prov["step"]}
        metrics = _last_eval(prov["workdir"], prov["step"])
    return prov, training, metrics


def _card(meta: dict[str, Any], title: str, param_counts: Mapping[str, int]) -> str:
    prov, training, metrics = meta["provenance"], meta["training"], meta["metrics"]
    lines = [f"# {meta['system']} model (jaxinpaint export)", "", f"**System:** {title}", "",
             f"**Licence of the original system:** {meta['licence'] or 'not recorded'}. Weights trained from it "
             "may carry the same terms; check them before redistributing.", "", "## Where the weights come from", ""]
    if "workdir" in prov:
        lines.append(f"Trained with jaxinpaint in `{prov['workdir']}`, checkpoint step {prov['step']} "
                     f"({'EMA' if prov.get('ema') else 'raw'} weights where an EMA was kept).")
    if "original" in prov:
        lines.append(f"The original authors' released weights, converted from `{prov['original']}`; trained by "
                     "them as their paper describes.")
    if "model_dir" in prov and "original" not in prov:
        lines.append(f"The model directory `{prov['model_dir']}`.")
    lines += ["", "## Training", ""]
    if training:
        lines += [f"- {k}: {json.dumps(v)}" for k, v in training.items()]
    else:
        lines.append("Not recorded with these weights (see the original system's paper).")
    lines += ["", "## Last evaluation", ""]
    if metrics:
        lines.append(f"At step {metrics.get('step')} (the trainer's evaluation set and masks):")
        lines += [f"- {k}: {v:.6g}" if isinstance(v, float) else f"- {k}: {v}"
                  for k, v in metrics.items() if k != "step"]
    else:
        lines.append("No evaluation recorded with these weights.")
    lines += ["", "## Networks", ""]
    lines += [f"- {name}: `{meta['models'][name]['kind']}`, {count:,} parameters"
              for name, count in param_counts.items()]
    shlo = meta.get("stablehlo")
    lines += ["", "## Use", "", "With jaxinpaint:", "", "```python", "import jaxinpaint",
              "model = jaxinpaint.load(\"THIS_DIRECTORY\")", "result = model.inpaint(image, mask)  # PIL or numpy",
              "```", ""]
    if shlo:
        lines += ["Without jaxinpaint (JAX and safetensors only):", "", "```python", "from jax import export",
                  "from safetensors.numpy import load_file",
                  f"exported = export.deserialize(open(\"{STABLEHLO}\", \"rb\").read())",
                  f"result = exported.call(load_file(\"{WEIGHTS}\"), image, mask)", "```", "",
                  f"`image` f32[N, H, W, 3] in [0, 1], `mask` f32[N, H, W, 1] (1 = hole); H and W multiples of "
                  f"{meta['size_multiple']} and at least {2 * meta['size_multiple']} (pad with numpy's 'symmetric' "
                  f"mode); platforms: {', '.join(shlo['platforms'])}.", ""]
    lines += [f"Exported by jaxinpaint {meta['jaxinpaint_version']} on {meta['created']}.", ""]
    return "\n".join(lines)


def export(source: Any, output: str | os.PathLike, *, step: int | None = None, ema: bool = True,
           stablehlo: bool = True, platforms: Sequence[str] = DEFAULT_PLATFORMS) -> dict[str, Any]:
    """Writes the export directory ``output`` for ``source`` (see the module docstring); returns its config.

    Raises:
      ExportError: ``source`` is a per-image method, or its system cannot be lowered to StableHLO (the message
        says to pass ``stablehlo=False``), or ``output`` is not a new or empty directory.
    """
    from safetensors.numpy import save_file

    import jaxinpaint
    from jaxinpaint import api, systems

    output = os.path.abspath(os.fspath(output))
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise ExportError(f"{output} exists and is not an empty directory; choose a new output directory")
    model = api.load(source, step=step, ema=ema)
    if not isinstance(model, api.ModelInpainter):
        raise ExportError(f"{source} is a per-image method ({model.name}), not a trained model: there are no "
                          "weights to export")
    system = model.system
    models = {n: model.models[n] for n in system.inference_networks if n in model.models}
    weights = flatten_variables(models)
    prov, training, metrics = _describe(model)
    meta = {"format": FORMAT, "version": VERSION, "system": system.name,
            "models": {n: systems.module_spec(system.name, m) for n, (m, _) in models.items()},
            "inference": model.config.inference.to_dict() if "inference" in model.config else {},
            "size_multiple": model.modulo, "licence": system.licence, "provenance": prov, "training": training,
            "metrics": metrics, "stablehlo": None, "jaxinpaint_version": jaxinpaint.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    shlo = None
    if stablehlo:
        log.info("lowering the inference to StableHLO for %s (symbolic N, H, W)...", ", ".join(platforms))
        try:
            shlo = _stablehlo(model, weights, platforms)
        except ExportError:
            raise
        except Exception as e:  # a system whose ops JAX cannot lower with symbolic shapes
            raise ExportError(f"system {system.name!r} could not be lowered to StableHLO with symbolic sizes "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); export with "
                              "--no_stablehlo for the weights, config and card alone") from e
        meta["stablehlo"] = {"file": STABLEHLO, "platforms": list(platforms),
                             "inputs": {"weights": WEIGHTS, "image": "f32[N, H, W, 3] in [0, 1]",
                                        "mask": "f32[N, H, W, 1], 1 = hole"},
                             "output": "f32[N, H, W, 3]: the prediction in the hole, the input elsewhere",
                             "min_size": 2 * model.modulo}
    counts = {n: sum(int(np.prod(v.shape)) for k, v in weights.items() if k.startswith(f"{n}/params/"))
              for n in models}
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(output) + "-", dir=parent)
    try:
        save_file(weights, os.path.join(tmp, WEIGHTS), metadata={"format": FORMAT, "system": system.name})
        if shlo is not None:
            with open(os.path.join(tmp, STABLEHLO), "wb") as f:
                f.write(shlo)
        with open(os.path.join(tmp, CONFIG), "w") as f:
            json.dump(meta, f, indent=2, default=_json_default)
        with open(os.path.join(tmp, CARD), "w") as f:
            f.write(_card(meta, system.title, counts))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's directory is private; an export is meant to be shared
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
        if os.path.exists(output):
            os.rmdir(output)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for name, count in counts.items():
        log.info("%s: %s, %s parameters", name, meta["models"][name]["kind"], f"{count:,}")
    return meta


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


if __name__ == "__main__":
    import sys

    from jaxinpaint.cli.export import main

    sys.exit(main())
