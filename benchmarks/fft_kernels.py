"""Benchmarks of the FFC spectral kernels on LaMa's shapes: FFT layouts, a DFT-as-matmul, bf16 inputs, the
whole FourierUnit forward and forward+backward.

In Big LaMa the spectral transform's FourierUnit sees ``(N, H/8, W/8, 192)`` for an ``H x W`` input (the
192-channel half of the 384-channel global branch at the bottleneck). For each input size and batch this
script jit-compiles every variant, reports the compile time apart from the run time, checks each variant's
numbers against the reference round trip, then times the variants *interleaved* (one call of each per round,
medians over rounds), which is what keeps comparisons fair on a shared machine.

Variants (each a full forward + inverse transform, ``norm='ortho'``, float32 unless stated):

* ``rfft2_nhwc``: ``jnp.fft.rfft2`` over the NHWC axes (1, 2), what ``jaxinpaint.nn.ffc`` uses;
* ``rfft2_minor``: transpose to channels-first, FFT over the minor axes (2, 3), transpose back;
* ``dft_matmul``: the 2-D real DFT as dense matmuls with precomputed twiddles (grids up to ``--dft-max``);
* ``rfft2_bf16``: bfloat16 input upcast to float32 for the FFT (XLA has no bf16 FFT), result cast back;
* ``fourier_unit_fwd``: ``ffc.FourierUnit`` (FFT, 1x1 conv 384->384, BN, ReLU, inverse FFT), eval mode;
* ``fourier_unit_fwd_bwd``: its gradient w.r.t. input and parameters in train mode (BN batch statistics).

``--torch-python PATH`` also times ``torch.fft.rfftn``/``irfftn`` and the PyTorch FourierUnit of
``benchmarks/torch_reference.py`` on the same shapes (a separate venv with torch, see that file).

Usage::

    python benchmarks/fft_kernels.py                       # sizes 256,512,1024, batch 1
    python benchmarks/fft_kernels.py --sizes 256,512,1024,2048 --batches 1,4,16 --json out/fft.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

VARIANTS = ("rfft2_nhwc", "rfft2_minor", "dft_matmul", "rfft2_bf16", "fourier_unit_fwd",
            "fourier_unit_fwd_bwd")


def _round_trip_nhwc(x):
    import jax.numpy as jnp

    h, w = x.shape[1:3]
    return jnp.fft.irfft2(jnp.fft.rfft2(x, axes=(1, 2), norm="ortho"), s=(h, w), axes=(1, 2), norm="ortho")


def _round_trip_minor(x):
    import jax.numpy as jnp

    h, w = x.shape[1:3]
    y = x.transpose(0, 3, 1, 2)
    y = jnp.fft.irfft2(jnp.fft.rfft2(y, axes=(2, 3), norm="ortho"), s=(h, w), axes=(2, 3), norm="ortho")
    return y.transpose(0, 2, 3, 1)


def dft_matrices(h: int, w: int):
    """Real matrices of the ortho 2-D real DFT and its inverse for an ``h x w`` grid (numpy, float32).

    Forward: along W ``(w, wf)`` cosine and sine parts (wf = w//2 + 1), along H the ``(h, h)`` complex DFT.
    Inverse: the conjugate H transform, then the real inverse along W with the Hermitian weights (1 for the
    DC and, for even w, the Nyquist column; 2 for the others), so that it equals ``irfft2(..., s=(h, w))``.
    """
    import numpy as np

    wf = w // 2 + 1
    kw = np.outer(np.arange(w), np.arange(wf)) * (2 * np.pi / w)
    kh = np.outer(np.arange(h), np.arange(h)) * (2 * np.pi / h)
    scale = 1.0 / np.sqrt(h * w)
    weights = np.full(wf, 2.0)
    weights[0] = 1.0
    if w % 2 == 0:
        weights[-1] = 1.0
    return {
        "w_cos": (np.cos(kw) * scale).astype(np.float32), "w_sin": (-np.sin(kw) * scale).astype(np.float32),
        "h_cos": np.cos(kh).astype(np.float32), "h_sin": (-np.sin(kh)).astype(np.float32),
        "iw_cos": (weights[:, None] * np.cos(kw.T) * scale).astype(np.float32),
        "iw_sin": (-weights[:, None] * np.sin(kw.T) * scale).astype(np.float32),
    }


def _round_trip_dft(x, mats):
    """The round trip as matmuls over NHWC: W stage, H stage (complex as real pairs), and back."""
    import jax.numpy as jnp

    hi = "highest"
    ein = jnp.einsum
    re = ein("nhwc,wk->nhkc", x, mats["w_cos"], precision=hi)
    im = ein("nhwc,wk->nhkc", x, mats["w_sin"], precision=hi)
    # H stage, forward DFT: (re + i im)(cos - i sin) with h_sin = -sin.
    f_re = ein("nhkc,hj->njkc", re, mats["h_cos"], precision=hi) - ein("nhkc,hj->njkc", im, mats["h_sin"],
                                                                        precision=hi)
    f_im = ein("nhkc,hj->njkc", re, mats["h_sin"], precision=hi) + ein("nhkc,hj->njkc", im, mats["h_cos"],
                                                                        precision=hi)
    # Inverse H stage (conjugate twiddles), then the real inverse along W (scale folded into iw_*).
    g_re = ein("njkc,jh->nhkc", f_re, mats["h_cos"], precision=hi) + ein("njkc,jh->nhkc", f_im, mats["h_sin"],
                                                                          precision=hi)
    g_im = ein("njkc,jh->nhkc", f_im, mats["h_cos"], precision=hi) - ein("njkc,jh->nhkc", f_re, mats["h_sin"],
                                                                          precision=hi)
    return (ein("nhkc,kw->nhwc", g_re, mats["iw_cos"], precision=hi)
            + ein("nhkc,kw->nhwc", g_im, mats["iw_sin"], precision=hi))


def build_variants(shape, names, dft_max: int, seed: int = 0):
    """``{name: (jitted_fn, args, reference_or_None)}`` for the requested variants on an NHWC shape."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxinpaint.nn import ffc

    n, h, w, c = shape
    x_np = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x = jnp.asarray(x_np)
    out = {}
    # An independent reference (numpy's pocketfft, float64); it also keeps XLA's cache out of compile times.
    reference = np.fft.irfft2(np.fft.rfft2(x_np.astype(np.float64), axes=(1, 2), norm="ortho"), s=(h, w),
                              axes=(1, 2), norm="ortho")
    if "rfft2_nhwc" in names:
        out["rfft2_nhwc"] = (jax.jit(_round_trip_nhwc), (x,), reference)
    if "rfft2_minor" in names:
        out["rfft2_minor"] = (jax.jit(_round_trip_minor), (x,), reference)
    if "dft_matmul" in names and max(h, w) <= dft_max:
        mats = {k: jnp.asarray(v) for k, v in dft_matrices(h, w).items()}
        out["dft_matmul"] = (jax.jit(_round_trip_dft), (x, mats), reference)
    if "rfft2_bf16" in names:
        xb = x.astype(jnp.bfloat16)
        ref_bf16 = np.fft.irfft2(np.fft.rfft2(np.asarray(xb, np.float64), axes=(1, 2), norm="ortho"),
                                 s=(h, w), axes=(1, 2), norm="ortho")
        out["rfft2_bf16"] = (jax.jit(lambda a: _round_trip_nhwc(a.astype(jnp.float32)).astype(jnp.bfloat16)),
                             (xb,), ref_bf16)
    if {"fourier_unit_fwd", "fourier_unit_fwd_bwd"} & set(names):
        unit = ffc.FourierUnit(c)
        variables = unit.init(jax.random.key(seed), x[:1])
        if "fourier_unit_fwd" in names:
            out["fourier_unit_fwd"] = (jax.jit(lambda v, a: unit.apply(v, a)), (variables, x), None)
        if "fourier_unit_fwd_bwd" in names:
            target = jnp.asarray(np.random.default_rng(seed + 1).standard_normal(shape), jnp.float32)

            def loss(params, stats, a):
                y, _ = unit.apply({"params": params, "batch_stats": stats}, a, train=True,
                                  mutable=["batch_stats"])
                return jnp.mean(jnp.abs(y - target))

            grad = jax.jit(jax.grad(loss, argnums=(0, 2)))
            out["fourier_unit_fwd_bwd"] = (grad, (variables["params"], variables["batch_stats"], x), None)
    return out


def run_jax(sizes, batches, channels, names, repeats, dft_max) -> list[dict]:
    import numpy as np

    rows = []
    for size in sizes:
        for batch in batches:
            shape = (batch, size // 8, size // 8, channels)
            variants = build_variants(shape, names, dft_max)
            compiled, meta = {}, {}
            for name, (fn, args, ref) in variants.items():
                exe, seconds = common.compile_timed(fn, *args)
                result = common.block(exe(*args))
                err = None
                if ref is not None:
                    err = float(np.abs(np.asarray(result, np.float32) - np.asarray(ref)).max())
                compiled[name] = (lambda e=exe, a=args: common.block(e(*a)))
                meta[name] = {"compile_s": seconds, "max_abs_err": err}
            timings = common.interleaved(compiled, repeats)
            for name in variants:
                rows.append({"framework": "jax", "size": size, "batch": batch,
                             "shape": "x".join(map(str, shape)), "variant": name, **meta[name],
                             **timings[name],
                             "loadavg": os.getloadavg()[0]})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def run_torch(python: str, sizes, batches, channels, repeats) -> list[dict]:
    """Runs ``torch_reference.py --fft`` in the torch venv and returns its rows."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
    cmd = [python, script, "--fft", "--sizes", ",".join(map(str, sizes)), "--batches",
           ",".join(map(str, batches)), "--channels", str(channels), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"--torch-python {python}: torch_reference.py failed:\n{proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main(argv=None) -> int:
    common.ensure_malloc_tunables()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512,1024", help="input image sizes; the FFT grid is size/8")
    parser.add_argument("--batches", default="1", help="batch sizes, e.g. 1,4,16")
    parser.add_argument("--channels", type=int, default=192, help="FourierUnit channels (Big LaMa: 192)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=20, help="interleaved rounds (medians over these)")
    parser.add_argument("--dft-max", type=int, default=64, help="largest grid side for the DFT-as-matmul")
    parser.add_argument("--torch-python", default=None, help="python of a venv with torch==2.13.0")
    parser.add_argument("--json", default=None, help="also write the rows and the environment here")
    args = parser.parse_args(argv)
    sizes = common.parse_ints(args.sizes, "--sizes")
    if any(s % 8 for s in sizes):
        raise SystemExit(f"--sizes: each size must be a multiple of 8 (bottleneck: size/8), got {sizes}")
    batches = common.parse_ints(args.batches, "--batches")
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")

    env = common.environment()
    rows = run_jax(sizes, batches, args.channels, names, args.repeats, args.dft_max)
    if args.torch_python:
        rows += run_torch(args.torch_python, sizes, batches, args.channels, args.repeats)
    for r in rows:
        for key in ("median_s", "min_s", "cpu_median_s"):
            r[key.replace("_s", "_ms")] = r[key] * 1e3
    print(f"# jax {env['jax']} on {env['backend']}, {env['cpu_count']} CPUs, load {env['loadavg'][0]:.2f}, "
          f"malloc tuned: {env['malloc_tuned']}")
    print(common.format_table(rows, [
        ("framework", "fw", "{}"), ("size", "size", "{}"), ("batch", "N", "{}"), ("shape", "shape", "{}"),
        ("variant", "variant", "{}"), ("compile_s", "compile s", "{:.2f}"),
        ("median_ms", "median ms", "{:.3f}"), ("min_ms", "min ms", "{:.3f}"),
        ("cpu_median_ms", "cpu ms", "{:.3f}"),
        ("max_abs_err", "max err", "{:.1e}"),
    ]))
    if args.json:
        common.write_json(args.json, {"environment": env, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
