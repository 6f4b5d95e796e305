"""``jaxinpaint convert SOURCE OUTPUT_DIR``: the original authors' weights -> a jaxinpaint model directory.

    jaxinpaint convert big-lama/models/best.ckpt converted/big-lama          # LaMa, recognised by its keys
    jaxinpaint convert SOURCE OUT --system=lama                              # name the system explicitly

SOURCE is read without PyTorch and without running any pickled code (``jaxinpaint.io.torch_pickle``). The
output directory (written atomically; it must not exist or be empty) is what ``jaxinpaint.load``,
``jaxinpaint predict --model=OUT`` and ``train.py --config.init_from=OUT`` start from.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import jax
import numpy as np

from jaxinpaint.cli import common

log = logging.getLogger("jaxinpaint.convert")


UsageError = common.UsageError


def _parser() -> common.ArgumentParser:
    p = common.ArgumentParser(
        prog="jaxinpaint convert",
        description="Convert an inpainting system's original released weights into a jaxinpaint model "
                    "directory (for jaxinpaint.load, predict, evaluate and --config.init_from). Needs no PyTorch.")
    p.add_argument("source", help="original weight file, e.g. big-lama/models/best.ckpt")
    p.add_argument("output", help="output directory (must not exist, or be empty)")
    p.add_argument("--system", default="auto", help="the system the weights belong to (auto: recognised from the "
                   "file's keys)")
    p.add_argument("--no-discriminator", action="store_true",
                   help="keep only the networks inference needs, even if the source has a discriminator")
    common.add_verbose(p)
    return p


def _pick_system(source: str, name: str):
    from jaxinpaint import systems

    try:
        system = systems.for_weights(source) if name == "auto" else systems.get(name)
    except systems.UnknownNameError as e:
        raise UsageError(f"{e} (--system=NAME)" if name == "auto" else str(e)) from e
    if getattr(system, "load_original", None) is None:
        raise UsageError(f"--system={name}: no converter for its original weights")
    return system


def convert(source: str, output: str, *, system: str = "auto", discriminator: bool = True) -> str:
    """Converts ``source`` into the model directory ``output``; returns the system name."""
    from jaxinpaint.io import checkpoint

    owner = _pick_system(source, system)
    models = owner.load_original(source)
    if not discriminator:
        models = {n: m for n, m in models.items() if n in owner.inference_networks}
    checkpoint.save_models(output, owner.name, models, inference=owner.default_inference(),
                           source=os.path.abspath(source))
    for name, (module, variables) in models.items():
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables.get("params", {})))
        log.info("%s: %s, %s parameters", name, type(module).__name__, f"{n:,}")
    if discriminator and not any("discriminator" in n for n in models):
        log.info("%s has no discriminator weights (e.g. LaMa's plain big-lama release; big-lama-with-discr has "
                 "them): fine-tuning will start from a fresh discriminator.", source)
    return owner.name


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    common.setup_logging(args.verbose, stream=sys.stdout)
    try:
        if not os.path.exists(args.source):
            raise UsageError(f"{args.source}: no such file (the original weights are not downloaded "
                             "automatically; see the README for where each system's release is)")
        if os.path.exists(args.output) and (not os.path.isdir(args.output) or os.listdir(args.output)):
            raise UsageError(f"{args.output} exists and is not an empty directory; choose a new output directory")
        name = convert(args.source, args.output, system=args.system, discriminator=not args.no_discriminator)
    except UsageError as e:
        return common.fail(parser.prog, e)
    except (ValueError, OSError) as e:  # not a weight file of that system, unreadable, refused pickle
        return common.fail(parser.prog, f"{args.source}: {e}")
    log.info("wrote %s (%s)", args.output, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
