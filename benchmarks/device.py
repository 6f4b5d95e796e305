"""Big LaMa on one accelerator: forward, generator step and the full trainer step, img/s, XLA FLOPs and MFU.

    python benchmarks/device.py                          # GPU/TPU: 256² and 512², batch 1-32, fp32 and bf16
    python benchmarks/device.py --sizes 256 --batches 8,16 --dtypes bfloat16 --json out.json
    python benchmarks/device.py --dry_run                # CPU: tiny sizes, every code path (what the tests run)

Cases (all with random weights; nothing is downloaded; the HRF perceptual backbone is a random ResNet50):

* ``fwd``: the Big LaMa generator's forward in eval mode;
* ``gstep``: the generator's training step (forward, L1 loss, backward, Adam);
* ``trainer``: the whole LaMa step of ``jaxinpaint.train.trainer.make_train_step`` from ``configs/big_lama.py``
  (generator update with the adversarial, feature-matching, HRF-perceptual and L1 losses; discriminator update
  with R1 and the second generator forward).

Each case is compiled once (compile time reported apart), warmed up, and timed over ``--repeats`` calls
with ``block_until_ready``. ``bfloat16`` sets the models' compute dtype (``config.mixed_precision``);
parameters, FFTs and losses stay float32. MFU = XLA's FLOP count of the compiled program per second over the
chip's dense peak for that dtype (``PEAKS``; a chip not in the table reports MFU as unknown). Convolutions are
the platform's own on GPU/TPU (``jaxinpaint.nn.conv``: the CPU formulations are only used for CPU programs).

The default sweep (2 sizes x 6 batches x 2 dtypes x 3 cases, skipping batches that do not fit in memory)
finishes in about five minutes on an H100 or a TPU v5e; ``--budget_s`` stops it earlier and says what was
left. Cases that run out of memory are reported as such, not as failures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

#: Dense peak TFLOP/s per chip and dtype (vendor figures, no sparsity).
PEAKS = {
    "H100": {"float32": 67.0, "bfloat16": 989.0},  # SXM; float32 without TF32
    "H200": {"float32": 67.0, "bfloat16": 989.0},
    "A100": {"float32": 19.5, "bfloat16": 312.0},
    "L4": {"float32": 30.3, "bfloat16": 121.0},
    "TPU v4": {"float32": 275.0 / 2, "bfloat16": 275.0},
    "TPU v5 lite": {"float32": 197.0 / 2, "bfloat16": 197.0},
    "TPU v5e": {"float32": 197.0 / 2, "bfloat16": 197.0},
    "TPU v5p": {"float32": 459.0 / 2, "bfloat16": 459.0},
    "TPU v6 lite": {"float32": 918.0 / 2, "bfloat16": 918.0},
}
CASES = ("fwd", "gstep", "trainer")


def chip_peak(device_kind: str, dtype: str) -> float | None:
    """Peak TFLOP/s of the chip whose ``device_kind`` contains a key of :data:`PEAKS`, or None."""
    for key, peaks in PEAKS.items():
        if key.lower() in device_kind.lower():
            return peaks[dtype]
    return None


def _config(size: int, batch: int, dtype: str, dry_run: bool):
    from jaxinpaint import config_lib

    config = config_lib.get_config("big_lama:smoke" if dry_run else "big_lama")
    with config.unlocked():
        config.input.image_size = size
        config.input.batch_size = batch
        config.mixed_precision = dtype == "bfloat16"
        config.bn_groups = 1  # one device: statistics over its whole batch
        config.losses.hrf_weights = "random"
        config.mesh.data, config.mesh.fsdp = 1, 1
        if dry_run:  # every code path, at the smallest widths (and without the ResNet50 HRF backbone's compile)
            config.generator.ngf, config.generator.n_blocks = 4, 1
            config.discriminator.ndf, config.discriminator.n_layers = 4, 2
            config.losses.hrf_perceptual = 0.0
    return config


def make_case(case: str, size: int, batch: int, dtype: str, dry_run: bool):
    """``(jitted_fn, args)`` on the first device."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxinpaint.train import optim, trainer

    config = _config(size, batch, dtype, dry_run)
    rng = np.random.default_rng(0)
    batch_arrays = {"image": jnp.asarray(rng.random((batch, size, size, 3), np.float32)),
                    "mask": jnp.asarray((rng.random((batch, size, size, 1)) > 0.7).astype(np.float32))}
    system, networks, phases = trainer.build(config)
    txs = {n: optim.make(net.optimizer) for n, net in networks.items() if net.trainable}
    state = jax.jit(trainer.make_init_fn(config, networks, txs))(jax.random.key_data(jax.random.key(0)))
    generator = networks["generator"].module
    g = state.nets["generator"]
    x = jnp.concatenate([batch_arrays["image"] * (1 - batch_arrays["mask"]), batch_arrays["mask"]], -1)
    if case == "fwd":
        fn = jax.jit(lambda p, s, x: generator.apply({"params": p, **s}, x, train=False))
        return fn, (g.params, g.state, x)
    if case == "gstep":
        tx = optax.adam(1e-3)

        def gstep(p, s, o, x, target):
            def loss(p):
                y, new = generator.apply({"params": p, **s}, x, train=True, mutable=list(s))
                return jnp.mean(jnp.abs(y - target)), new
            (value, new), grads = jax.value_and_grad(loss, has_aux=True)(p)
            updates, o = tx.update(grads, o, p)
            return optax.apply_updates(p, updates), new, o, value

        return jax.jit(gstep, donate_argnums=(0, 2)), (g.params, g.state, tx.init(g.params), x,
                                                       batch_arrays["image"])
    if case == "trainer":
        step = jax.jit(trainer.make_train_step(config, system, networks, txs, phases[0]), donate_argnums=(0,))
        return step, (state, batch_arrays, system.frozen(config))
    raise ValueError(f"unknown case {case!r}")


def run_one(case: str, size: int, batch: int, dtype: str, repeats: int, dry_run: bool) -> dict:
    import jax

    row = {"case": case, "size": size, "batch": batch, "dtype": dtype}
    try:
        fn, args = make_case(case, size, batch, dtype, dry_run)
        compiled, compile_s = common.compile_timed(fn, *args)
        flops = common.flops_of(compiled)
        donated = case in ("gstep", "trainer")
        out = compiled(*args)
        common.block(out)
        times = []
        for _ in range(repeats):
            if donated:  # donated buffers: feed each call the previous call's state
                args = (out[0], out[1], out[2], *args[3:]) if case == "gstep" else (out[0], *args[1:])
            t0 = time.perf_counter()
            out = compiled(*args)
            common.block(out)
            times.append(time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001  (out of memory and friends are a result, not a crash)
        text = f"{type(e).__name__}: {e}"
        row["error"] = "out of memory" if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() else \
            text.splitlines()[0][:200]
        return row
    median = sorted(times)[len(times) // 2]
    peak = chip_peak(jax.devices()[0].device_kind, dtype)
    row.update(compile_s=round(compile_s, 2), median_s=median, img_per_s=batch / median,
               gflop=None if flops is None else flops / 1e9,
               tflop_per_s=None if flops is None else flops / median / 1e12)
    row["mfu"] = None if (flops is None or peak is None) else flops / median / (peak * 1e12)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter,
                                epilog=__doc__[__doc__.index("Cases"):])
    p.add_argument("--sizes", default="256,512", help="image sizes (default: %(default)s)")
    p.add_argument("--batches", default="1,2,4,8,16,32", help="batch sizes (default: %(default)s)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="compute dtypes (default: %(default)s)")
    p.add_argument("--cases", default=",".join(CASES), help="fwd, gstep, trainer (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (default: %(default)s)")
    p.add_argument("--budget_s", type=float, default=290.0,
                   help="stop starting new cases after this many seconds (default: %(default)s)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--dry_run", action="store_true",
                   help="tiny sizes and Big LaMa's smoke widths on any backend (CPU included): checks every path")
    args = p.parse_args(argv)
    import jax

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for d in dtypes:
        if d not in ("float32", "bfloat16"):
            p.error(f"--dtypes: {d!r} is not float32 or bfloat16")
    for c in cases:
        if c not in CASES:
            p.error(f"--cases: {c!r} is not one of {', '.join(CASES)}")
    sizes = [32] if args.dry_run else common.parse_ints(args.sizes, "--sizes")
    batches = [2] if args.dry_run else common.parse_ints(args.batches, "--batches")
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind} x{jax.device_count()}; jax {jax.__version__}",
          flush=True)
    if device.platform == "cpu" and not args.dry_run:
        print("note: this is a CPU; the figures are not an accelerator's (use --dry_run for a quick check)")
    start, rows, skipped = time.perf_counter(), [], []
    for case in cases:
        for dtype in dtypes:
            for size in sizes:
                oom = False
                for batch in batches:
                    if oom or (time.perf_counter() - start > args.budget_s and not args.dry_run):
                        skipped.append((case, dtype, size, batch))
                        continue
                    row = run_one(case, size, batch, dtype, 2 if args.dry_run else args.repeats, args.dry_run)
                    oom = row.get("error") == "out of memory"
                    rows.append(row)
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                          flush=True)
    columns = [("case", "case", "{}"), ("size", "size", "{}"), ("batch", "batch", "{}"), ("dtype", "dtype", "{}"),
               ("img_per_s", "img/s", "{:.2f}"), ("tflop_per_s", "TFLOP/s", "{:.2f}"), ("mfu", "MFU", "{:.1%}"),
               ("compile_s", "compile s", "{:.1f}"), ("error", "error", "{}")]
    print(common.format_table(rows, columns))
    if skipped:
        print(f"over the {args.budget_s:.0f} s budget: {len(skipped)} case(s) not run, e.g. {skipped[:3]}")
    if args.json:
        common.write_json(args.json, {"environment": common.environment(), "device": device.device_kind,
                                      "rows": rows, "skipped": skipped})
    failed = [r for r in rows if r.get("error") not in (None, "out of memory")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
