"""``python -m jaxinpaint.make_eval_set``: the same as ``jaxinpaint make_eval_set`` (the command lives in
``jaxinpaint.cli.make_eval_set``)."""

import sys

from jaxinpaint.cli.make_eval_set import main

if __name__ == "__main__":
    sys.exit(main())
