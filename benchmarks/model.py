"""Model benchmarks: forward and train-step throughput, compile time, peak memory and GFLOP/s per model,
resolution and batch size, with a table, ``--json`` and a PNG plot of time against pixels.

Modes:

* ``fwd``: the generator in inference mode (BatchNorm running statistics), jitted, batch N;
* ``train``: generator forward + backward in training mode (BatchNorm batch statistics) with an L1 loss
  against a random target: the gradient LaMa's training needs from the generator;
* ``trainer``: the full trainer step (``jaxinpaint.train.trainer.make_train_step``: generator and discriminator
  updates with every loss of the config; an HRF backbone is randomly initialised) for ``--config``.

Each case runs in its own subprocess, so that peak RSS (``getrusage``) is per case and one case's memory or
compilation cache cannot affect the next. GFLOP come from XLA's cost analysis of the compiled program, so
they count the arithmetic actually executed (Winograd convolutions count fewer multiply-adds than the
direct convolutions PyTorch's FLOP counter reports: 110.1 GFLOP for a Big LaMa forward at 256x256).

``--compare`` instead runs, in one process per case, the library's formulation against plain XLA
convolutions (``lax``: every conv through ``lax.conv_general_dilated``, as before the speed work) and the
other variants listed in ``VARIANTS``, alternating them call by call, which is the fair way to compare on a
shared machine. ``--torch-python`` adds, for ``big_lama``, the PyTorch reference of
``benchmarks/torch_reference.py`` in the same way (alternating JAX and PyTorch runs).

Usage::

    python benchmarks/model.py                                   # big_lama, fwd+train, 256 and 512, batch 1
    python benchmarks/model.py --model=lama_fourier --sizes 256,512,1024,2048 --modes fwd --plot out/t.png
    python benchmarks/model.py --compare --sizes 256 --modes fwd,train --torch-python /tmp/tv/bin/python
    python benchmarks/model.py --modes trainer --config configs/big_lama.py:smoke --sizes 64 --batches 2
    python benchmarks/model.py --compare --modes trainer --config configs/big_lama.py --sizes 256 --batches 1,4 \
        --torch-python /tmp/tv/bin/python      # the whole LaMa training step against PyTorch, alternating
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

MODELS = ("big_lama", "lama_fourier", "lama_regular", "pconv", "deepfill")
MODES = ("fwd", "train", "trainer")
# Formulation variants for --compare (see jaxinpaint/nn/conv.py and ffc.py).
VARIANTS = {
    "default": "the library's formulation (Winograd FFC/3x3 convs, matmul 1x1 and output head)",
    "lax": "every convolution through lax.conv_general_dilated, no joint FFC Winograd (the plain port)",
    "winograd_bwd": "FFC 3x3 kernel gradients also by Winograd (instead of XLA's weight-gradient conv)",
    "lax_bwd": "FFC 3x3 forward by Winograd, both gradients by XLA's convolution gradients",
    "winograd4": "FFC 3x3 convolutions by F(4x4, 3x3) instead of F(2x2, 3x3)",
}


@contextlib.contextmanager
def variant(name: str):
    """Temporarily switches the library's formulation constants (only while tracing; see VARIANTS)."""
    from jaxinpaint.nn import conv as layers, ffc

    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
    saved = (layers.choose_conv_impl, ffc.choose_conv_impl, ffc._LOCAL_CONVS_BWD, ffc._WINOGRAD_TILE)
    try:
        if name == "lax":
            ffc.choose_conv_impl = layers.choose_conv_impl = lambda *a, **k: "lax"
        elif name == "winograd_bwd":
            ffc._LOCAL_CONVS_BWD = "winograd"
        elif name == "lax_bwd":
            ffc._LOCAL_CONVS_BWD = "lax"
        elif name == "winograd4":
            ffc._WINOGRAD_TILE = 4
        yield
    finally:
        layers.choose_conv_impl, ffc.choose_conv_impl, ffc._LOCAL_CONVS_BWD, ffc._WINOGRAD_TILE = saved


def build_model(name: str):
    """``(module, input_channels, size_multiple, pick_output)`` for a model name (full-size configs)."""
    from jaxinpaint.systems.deepfill_v2.model import Generator as DeepFillGenerator
    from jaxinpaint.systems.lama import model as lama
    from jaxinpaint.systems.pconv.model import PConvUNet

    if name == "big_lama":
        return lama.BigLama(), 4, 8, lambda y: y
    if name == "lama_fourier":
        return lama.LamaFourier(), 4, 8, lambda y: y
    if name == "lama_regular":
        return lama.LamaRegular(), 4, 8, lambda y: y
    if name == "pconv":
        return PConvUNet(layer_size=7, width=64), 4, 128, lambda y: y
    if name == "deepfill":
        return DeepFillGenerator(cnum=48), 5, 8, lambda y: y[1]  # (coarse, fine): the fine output
    raise SystemExit(f"--model: unknown {name!r}; choose from {list(MODELS)}")


def make_case(model_name: str, mode: str, size: int, batch: int, config: str | None = None):
    """``(jitted_fn, args)`` for one case; everything is built with random weights, nothing is downloaded."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    if mode == "trainer":
        return _trainer_case(config, size, batch)
    module, channels, multiple, pick = build_model(model_name)
    if size % multiple:
        raise SystemExit(f"{model_name}: input size must be a multiple of {multiple}, got {size}")
    x = jnp.asarray(rng.random((batch, size, size, channels), np.float32))
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), x[:1], train=False))
    # Random weights without running (and compiling) the initialiser at full size: shapes from eval_shape.
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(abstract))))
    def random_like(s):
        if jnp.issubdtype(s.dtype, jnp.floating):
            return 0.02 * jax.random.normal(next(keys), s.shape, s.dtype)
        return jnp.zeros(s.shape, s.dtype)

    variables = jax.tree.map(random_like, abstract)
    variables = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.abs(v) + 1.0 if getattr(p[-1], "key", "") in ("var", "scale") else v, variables)
    if mode == "fwd":
        fn = jax.jit(lambda v, a: pick(module.apply(v, a, train=False)))
        return fn, (variables, x)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    target = jnp.asarray(rng.random((batch, size, size, 3), np.float32))

    def loss(p, s, a):
        y, _ = module.apply({"params": p, **s}, a, train=True, mutable=list(s))
        return jnp.mean(jnp.abs(pick(y).astype(jnp.float32) - target))

    return jax.jit(jax.value_and_grad(loss)), (params, state, x)


def _trainer_case(config_arg: str | None, size: int, batch: int):
    """The full trainer step (every update of the first phase) for a config at the given size and batch."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxinpaint import config_lib
    from jaxinpaint.train import optim, trainer

    if not config_arg:
        raise SystemExit("--modes trainer needs --config=configs/<name>.py[:variant] (or a bundled name)")
    try:
        config = config_lib.get_config(config_arg)
    except FileNotFoundError as e:
        raise SystemExit(f"--config: {e}") from e
    with config.unlocked():
        config.input.batch_size = batch
        config.input.image_size = size
        config.bn_groups = 1
        if "hrf_weights" in config.losses:
            config.losses.hrf_weights = "random"
    system, networks, phases = trainer.build(config)
    txs = {n: optim.make(net.optimizer) for n, net in networks.items() if net.trainable}
    frozen = system.frozen(config)
    state = jax.jit(trainer.make_init_fn(config, networks, txs))(jax.random.key_data(jax.random.key(0)))
    step = jax.jit(trainer.make_train_step(config, system, networks, txs, phases[0]))
    rng = np.random.default_rng(0)
    batch_arrays = {"image": jnp.asarray(rng.random((batch, size, size, 3), np.float32)),
                    "mask": jnp.asarray((rng.random((batch, size, size, 1)) > 0.7).astype(np.float32))}
    return step, (state, batch_arrays, frozen)


def run_case(spec: dict) -> dict:
    """Compiles and times one case in this process; returns its row."""
    import jax

    with variant(spec.get("variant", "default")):
        fn, args = make_case(spec["model"], spec["mode"], spec["size"], spec["batch"], spec.get("config"))
        compiled, compile_s = common.compile_timed(fn, *args)
    flops = common.flops_of(compiled)
    out = common.block(compiled(*args))
    del out
    timing = common.interleaved({"case": lambda: common.block(compiled(*args))}, spec["repeats"])["case"]
    row = {**spec, "framework": "jax", "compile_s": compile_s, **timing,
           "img_per_s": spec["batch"] / timing["median_s"], "gflop": None if flops is None else flops / 1e9,
           "gflop_per_s": None if flops is None else flops / 1e9 / timing["median_s"],
           "peak_rss_mib": common.peak_rss_mib(), "loadavg": os.getloadavg()[0],
           "backend": jax.default_backend()}
    return row


def run_compare(spec: dict, variants: list[str], torch_python: str | None) -> list[dict]:
    """All variants (and optionally PyTorch) of one case in one process, alternating call by call."""
    compiled = {}
    meta = {}
    for name in variants:
        with variant(name):
            fn, args = make_case(spec["model"], spec["mode"], spec["size"], spec["batch"], spec.get("config"))
            exe, compile_s = common.compile_timed(fn, *args)
        meta[name] = {"compile_s": compile_s, "gflop": (common.flops_of(exe) or 0) / 1e9 or None}
        compiled[name] = (lambda e=exe, a=args: common.block(e(*a)))
    torch_proc = None
    lama_trainer = spec["mode"] == "trainer" and "big_lama" in str(spec.get("config"))
    if torch_python and ((spec["model"] == "big_lama" and spec["mode"] in ("fwd", "train")) or lama_trainer):
        torch_proc = _TorchWorker(torch_python, spec)
        compiled["torch"] = torch_proc.step
        meta["torch"] = {"compile_s": None, "gflop": None}
    try:
        timings = common.interleaved(compiled, spec["repeats"], warmup=2)
        if torch_proc is not None:
            timings["torch"] = torch_proc.summary(spec["repeats"])
    finally:
        if torch_proc is not None:
            torch_proc.close()
    rows = []
    for name, t in timings.items():
        rows.append({**spec, "variant": name, "framework": "torch" if name == "torch" else "jax",
                     **meta[name], **t, "img_per_s": spec["batch"] / t["median_s"],
                     "gflop_per_s": meta[name]["gflop"] / t["median_s"] if meta[name]["gflop"] else None,
                     "loadavg": os.getloadavg()[0]})
    return rows


class _TorchWorker:
    """A PyTorch process that runs one step of the reference per request, so that its runs can be
    interleaved with JAX's (the step's wall time is measured inside the worker, without the pipe)."""

    def __init__(self, python: str, spec: dict):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
        mode = {"train": "fwd_bwd", "trainer": "lama_step"}.get(spec["mode"], "fwd")
        self.proc = subprocess.Popen(
            [python, script, "--serve", "--sizes", str(spec["size"]), "--batch", str(spec["batch"]),
             "--modes", mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready"):
            raise SystemExit(f"--torch-python {python}: the PyTorch worker did not start ({ready!r})")
        self.walls, self.cpus = [], []

    def step(self):
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        self.walls.append(answer["wall_s"])
        self.cpus.append(answer["cpu_s"])

    def summary(self, repeats: int) -> dict:
        """The worker's own timings of the last ``repeats`` steps (the parent's CPU time is not PyTorch's)."""
        return common.summarize(self.walls[-repeats:], self.cpus[-repeats:])

    def close(self):
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def _spawn(spec: dict, timeout: float) -> dict:
    """Runs one case in a fresh interpreter (``--case JSON``) and parses its row."""
    cmd = [sys.executable, os.path.abspath(__file__), "--case", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {**spec, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def plot(rows: list[dict], path: str) -> None:
    """Median time against pixels, log-log, one line per (model, mode, batch, variant/framework)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for r in rows:
        if "median_s" not in r:
            continue
        key = (r["model"], r["mode"], r["batch"], r.get("variant", "default"))
        series.setdefault(key, []).append((r["size"] ** 2, r["median_s"]))
    fig, ax = plt.subplots(figsize=(7, 5))
    for (model, mode, batch, var), points in sorted(series.items()):
        points.sort()
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=f"{model} {mode} N={batch} {var}")
    if series:
        # A line of slope 1 through the first point of the first series: cost linear in pixels.
        xs, ys = zip(*sorted(next(iter(sorted(series.items())))[1]))
        ax.plot([xs[0], xs[-1]], [ys[0], ys[0] * xs[-1] / xs[0]], "k:", label="linear in pixels")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pixels per image (H x W)")
    ax.set_ylabel("median seconds per call")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=120)


COLUMNS = [
    ("model", "model", "{}"), ("mode", "mode", "{}"), ("size", "size", "{}"), ("batch", "N", "{}"),
    ("variant", "variant", "{}"), ("compile_s", "compile s", "{:.1f}"), ("median_s", "median s", "{:.3f}"),
    ("min_s", "min s", "{:.3f}"), ("cpu_median_s", "cpu s", "{:.3f}"), ("img_per_s", "img/s", "{:.2f}"),
    ("gflop", "GFLOP", "{:.1f}"), ("gflop_per_s", "GFLOP/s", "{:.0f}"),
    ("peak_rss_mib", "peak MiB", "{:.0f}"),
    ("loadavg", "load", "{:.2f}"), ("error", "error", "{}"),
]


def main(argv=None) -> int:
    common.ensure_malloc_tunables()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="big_lama", help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--modes", default="fwd,train", help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--sizes", default="256,512", help="square input sizes, e.g. 256,512,1024,2048")
    parser.add_argument("--batches", default="1", help="batch sizes, e.g. 1,4")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (medians over these)")
    parser.add_argument("--config", default=None, help="--modes trainer: configs/<name>.py[:variant]")
    parser.add_argument("--compare", action="store_true", help="alternate formulation variants per case")
    parser.add_argument("--variants", default="default,lax",
                        help=f"--compare: subset of {','.join(VARIANTS)}")
    parser.add_argument("--torch-python", default=None, help="--compare: python of a venv with torch==2.13.0")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case subprocess")
    parser.add_argument("--json", default=None, help="write rows and environment as JSON here")
    parser.add_argument("--plot", default=None, help="write a PNG of time against pixels here")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(json.loads(args.case))), flush=True)
        return 0

    models = [m for m in args.model.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    for value, allowed, flag in ((models, MODELS, "--model"), (modes, MODES, "--modes")):
        bad = sorted(set(value) - set(allowed))
        if bad:
            raise SystemExit(f"{flag}: unknown {bad}; choose from {list(allowed)}")
    variants = [v for v in args.variants.split(",") if v]
    bad = sorted(set(variants) - set(VARIANTS))
    if bad:
        raise SystemExit(f"--variants: unknown {bad}; choose from {sorted(VARIANTS)}")
    sizes = common.parse_ints(args.sizes, "--sizes")
    batches = common.parse_ints(args.batches, "--batches")

    env = common.environment()
    rows = []
    for model in models:
        for mode in modes:
            for size in sizes:
                for batch in batches:
                    spec = {"model": model if mode != "trainer" else f"trainer:{args.config}", "mode": mode,
                            "size": size, "batch": batch, "repeats": args.repeats, "config": args.config,
                            "variant": "default"}
                    t0 = time.perf_counter()
                    if args.compare:
                        new = run_compare(spec, variants, args.torch_python)
                    else:
                        new = [_spawn(spec, args.timeout)]
                    for r in new:
                        print(json.dumps(r, default=str), file=sys.stderr, flush=True)
                    rows += new
                    print(f"# {model} {mode} {size} N={batch}: {time.perf_counter() - t0:.0f} s",
                          file=sys.stderr)
    print(f"# jax {env['jax']} on {env['backend']}, {env['cpu_count']} CPUs, load at start "
          f"{env['loadavg'][0]:.2f}, malloc tuned: {env['malloc_tuned']}, XLA_FLAGS={env['xla_flags']!r}")
    print(common.format_table(rows, COLUMNS))
    if args.json:
        common.write_json(args.json, {"environment": env, "args": vars(args), "rows": rows})
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
