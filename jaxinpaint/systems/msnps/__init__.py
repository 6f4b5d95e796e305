"""MSNPS, Multi-Scale Neural Patch Synthesis (Yang et al., CVPR 2017), as the per-image solver ``"msnps"``.

    python train.py --config=configs/msnps.py --workdir=workdirs/msnps_content      # the content network
    python -m jaxinpaint.predict --model=msnps --image=I --mask=M --output=O \
        --option content_model=workdirs/msnps_content --option vgg_weights=vgg19_caffe.npz

``jaxinpaint.load('msnps', content_model=..., vgg_weights=...)`` does the same in Python; ``preset='smoke'``
runs one small scale. :mod:`~jaxinpaint.systems.msnps.solver` documents the pipeline,
:mod:`~jaxinpaint.systems.msnps.lbfgs` the optimiser and :mod:`~jaxinpaint.systems.msnps.mrf` the texture term.
"""

from jaxinpaint import contract
from jaxinpaint.systems.msnps import solver

SOLVER = contract.Solver(
    name="msnps",
    title="MSNPS (Yang et al. 2017): Context Encoder content, then VGG-19 neural patch synthesis at 3 scales",
    default_config=solver.default_config,
    load_resources=solver.load_resources,
    host_solve=solver.host_solve,
    size_multiple=lambda config: 1,
    iterations=solver.iterations,
    licence="research only (leehomyc/Faster-High-Res-Neural-Inpainting)",
)
