"""``python -m jaxinpaint.evaluate``: the same as ``jaxinpaint evaluate`` (the command lives in
``jaxinpaint.cli.evaluate``)."""

import sys

from jaxinpaint.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
