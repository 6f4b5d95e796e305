"""Shared building blocks of the systems' networks (NHWC, kernels HWIO + bias).

* ``conv``: torch-semantics ``Conv2D`` / ``ConvTranspose2D`` and their measured CPU formulations (Winograd,
  matmul, sub-pixel), initialisers, padding, activations;
* ``norm``: BatchNorm with statistics groups (per-device statistics like PyTorch DDP);
* ``spectral_norm``: spectral normalisation and a spectrally normalised convolution;
* ``partial_conv``: NVIDIA's partial convolution; ``gated_conv``: gated convolutions and contextual
  attention (DeepFill); ``ffc``: LaMa's Fast Fourier Convolutions;
* ``pix2pixhd``: the NLayer PatchGAN discriminator and pix2pixHD's global generator.

The public selection is re-exported by ``jaxinpaint.layers``.
"""
