"""Public entry point for the metrics (``jaxinpaint.metrics.psnr``, ``ssim``...); they live in
``jaxinpaint.evaluation.metrics``."""

from jaxinpaint.evaluation.metrics import *  # noqa: F401,F403
from jaxinpaint.evaluation.metrics import __all__  # noqa: F401
