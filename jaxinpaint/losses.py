"""Pure loss functions shared by the inpainting systems.

Every loss is a keyword-only function of arrays that returns a float32 scalar; none holds state or hooks
(magvit's ``videogvt/train_lib/losses.py`` is the model). Weights (LaMa's 10 / 100 / 30, PConv's 6 / 0.05 /
120 ...) are applied by the trainers, never here, except where the original formula has the weights inside
(``masked_l1``).

Layout conventions: images and feature maps are NHWC; masks are float (B, H, W, 1) with 1 = hole, the
project-wide convention. Discriminator logits are NHWC too, e.g. (B, 19, 19, 1) for LaMa's PatchGAN at 256².

The perceptual losses at the end receive the frozen backbone's variables as an argument (the backbones live
in ``jaxinpaint.backbones``: LaMa's ADE20k ResNet50 for the HRF loss, VGG16 for PConv's perceptual and style
terms); they hold no weights themselves.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _check_same_shape(name_a: str, a: Array, name_b: str, b: Array, where: str) -> None:
    """Raises a ValueError naming the arguments when two arrays that are compared elementwise differ."""
    if a.shape != b.shape:
        raise ValueError(f"{where}: {name_a} has shape {a.shape} but {name_b} has shape {b.shape}")


def _check_mask(mask: Array, image: Array, where: str) -> None:
    """A mask must be (B, H, W, 1) over an image (B, H, W, C), so it broadcasts over the channels."""
    if mask.ndim != 4 or mask.shape[-1] != 1 or mask.shape[:3] != image.shape[:3]:
        raise ValueError(
            f"{where}: mask must have shape (B, H, W, 1) = {image.shape[:3] + (1,)} to match the image "
            f"{image.shape}, got {mask.shape}")


# ----------------------------------------------------------------------------------------------------------
# Pixel losses.
# ----------------------------------------------------------------------------------------------------------


def masked_l1(*, pred: Array, target: Array, mask: Array, weight_missing: float = 0.0,
              weight_known: float = 10.0) -> Array:
    """LaMa's masked L1: mean over B, H, W, C of |pred - target| · (w_miss·m + w_known·(1 - m)).

    Port of ``saicinpainting/training/losses/feature_matching.py::masked_l1_loss`` (advimman/lama). Big-LaMa
    sets ``weight_missing=0, weight_known=10``: the hole is left to the adversarial and perceptual terms, and
    only the known pixels are pulled towards the input. The weights are part of the formula, so the trainer
    adds this term with weight 1.

    Args:
      pred: predicted image (B, H, W, C).
      target: ground truth (B, H, W, C).
      mask: (B, H, W, 1), 1 = hole; broadcast over the channels, as in LaMa (the mean still counts every
        channel element).
      weight_missing: weight inside the hole.
      weight_known: weight on the known pixels.

    Returns:
      float32 scalar.
    """
    _check_same_shape("pred", pred, "target", target, "masked_l1")
    _check_mask(mask, pred, "masked_l1")
    weights = mask * weight_missing + (1.0 - mask) * weight_known
    return jnp.mean(jnp.abs(pred - target) * weights).astype(jnp.float32)


def l1(*, pred: Array, target: Array) -> Array:
    """Plain mean absolute error over all elements, torch ``nn.L1Loss()`` with its default 'mean'.

    Used by PConv (hole / valid terms on pre-multiplied images) and DeepFill v2 (``ae_loss`` on both stages).
    """
    _check_same_shape("pred", pred, "target", target, "l1")
    return jnp.mean(jnp.abs(pred - target)).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------
# Adversarial losses.
# ----------------------------------------------------------------------------------------------------------


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices that torch ``F.interpolate(mode='nearest')`` reads for one axis.

    torch computes ``min(floor(i · scale), in - 1)`` with ``scale = float32(in) / out`` in float32
    (``aten/src/ATen/native/UpSample.h::nearest_idx``; exactly ``i // 2`` when out == 2·in). The float32
    arithmetic is reproduced here, so sizes that do not divide (256 -> 19) pick the same pixels as LaMa.
    Note this is 'nearest', not 'nearest-exact': it reads the top-left pixel of each cell, not its centre.
    """
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"nearest_indices: sizes must be positive, got {in_size} -> {out_size}")
    if out_size == in_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) // 2
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def interpolate_mask_nearest(mask: Array, shape: Sequence[int]) -> Array:
    """Resizes an NHWC mask to spatial ``shape`` = (h, w) by torch-convention nearest interpolation.

    LaMa (``BaseAdversarialLoss.interpolate_mask`` with ``mask_scale_mode='nearest'``) resizes the
    (B, 1, 256, 256) mask onto the discriminator's logits grid with ``F.interpolate(mode='nearest')`` before
    weighting the fake loss. The indices are static (computed with numpy from the shapes), so this is a
    gather that jits to a constant-index ``take``.

    Args:
      mask: (B, H, W, C) array.
      shape: output spatial size (h, w).

    Returns:
      (B, h, w, C) array of the same dtype.
    """
    if mask.ndim != 4:
        raise ValueError(f"interpolate_mask_nearest: mask must be NHWC (4-D), got shape {mask.shape}")
    if len(shape) != 2:
        raise ValueError(f"interpolate_mask_nearest: shape must be the spatial (h, w), got {tuple(shape)}")
    out_h, out_w = int(shape[0]), int(shape[1])
    rows = nearest_indices(mask.shape[1], out_h)
    cols = nearest_indices(mask.shape[2], out_w)
    return jnp.take(jnp.take(mask, rows, axis=1), cols, axis=2)


def nonsat_generator_loss(*, fake_logits: Array) -> Array:
    """Non-saturating generator loss mean(softplus(-D(fake))).

    LaMa's ``NonSaturatingWithR1.generator_loss`` with the Big-LaMa settings (``extra_mask_weight_for_gen=0``,
    ``use_unmasked_for_gen=True``): no mask weighting, mean over every logit. The weight (10) is applied by
    the trainer.
    """
    return jnp.mean(jax.nn.softplus(-fake_logits)).astype(jnp.float32)


def nonsat_discriminator_loss(*, real_logits: Array, fake_logits: Array, mask: Array | None = None,
                              mask_as_fake_target: bool = True) -> Array:
    """LaMa's non-saturating discriminator loss, without the R1 term (add ``gp_coef · r1_penalty``).

    Port of ``saicinpainting/training/losses/adversarial.py::NonSaturatingWithR1.discriminator_loss``:
    ``real = softplus(-D(x))``; ``fake = m_s·softplus(D(ŷ)) + (1 - m_s)·softplus(-D(ŷ))`` with
    ``mask_as_fake_target`` (the known area of the prediction counts as *real*, since it should be
    indistinguishable), else ``fake = softplus(D(ŷ))``. LaMa returns ``(real + γ·R1 + fake).mean()``; with
    real and fake logits of one shape that is ``mean(real) + mean(fake) + γ·R1``, which is what this
    function computes (minus R1), so each term may also be logged separately.

    Args:
      real_logits: D(x), NHWC, e.g. (B, 19, 19, 1).
      fake_logits: D(ŷ) with ŷ already stop-gradient'ed by the caller.
      mask: (B, H, W, 1) image-size mask, 1 = hole; resized to the logits grid with torch-convention
        nearest interpolation (``interpolate_mask_nearest``). Required when ``mask_as_fake_target``.
      mask_as_fake_target: Big-LaMa's ``true``.

    Returns:
      float32 scalar.
    """
    real_loss = jnp.mean(jax.nn.softplus(-real_logits))
    if mask_as_fake_target:
        if mask is None:
            raise ValueError("nonsat_discriminator_loss: mask_as_fake_target=True needs mask (B, H, W, 1)")
        if mask.ndim != 4 or fake_logits.ndim != 4 or mask.shape[0] != fake_logits.shape[0]:
            raise ValueError(
                f"nonsat_discriminator_loss: mask {mask.shape} and fake_logits {fake_logits.shape} must both "
                "be NHWC with the same batch size")
        m_s = interpolate_mask_nearest(mask, fake_logits.shape[1:3])
        fake_loss = m_s * jax.nn.softplus(fake_logits) + (1.0 - m_s) * jax.nn.softplus(-fake_logits)
    else:
        fake_loss = jax.nn.softplus(fake_logits)
    return (real_loss + jnp.mean(fake_loss)).astype(jnp.float32)


def logits_and_r1_penalty(*, discriminator_fn: Callable[[Array], Array], real: Array,
                          has_aux: bool = False):
    """D(real) and the R1 penalty from a single forward pass (the D step needs both).

    R1 (Mescheder et al. 2018) as LaMa's ``make_r1_gp``: ``g = ∂ Σ D(real) / ∂ real``, then
    ``mean_b ||g_b||²`` (squared L2 norm of each sample's gradient, averaged over the batch). The gradient is
    a ``jax.vjp`` of ``discriminator_fn`` with an all-ones cotangent. When the D loss that contains this
    penalty is differentiated with respect to D's parameters (closed over by ``discriminator_fn``), JAX
    differentiates through the vjp: this is the double backprop that torch gets from ``create_graph=True``.

    Args:
      discriminator_fn: real -> logits, or real -> (logits, aux) when ``has_aux`` (e.g. the intermediate
        features or updated batch statistics of a train-mode D).
      real: the real batch (B, H, W, C).
      has_aux: whether ``discriminator_fn`` also returns an auxiliary value.

    Returns:
      ``(logits, penalty)``, or ``(logits, penalty, aux)`` when ``has_aux``. The penalty is a float32 scalar.
    """
    if has_aux:
        logits, vjp_fn, aux = jax.vjp(discriminator_fn, real, has_aux=True)
    else:
        logits, vjp_fn = jax.vjp(discriminator_fn, real)
    (grad,) = vjp_fn(jnp.ones_like(logits))
    per_sample = jnp.sum(jnp.square(grad).reshape(grad.shape[0], -1), axis=1)
    penalty = jnp.mean(per_sample).astype(jnp.float32)
    if has_aux:
        return logits, penalty, aux
    return logits, penalty


def r1_penalty(*, discriminator_fn: Callable[[Array], Array], real: Array) -> Array:
    """R1 gradient penalty mean_b ||∂ Σ D(real) / ∂ real_b||², LaMa's ``make_r1_gp`` (γ = 0.001 there).

    See ``logits_and_r1_penalty`` (which also returns D(real) from the same forward pass) for the double
    backprop this implies.
    """
    return logits_and_r1_penalty(discriminator_fn=discriminator_fn, real=real)[1]


def hinge_discriminator_loss(*, real_logits: Array, fake_logits: Array) -> Array:
    """Hinge D loss 0.5·mean(relu(1 - D(real))) + 0.5·mean(relu(1 + D(fake))).

    DeepFill v2 / neuralgym ``gan_hinge_loss`` (SN-PatchGAN: every element of the flattened output is a
    score).
    """
    loss = 0.5 * jnp.mean(jax.nn.relu(1.0 - real_logits)) + 0.5 * jnp.mean(jax.nn.relu(1.0 + fake_logits))
    return loss.astype(jnp.float32)


def hinge_generator_loss(*, fake_logits: Array) -> Array:
    """Hinge G loss -mean(D(fake)) (neuralgym ``gan_hinge_loss``, DeepFill v2)."""
    return (-jnp.mean(fake_logits)).astype(jnp.float32)


def binary_cross_entropy(*, probs: Array, targets: Array | float) -> Array:
    """torch ``nn.BCELoss()`` on probabilities: mean of -(t·log p + (1 - t)·log(1 - p)), each log clamped at -100.

    For the originals whose networks end in a sigmoid and train with ``nn.BCELoss`` (CTSDG's D and edge
    maps; systems-more.md §1.3 item 11). The clamp makes p = 0 or 1 finite, as in PyTorch; a logits form
    (log-sigmoid) would differ at saturation. Where p is exactly 0 or 1 the gradient of the clamped log is 0.

    Args:
      probs: probabilities in [0, 1], any shape.
      targets: same shape (or a scalar such as 1.0 for "real"), in [0, 1].
    """
    targets = jnp.broadcast_to(jnp.asarray(targets, probs.dtype), probs.shape)

    def clamped_log(x):  # log(x) >= -100 with a finite gradient at x = 0
        positive = x > 0
        return jnp.maximum(jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -100.0), -100.0)

    loss = -(targets * clamped_log(probs) + (1.0 - targets) * clamped_log(1.0 - probs))
    return jnp.mean(loss).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------
# Feature-space losses.
# ----------------------------------------------------------------------------------------------------------


def _check_feature_lists(fake_features, real_features, where: str) -> None:
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError(f"{where}: need equally long, non-empty feature lists, got {len(fake_features)} "
                         f"fake and {len(real_features)} real")
    for i, (f, r) in enumerate(zip(fake_features, real_features)):
        _check_same_shape(f"fake_features[{i}]", f, f"real_features[{i}]", r, where)


def feature_matching(*, fake_features: Sequence[Array], real_features: Sequence[Array]) -> Array:
    """LaMa's discriminator feature matching: the mean over layers of each layer's MSE.

    Port of ``saicinpainting/training/losses/feature_matching.py::feature_matching_loss`` without a mask
    (Big-LaMa does not pass one): ``stack([mse(f, r) for each layer]).mean()``, i.e.
    (1/L) Σ_l mean((f_l - r_l)²)
    over the 5 intermediate activations of the NLayerDiscriminator. Weight 100 in Big-LaMa.
    """
    _check_feature_lists(fake_features, real_features, "feature_matching")
    per_layer = [jnp.mean(jnp.square(f - r)) for f, r in zip(fake_features, real_features)]
    return jnp.mean(jnp.stack(per_layer)).astype(jnp.float32)


def perceptual_l1(*, fake_features: Sequence[Array], real_features: Sequence[Array]) -> Array:
    """Sum over layers of the mean absolute feature difference (PConv's perceptual term for one image).

    naoto0804 ``loss.py``: ``Σ_i l1(feat_output[i], feat_gt[i])`` over VGG16 pool1..pool3; the PConv loss
    adds this for the raw output and for the composite (``pconv_perceptual_and_style`` does both).
    """
    _check_feature_lists(fake_features, real_features, "perceptual_l1")
    return sum(jnp.mean(jnp.abs(f - r)) for f, r in zip(fake_features, real_features)).astype(jnp.float32)


def gram_matrix(features: Array) -> Array:
    """Gram matrices (B, C, C) of NHWC features, divided by C·H·W.

    As in naoto0804 ``loss.py::gram_matrix`` and NVIDIA's ``loss.py`` (the 1/(C·H·W) factor is part of the
    definition, and keeps fp16 from overflowing). Computed at HIGHEST precision: on TPU the default bf16
    matmul passes lose too much in these large sums.
    """
    if features.ndim != 4:
        raise ValueError(f"gram_matrix: features must be NHWC (4-D), got shape {features.shape}")
    b, h, w, c = features.shape
    flat = features.reshape(b, h * w, c)
    gram = jnp.einsum("bnc,bnd->bcd", flat, flat, precision=jax.lax.Precision.HIGHEST)
    return gram / (c * h * w)


def style_loss(*, fake_features: Sequence[Array], real_features: Sequence[Array]) -> Array:
    """Sum over layers of the mean absolute difference of Gram matrices (PConv's style term for one image).

    naoto0804 ``loss.py``: ``Σ_i l1(gram(feat_output[i]), gram(feat_gt[i]))``; the PConv loss adds it for
    the output and for the composite (weight 120).
    """
    _check_feature_lists(fake_features, real_features, "style_loss")
    total = sum(jnp.mean(jnp.abs(gram_matrix(f) - gram_matrix(r)))
                for f, r in zip(fake_features, real_features))
    return total.astype(jnp.float32)


def total_variation(*, image: Array, mask: Array | None = None) -> Array:
    """Anisotropic L1 total variation: mean |horizontal differences| + mean |vertical differences|.

    Without a mask this is naoto0804 ``loss.py::total_variation_loss`` (the PConv U-Net port's choice: the
    whole composite image), i.e. ``mean|x[:, :, 1:] - x[:, :, :-1]| + mean|x[:, 1:] - x[:, :-1]|``.

    With a mask it is the paper's variant (Liu et al. 2018, eq. 6): only neighbour pairs with *both*
    pixels in P, the hole dilated by one pixel (3×3), contribute. The normalisation stays the count of all
    differences (the paper divides by the image size, not by |P|), so an all-hole mask gives exactly the
    unmasked value and small holes give a proportionally small loss.

    Args:
      image: (B, H, W, C).
      mask: optional (B, H, W, 1), 1 = hole.

    Returns:
      float32 scalar.
    """
    if image.ndim != 4:
        raise ValueError(f"total_variation: image must be NHWC (4-D), got shape {image.shape}")
    dx = jnp.abs(image[:, :, 1:, :] - image[:, :, :-1, :])
    dy = jnp.abs(image[:, 1:, :, :] - image[:, :-1, :, :])
    if mask is not None:
        _check_mask(mask, image, "total_variation")
        region = jax.lax.reduce_window(mask, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
        region = (region > 0).astype(image.dtype)
        dx = dx * (region[:, :, 1:] * region[:, :, :-1])
        dy = dy * (region[:, 1:] * region[:, :-1])
    return (jnp.mean(dx) + jnp.mean(dy)).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------
# Perceptual losses on frozen backbones (variables passed in).
# ----------------------------------------------------------------------------------------------------------


def hrf_perceptual(*, variables, pred: Array, target: Array, train_bn: bool = False, model=None) -> Array:
    """LaMa's HRF perceptual loss: Σ over the 4 stages of MSE(φ_l(n(pred)), φ_l(n(target))), unweighted.

    Port of ``ResNetPL.forward`` (advimman/lama ``saicinpainting/training/losses/perceptual.py``): both
    images are ImageNet-normalised and passed through the frozen ADE20k ResNet50-dilated encoder, and the
    per-stage ``F.mse_loss`` (mean over all elements) values are summed. The whole image is compared, no mask.
    Big-LaMa multiplies the result by 30 (done by the objective).

    ``train_bn=True`` is what LaMa's training actually computes: Lightning's ``model.train()`` puts the
    encoder's BatchNorm layers in training mode, so ``pred`` and ``target`` are normalised with their own
    batch statistics in two separate calls (pred first). The encoder's running statistics that PyTorch would
    update on the way are not kept: nothing reads them in training mode. ``train_bn=False`` uses the stored
    running statistics (eval mode, one call on the concatenated batch).

    Only gradients with respect to ``pred`` flow (the backbone and the target are stop-gradient'ed).

    Args:
      variables: ``{'params', 'batch_stats'}`` (``jaxinpaint.backbones.resnet_ade20k.load``, or random).
      pred, target: (B, H, W, 3) in [0, 1].
      train_bn: batch statistics (LaMa's training) or running statistics.
      model: the encoder (default LaMa's ResNet-50 dilated).

    Returns:
      float32 scalar.
    """
    from jaxinpaint.backbones import resnet_ade20k

    _check_same_shape("pred", pred, "target", target, "hrf_perceptual")
    model = model or resnet_ade20k.Model()
    variables = jax.lax.stop_gradient(variables)
    target = jax.lax.stop_gradient(target)
    if train_bn:
        def features(x):
            return model.apply(variables, resnet_ade20k.normalize_imagenet(x), train=True,
                               mutable=["batch_stats"])[0]

        f_pred, f_target = features(pred), features(target)
    else:
        both = model.apply(variables, resnet_ade20k.normalize_imagenet(jnp.concatenate([pred, target], axis=0)),
                           train=False)
        batch = pred.shape[0]
        f_pred, f_target = [f[:batch] for f in both], [f[batch:] for f in both]
    total = sum(jnp.mean(jnp.square(a - b)) for a, b in zip(f_pred, f_target))
    return total.astype(jnp.float32)


def pconv_perceptual_and_style(*, variables, output: Array, composite: Array, target: Array,
                               model=None) -> dict[str, Array]:
    """PConv's perceptual and style terms from a single VGG16 pass over output, composite and target.

    naoto0804 ``loss.py::InpaintingLoss``: ``prc = Σ_i l1(φ_i(out), φ_i(gt)) + l1(φ_i(comp), φ_i(gt))`` and
    ``style`` the same with Gram matrices, over VGG16 pool1..pool3 (weights 0.05 and 120, applied by the
    objective).

    Args:
      variables: VGG variables (``jaxinpaint.backbones.vgg.load`` or a random init).
      output: raw network output (B, H, W, 3), [0, 1] when the model normalises its input.
      composite: ``m·input + (1 - m)·output`` with m = valid.
      target: ground truth.
      model: the extractor (default ``vgg.Model()``: pool1..3, ImageNet normalisation inside).

    Returns:
      ``{'perceptual': scalar, 'style': scalar}``.
    """
    from jaxinpaint.backbones import vgg

    for name, value in (("composite", composite), ("target", target)):
        _check_same_shape(name, value, "output", output, "pconv_perceptual_and_style")
    model = model or vgg.Model()
    variables = jax.lax.stop_gradient(variables)
    batch = output.shape[0]
    feats = model.apply(variables, jnp.concatenate([output, composite, jax.lax.stop_gradient(target)], axis=0))
    f_out, f_comp, f_gt = ([feats[t][k * batch:(k + 1) * batch] for t in model.taps] for k in range(3))
    perceptual = (perceptual_l1(fake_features=f_out, real_features=f_gt)
                  + perceptual_l1(fake_features=f_comp, real_features=f_gt))
    style = (style_loss(fake_features=f_out, real_features=f_gt)
             + style_loss(fake_features=f_comp, real_features=f_gt))
    return {"perceptual": perceptual, "style": style}


# ----------------------------------------------------------------------------------------------------------
# DeepFill v1's spatially discounted L1 (also Shift-Net's hole L1) and the WGAN-GP gradient penalty.
# ----------------------------------------------------------------------------------------------------------


def spatial_discount(height: int, width: int, gamma: float) -> np.ndarray:
    """DeepFill v1's discount map ``D[i, j] = max(gamma^min(i, H - i), gamma^min(j, W - j))``, (H, W) float32.

    Pixels near the border of the local patch (next to known pixels) weigh most, its centre least: the centre
    of a large hole has many plausible fillings, so the reconstruction pulls on it less (Yu et al. 2018).
    ``JiahuiYu/generative_inpainting`` v1.0.0 ``inpaint_ops.py::spatial_discounting_mask``; Shift-Net's
    ``Discounted_L1`` copies it. Note ``min(i, H - i)``, not ``H - 1 - i``: the map is not symmetric, the first
    row and column weigh 1, the last ones down to ``gamma``.
    """
    i = np.arange(height)[:, None]
    j = np.arange(width)[None, :]
    g = np.float64(gamma)
    return np.maximum(g ** np.minimum(i, height - i), g ** np.minimum(j, width - j)).astype(np.float32)


def discounted_l1(*, pred: Array, target: Array, gamma: float) -> Array:
    """``mean(|pred - target| * D)`` with D = :func:`spatial_discount` over the patch's (H, W), broadcast over
    the batch and the channels (the mean counts every element, as DeepFill's ``tf.reduce_mean`` does).

    Args:
      pred, target: (B, H, W, C) local patches (DeepFill v1: the 128² box around the hole; Shift-Net: the
        120² hole).
      gamma: the discount (0.9 in both codes; DeepFill's paper reports 0.99, a third-party reading).
    """
    _check_same_shape("pred", pred, "target", target, "discounted_l1")
    if pred.ndim != 4:
        raise ValueError(f"discounted_l1: pred must be NHWC (4-D), got shape {pred.shape}")
    weights = jnp.asarray(spatial_discount(pred.shape[1], pred.shape[2], gamma))[None, :, :, None]
    return jnp.mean(jnp.abs(pred - target) * weights).astype(jnp.float32)


def wgan_gradient_penalty(*, critic_fn: Callable[[Array], Array], points: Array, mask: Array | None = None,
                          norm: float = 1.0) -> Array:
    """WGAN-GP's penalty ``mean_b (sqrt(Σ_{h,w,c} (∂D/∂x)² · mask) - norm)²`` at ``points`` (Gulrajani et al.
    2017), neuralgym's ``gradients_penalty`` as DeepFill v1 uses it.

    The gradient of the summed critic output is taken with respect to the points (each sample's output depends
    only on its own input, so this is per-sample); with ``mask`` only the masked pixels count, which is how
    DeepFill v1 restricts the penalty to the hole. Differentiating a loss that contains this penalty with
    respect to the critic's parameters (closed over by ``critic_fn``) is a double backprop, as in TF.

    Args:
      critic_fn: (B, H, W, C) -> critic outputs (any shape with the batch first).
      points: where the gradient is taken, usually ``x + α (x̂ - x)``, α ~ U[0, 1) per sample.
      mask: (B or 1, H, W, 1) weights of the squared gradient (1 = hole), broadcast over the channels; None
        counts every element.
      norm: the target slope (1).

    Returns:
      float32 scalar.
    """
    if points.ndim != 4:
        raise ValueError(f"wgan_gradient_penalty: points must be NHWC (4-D), got shape {points.shape}")
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(points)
    squared = jnp.square(grads)
    if mask is not None:
        if mask.ndim != 4 or mask.shape[-1] != 1 or mask.shape[1:3] != points.shape[1:3]:
            raise ValueError(f"wgan_gradient_penalty: mask must be (B or 1, {points.shape[1]}, {points.shape[2]}, 1) "
                             f"like the points {points.shape}, got {mask.shape}")
        squared = squared * mask
    # The clamp only matters for a gradient norm below 1e-6 (e.g. an empty mask), where sqrt's derivative would
    # turn the double backprop into NaN.
    slopes = jnp.sqrt(jnp.maximum(jnp.sum(squared.reshape(points.shape[0], -1), axis=1), 1e-12))
    return jnp.mean(jnp.square(slopes - norm)).astype(jnp.float32)
