"""``jaxinpaint export SOURCE OUT`` (``python -m jaxinpaint.export``): a trained model's inference networks as
safetensors + config.json + a model card, and a StableHLO artefact that runs without jaxinpaint.

    jaxinpaint export workdirs/big_lama exported/big_lama                 # latest checkpoint, EMA weights
    jaxinpaint export converted/big-lama exported/big-lama --platforms=cpu,cuda
    jaxinpaint export workdirs/run1 out/ --step=20000 --no_ema --no_stablehlo

What the directory holds and how to run it: ``jaxinpaint.export``. ``jaxinpaint.load(OUT)``,
``jaxinpaint predict --model=OUT`` and ``jaxinpaint serve --model=OUT`` read it back.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from jaxinpaint.cli import common

PROG = "jaxinpaint export"


def _parser() -> common.ArgumentParser:
    from jaxinpaint import export

    p = common.ArgumentParser(prog=PROG, description="Export a trained model's inference networks (EMA weights when "
                              "kept) as safetensors + config.json + a model card, and a StableHLO artefact with "
                              "symbolic sizes that runs without jaxinpaint.")
    p.add_argument("source", help="training workdir, converted directory, original weight file or export")
    p.add_argument("output", help="output directory (must not exist, or be empty)")
    p.add_argument("--step", type=int, default=None, help="workdir checkpoint step (default: the latest)")
    p.add_argument("--no_ema", action="store_true", help="export the raw weights, not the EMA ones")
    p.add_argument("--no_stablehlo", action="store_true",
                   help="write only the safetensors weights, config.json and the model card")
    p.add_argument("--platforms", default=",".join(export.DEFAULT_PLATFORMS),
                   help="comma-separated platforms the StableHLO artefact is lowered for (cpu, cuda, rocm, tpu)")
    common.add_verbose(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    common.setup_logging(args.verbose)
    from jaxinpaint import export
    from jaxinpaint.io import checkpoint

    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    try:
        unknown = sorted(set(platforms) - {"cpu", "cuda", "rocm", "tpu"})
        if unknown or not platforms:
            raise common.UsageError(f"--platforms={args.platforms}: choose among cpu, cuda, rocm, tpu")
        if not os.path.exists(args.source):
            from jaxinpaint import systems

            if args.source in systems.names("solver"):
                raise common.UsageError(f"{args.source} is a per-image method, not a trained model: there are no "
                                        "weights to export")
            raise common.UsageError(f"{args.source}: no such file or directory (give a training workdir, a "
                                    "directory from `jaxinpaint convert`, an original weight file or an export)")
        if args.step is not None and not checkpoint.is_training_workdir(args.source):
            raise common.UsageError(f"--step applies to training workdirs only; {args.source} is not one")
        meta = export.export(args.source, args.output, step=args.step, ema=not args.no_ema,
                             stablehlo=not args.no_stablehlo, platforms=platforms)
    except common.UsageError as e:
        return common.fail(PROG, e)
    except (export.ExportError, FileNotFoundError, ValueError, KeyError, OSError) as e:
        return common.fail(PROG, f"{args.source}: {e}")
    files = [export.WEIGHTS, export.CONFIG, export.CARD] + ([export.STABLEHLO] if meta["stablehlo"] else [])
    print(f"wrote {args.output} ({meta['system']}: {', '.join(files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
