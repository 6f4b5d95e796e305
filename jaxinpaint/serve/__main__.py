"""``python -m jaxinpaint.serve --model=SOURCE``: the same as ``jaxinpaint serve``."""

import sys

from jaxinpaint.cli.serve import main

sys.exit(main())
