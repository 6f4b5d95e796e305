"""The system contract: what every inpainting system gives the one trainer and the one inference path.

jaxinpaint holds thirteen systems that look nothing alike from the outside: one generator and no critic
(PConv U-Net), a generator and a PatchGAN updated G-then-D (LaMa), a critic updated five times per generator
step (DeepFill v1), three phases chosen by the step (GLCIC), two generators trained in stages (EdgeConnect),
or no training at all (Deep Image Prior, total variation, MSNPS's texture stage, LaMa's refinement). The
contract below is the small set of values that lets all of them share one trainer (``jaxinpaint.train``),
one inference path (``jaxinpaint.api``), ``predict``, ``evaluate`` and the Python API without special cases.
The document ``docs/contract.md`` (in the repository) maps each of the thirteen systems onto it.

A **trained system** is a :class:`System` (``jaxinpaint/systems/<name>/__init__.py`` defines ``SYSTEM``):

* ``networks(config) -> {name: Network}``: the networks it trains or keeps (generator, critics, a frozen
  first stage). Each :class:`Network` is a linen module, how to build its ``init`` arguments from a batch,
  its optimiser config (``None`` = never updated, but still in the state and the checkpoint) and whether an
  EMA of its parameters is kept. Frozen *backbones* of the losses (VGG, ResNet, Inception) are not
  networks of the system: they come from local weight files through ``frozen(config)``, are never
  checkpointed and carry no state.
* ``phases(config) -> [Phase]``: the *updates* of one training step, chosen by the step. A :class:`Phase`
  runs for steps ``< until`` (after the previous phase); its :class:`Update` values run in order. An update
  names the networks it trains and its loss; ``repeat`` runs it several times per step (n critic steps), on
  fresh batches when ``fresh_batches`` (each repeat then consumes the next batch of the step's stack).
* A loss is ``loss(ctx: Context) -> (scalar, metrics, outputs)``. ``ctx.nets(name, *args)`` applies any
  network with the current parameters, in training mode, recording its state updates (BatchNorm running
  statistics, spectral-norm vectors) exactly as PyTorch would for every train-mode call; gradients flow
  only into the networks the update trains. ``outputs`` (stop-gradient'ed) are handed to the later updates
  of the same step as ``ctx.carry`` (e.g. DeepFill v2's D reuses the G step's fakes; LaMa regenerates them).
* ``predict(nets, batch, config) -> {'pred', 'composite', ...}``: eval-mode inference on a prepared batch,
  used by the training evaluator and by every inference command. It may read only ``config.inference``,
  the part of the configuration that travels with exported and converted models.
* ``prepare_example(example, config, train=...)``: optional host-side (numpy) preparation of one example,
  in the data pipeline's worker threads and at inference: extra inputs such as Canny edges, greyscale or a
  hole's bounding box. Deterministic per example, so exact resume holds.
* ``load_original(source) -> {name: (module, variables)}``: the original authors' released weights.

A **per-image solver** is a :class:`Solver`: no training set, no training. ``solve(resources, image, mask,
config, rng)`` runs a whole optimisation as one jitted ``lax.scan``; resources (a trained model, a frozen
classifier) come from ``load_resources(config)``. LaMa's refinement, Deep Image Prior, total variation and
the classifier prior are solvers; ``jaxinpaint.load('<name>')`` and ``predict --model=<name>`` run them like
any trained model.

Batches everywhere are ``{'image': f32[B, H, W, 3] in [0, 1], 'mask': f32[B, H, W, 1]}`` with 1 = hole, plus
whatever ``prepare_example`` adds; each system converts at its own boundary (range, polarity, BGR).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections

Batch = Mapping[str, jax.Array]
ConfigDict = ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Network:
    """One network of a system.

    Attributes:
      module: the linen module; its ``__call__`` takes a keyword ``train``.
      init_args: ``batch -> tuple`` of positional arguments for ``module.init`` (shapes only matter).
      optimizer: the optimiser config section (``jaxinpaint.train.optim.make``), or ``None`` for a network
        that is kept and checkpointed but never updated (EdgeConnect's frozen edge generator in stage 3).
      ema: keep an exponential moving average of its parameters (``config.ema``); inference uses it.
    """

    module: nn.Module
    init_args: Callable[[Batch], tuple]
    optimizer: ConfigDict | None = None
    ema: bool = False

    @property
    def trainable(self) -> bool:
        return self.optimizer is not None


@dataclasses.dataclass(frozen=True)
class Context:
    """What a loss sees.

    Attributes:
      nets: :class:`Nets` in training mode (current parameters; state updates recorded).
      batch: this update's batch (``prepare_example`` keys included).
      carry: stop-gradient'ed ``outputs`` of the earlier updates of this step.
      frozen: frozen backbones' variables (``System.frozen``).
      config: the whole experiment config (losses read ``config.losses``).
      rng: a key for this update (fresh per step, update and repeat).
      step: the training step being computed (0-based), a traced int32.
    """

    nets: Nets
    batch: Batch
    carry: Mapping[str, Any]
    frozen: Mapping[str, Any]
    config: ConfigDict
    rng: jax.Array
    step: jax.Array


LossFn = Callable[[Context], tuple[jax.Array, Mapping[str, jax.Array], Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Update:
    """One optimiser update inside a training step.

    Attributes:
      name: metric prefix (``'g'`` logs ``g/total``, ``g/<term>``, ``grad_norm/<network>``).
      trains: the networks whose parameters this update changes (each with its own optimiser).
      loss: ``loss(ctx) -> (scalar, metrics, outputs)``.
      repeat: how many times it runs per step (n critic steps); metrics are averaged over the repeats.
      fresh_batches: each repeat consumes the next batch of the step's stack (DeepFill v1's critic steps);
        otherwise the update uses the step's first batch.
    """

    name: str
    trains: tuple[str, ...]
    loss: LossFn
    repeat: int = 1
    fresh_batches: bool = False

    def __post_init__(self):
        if self.repeat < 1:
            raise ValueError(f"Update {self.name!r}: repeat must be >= 1, got {self.repeat}")
        if not self.trains:
            raise ValueError(f"Update {self.name!r} trains no network")


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of training with a fixed list of updates per step.

    Attributes:
      name: shown in logs (``phase`` column of metrics.jsonl).
      updates: run in this order every step of the phase.
      until: the phase covers the steps before ``until`` (and after the previous phase); ``None`` = to the end.
    """

    name: str
    updates: tuple[Update, ...]
    until: int | None = None

    @property
    def batches_per_step(self) -> int:
        return max(1, sum(u.repeat for u in self.updates if u.fresh_batches))


def phase_at(phases: Sequence[Phase], step: int) -> Phase:
    """The phase that trains step ``step`` (0-based)."""
    for phase in phases:
        if phase.until is None or step < phase.until:
            return phase
    raise ValueError(f"no phase covers step {step}: the last phase ends at {phases[-1].until} "
                     "(give the last phase until=None, or lower config.total_steps)")


def check_phases(phases: Sequence[Phase], networks: Mapping[str, Network]) -> None:
    """Raises ValueError for an empty schedule, unordered ``until`` values or updates of unknown networks."""
    if not phases:
        raise ValueError("a system needs at least one phase")
    last = 0
    for i, phase in enumerate(phases):
        if phase.until is not None:
            if phase.until <= last:
                raise ValueError(f"phase {phase.name!r} ends at step {phase.until}, not after {last}")
            last = phase.until
        elif i != len(phases) - 1:
            raise ValueError(f"phase {phase.name!r} has until=None but is not the last phase")
        for update in phase.updates:
            for name in update.trains:
                if name not in networks:
                    raise ValueError(f"update {update.name!r} of phase {phase.name!r} trains unknown network "
                                     f"{name!r} (the system has {sorted(networks)})")
                if not networks[name].trainable:
                    raise ValueError(f"update {update.name!r} trains {name!r}, which has no optimizer (frozen)")


class Nets:
    """Applies a system's networks by name with one set of parameters and mutable state.

    In training mode every call runs the module with its non-parameter collections mutable and keeps the
    new values (BatchNorm running statistics, spectral-norm vectors), so a network called three times in a
    step advances its state three times, as in PyTorch. ``update_state=False`` discards a call's updates.
    The object is local to one traced computation; the trainer reads ``states`` back after a loss.
    """

    def __init__(self, modules: Mapping[str, nn.Module], params: Mapping[str, Any], states: Mapping[str, Any],
                 *, train: bool, rng: jax.Array | None = None):
        self.modules = modules
        self.params = dict(params)
        self.states = dict(states)
        self.train = train
        self._rng = rng
        self._calls = 0

    def __contains__(self, name: str) -> bool:
        return name in self.modules

    def variables(self, name: str) -> dict[str, Any]:
        return {"params": self.params[name], **self.states.get(name, {})}

    def __call__(self, name: str, *args, train: bool | None = None, update_state: bool = True,
                 method: str | Callable | None = None, **kwargs):
        """``module.apply`` of network ``name``; in training mode its state updates are kept."""
        out, new_state = self.apply(name, *args, train=train, method=method, **kwargs)
        if update_state:
            self.states[name] = new_state
        return out

    def apply(self, name: str, *args, train: bool | None = None, method: str | Callable | None = None,
              **kwargs):
        """``(output, new_state)`` of network ``name`` without recording the state.

        For calls inside another transformation (e.g. the input gradient of an R1 penalty), where the new
        state must leave through that transformation's outputs; record it afterwards with
        ``nets.states[name] = new_state``.
        """
        if name not in self.modules:
            raise KeyError(f"no network {name!r} (have {sorted(self.modules)})")
        module = self.modules[name]
        train = self.train if train is None else train
        rngs = None
        if self._rng is not None:
            self._calls += 1
            rngs = {"noise": jax.random.fold_in(self._rng, self._calls),
                    "dropout": jax.random.fold_in(self._rng, 10_000 + self._calls)}
        state = self.states.get(name, {})
        if train and state:
            out, new_state = module.apply(self.variables(name), *args, train=True, mutable=list(state),
                                          method=method, rngs=rngs, **kwargs)
            return out, {**state, **new_state}
        return module.apply(self.variables(name), *args, train=train, method=method, rngs=rngs, **kwargs), state


def _identity_prepare(example: dict, config: ConfigDict, *, train: bool) -> dict:
    del config, train
    return example


def _default_size_multiple(modules: Mapping[str, nn.Module]) -> int:
    multiple = 8
    for module in modules.values():
        multiple = math.lcm(multiple, int(getattr(module, "size_multiple", 1)))
    return multiple


def lazy(module: str, attr: str) -> Callable[..., Any]:
    """``module.attr(...)``, imported on the first call: a system's converter (its pickle readers, its key
    tables) stays unimported until weights are actually converted or recognised."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    call.__doc__ = f"``{module}.{attr}``, imported on first use."
    return call


@dataclasses.dataclass(frozen=True)
class System:
    """A trained inpainting system (see the module docstring).

    Attributes:
      name: the registry name (``config.system``), e.g. ``'lama'``.
      title: one line for listings (paper, year).
      models: the module classes that configs and checkpoints may name, ``{'Generator': cls, ...}``; a
        checkpoint's ``"kind": "<system>.<Class>"`` resolves only through these (nothing from a file picks
        arbitrary code).
      networks: ``config -> {name: Network}``.
      phases: ``config -> [Phase]``.
      predict: ``(nets, batch, config) -> {'pred', 'composite', ...}`` in eval mode; reads ``config.inference``.
      frozen: ``config -> {name: variables}`` of frozen backbones (loaded from local files), default none.
      prepare_example: host-side per-example preparation, default identity.
      inference_networks: the networks ``predict`` needs (what an export keeps).
      default_inference: ``config.inference`` defaults for models that come without a training config
        (converted original weights).
      load_original: ``source -> {name: (module, variables)}`` for the original released weights, or None.
      recognizes: ``state-dict keys -> bool``: whether an original weight file belongs to this system
        (``jaxinpaint convert`` and ``jaxinpaint.load`` pick the converter with it).
      size_multiple: ``modules -> int``, what inference pads H and W to (default lcm(8, modules' own)).
      composite_key: the output that the evaluator scores (default ``'composite'``).
      licence: licence of the original system (model cards).
    """

    name: str
    title: str
    models: Mapping[str, type[nn.Module]]
    networks: Callable[[ConfigDict], dict[str, Network]]
    phases: Callable[[ConfigDict], list[Phase]]
    predict: Callable[[Nets, Batch, ConfigDict], dict[str, jax.Array]]
    frozen: Callable[[ConfigDict], dict[str, Any]] = lambda config: {}
    prepare_example: Callable[..., dict] = _identity_prepare
    inference_networks: tuple[str, ...] = ("generator",)
    default_inference: Callable[[], dict[str, Any]] = dict
    load_original: Callable[[Any], dict[str, tuple[nn.Module, Any]]] | None = None
    recognizes: Callable[[Collection[str]], bool] = lambda keys: False
    size_multiple: Callable[[Mapping[str, nn.Module]], int] = _default_size_multiple
    licence: str = ""
    kind = "trained"


@dataclasses.dataclass(frozen=True)
class Solver:
    """A per-image inpainting method: an optimisation run on each image, no training.

    Attributes:
      name: the registry name (``jaxinpaint.load(name)``, ``predict --model=name``).
      title: one line for listings.
      default_config: ``() -> ConfigDict`` of its documented hyper-parameters (overridable by keyword).
      solve: ``(resources, image, mask, config, rng) -> (pred, info)``; image f32[1, H, W, 3] in [0, 1],
        mask f32[1, H, W, 1] (1 = hole), already padded to ``size_multiple``; ``pred`` f32[1, H, W, 3];
        ``info`` a dict of per-iteration arrays (objective values...) for progress and tests. It is called
        under ``jax.jit`` with ``config`` static, so it must be traceable.
      load_resources: ``config -> resources`` (frozen networks from local files, a trained model), default
        none.
      size_multiple: ``config -> int``.
      iterations: ``config -> int``, the number of optimisation steps (progress and rate reports).
      host_solve: optional ``(resources, image, mask, config, seed) -> (pred, info)`` replacing the jitted
        ``solve`` for methods that need the host between stages (several scales with host-side resizes).
      presets: named groups of settings, ``{name: {field: value}}``; the option ``preset=name`` (a field of
        ``default_config``) applies one before the explicit options (``jaxinpaint.load(name, preset='smoke')``).
        Left empty, the solver reads its own ``preset`` field (Deep Image Prior's network presets).

    Progress: ``solve`` calls :func:`report_progress` once per iteration of its scan body (it reports every
    few iterations); ``iterations`` is the total a progress bar starts with.
    """

    name: str
    title: str
    default_config: Callable[[], ConfigDict]
    solve: Callable[..., tuple[jax.Array, dict[str, jax.Array]]] | None = None
    load_resources: Callable[[ConfigDict], Any] = lambda config: None
    size_multiple: Callable[[ConfigDict], int] = lambda config: 1
    iterations: Callable[[ConfigDict], int] = lambda config: 0
    host_solve: Callable[..., tuple[Any, dict[str, Any]]] | None = None
    presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    licence: str = ""
    kind = "solver"


# ------------------------------------------------------------------------------------------------------------
# Solver progress: iterations/s and ETA from inside a jitted scan.
# ------------------------------------------------------------------------------------------------------------


class ProgressSink:
    """Receives a running solver's progress on the host (``set_progress_sink``).

    ``start`` and ``finish`` bracket one solve (``jaxinpaint.api.SolverInpainter`` calls them around each image);
    ``update`` is called from JAX's callback thread with the number of iterations done (1-based), the total
    and the scalar values the solver passed (objective...). Implementations: ``jaxinpaint.progress``.
    """

    def start(self, label: str, total: int) -> None:
        del label, total

    def update(self, done: int, total: int, values: Mapping[str, float]) -> None:
        del done, total, values

    def finish(self) -> None:
        pass


_progress_sink: ProgressSink | None = None


def set_progress_sink(sink: ProgressSink | None) -> ProgressSink | None:
    """Installs the process-wide sink of :func:`report_progress` (None: silent); returns the previous one.

    A process-wide variable, not a context variable: the reports arrive on JAX's callback thread, which sees
    no caller's context. The sink is looked up when a report arrives, never when the solver is traced, so one
    compiled solver serves runs with and without a sink.
    """
    global _progress_sink
    previous, _progress_sink = _progress_sink, sink
    return previous


def progress_sink() -> ProgressSink | None:
    """The installed sink (None when progress is silent: library use, tests)."""
    return _progress_sink


def _deliver_progress(done, total, values) -> None:
    sink = _progress_sink
    if sink is not None:
        sink.update(int(done), int(total), {k: float(v) for k, v in values.items()})


def host_progress(done: int, total: int, **values) -> None:
    """Reports ``done`` of ``total`` iterations from host code (a solver's Python loop over a jitted step), to the
    same sink as :func:`report_progress`; ``values`` are scalars (reading a device value waits for it)."""
    _deliver_progress(done, total, values)


def report_progress(i, total, *, every: int | None = None, **values) -> None:
    """Reports iteration ``i`` (0-based) of ``total`` from inside a jitted solver, every ``every`` iterations.

    One line in a ``lax.scan`` body::

        contract.report_progress(i, n_iters, objective=loss)

    Every ``every``-th iteration (and the last) it hands ``(i + 1, total, values)`` to the installed sink through
    ``jax.debug.callback``; between reports it costs one integer comparison, so a solver always calls it and
    ``set_progress_sink`` decides whether anything is shown. ``i`` and ``total`` may be traced (a multi-stage
    solver passes its running offset), ``values`` are scalars (traced or not).

    Args:
      i: the iteration just computed, 0-based (int or int32 scalar).
      total: the number of iterations of the whole solve (all stages).
      every: report period; default ``max(1, total // 50)`` for a Python ``total``, else 10. 0 never reports.
      **values: scalars shown next to the rate (e.g. ``objective=loss``).
    """
    import jax.numpy as jnp

    if every is None:
        every = max(1, int(total) // 50) if isinstance(total, int) else 10
    if int(every) <= 0:
        return
    done = jnp.asarray(i, jnp.int32) + 1
    total_arr = jnp.asarray(total, jnp.int32)
    values = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
    due = jnp.logical_or(done % int(every) == 0, done >= total_arr)

    def emit(args):
        jax.debug.callback(_deliver_progress, *args)

    jax.lax.cond(due, emit, lambda args: None, (done, total_arr, values))


def resolve_bn_groups(config) -> int:
    """``config.bn_groups`` as a number of BatchNorm statistics groups over the global batch."""
    groups = int(config.get("bn_groups", 1))
    if groups == 0:  # one group per data-parallel device (LaMa's per-GPU statistics)
        groups = jax.device_count()
    batch = int(config.input.batch_size) if "input" in config else groups
    if groups < 1 or batch % groups:
        raise ValueError(f"config.bn_groups={config.bn_groups}: the global batch {batch} must split into {groups} "
                         "equal statistics groups (--config.bn_groups=1 normalises over the whole batch)")
    return groups


def runtime_fields(config) -> dict[str, Any]:
    """How modules run, not what they are: BatchNorm statistics groups, the compute dtype, and how
    convolutions are computed (``config.conv_impl``: 'auto' = the measured CPU formulations on CPU and the
    platform's convolutions on GPU/TPU, 'lax' = the platform's everywhere, 'cpu' = the CPU ones everywhere).

    Passed by ``jaxinpaint.systems.build_module`` to the modules that declare these fields; never stored in
    checkpoints (inference always runs float32 with running statistics).
    """
    import jax.numpy as jnp

    return {"bn_groups": resolve_bn_groups(config),
            "dtype": jnp.bfloat16 if config.get("mixed_precision") else None,
            "conv_impl": config.get("conv_impl") or None}


def stop_gradient_tree(tree: Any) -> Any:
    """``lax.stop_gradient`` on every array leaf."""
    return jax.tree.map(jax.lax.stop_gradient, tree)


def composite(pred: jax.Array, image: jax.Array, mask: jax.Array) -> jax.Array:
    """``pred`` inside the hole (mask 1), ``image`` outside."""
    return mask * pred + (1.0 - mask) * image


__all__ = ["Context", "Network", "Nets", "Phase", "ProgressSink", "Solver", "System", "Update", "check_phases",
           "composite", "host_progress", "lazy", "phase_at", "progress_sink", "report_progress",
           "resolve_bn_groups", "runtime_fields", "set_progress_sink", "stop_gradient_tree"]
