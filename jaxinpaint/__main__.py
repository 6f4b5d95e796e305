"""``python -m jaxinpaint <command>``: the same as the ``jaxinpaint`` console command."""

import sys

from jaxinpaint.cli import main

sys.exit(main())
