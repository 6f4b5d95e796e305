"""The Python API: ``jaxinpaint.load(source).inpaint(image, mask)``.

    import jaxinpaint
    model = jaxinpaint.load("converted/big-lama")        # or a workdir, an original .ckpt, or "tv"
    result = model.inpaint(image, mask)                   # PIL in -> PIL out, numpy in -> numpy out

``source`` is anything ``--model=`` accepts:

* a training workdir (``train.py --workdir``): the latest checkpoint (``step=`` for another), EMA weights
  when the run kept them (``ema=False`` for the raw ones), with the config stored with that checkpoint;
* a model directory (``jaxinpaint convert``, exports);
* an original weight file of a system with a converter (LaMa's ``best.ckpt``/``.pth``), recognised by its keys;
* the name of a per-image solver (``jaxinpaint.systems.names('solver')``), with its options as keywords.

``refine=True`` wraps a LaMa model in LaMa's high-resolution refinement (options ``n_iters``, ``lr``...).
Other keyword options of a trained model override its ``config.inference`` fields (GLCIC's
``postprocess=True``).

``image``: a PIL image or a numpy array, uint8 or float in [0, 1] (a float outside [0, 1] is an error), RGB,
grey or RGBA (alpha is kept as it is), any size. ``mask``: PIL or numpy, any non-zero value = hole. A list
(or an (N, H, W, C) array) of images with a list of masks is a batch; images of one size run in one call.
Pixels outside the hole are returned unchanged, byte for byte.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxinpaint import contract, inference, systems


#: Compiled programs kept per process before JAX's caches are cleared (each image size compiles one).
DEFAULT_MAX_PROGRAMS = 8


class Inpainter:
    """Inpaints images; subclasses say how a padded float batch becomes a prediction.

    Memory over long runs: every distinct padded input shape compiles a program that JAX caches for the life
    of the process (60 photo sizes held ~1 GB). At most ``max_programs`` shapes are kept: the next new shape
    clears JAX's caches first (``jax.clear_caches()``, which also frees the compiled programs; it is the only
    call that does), so memory stays flat over any number of sizes, exactly, at the cost of recompiling
    sizes seen again. ``size_bucket`` additionally pads H and W up to a multiple of it (with the same
    symmetric padding as the model's own size multiple) so photos of nearby sizes share one program; it
    changes the prediction slightly, as any extra padding does, so it is off by default.
    """

    name: str = ""
    kind: str = ""

    def __init__(self, modulo: int = 8):
        self.modulo = int(modulo)
        self.hd_strategy = inference.HDStrategy()
        self.configure_memory()

    def configure_memory(self, size_bucket: int = 0, max_programs: int = DEFAULT_MAX_PROGRAMS) -> Inpainter:
        """Sets ``size_bucket`` and ``max_programs`` (see the class docstring); returns self."""
        if int(size_bucket) < 0 or int(max_programs) < 0:
            raise ValueError(f"size_bucket and max_programs must be >= 0, got {size_bucket} and {max_programs}")
        self.size_bucket, self.max_programs = int(size_bucket), int(max_programs)
        self._shapes: set[tuple[int, ...]] = set()
        return self

    # -- what subclasses implement ---------------------------------------------------------------------------
    def predict(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) float32 [0, 1] and (N, H, W) bool, H and W multiples of ``modulo`` -> (N, H, W, 3)."""
        raise NotImplementedError

    # -- the public API ---------------------------------------------------------------------------------------
    def inpaint(self, image: Any, mask: Any, *, hd_strategy: Any = None) -> Any:
        """Inpaints one image, or a batch (a list, or an (N, H, W, C) array, with as many masks).

        Returns the same kind it was given (PIL or numpy, uint8 or float, grey/RGB/RGBA); pixels outside the
        hole are the input's, byte for byte. ``hd_strategy`` (``'original'``, ``'crop'``, ``'resize'``, a dict of
        :class:`jaxinpaint.inference.HDStrategy` fields or one) overrides the inpainter's own (``load(...,
        hd_strategy=)``) for large photos.
        """
        strategy = self.hd_strategy if hd_strategy is None else inference.HDStrategy.of(hd_strategy)
        images, masks, batched = inference.split_batch(image, mask)
        arrays, kinds, holes = [], [], []
        for i, (im, m) in enumerate(zip(images, masks)):
            what = f"image {i}" if batched else "image"
            arr, kind = inference.as_image(im, what=what)
            arrays.append(arr)
            kinds.append(kind)
            holes.append(inference.as_hole(m, arr.shape[:2], what=what.replace("image", "mask")))
        results: list[Any] = [None] * len(arrays)
        for shape, idx in inference.group_by_shape([a.shape[:2] for a in arrays]).items():
            rgb = np.stack([inference.to_rgb_float(arrays[i]) for i in idx])
            hole = np.stack([holes[i] for i in idx])
            if strategy.mode == "original":
                pred = self._predict_any_size(rgb, hole)
            else:  # crops and resized copies differ per image
                pred = [inference.hd_predict(self._predict_any_size, rgb[j], hole[j], strategy)
                        for j in range(len(idx))]
            for j, i in enumerate(idx):
                results[i] = inference.finish(arrays[i], kinds[i], pred[j], holes[i])
        return results if batched else results[0]

    __call__ = inpaint

    def _predict_any_size(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        h, w = images.shape[1:3]
        multiple = math.lcm(self.modulo, self.size_bucket) if self.size_bucket else self.modulo
        img = inference.pad_to_modulo(images, multiple, axes=(1, 2))
        msk = inference.pad_to_modulo(holes, multiple, axes=(1, 2))
        self._bound_programs(img.shape)
        return np.asarray(self.predict(img, msk))[:, :h, :w]

    def _bound_programs(self, shape: tuple[int, ...]) -> None:
        """Clears JAX's compilation caches before a new shape would exceed ``max_programs`` (0: no bound)."""
        if not self.max_programs or shape in self._shapes:
            return
        if len(self._shapes) >= self.max_programs:
            jax.clear_caches()
            self._shapes.clear()
        self._shapes.add(shape)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class ModelInpainter(Inpainter):
    """A trained system's networks with their weights (from a workdir, a model directory or original files)."""

    kind = "trained"

    def __init__(self, system: contract.System, config: ml_collections.ConfigDict,
                 models: Mapping[str, tuple[Any, Any]], *, source: str = "", modulo: int | None = None,
                 provenance: Mapping[str, Any] | None = None):
        self.system = system
        self.name = system.name
        self.config = config
        self.source = source
        #: where the weights come from (workdir and step, original file...), for exports' model cards
        self.provenance = dict(provenance or {})
        self.models = dict(models)
        modules = {n: m for n, (m, _) in self.models.items()}
        multiple = system.size_multiple(modules)
        super().__init__(math.lcm(int(modulo), multiple) if modulo else multiple)
        params = {n: v["params"] for n, (_, v) in self.models.items()}
        states = {n: {k: c for k, c in v.items() if k != "params"} for n, (_, v) in self.models.items()}
        self._variables = (params, states)

        def run(params, states, batch):
            nets = contract.Nets(modules, params, states, train=False)
            return system.predict(nets, batch, config)["pred"]

        #: ``apply(params, states, batch) -> pred``, jitted: the whole model as one function (exports trace it)
        self.apply = jax.jit(run)

    @property
    def variables(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(params, states)`` by network name, the first two arguments of :attr:`apply`."""
        return self._variables

    def network(self, name: str) -> tuple[Any, Any]:
        """``(module, variables)`` of one network."""
        return self.models[name]

    def predict(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        batch = {"image": images.astype(np.float32), "mask": holes.astype(np.float32)[..., None]}
        extras = [self.system.prepare_example({"image": batch["image"][i], "mask": batch["mask"][i]}, self.config,
                                              train=False) for i in range(len(images))]
        for key in extras[0]:
            if key not in batch:
                batch[key] = np.stack([e[key] for e in extras])
        params, states = self._variables
        return np.asarray(self.apply(params, states, {k: jnp.asarray(v) for k, v in batch.items()}))


_SOLVE_CACHE: dict[tuple[str, int, str], Any] = {}


def _jitted_solve(solver: contract.Solver, config: ml_collections.ConfigDict):
    """One jitted ``solve`` per (solver, settings), shared by every inpainter built with them, so loading the
    same solver again (each ``predict`` call, each test) reuses its compiled programs instead of recompiling."""
    key = (solver.name, id(solver), config.to_json(sort_keys=True))
    fn = _SOLVE_CACHE.get(key)
    if fn is None:
        frozen = ml_collections.ConfigDict(config.to_dict())  # later edits of the caller's config cannot leak in
        fn = jax.jit(lambda resources, image, mask, rng: solver.solve(resources, image, mask, frozen, rng))
        _SOLVE_CACHE[key] = (solver, fn)  # the solver is kept alive, so its id is never reused
    else:
        fn = fn[1]
    return fn


class SolverInpainter(Inpainter):
    """A per-image solver (total variation, Deep Image Prior, LaMa's refinement...)."""

    kind = "solver"

    def __init__(self, solver: contract.Solver, config: ml_collections.ConfigDict, resources: Any = None, *,
                 seed: int = 0, modulo: int | None = None, progress: Any = None):
        from jaxinpaint import progress as progress_lib

        self.solver = solver
        self.name = solver.name
        self.config = config
        self.seed = int(seed)
        #: where the solver's iteration reports go while an image is solved (None: nowhere)
        self.progress = progress_lib.make_sink(progress)
        self.resources = solver.load_resources(config) if resources is None else resources
        multiple = int(solver.size_multiple(config))
        super().__init__(math.lcm(int(modulo), multiple) if modulo else multiple)
        self.last_info: dict[str, Any] = {}
        if solver.solve is not None:
            self._solve = _jitted_solve(solver, config)

    def predict(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        out = []
        for i in range(len(images)):
            image, mask = images[i:i + 1], holes[i:i + 1, ..., None].astype(np.float32)
            sink = self.progress
            previous = contract.set_progress_sink(sink) if sink is not None else None
            try:
                if sink is not None:
                    sink.start(self.name, int(self.solver.iterations(self.config)))
                if self.solver.host_solve is not None:
                    pred, info = self.solver.host_solve(self.resources, image, mask, self.config, self.seed)
                else:
                    pred, info = self._solve(self.resources, jnp.asarray(image), jnp.asarray(mask),
                                             jax.random.key(self.seed))
                pred = np.asarray(pred)
                if sink is not None:
                    jax.effects_barrier()  # every report delivered before the bar closes
            finally:
                if sink is not None:
                    sink.finish()
                    contract.set_progress_sink(previous)
            self.last_info = jax.tree.map(np.asarray, info)
            out.append(pred[0])
        return np.stack(out)


# ------------------------------------------------------------------------------------------------------------
# Loading.
# ------------------------------------------------------------------------------------------------------------


def _config_for_inference(config_dict: Mapping[str, Any]) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(config_dict))
    if "bn_groups" in config:
        config.bn_groups = 1  # inference uses running statistics; grouping is irrelevant
    if "mixed_precision" in config:
        config.mixed_precision = False
    return config


def _from_workdir(path: str, step: int | None, ema: bool, modulo):
    from jaxinpaint.io import checkpoint

    config_dict, raw, step = checkpoint.load_training_state(path, step)
    config = _config_for_inference(config_dict)
    try:  # a name read from a file: resolved through the registry only, refused naming the file and field
        system = systems.get(config.get("system"))
    except systems.UnknownNameError as e:
        raise checkpoint.ModelDirError(f"{path}/checkpoints/{step}/config: field 'system': {e}") from e
    networks = system.networks(config)
    models = {}
    # A staged system's run may hold only some of them (EdgeConnect's edge or inpaint stage); predict copes.
    names = [n for n in system.inference_networks if n in raw["nets"]]
    if not names:
        raise ValueError(f"{path}: the run holds none of the networks {system.name} infers with "
                         f"({', '.join(system.inference_networks)})")
    for name in names:
        net = raw["nets"][name]
        params = net["ema"] if ema and net.get("ema") else net["params"]
        variables = {"params": params, **(net.get("state") or {})}
        models[name] = (networks[name].module, jax.tree.map(jnp.asarray, variables))
    return ModelInpainter(system, config, models, source=path, modulo=modulo,
                          provenance={"workdir": path, "step": int(step), "ema": bool(ema)})


def _from_model_dir(path: str, modulo):
    from jaxinpaint.io import checkpoint

    name, models, inference_cfg = checkpoint.load_models(path)
    system = systems.get(name)
    config = ml_collections.ConfigDict({"system": name, "inference": {**system.default_inference(),
                                                                      **inference_cfg}})
    original = checkpoint.read_metadata(path).get("source")
    return ModelInpainter(system, config, models, source=path, modulo=modulo,
                          provenance={"model_dir": path, **({"original": original} if original else {})})


def _from_export(path: str, modulo):
    from jaxinpaint import export

    name, models, inference_cfg, meta = export.load_export(path)
    system = systems.get(name)
    config = ml_collections.ConfigDict({"system": name, "inference": {**system.default_inference(),
                                                                      **inference_cfg}})
    return ModelInpainter(system, config, models, source=path, modulo=modulo,
                          provenance={**meta.get("provenance", {}), "export": path})


def _from_original(path: str, modulo):
    system = systems.for_weights(path)
    config = ml_collections.ConfigDict({"system": system.name, "inference": system.default_inference()})
    return ModelInpainter(system, config, system.load_original(path), source=path, modulo=modulo,
                          provenance={"original": path})


def _solver_config(solver: contract.Solver, options: Mapping[str, Any]) -> ml_collections.ConfigDict:
    config = solver.default_config()
    unknown = sorted(set(options) - set(config))
    if unknown:
        raise TypeError(f"{solver.name}: unknown option(s) {unknown}; options: {sorted(config)}")
    preset = options.get("preset")
    # The preset's settings first, the explicit options over them. A solver without ``presets`` reads its own
    # ``preset`` field (Deep Image Prior's network settings, MSNPS's smoke settings).
    if preset and solver.presets:
        if preset not in solver.presets:
            raise ValueError(f"{solver.name}: unknown preset {preset!r}; presets: {sorted(solver.presets) or 'none'}")
        config.update(dict(solver.presets[preset]))
    config.update(dict(options))
    return config


def load(source: Any, *, step: int | None = None, ema: bool = True, refine: bool = False, seed: int = 0,
         modulo: int | None = None, hd_strategy: Any = None, size_bucket: int = 0,
         max_programs: int = DEFAULT_MAX_PROGRAMS, progress: Any = None, **options) -> Inpainter:
    """An inpainter for ``source`` (see the module docstring).

    Args:
      source: a workdir, a model directory, an original weight file, or a solver name.
      step: a workdir's checkpoint step (default: the latest).
      ema: use a workdir's EMA weights when it kept them.
      refine: wrap the model in LaMa's high-resolution refinement.
      seed: the seed of a solver's random choices (same input and seed, same output).
      modulo: pad H and W to a multiple of this (combined with the model's own requirement; LaMa pads to 8).
      hd_strategy: how large photos are inpainted: ``'original'`` (default), ``'crop'``, ``'resize'``, or a
        dict of :class:`jaxinpaint.inference.HDStrategy` fields (IOPaint's HD strategies).
      size_bucket: also pad H and W up to a multiple of this, so nearby sizes share a compiled program (0: off).
      max_programs: compiled programs (image sizes) kept before JAX's caches are cleared (0: no bound).
      progress: a per-image solver's iteration reports while it runs (``jaxinpaint.progress.make_sink``):
        None (default, silent: library use), ``'auto'`` (a tqdm bar on a terminal, log lines otherwise),
        ``'bar'``, ``'log'``, or a :class:`jaxinpaint.contract.ProgressSink`. Ignored by trained models.
      **options: a solver's (or the refinement's) settings, e.g. ``iterations=500``; for a trained model,
        ``config.inference`` fields (e.g. ``postprocess=True`` for GLCIC).

    Raises:
      FileNotFoundError: ``source`` is neither a known solver nor an existing path.
      ValueError: the path is not a model jaxinpaint can load (the message says why).
    """
    strategy = inference.HDStrategy.of(hd_strategy)
    model = _load(source, step=step, ema=ema, refine=refine, seed=seed, modulo=modulo, progress=progress,
                  **options)
    model.hd_strategy = strategy
    return model.configure_memory(size_bucket, max_programs)


def _load(source, *, step, ema, refine, seed, modulo, progress=None, **options) -> Inpainter:
    if isinstance(source, str) and not os.path.exists(source) and source in systems.names("solver"):
        solver = systems.get(source)
        return SolverInpainter(solver, _solver_config(solver, options), seed=seed, modulo=modulo,
                               progress=progress)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no such file or directory, and not a per-image method ({', '.join(systems.names('solver'))})."
            " Give a training workdir, a directory from `jaxinpaint convert`, or an original weight file")
    from jaxinpaint.io import checkpoint

    if checkpoint.is_training_workdir(path):
        model = _from_workdir(path, step, ema, modulo)
    elif step is not None:
        raise ValueError(f"step={step} applies to training workdirs only; {path} is not one")
    elif os.path.isdir(path):
        from jaxinpaint import export

        if export.is_export_dir(path):
            model = _from_export(path, modulo)
        elif checkpoint.is_model_dir(path):
            model = _from_model_dir(path, modulo)
        else:
            raise FileNotFoundError(f"{path} is neither a training workdir (checkpoints/) nor a model directory "
                                    f"({checkpoint.METADATA}, written by `jaxinpaint convert SOURCE DIR`) nor an "
                                    f"export ({export.CONFIG}, written by `jaxinpaint export SOURCE DIR`)")
    else:
        model = _from_original(path, modulo)
    if refine:
        solver = systems.get("lama_refine")
        config = _solver_config(solver, {"model": path, **options})
        config.modulo = model.modulo
        return SolverInpainter(solver, config, resources=model.network("generator"), seed=seed, progress=progress)
    if options:
        return _with_inference_options(model, options, modulo)
    return model


def _with_inference_options(model: ModelInpainter, options: Mapping[str, Any], modulo) -> ModelInpainter:
    """The model with ``config.inference`` fields overridden (e.g. GLCIC's ``postprocess=True``)."""
    known = set(model.config.get("inference", {}))
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for a trained {model.name} model; its inference options: "
                        f"{sorted(known) or 'none'}")
    config = ml_collections.ConfigDict(model.config.to_dict())
    config.inference.update(dict(options))
    return ModelInpainter(model.system, config, model.models, source=model.source, modulo=modulo,
                          provenance=model.provenance)
