"""``python -m jaxinpaint.predict``: the same as ``jaxinpaint predict`` (the command lives in
``jaxinpaint.cli.predict``)."""

import sys

from jaxinpaint.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
