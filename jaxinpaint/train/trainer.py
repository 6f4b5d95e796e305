"""The one trainer for every system: ``train_and_evaluate(config, workdir)``.

One linear function split by banner comments (big_vision's ``train.py`` layout): config validation, mesh,
input pipeline, networks and optimisers, state (fresh, resumed, or initialised from other weights), the
jitted step of each phase, and the loop with logging, images, evaluation, checkpoints and signal handling.

What differs between systems is in their :class:`jaxinpaint.contract.System` (``config.system``): which
networks exist, and which *updates* a step runs in each phase (a G update then a D update for LaMa, five
critic updates then a G update for DeepFill v1, GLCIC's three phases...). The trainer runs the updates in
order inside one jitted function per phase; each update differentiates its loss with respect to the networks
it trains and applies their optimisers; every train-mode network call records its state updates (BatchNorm
statistics, spectral-norm vectors) as PyTorch would.

Workdir integrity: everything that can fail on a mistake (the config, the system, the networks, the data
source, the weight files) is resolved before the workdir is touched. A resume compares the networks stored
with the checkpoint to the configured ones and refuses a mismatch, naming the fields; ``config.json`` is
written atomically, and only after a successful restore. A finished run says so and changes nothing.

BatchNorm statistics: ``config.bn_groups = 1`` covers the global batch (what ``jax.jit`` gives on a sharded
batch: synchronised BN); ``0`` gives one statistics group per device (LaMa's per-GPU DDP statistics), any
other value G splits the global batch into G groups (``jaxinpaint.nn.norm``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinpaint import contract, systems, writers
from jaxinpaint.data import pipeline as data_lib
from jaxinpaint.data import sources
from jaxinpaint.evaluation import evaluator
from jaxinpaint.io import checkpoint
from jaxinpaint.io import tree as tree_lib
from jaxinpaint.train import optim
from jaxinpaint.train.state import NetState, TrainState

log = logging.getLogger("jaxinpaint.train")


class NonFiniteLossError(FloatingPointError):
    """A loss or parameter became NaN or inf; the run stops before it can reach a checkpoint."""


class WorkdirMismatchError(ValueError):
    """The workdir holds a run of a different model than the config describes."""


# ------------------------------------------------------------------------------------------------------------
# Construction helpers (pure functions of the config).
# ------------------------------------------------------------------------------------------------------------


def make_mesh(config) -> jax.sharding.Mesh:
    """A ('data', 'fsdp') mesh over all devices; -1 in ``config.mesh`` fills the remaining devices."""
    n = jax.device_count()
    data, fsdp = int(config.mesh.data), int(config.mesh.fsdp)
    if data == -1 and fsdp == -1:
        raise ValueError("config.mesh: at most one of data/fsdp may be -1")
    if data == -1:
        data = n // fsdp
    if fsdp == -1:
        fsdp = n // data
    if data * fsdp != n:
        raise ValueError(f"config.mesh: data={data} x fsdp={fsdp} must equal the {n} available devices")
    return jax.make_mesh((data, fsdp), ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))


def build(config) -> tuple[contract.System, dict[str, contract.Network], list[contract.Phase]]:
    """The system of ``config.system``, its networks and its phases, checked against each other."""
    system = systems.get(config.system)
    if system.kind != "trained":
        raise ValueError(f"config.system={config.system!r} is a per-image solver, not a trained system: run it "
                         f"with `jaxinpaint predict --model={config.system}` or jaxinpaint.load")
    networks = system.networks(config)
    phases = list(system.phases(config))
    contract.check_phases(phases, networks)
    return system, networks, phases


def model_specs(system: contract.System, networks: Mapping[str, contract.Network]) -> dict[str, dict]:
    """``{network: {'kind': ..., fields}}``: what a checkpoint records of the model (compared on resume)."""
    return {name: systems.module_spec(system.name, net.module) for name, net in networks.items()}


def example_batch(config, batch_size: int = 1) -> dict[str, jax.Array]:
    """A zero batch with the pipeline's keys and shapes (for ``init`` and ``eval_shape``)."""
    size = int(config.input.image_size)
    batch = {"image": np.zeros((batch_size, size, size, 3), np.float32),
             "mask": np.zeros((batch_size, size, size, 1), np.float32)}
    system = systems.get(config.system)
    ex = system.prepare_example({"image": batch["image"][0], "mask": batch["mask"][0]}, config, train=True)
    for k, v in ex.items():
        if k not in batch:
            batch[k] = np.zeros((batch_size, *np.shape(v)), np.asarray(v).dtype)
    return {k: jnp.asarray(v) for k, v in batch.items()}


def _split(variables):
    variables = flax.core.unfreeze(variables)
    params = variables.pop("params", {})
    return params, variables


def state_shardings(abstract_state, mesh, config):
    """Replicated by default; with an 'fsdp' mesh axis > 1, every array of at least ``config.fsdp_min_size``
    elements is split along its largest dimension divisible by the axis size."""
    fsdp = mesh.shape["fsdp"]

    def rule(x):
        if fsdp > 1 and x.ndim and x.size >= config.fsdp_min_size:
            for d in sorted(range(x.ndim), key=lambda d: -x.shape[d]):
                if x.shape[d] % fsdp == 0:
                    spec = [None] * x.ndim
                    spec[d] = "fsdp"
                    return NamedSharding(mesh, P(*spec))
        return NamedSharding(mesh, P())

    return jax.tree.map(rule, abstract_state)


def batch_sharding(mesh, stacked: bool = False) -> NamedSharding:
    """The batch axis split over every mesh axis (the leading axis is a stack of batches when ``stacked``)."""
    return NamedSharding(mesh, P(None, ("data", "fsdp")) if stacked else P(("data", "fsdp")))


def make_init_fn(config, networks: Mapping[str, contract.Network], txs: Mapping[str, optax.GradientTransformation]):
    """``init(rng) -> TrainState`` (random initialisation of every network)."""
    batch = example_batch(config)
    use_ema = bool(config.ema.decay)

    def init(rng):
        keys = jax.random.split(jax.random.wrap_key_data(rng), len(networks))
        nets = {}
        for key, (name, net) in zip(keys, networks.items()):
            variables = net.module.init({"params": key, "noise": key, "dropout": key}, *net.init_args(batch),
                                        train=False)
            params, state = _split(variables)
            opt_state = txs[name].init(params) if name in txs else ()
            ema = jax.tree.map(jnp.copy, params) if (use_ema and net.ema) else {}
            nets[name] = NetState(params=params, state=state, opt_state=opt_state, ema=ema)
        return TrainState(step=jnp.zeros((), jnp.int32), rng=rng, nets=nets)

    return init


# ------------------------------------------------------------------------------------------------------------
# The train step.
# ------------------------------------------------------------------------------------------------------------


def _mean_metrics(metrics: dict) -> dict:
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), metrics)


def make_train_step(config, system: contract.System, networks: Mapping[str, contract.Network],
                    txs: Mapping[str, optax.GradientTransformation], phase: contract.Phase):
    """``step(state, batches, frozen) -> (state, metrics)`` running ``phase``'s updates in order.

    ``batches`` is one batch, or a stack of ``phase.batches_per_step`` batches (leading axis) when an update
    consumes fresh batches. An update with ``repeat > 1`` runs under ``lax.scan`` (one compiled body).
    """
    del system
    modules = {n: net.module for n, net in networks.items()}
    stacked = phase.batches_per_step > 1

    def run_update(update: contract.Update, params, states, opt_states, batch, carry, frozen, rng, step):
        def loss_fn(trainable):
            nets = contract.Nets(modules, {**params, **trainable}, states, train=True, rng=rng)
            ctx = contract.Context(nets=nets, batch=batch, carry=carry, frozen=frozen, config=config, rng=rng,
                                   step=step)
            loss, metrics, outputs = update.loss(ctx)
            return loss, (dict(metrics), dict(outputs), nets.states)

        trainable = {n: params[n] for n in update.trains}
        (loss, (metrics, outputs, new_states)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        params, opt_states = dict(params), dict(opt_states)
        for name in update.trains:
            upd, opt_states[name] = txs[name].update(grads[name], opt_states[name], params[name])
            params[name] = optax.apply_updates(params[name], upd)
        metrics = {f"{update.name}/total": loss, **{f"{update.name}/{k}": v for k, v in metrics.items()},
                   **{f"grad_norm/{n}": optax.tree.norm(grads[n]) for n in update.trains}}
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return params, new_states, opt_states, contract.stop_gradient_tree(outputs), metrics

    def step(state: TrainState, batches, frozen):
        params, states = state.params(), state.states()
        opt_states = {n: s.opt_state for n, s in state.nets.items()}
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        carry: dict[str, Any] = {}
        metrics: dict[str, jax.Array] = {}
        cursor = 0
        for ui, update in enumerate(phase.updates):
            urng = jax.random.fold_in(rng, ui)
            if update.repeat == 1:
                batch = jax.tree.map(lambda x: x[cursor], batches) if stacked else batches
                params, states, opt_states, out, m = run_update(update, params, states, opt_states, batch, carry,
                                                                frozen, urng, state.step)
            else:
                if update.fresh_batches:
                    sub = jax.tree.map(lambda x: x[cursor:cursor + update.repeat], batches)
                else:
                    first = jax.tree.map(lambda x: x[0], batches) if stacked else batches
                    sub = jax.tree.map(lambda x: jnp.broadcast_to(x, (update.repeat, *x.shape)), first)

                def body(c, xs, update=update, urng=urng):
                    p, s, o, _ = c
                    b, r = xs
                    p, s, o, out, m = run_update(update, p, s, o, b, carry, frozen, jax.random.fold_in(urng, r),
                                                 state.step)
                    return (p, s, o, out), m

                out_shape = jax.eval_shape(
                    lambda: run_update(update, params, states, opt_states, jax.tree.map(lambda x: x[0], sub),
                                       carry, frozen, urng, state.step)[3])
                init_out = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)
                (params, states, opt_states, out), m = jax.lax.scan(
                    body, (params, states, opt_states, init_out), (sub, jnp.arange(update.repeat)))
                m = _mean_metrics(m)
            if update.fresh_batches:
                cursor += update.repeat
            carry.update(out)
            metrics.update(m)

        nets = {}
        for name, old in state.nets.items():
            ema = old.ema
            if ema:  # networks with an EMA (generators), when config.ema.decay > 0
                n = state.step + 1
                decay = jnp.where(n % config.ema.every == 0, config.ema.decay, 1.0)
                ema = jax.tree.map(lambda e, p: jnp.where(n <= config.ema.start_step, p, decay * e + (1 - decay) * p),
                                   ema, params[name])
            nets[name] = NetState(params=params[name], state=states[name], opt_state=opt_states[name], ema=ema)
        # Non-finite parameters must never reach a checkpoint: counted here, checked by the loop before saving.
        metrics["nonfinite_params"] = sum(jnp.sum(~jnp.isfinite(p)).astype(jnp.float32)
                                          for p in jax.tree.leaves(params))
        return state.replace(step=state.step + 1, nets=nets), metrics

    return step


def make_predict_fn(config, system: contract.System, networks: Mapping[str, contract.Network]):
    """``predict(state, batch) -> outputs`` in eval mode (EMA weights where kept), for grids and evals."""
    modules = {n: net.module for n, net in networks.items()}

    def predict(state: TrainState, batch):
        nets = contract.Nets(modules, state.params(ema=True), state.states(), train=False)
        return system.predict(nets, batch, config)

    return predict


# ------------------------------------------------------------------------------------------------------------
# Initialisation from other weights (fine-tuning, stages).
# ------------------------------------------------------------------------------------------------------------


def _source_trees(path: str, system: contract.System) -> dict[str, dict]:
    """``{network: variables}`` from a workdir, a converted directory, or an original weight file."""
    if checkpoint.is_training_workdir(path):
        _, raw, _ = checkpoint.load_training_state(path)
        return {name: {"params": net["params"], **(net.get("state") or {})} for name, net in raw["nets"].items()}
    if os.path.isdir(path):
        return checkpoint.load_variables(path)
    if system.load_original is None:
        raise ValueError(f"config.init_from={path}: system {system.name!r} has no converter for original weight "
                         "files; give a training workdir or a converted directory")
    return {name: variables for name, (_, variables) in system.load_original(path).items()}


def load_init_weights(config, state: TrainState, system: contract.System) -> TrainState:
    """Replaces networks with weights from ``config.init_from``: sources separated by commas, each a training
    workdir (e.g. EdgeConnect's stage workdirs, PConv's fine-tuning stage), a converted directory, or the
    original authors' weights. Every network found in a source under its name is replaced (and checked to
    fit exactly); optimiser states start fresh."""
    nets = dict(state.nets)
    loaded = []
    for path in [p.strip() for p in str(config.init_from).split(",") if p.strip()]:
        if not os.path.exists(path):
            raise FileNotFoundError(f"config.init_from: {path} does not exist")
        for name, variables in _source_trees(path, system).items():
            if name not in nets:
                log.info("init_from %s: network %r is not part of this system, ignored", path, name)
                continue
            old = nets[name]
            params, net_state = _split(variables)
            tree_lib.check(old.params, params, what=f"the {name}'s parameters", source=f"config.init_from={path}",
                           hint=f"check config's {name} against that model's architecture")
            tree_lib.check(old.state, net_state, what=f"the {name}'s state", source=f"config.init_from={path}",
                           ignore_unexpected=not old.state)
            cast = lambda o, n: jax.device_put(jnp.asarray(n, o.dtype), o.sharding)  # noqa: E731
            params = jax.tree.map(cast, old.params, params)
            net_state = jax.tree.map(cast, old.state, {k: v for k, v in net_state.items() if k in old.state})
            nets[name] = old.replace(params=params, state=net_state,
                                     ema=jax.tree.map(jnp.copy, params) if old.ema else old.ema)
            loaded.append(name)
    if not loaded:
        raise ValueError(f"config.init_from={config.init_from}: no network of system {system.name!r} "
                         f"({', '.join(state.nets)}) found there")
    log.info("initialised %s from %s", ", ".join(loaded), config.init_from)
    return state.replace(nets=nets)


# ------------------------------------------------------------------------------------------------------------
# The training loop.
# ------------------------------------------------------------------------------------------------------------


class _StopRequested:
    """SIGTERM/SIGINT handler: the loop saves a checkpoint after the current step and exits cleanly."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread (e.g. under some test runners)
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # second signal: give up immediately
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint after this step, then stopping", self.signal)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _kept(manager: ocp.CheckpointManager) -> str:
    """What a stopped run leaves behind, read from the disk (not from what the loop believes it saved)."""
    manager.wait_until_finished()
    steps = sorted(manager.all_steps())
    if not steps:
        return "No checkpoint was written."
    return (f"Checkpoints on disk: step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}; rerun the "
            f"same command to resume from step {steps[-1]} (lower the learning rates or check the data first).")


def _check_finite(step: int, metrics: dict[str, float], manager: ocp.CheckpointManager):
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v) or (k == "nonfinite_params" and v)}
    if bad:
        raise NonFiniteLossError(f"step {step}: non-finite values {bad}; stopping without saving. {_kept(manager)}")


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes JSON through a temporary sibling renamed into place (never a half-written file)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _diff_specs(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    diffs = []
    for net in sorted(set(stored) | set(current)):
        a, b = stored.get(net), current.get(net)
        if a is None or b is None:
            diffs.append(f"{net}: {'absent' if a is None else 'present'} in the workdir, "
                         f"{'absent' if b is None else 'present'} in the config")
            continue
        for field in sorted(set(a) | set(b)):
            if a.get(field) != b.get(field):
                diffs.append(f"{net}.{field}: {a.get(field)!r} in the workdir, {b.get(field)!r} in the config")
    return diffs


def check_resume_compatible(workdir: str, stored: Mapping[str, Any], current: Mapping[str, Any],
                            stored_system: str | None, system: str) -> None:
    """Refuses to resume a workdir whose checkpoint holds another system or other networks."""
    if stored_system is not None and stored_system != system:
        raise WorkdirMismatchError(f"{workdir} holds a {stored_system!r} run, the config is {system!r}: use a new "
                                   "--workdir (or --config.init_from to start from it)")
    diffs = _diff_specs(stored, current)
    if diffs:
        raise WorkdirMismatchError(f"{workdir} was trained with a different model ({'; '.join(diffs[:6])}): use a "
                                   "new --workdir, or --config.init_from to start from its weights")


def _metrics_text(metrics: Mapping[str, float], prefix: str = "") -> str:
    return " | ".join(f"{k.removeprefix(prefix)} {v:.4g}" for k, v in metrics.items() if k != "eval/num_examples")


def _summary(workdir: str, start: int, step: int, total: int, seconds: float, first_step_secs: float | None,
             losses: Mapping[str, float], eval_metrics: Mapping[str, float], eval_step: int | None,
             last_saved: int | None, writes_files: bool) -> None:
    """The end-of-run lines: steps and time, final losses, last evaluation, where the outputs are."""
    rate = ""
    if first_step_secs is not None and step - start > 1 and seconds > first_step_secs:
        rate = f"; first step {first_step_secs:.1f}s incl. compilation, then " \
               f"{(step - start - 1) / (seconds - first_step_secs):.3g} steps/s"
    done = "finished" if step >= total else "stopped"
    log.info("%s: steps %d -> %d of %d in %s%s", done, start, step, total, writers.format_duration(seconds), rate)
    if losses:
        log.info("final losses: %s", _metrics_text(losses))
    if eval_metrics:
        log.info("last evaluation (step %d): %s", eval_step, _metrics_text(eval_metrics, prefix="eval/"))
    if writes_files:
        ckpt = os.path.join(workdir, "checkpoints", str(last_saved)) if last_saved is not None else "(none yet)"
        log.info("outputs: checkpoint %s; metrics %s; sample grids %s; TensorBoard %s", ckpt,
                 os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "images"),
                 os.path.join(workdir, "tensorboard"))
        log.info("next: jaxinpaint predict --model=%s ...  |  jaxinpaint serve --model=%s  |  jaxinpaint export %s OUT",
                 workdir, workdir, workdir)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains ``config`` in ``workdir``, resuming from the workdir's latest checkpoint when there is one."""
    workdir = os.path.abspath(workdir)
    process_index, process_count = jax.process_index(), jax.process_count()
    log.info("process %d/%d, %d local / %d global devices (%s)", process_index, process_count,
             jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)

    # ---- Config, system, networks, phases: every mistake surfaces before the workdir is touched ---------------
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"--workdir={workdir} exists and is not a directory")
    system, networks, phases = build(config)
    txs = {name: optim.make(net.optimizer) for name, net in networks.items() if net.trainable}
    specs = model_specs(system, networks)

    # ---- Mesh ---------------------------------------------------------------------------------------------------
    mesh = make_mesh(config)
    if config.input.batch_size % mesh.size:
        raise ValueError(f"config.input.batch_size={config.input.batch_size} must be divisible by the {mesh.size} "
                         "devices of the mesh")
    replicated = NamedSharding(mesh, P())

    # ---- Input pipeline -------------------------------------------------------------------------------------------
    prepare = lambda ex: system.prepare_example(ex, config, train=True)  # noqa: E731
    pipeline = data_lib.InputPipeline(config.input, seed=config.seed, process_index=process_index,
                                      process_count=process_count, prepare=prepare)
    log.info("training data: %d examples", pipeline.num_examples)
    # The held-out split is needed only to evaluate: without evaluation, the image grids fall back to training
    # photos, and with it a missing split fails here, before any compilation (not ~40 s later).
    eval_prepare = lambda ex: system.prepare_example(ex, config, train=False)  # noqa: E731
    if config.eval_every_steps:
        sources.open_source(config.input, "eval")
    vis_local = None
    if config.image_every_steps:
        vis_split = "eval"
        if not config.eval_every_steps and not sources.has_split(config.input, "eval"):
            log.info("no held-out split: the image grids show training photos")
            vis_split = "train"
        vis_local = next(iter(data_lib.eval_batches(
            config.input, seed=config.seed, batch_size=config.input.batch_size, num_examples=config.input.batch_size,
            process_index=process_index, process_count=process_count, prepare=eval_prepare, split=vis_split)))

    # ---- Frozen backbones (local weight files) -------------------------------------------------------------------
    log.info("initialising the networks (this compiles their initialisation)...")
    frozen = jax.device_put(system.frozen(config), replicated)
    eval_nets = evaluator.load_metric_networks(config) if config.eval_every_steps else {}

    # ---- Checkpoints: the newest valid one the workdir holds (verified against its checksums) ------------------
    init_fn = make_init_fn(config, networks, txs)
    rng = jax.random.key_data(jax.random.key(config.seed))
    abstract_state = jax.eval_shape(init_fn, rng)
    shardings = state_shardings(abstract_state, mesh, config)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    latest, resumed, damaged = None, None, []
    has_checkpoints = os.path.isdir(ckpt_dir)
    if process_count > 1:  # one answer for all: process 0 may create the folder while another still looks
        from jax.experimental import multihost_utils

        has_checkpoints = bool(multihost_utils.broadcast_one_to_all(np.int32(has_checkpoints)))
    if has_checkpoints:
        target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state,
                              shardings)
        with ocp.CheckpointManager(ckpt_dir) as probe:
            found = checkpoint.restore_newest_valid(probe, target, check_models=lambda meta: check_resume_compatible(
                workdir, meta.get("networks", {}), specs, meta.get("system"), system.name))
        if found is not None:
            latest, resumed, damaged = found
    # ---- State: fresh, resumed or initialised from other weights ---------------------------------------------------
    os.makedirs(workdir, exist_ok=True)
    if damaged and process_index == 0:  # never read again, and their step numbers become free to save
        for path in checkpoint.quarantine(ckpt_dir, [s for s, _ in damaged]):
            log.warning("moved the damaged checkpoint to %s", path)
    policies = ocp.checkpoint_managers
    preservation = policies.LatestN(config.keep_ckpts)
    if config.eval_every_steps and config.best_metric:
        # Also keep the best checkpoints by an evaluation metric (LaMa keeps its top 5 by val SSIM-FID).
        best = policies.BestN(get_metric_fn=lambda m: m[config.best_metric], reverse=config.best_mode == "min",
                              n=config.keep_best, keep_checkpoints_without_metrics=False)
        preservation = policies.AnyPreservationPolicy([preservation, best])
    manager = ocp.CheckpointManager(
        ckpt_dir, options=ocp.CheckpointManagerOptions(
            save_decision_policy=policies.FixedIntervalPolicy(config.ckpt_every_steps),
            preservation_policy=preservation, create=True))
    try:
        if resumed is not None:
            state = resumed["state"]
            log.info("resumed from %s at step %d", ckpt_dir, latest)
        else:
            state = jax.jit(init_fn, out_shardings=shardings)(rng)
            if config.init_from:
                state = load_init_weights(config, state, system)
    except BaseException:
        manager.close()
        raise
    del resumed
    start_step = int(jax.device_get(state.step))
    if start_step >= config.total_steps:
        manager.close()
        pipeline.close()
        log.info("%s is already finished at step %d (config.total_steps=%d): nothing to do; raise "
                 "--config.total_steps to train further", workdir, start_step, config.total_steps)
        return state
    if process_index == 0:
        write_json_atomic(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))
    for name, net in state.nets.items():
        log.info("%s %s: %s parameters%s", name, specs[name]["kind"],
                 f"{sum(x.size for x in jax.tree.leaves(net.params)):,}",
                 "" if networks[name].trainable else " (frozen)")

    # ---- Jitted functions: one step per phase ---------------------------------------------------------------------
    steps = {}
    for phase in phases:
        bsh = batch_sharding(mesh, stacked=phase.batches_per_step > 1)
        steps[phase.name] = (jax.jit(make_train_step(config, system, networks, txs, phase),
                                     in_shardings=(shardings, bsh, replicated),
                                     out_shardings=(shardings, replicated), donate_argnums=(0,)), bsh)
    data_sharding = batch_sharding(mesh)
    predict = jax.jit(make_predict_fn(config, system, networks), in_shardings=(shardings, data_sharding),
                      out_shardings=replicated)
    evaluate = jax.jit(evaluator.make_eval_fn(make_predict_fn(config, system, networks),
                                              with_images=bool(eval_nets)),
                       in_shardings=(shardings, data_sharding), out_shardings=replicated)

    # ---- Writers and fixed visualisation batch ---------------------------------------------------------------------
    # The progress reporter prints each training report once; the writers only store (no logging writer).
    writer = writers.create_default_writer(workdir, process_index=process_index, resume_step=start_step or None,
                                           log=False)
    vis_batch = (data_lib.make_global_batch({k: v for k, v in vis_local.items() if k != "_valid"}, data_sharding)
                 if vis_local is not None else None)
    reporter = writers.ProgressReporter(config.total_steps, batch_size=config.input.batch_size,
                                        start_step=start_step, every_secs=config.log_every_secs)
    last_saved = latest
    t_start = time.monotonic()
    compiled: set[str] = set()
    last_scalars: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    last_eval_step = None

    def save(step: int, force: bool, eval_metrics=None):
        """Saves when the policy or ``force`` says so, never a state holding NaN or inf (whatever forced the save),
        with a checksum per array so a damaged file is caught on restore."""
        nonlocal last_saved
        if not (force or manager.should_save(step)):
            return
        bad = checkpoint.nonfinite_leaves(state)
        if bad:
            raise NonFiniteLossError(f"step {step}: non-finite values in {', '.join(bad[:5])}"
                                     f"{' ...' if len(bad) > 5 else ''}; not saved. {_kept(manager)}")
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config.to_dict()),
            models=ocp.args.JsonSave({"system": system.name, "networks": specs}),
            checksums=ocp.args.JsonSave(checkpoint.tree_checksums(state))),
            metrics=eval_metrics, force=force)
        last_saved = step

    # ---- Train loop -------------------------------------------------------------------------------------------------
    step = start_step
    current, in_flight = None, None
    try:
        with _StopRequested() as stop, jax.set_mesh(mesh):
            while step < config.total_steps:
                phase = contract.phase_at(phases, step)
                if current is not phase:
                    if current is not None or len(phases) > 1:
                        log.info("phase %r from step %d: updates %s", phase.name, step,
                                 ", ".join(f"{u.name}({'+'.join(u.trains)})x{u.repeat}" for u in phase.updates))
                    current = phase
                    end = phase.until if phase.until is not None else config.total_steps
                    batches_iter = pipeline.iterate(step, batches_per_step=phase.batches_per_step)
                train_step, bsh = steps[phase.name]
                if phase.name not in compiled:  # the first call compiles (tens of seconds for Big LaMa on a CPU)
                    log.info("compiling the training step%s...", f" of phase {phase.name!r}" if len(phases) > 1 else "")
                    compiled.add(phase.name)
                step_index, local_batch = next(batches_iter)
                assert step_index == step, (step_index, step)
                batch = data_lib.make_global_batch(local_batch, bsh)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, metrics = train_step(state, batch, frozen)
                # At most one step in flight: a signal is then acted on within a step, and a run never queues
                # work it would have to finish before it can stop (async dispatch could run ~6 steps ahead).
                jax.block_until_ready(in_flight)
                in_flight = metrics
                step += 1
                is_last = step == config.total_steps
                log_now = step % config.log_every_steps == 0 or is_last or step == start_step + 1
                will_save = (is_last or stop.signal is not None or step % config.ckpt_every_steps == 0
                             or (config.eval_every_steps and step % config.eval_every_steps == 0))
                scalars = None
                if log_now or will_save:
                    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    _check_finite(step, scalars, manager)
                    if log_now:
                        writer.write_scalars(step, scalars)
                        last_scalars = scalars
                perf = reporter.report(step, {k: v for k, v in (scalars or {}).items() if k != "nonfinite_params"})
                if perf:
                    writer.write_scalars(step, perf)
                if config.image_every_steps and (step % config.image_every_steps == 0 or is_last):
                    out = jax.device_get(predict(state, vis_batch))
                    vb = jax.device_get(vis_batch)
                    grid = writers.image_grid([vb["image"] * (1 - vb["mask"]), vb["mask"], out["pred"],
                                               out["composite"], vb["image"]], max_rows=8,
                                              labels=["masked input", "mask", "prediction", "composite", "target"])
                    writer.write_images(step, {"samples": grid[None]})
                eval_metrics = None
                if config.eval_every_steps and (step % config.eval_every_steps == 0 or is_last):
                    eval_metrics = evaluator.run(config, evaluate, state, data_sharding, process_index,
                                                 process_count, eval_nets, prepare=eval_prepare)
                    writer.write_scalars(step, eval_metrics)
                    last_eval, last_eval_step = eval_metrics, step
                    log.info("evaluation at step %d: %s", step, _metrics_text(eval_metrics, prefix="eval/"))
                save(step, force=is_last or stop.signal is not None or eval_metrics is not None,
                     eval_metrics=eval_metrics)
                if step >= end and not is_last:
                    batches_iter.close()
                if stop.signal is not None:
                    log.warning("stopped by %s at step %d; rerun the same command to resume", stop.signal, step)
                    break
        # TensorBoard's HParams view: the config's values (numbers kept numeric) beside the final metrics.
        final = {k: v for k, v in last_scalars.items() if k.endswith("/total")}
        writer.write_hparams(config.to_dict(), {**final, **last_eval})
        _summary(workdir, start_step, step, config.total_steps, time.monotonic() - t_start, reporter.first_step_secs,
                 final, last_eval, last_eval_step, last_saved, process_index == 0)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.flush()
        writer.close()
        reporter.close()
        pipeline.close()
    return state


def read_config_json(workdir: str) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)
