"""How much slower XLA:CPU runs DIP's Adam step inside ``lax.scan`` than as its own program (benchmarks/README.md,
"Per-image solvers"). Library preset network, random image, all-known mask; one process, cases alternating.

    python benchmarks/scan_overhead.py --size 256 --steps 3
    python benchmarks/scan_overhead.py --size 128 --steps 6 --impl lax --unroll 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from jaxinpaint.systems.dip import solver  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="steps inside the scan")
    ap.add_argument("--unroll", type=int, default=0, help="also time lax.scan(unroll=this) (0: full unroll)")
    ap.add_argument("--impl", default="auto", help="conv_impl: auto, lax, cpu")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    c = solver.default_config()
    c.conv_impl = None if args.impl == "auto" else args.impl
    net = solver.resolve(c).module
    z = jax.random.uniform(jax.random.key(0), (1, args.size, args.size, 1)) * 0.1
    v = net.init(jax.random.key(1), z)
    img = jax.random.uniform(jax.random.key(2), (1, args.size, args.size, 3))
    tx = optax.adam(0.01)

    def step(params, opt):
        def lf(p):
            return jnp.mean((net.apply({"params": p, "batch_stats": v["batch_stats"]}, z) - img) ** 2)
        loss, g = jax.value_and_grad(lf)(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt, loss

    def scanned(params, opt, unroll=1):
        def body(carry, _):
            p, o, loss = step(*carry[:2])
            return (p, o, loss), loss
        return jax.lax.scan(body, (params, opt, jnp.float32(0)), None, length=args.steps, unroll=unroll)

    p, o = v["params"], tx.init(v["params"])
    fns = {"step": (step, 1), "scan": (scanned, args.steps),
           f"scan_unroll{args.unroll or 'all'}": (lambda a, b: scanned(a, b, args.unroll or True), args.steps)}
    compiled = {}
    for name, (fn, _) in fns.items():
        t = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(p, o).compile()
        print(f"{name}: compile {time.perf_counter() - t:.1f} s", flush=True)
    per_step = {k: [] for k in fns}
    for f in compiled.values():
        jax.block_until_ready(f(p, o))
    for _ in range(args.rounds):
        for name, f in compiled.items():
            t = time.perf_counter()
            jax.block_until_ready(f(p, o))
            per_step[name].append((time.perf_counter() - t) / fns[name][1])
    print({k: round(statistics.median(x), 4) for k, x in per_step.items()}, "s/step; load", os.getloadavg()[0])


if __name__ == "__main__":
    main()
