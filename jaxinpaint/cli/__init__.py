"""The command line: ``jaxinpaint <command> ...`` (installed as a console script).

    jaxinpaint train --config=big_lama:smoke --workdir=W     # the one trainer (also: python train.py ...)
    jaxinpaint predict --model=SOURCE --input_dir=IN --output_dir=OUT
    jaxinpaint evaluate --model=SOURCE --input_dir=EVALSET
    jaxinpaint convert SOURCE OUTPUT_DIR                       # the original authors' weights
    jaxinpaint make_eval_set --input_dir=PHOTOS --output_dir=EVALSET
    jaxinpaint demo --workdir=workdirs/demo                    # short training + inpainting on built-in photos
    jaxinpaint export SOURCE OUT                               # safetensors + StableHLO + model card
    jaxinpaint serve --model=SOURCE                            # a local page: paint a mask, inpaint, download

Every command also runs as ``python -m jaxinpaint.<command>``; ``jaxinpaint <command> --help`` lists its flags.
User mistakes are reported as one ``error:`` line with exit status 2.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("jaxinpaint.cli.train", "train a system with a config (the one trainer)"),
    "predict": ("jaxinpaint.cli.predict", "inpaint a folder or one image with a model or per-image method"),
    "evaluate": ("jaxinpaint.cli.evaluate", "PSNR/SSIM/L1/LPIPS/FID of a model or of saved predictions"),
    "convert": ("jaxinpaint.cli.convert", "convert the original authors' weights into a model directory"),
    "make_eval_set": ("jaxinpaint.cli.make_eval_set", "write fixed image/mask evaluation pairs (LaMa's tool)"),
    "demo": ("jaxinpaint.cli.demo", "the main job: short training on built-in photos, then inpainting"),
    "export": ("jaxinpaint.cli.export", "a model's inference networks as safetensors + StableHLO + a model card"),
    "serve": ("jaxinpaint.cli.serve", "a local web page (and JSON/HTTP endpoint) to paint masks and inpaint"),
}


def _usage() -> str:
    lines = ["usage: jaxinpaint <command> [flags]   (jaxinpaint <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from jaxinpaint import __version__

        print(f"jaxinpaint {__version__}")
        return 0
    name = argv[0].replace("-", "_")
    if name not in COMMANDS:
        print(f"jaxinpaint: error: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)} (jaxinpaint --help)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
