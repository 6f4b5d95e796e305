"""Peak memory of ``jaxinpaint predict`` over many differently sized photos.

    python benchmarks/predict_memory.py --photos=500 --sizes=100 [--configs=unbounded,default,bucket64]

Writes ``--photos`` random photos (with a LaMa-layout mask each) of ``--sizes`` distinct sizes between 64 and
384 px per side, converts the small Big-LaMa-layout generator of the test fixtures into a model directory,
and runs predict's own loop (``jaxinpaint.cli.predict.run_jobs``) once per configuration, each in a fresh
process, recording the resident memory after every 50 images and the peak (``ru_maxrss``):

* ``unbounded``: ``max_programs=0``, one compiled program kept per size for the life of the process (the
  behaviour before issue 14);
* ``default``: ``max_programs=8`` (predict's default): JAX's caches are cleared before a ninth size;
* ``bucket64``: ``max_programs=8`` and ``size_bucket=64``: nearby sizes share one program.

The figures go to ``--out`` (JSON). Compilation dominates the run time (one per size, or per bucket).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"unbounded": dict(max_programs=0, size_bucket=0), "default": dict(max_programs=8, size_bucket=0),
           "bucket64": dict(max_programs=8, size_bucket=64)}


def make_inputs(folder: str, photos: int, sizes: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shapes = set()
    while len(shapes) < sizes:
        shapes.add(tuple(int(v) for v in rng.integers(64, 385, 2)))
    shapes = sorted(shapes)
    for i in range(photos):
        h, w = shapes[i % sizes]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i:04d}.png"))
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4:h // 2, w // 4:w // 2] = 255
        Image.fromarray(mask).save(os.path.join(folder, f"{i:04d}_mask000.png"))


def run_one(model_dir: str, input_dir: str, output_dir: str, max_programs: int, size_bucket: int) -> dict:
    """One configuration, in this process (called in a child by :func:`main`)."""
    import psutil

    import jaxinpaint
    from jaxinpaint.cli import predict

    proc = psutil.Process()
    model = jaxinpaint.load(model_dir, max_programs=max_programs, size_bucket=size_bucket)
    jobs = predict.lama_jobs(input_dir, output_dir)
    rss, t0 = [], time.perf_counter()
    for start in range(0, len(jobs), 50):
        failures = predict.run_jobs(jobs[start:start + 50], model, interactive=False)
        assert not failures, failures[:3]
        rss.append(round(proc.memory_info().rss / 2**20))
    return {"images": len(jobs), "seconds": round(time.perf_counter() - t0, 1), "rss_mb_every_50": rss,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--sizes", type=int, default=100)
    parser.add_argument("--configs", default="unbounded,default,bucket64")
    parser.add_argument("--out", default="benchmarks/results/predict_memory.json")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model_dir, input_dir, output_dir, max_programs, size_bucket = args.child
        print(json.dumps(run_one(model_dir, input_dir, output_dir, int(max_programs), int(size_bucket))))
        return 0
    sys.path.insert(0, ROOT)
    from jaxinpaint.io import checkpoint
    from jaxinpaint.systems.lama import convert

    report = {"photos": args.photos, "sizes": args.sizes, "cpu_count": os.cpu_count(),
              "load_average_at_start": os.getloadavg()[0], "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, input_dir = os.path.join(tmp, "model"), os.path.join(tmp, "in")
        os.makedirs(input_dir)
        module, variables = convert.load_lama_generator(
            os.path.join(ROOT, "tests", "data", "torch", "big_lama_layout_state_dict.pt"))
        checkpoint.save_models(model_dir, "lama", {"generator": (module, variables)})
        make_inputs(input_dir, args.photos, args.sizes)
        for name in args.configs.split(","):
            cfg = CONFIGS[name]
            out = subprocess.run([sys.executable, __file__, "--child", model_dir, input_dir, os.path.join(tmp, name),
                                  str(cfg["max_programs"]), str(cfg["size_bucket"])], capture_output=True,
                                 text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            report["configs"][name] = {**cfg, **json.loads(out.stdout.strip().splitlines()[-1])}
            print(name, json.dumps(report["configs"][name]), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
