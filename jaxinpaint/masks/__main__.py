"""``python -m jaxinpaint.masks [--n 1000] [NAME ...]``: hole-area statistics of the mask generators."""

from jaxinpaint.masks import _main

_main()
