"""Weight import from the original LaMa code (public entry point) and ``python -m jaxinpaint.convert``.

    from jaxinpaint.convert import load_lama_generator, load_lama_discriminator
    model, variables = load_lama_generator("big-lama/models/best.ckpt")   # no PyTorch needed

The implementation lives in ``jaxinpaint.systems.lama.convert``; the command in ``jaxinpaint.cli.convert``.
"""

import sys

from jaxinpaint.systems.lama.convert import (ConversionError, load_lama_discriminator, load_lama_generator,
                                             read_state_dict)

__all__ = ["ConversionError", "load_lama_discriminator", "load_lama_generator", "main", "read_state_dict"]


def main(argv=None) -> int:
    from jaxinpaint.cli.convert import main as _main

    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
