"""jaxinpaint: deep image inpainting in JAX/Flax — LaMa, partial convolutions, DeepFill and the field's other
landmark systems, with one trainer and one inference path.

    import jaxinpaint
    model = jaxinpaint.load("converted/big-lama")     # a workdir, a converted directory, a .ckpt, or "tv"
    result = model.inpaint(image, mask)                # PIL in -> PIL out; pixels outside the hole unchanged

Conventions used everywhere in the package:
  * images are NHWC float32 in [0, 1];
  * masks are NHWC float32 with one channel, 1 = hole (each system converts at its own boundary);
  * a batch is ``{'image': f32[B, H, W, 3], 'mask': f32[B, H, W, 1]}`` plus what a system's preparation adds.

The system contract (how a system plugs into the trainer and the inference path) is in
``jaxinpaint.contract``; the registry of systems and solvers in ``jaxinpaint.systems``.
"""

__version__ = "0.2.0"

__all__ = ["Inpainter", "load", "__version__"]


def load(source, **kwargs):
    """``jaxinpaint.api.load``: an inpainter for a workdir, model directory, weight file or solver name."""
    from jaxinpaint import api

    return api.load(source, **kwargs)


def __getattr__(name):
    if name == "Inpainter":
        from jaxinpaint.api import Inpainter

        return Inpainter
    raise AttributeError(f"module 'jaxinpaint' has no attribute {name!r}")
