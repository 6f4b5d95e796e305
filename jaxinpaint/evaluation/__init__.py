"""Evaluation shared by the trainer and the ``evaluate`` command: PSNR/SSIM/L1 exactly as LaMa computes
them (``metrics``), LPIPS-VGG (``lpips``), FID/KID on pytorch-fid's Inception (``fid``), and the training
evaluator (``evaluator``)."""
