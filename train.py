"""Trains an inpainting system: ``python train.py --config=configs/big_lama.py --workdir=DIR``.

Intentionally thin (the Flax examples' ``main.py``): everything is in ``jaxinpaint.cli.train`` (flags, one-line
errors, multi-host initialisation) and ``jaxinpaint.train.trainer.train_and_evaluate``. Rerunning the same
command on an existing workdir resumes from its latest checkpoint. Overrides: ``--config.input.batch_size=16``;
variants: ``--config=configs/big_lama.py:smoke``. ``jaxinpaint train`` is the same command, installed.
"""

import sys

from jaxinpaint.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
