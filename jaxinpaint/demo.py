"""``python -m jaxinpaint.demo``: the same as ``jaxinpaint demo`` (the command lives in ``jaxinpaint.cli.demo``)."""

import sys

from jaxinpaint.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
