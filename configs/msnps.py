"""MSNPS's content network (Yang et al., CVPR 2017; systems-more.md §5.1): a Context Encoder centre generator.

    python train.py --config=configs/msnps.py --workdir=workdirs/msnps_content \
        --config.input.source=folder --config.input.folder=/data/imagenet     # the released net's data
    python train.py --config=configs/msnps.py:smoke --workdir=/tmp/msnps_smoke   # seconds on a CPU

    # then the per-image texture optimisation (the solver "msnps", jaxinpaint/systems/msnps/):
    python -m jaxinpaint.predict --model=msnps --image=I --mask=M --output=O \
        --option content_model=workdirs/msnps_content --option vgg_weights=vgg19_caffe.npz

MSNPS trains nothing of its own: its content network is ``models/imagenet_inpaintCenter.t7``, a Context
Encoder G trained with the CE code on ImageNet [maint, #3 and #24], with the plain FC bottleneck (a user's
observation in #31, §5.1). So this config *is* ``configs/context_encoder.py``'s centre variant (the same
system, ``context_encoder``; no code of its own, no registry name): 128² input, the 64² centre predicted, the
inner 56² filled with the mean colour (overlap 4), nB 4000, wtl2 0.999, the README's optimiser and schedule.
The solver reads the generator and its ``inference.overlap`` from the workdir.

What differs from ``context_encoder.py``:

* ``input.source``: the released net saw ImageNet, which jaxinpaint cannot fetch; the default is the photos
  built into installed wheels (``'builtin'``, enough to run the pipeline, not to reproduce the released
  weights). Point ``--config.input.source=folder --config.input.folder=...`` at ImageNet (or any photo folder)
  for a real content network. The schedule (500 epochs of ⌈N/64⌉ steps) counts Paris StreetView's ~14,900
  images, as the CE README; set ``total_steps`` for other data.
* ``:smoke``: the generator at tiny width (8) but the MSNPS input size, 128² (the solver's geometry), a few
  dozen steps: well under a minute on 2 CPU cores.
"""

import importlib.util
import pathlib

from jaxinpaint import config_lib


def _context_encoder_config():
    """``configs/context_encoder.py``, loaded by path (configs are files, not a package on every install)."""
    path = pathlib.Path(__file__).with_name("context_encoder.py")
    spec = importlib.util.spec_from_file_location("_jaxinpaint_config_context_encoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    variants = config_lib.parse_variants(arg, {"smoke"})
    c = _context_encoder_config().get_config()  # the centre variant, README settings
    c.input.source = "builtin"  # ImageNet in the original (see the module docstring)
    if "smoke" in variants:
        c.generator.nef = c.generator.ngf = 8
        c.generator.n_bottleneck = 32
        c.discriminator.ndf = 8
        c.input.batch_size = 8
        c.input.short_side_range = (1.0, 1.0)
        config_lib.smoke_schedule(c, total_steps=20)
        c.eval_every_steps = 0
    return c
