"""Speed and memory of the per-image solvers (Deep Image Prior, total variation, the classifier prior, MSNPS...),
and for DIP the original PyTorch loop measured in the same window.

For every method of ``--methods`` that is registered (others are skipped with a note, so the script runs before
every solver has landed) and every size of ``--sizes`` (square crops of a real photo, a central ~10 % hole):

* the solver's jitted ``solve`` is compiled twice, with ``iterations = --iters`` and with ``iterations = 0``
  (initialisation and the final forward pass only); compile times are reported apart;
* the cases run **alternating** (torch N steps, jax N steps, jax 0 steps, torch, jax, ...) for ``--rounds``
  rounds after one warm-up each, and medians are reported. ``steps/s = N / (t_N - t_0)`` counts only the
  optimisation steps, as the PyTorch loop's figure does (its network construction and final forward are
  outside its timer); ``steps/s incl. setup = N / t_N`` is given too;
* DIP runs with ``loop='scan'`` (the jitted ``solve``, compiled here) and ``loop='host'`` (``host_solve``: a
  Python loop over the jitted step, what ``jaxinpaint.load('dip', loop='host')`` runs; its first call includes
  the compilations);
* memory: XLA's ``memory_analysis()`` of the N-step program (temporaries + arguments + outputs: what the solve
  needs on its device) and this process's peak RSS so far (cumulative over the cases run before it, compiler
  included); for PyTorch the worker's peak RSS.

DIP and PyTorch (``--torch-python``): ``benchmarks/torch_dip.py`` is a transliteration of the original
``skip()`` and ``optimize()``; before measuring, this script runs its ``--check`` against the reference fixtures
(outputs must match the original's to 1e-4 after a strict state-dict load) and stops if that fails. The
PyTorch worker (one per preset and size, ``--torch-threads`` threads) is stepped in the same alternation.

    python benchmarks/solvers.py --methods dip,tv,hallucination,msnps --sizes 256,512
    python benchmarks/solvers.py --methods dip --sizes 256 --dip-presets library,kate --iters 5 --rounds 3 \\
        --torch-python /work/tv/bin/python --json benchmarks/results/solvers_dip.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REFERENCE = HERE.parent.parent / "shared" / "reference"


def photo(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` float crop of a real photo (astronaut, resized when larger than 512) and a central
    rectangular hole of ~10 % (1 = hole)."""
    from PIL import Image

    from jaxinpaint.data import photos

    path = next(p for p in photos.builtin_photo_paths("all") if p.name == "astronaut.png")
    img = photos.load_image(path)
    if size > min(img.shape[:2]):
        img = np.asarray(Image.fromarray((img * 255).astype(np.uint8)).resize((size, size)), np.float32) / 255
    img = img[:size, :size]
    hole = np.zeros((size, size), np.float32)
    side = int(round(np.sqrt(0.1) * size))
    top = (size - side) // 2
    hole[top:top + side, top:top + side] = 1
    return img, hole


def iteration_field(config) -> str | None:
    for name in ("iterations", "n_iters", "num_iter", "steps"):
        if name in config:
            return name
    return None


class TorchWorker:
    """``torch_dip.py --worker`` in its own process, stepped N at a time from here."""

    def __init__(self, python: str, preset: str, size: int, threads: int):
        self.proc = subprocess.Popen(
            [python, str(HERE / "torch_dip.py"), "--worker", "--preset", preset, "--size", str(size), "--threads",
             str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        if not ready.startswith("{"):
            raise SystemExit(f"--torch-python {python}: the PyTorch worker did not start ({ready!r})")
        self.info = json.loads(ready)
        self.last = None

    def steps(self, n: int) -> dict:
        self.proc.stdin.write(f"steps {n}\n")
        self.proc.stdin.flush()
        self.last = json.loads(self.proc.stdout.readline())
        return self.last

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def torch_check(python: str) -> list[dict]:
    fixtures = sorted(str(p) for p in REFERENCE.glob("dip_skip_*.npz"))
    if not fixtures:
        raise SystemExit(f"no DIP fixtures in {REFERENCE}: cannot prove torch_dip.py faithful")
    out = subprocess.run([python, str(HERE / "torch_dip.py"), "--check", *fixtures], capture_output=True, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"torch_dip.py --check failed (rc {out.returncode}):\n{out.stdout}\n{out.stderr}")
    report = json.loads(line)["check"]
    print("torch_dip.py --check:", json.dumps(report), flush=True)
    return report


def measure(method: str, size: int, overrides: dict, args, torch_worker: TorchWorker | None) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxinpaint import systems

    solver = systems.get(method)
    config = solver.default_config()
    field = iteration_field(config)
    row = {"method": method, "size": size, **{k: v for k, v in overrides.items()}}
    if solver.solve is None or field is None:
        row["note"] = "no jitted solve or no iteration count: not measured"
        return row
    config.update(overrides)
    resources = solver.load_resources(config)
    img, hole = photo(size)
    multiple = int(solver.size_multiple(config))
    if size % multiple:
        row["note"] = f"size not a multiple of {multiple}"
        return row
    image, mask = jnp.asarray(img[None]), jnp.asarray(hole[None, ..., None])
    rng = jax.random.key(0)
    if overrides.get("loop") == "host":  # DIP's Python loop over the jitted step: time what jaxinpaint.load runs
        return measure_host(solver, config, field, image, mask, row, args, torch_worker, resources)
    programs = {}
    for n in (args.iters, 0):
        cfg = solver.default_config()
        cfg.update({**overrides, field: n})
        fn = jax.jit(lambda im, m, r, cfg=cfg: solver.solve(resources, im, m, cfg, r))
        compiled, seconds = common.compile_timed(fn, image, mask, rng)
        programs[n] = compiled
        row[f"compile_s_{n}"] = seconds
    mem = programs[args.iters].memory_analysis()
    if mem is not None:
        row["xla_mib"] = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**20
    cases = {}
    if torch_worker is not None:
        cases["torch"] = lambda: torch_worker.steps(args.iters)
    cases["jax"] = lambda: common.block(programs[args.iters](image, mask, rng))
    cases["jax0"] = lambda: common.block(programs[0](image, mask, rng))
    return finish_row(cases, row, args, torch_worker)


def measure_host(solver, config, field, image, mask, row, args, torch_worker, resources) -> dict:
    """:func:`measure` through ``host_solve`` (no single program to analyse: memory is the process's peak RSS);
    the compile time is the first call's time minus a warm call's."""
    def runner(n):
        cfg = solver.default_config()
        cfg.update({**{k: v for k, v in config.items()}, field: n})
        return lambda: common.block(solver.host_solve(resources, image, mask, cfg, 0))

    cases = {}
    if torch_worker is not None:
        cases["torch"] = lambda: torch_worker.steps(args.iters)
    cases["jax"], cases["jax0"] = runner(args.iters), runner(0)
    t0 = time.perf_counter()
    cases["jax"]()
    first = time.perf_counter() - t0
    return finish_row(cases, row, args, torch_worker, first_call_s=first)


def finish_row(cases, row, args, torch_worker, **extra) -> dict:
    for fn in cases.values():  # warm-up
        fn()
    wall = {k: [] for k in cases}
    torch_wall = []
    for _ in range(args.rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            out = fn()
            wall[name].append(time.perf_counter() - t0)
            if name == "torch":
                torch_wall.append(out["wall_s"])  # the worker's own timer (no pipe)
    t_n, t_0 = statistics.median(wall["jax"]), statistics.median(wall["jax0"])
    row.update(extra)
    row.update({"iters": args.iters, "rounds": args.rounds, "jax_s": t_n, "jax0_s": t_0,
                "steps_per_s": args.iters / max(t_n - t_0, 1e-9), "steps_per_s_incl_setup": args.iters / t_n,
                "peak_rss_mib": common.peak_rss_mib(), "loadavg": os.getloadavg()[0]})
    if torch_wall:
        t_torch = statistics.median(torch_wall)
        row.update({"torch_s": t_torch, "torch_steps_per_s": args.iters / t_torch,
                    "torch_peak_rss_mib": torch_worker.last.get("peak_rss_mib"),
                    "ratio_jax_over_torch": (args.iters / max(t_n - t_0, 1e-9)) / (args.iters / t_torch),
                    "torch_threads": torch_worker.info.get("threads")})
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="dip,tv,hallucination,msnps")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--iters", type=int, default=5, help="optimisation steps per timed call")
    ap.add_argument("--rounds", type=int, default=3, help="alternation rounds (medians over them)")
    ap.add_argument("--dip-presets", default="library", help="DIP presets to measure (comma-separated)")
    ap.add_argument("--dip-loops", default="scan,host", help="DIP's config.loop values to measure (comma-separated)")
    ap.add_argument("--torch-python", default=None, help="python of a venv with torch: also time the original DIP loop")
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the rows and the environment here")
    args = ap.parse_args(argv)
    sizes = common.parse_ints(args.sizes, "--sizes")

    from jaxinpaint import systems

    env = common.environment()
    print(json.dumps(env), flush=True)
    check = torch_check(args.torch_python) if args.torch_python else None
    rows = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if method not in systems.names("solver"):
            print(f"{method}: not registered, skipped", flush=True)
            rows.append({"method": method, "note": "not registered"})
            continue
        variants = ([{"preset": p, "loop": lp} for p in args.dip_presets.split(",") for lp in args.dip_loops.split(",")]
                    if method == "dip" else [{}])
        for overrides in variants:
            for size in sizes:
                worker = None
                if method == "dip" and args.torch_python:
                    worker = TorchWorker(args.torch_python, overrides["preset"], size, args.torch_threads)
                try:
                    row = measure(method, size, overrides, args, worker)
                finally:
                    if worker is not None:
                        worker.close()
                rows.append(row)
                print(json.dumps(row), flush=True)
    cols = [("method", "method", "{}"), ("preset", "preset", "{}"), ("loop", "loop", "{}"), ("size", "size", "{}"),
            ("steps_per_s", "jax steps/s", "{:.3f}"), ("steps_per_s_incl_setup", "incl. setup", "{:.3f}"),
            ("torch_steps_per_s", "torch steps/s", "{:.3f}"), ("ratio_jax_over_torch", "jax/torch", "{:.2f}"),
            ("compile_s_%d" % args.iters, "compile s", "{:.1f}"), ("first_call_s", "1st call s", "{:.1f}"),
            ("xla_mib", "XLA MiB", "{:.0f}"),
            ("peak_rss_mib", "RSS MiB", "{:.0f}"), ("torch_peak_rss_mib", "torch RSS MiB", "{:.0f}"),
            ("loadavg", "load", "{:.1f}"), ("note", "note", "{}")]
    print(common.format_table(rows, cols))
    if args.json:
        common.write_json(args.json, {"environment": env, "torch_check": check, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
