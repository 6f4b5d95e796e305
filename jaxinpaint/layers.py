"""Public layer API: the reusable building blocks of jaxinpaint's models, in one import.

Everything here is NHWC and stores convolution kernels as HWIO ``kernel`` plus ``bias``:

* torch-semantics convolutions: :class:`Conv2D`, :class:`ConvTranspose2D`;
* partial convolution (NVIDIA semantics, masks 1 = valid): :class:`PartialConv2D`;
* DeepFill v2: :class:`GatedConv2D`, :class:`GatedDeconv2D`, :func:`contextual_attention`,
  :func:`attention_offsets`;
* LaMa's Fast Fourier Convolutions: :class:`FourierUnit`, :class:`SpectralTransform`, :class:`FFC`,
  :class:`FFCBnAct`, :class:`FFCResnetBlock`.

The implementations live in ``jaxinpaint.nn.*``; this module only re-exports them so that user code does
not depend on the internal file layout.
"""

from jaxinpaint.nn.ffc import FFC, FFCBnAct, FFCResnetBlock, FourierUnit, SpectralTransform
from jaxinpaint.nn.gated_conv import GatedConv2D, GatedDeconv2D, attention_offsets, contextual_attention
from jaxinpaint.nn.conv import Conv2D, ConvTranspose2D
from jaxinpaint.nn.partial_conv import PartialConv2D

__all__ = [
    "Conv2D",
    "ConvTranspose2D",
    "FFC",
    "FFCBnAct",
    "FFCResnetBlock",
    "FourierUnit",
    "GatedConv2D",
    "GatedDeconv2D",
    "PartialConv2D",
    "SpectralTransform",
    "attention_offsets",
    "contextual_attention",
]
