"""EdgeConnect's inputs, losses, training updates and inference (``src/models.py``, ``src/loss.py``,
``src/edge_connect.py``), written from the specification (``shared/docs/systems-more.md`` §8; the original is
CC BY-NC 4.0).

Stages (``config.stage``; the original's ``--model``):

* ``'edge'`` (1): the edge generator G1 and its discriminator D1 on ground-truth Canny edges.
* ``'inpaint'`` (2): the inpainting generator G2 and D2, G2 fed the full ground-truth Canny map.
* ``'joint'`` (3, "edge-inpaint"): G1 frozen (no optimiser; still called in training mode, so its
  spectral-norm vectors move as in the original), its output pasted into the hole of the ground-truth edges;
  G2 and D2 train. Both generators come from the stage workdirs through ``config.init_from``.

Inputs (mask 1 = hole): G1 sees ``[grey·(1−m)+m, edge·(1−m), m]``; G2 sees ``[rgb·(1−m)+m, edge]`` with the
edge map as given (unmasked). D1 judges ``grey ⧺ edge``, D2 the RGB image alone.

Losses, all on the generators' raw outputs (not the composites):

* D: ``(adv(D(real), real) + adv(D(fake.detach()), fake)) / 2``;
* G1: ``edge_adversarial · adv(D1(fake), real) + fm · Σ_i mean|D1_i(fake) − D1_i(real)|`` over the five
  returned features (no reconstruction loss);
* G2: ``inpaint_adversarial · adv(D2(out), real) + l1 · mean|out − img| / mean(m)`` (a whole-image L1 scaled
  by the batch's inverse hole fraction) ``+ perceptual · Σ_{relu1_1..relu5_1} mean|φ(out) − φ(img)|
  + style · Σ_{relu2_2, relu3_4, relu4_4, relu5_2} mean|G(φ(out·m)) − G(φ(img·m))|``, φ the frozen VGG19 on
  un-normalised [0, 1] images, G the Gram matrix divided by C·H·W.

``adv`` is the original's ``AdversarialLoss``: ``'nsgan'`` = ``nn.BCELoss`` on the sigmoid outputs (log clamped
at −100), ``'lsgan'`` = MSE on them, ``'hinge'`` = ``relu(1 ∓ x)`` for D and ``−x`` for G on raw logits.

Step order (``src/models.py`` ``process`` + ``backward``): G forward; D on real, then on the detached fake;
G's loss through D on the fake; then both steps. G's gradient therefore flows through D's **pre-update**
weights, and each D call in training mode runs one spectral-norm power iteration (three per step). Here the G
update runs first with the three D calls in that order; the D update then replays the first two from D's
spectral state at the start of the step (carried from the G update), so D's loss sees exactly the vectors the
original's did, and restores the state after the third call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinpaint import contract, losses
from jaxinpaint.backbones import vgg
from jaxinpaint.data import edges as edges_lib

STAGES = ("edge", "inpaint", "joint")
GAN_TYPES = ("nsgan", "lsgan", "hinge")

PERCEPTUAL_TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
STYLE_TAPS = ("relu2_2", "relu3_4", "relu4_4", "relu5_2")

EDGE_G, EDGE_D = "edge_generator", "edge_discriminator"
INPAINT_G, INPAINT_D = "inpaint_generator", "inpaint_discriminator"


def check_config(config) -> None:
    """Raises ValueError naming the field for a stage, GAN type or Canny σ the port cannot run."""
    if config.stage not in STAGES:
        raise ValueError(f"config.stage must be one of {STAGES}, got {config.stage!r}")
    if config.losses.gan_type not in GAN_TYPES:
        raise ValueError(f"config.losses.gan_type must be one of {GAN_TYPES}, got {config.losses.gan_type!r}")
    if float(config.inference.sigma) == 0:
        raise ValueError("config.inference.sigma=0 (the original's random σ per sample) is not supported: "
                         "give a fixed σ (2 in the original), or -1 for no edges")


# ----------------------------------------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------------------------------------


def prepare_example(example: dict, config, *, train: bool) -> dict:
    """Greyscale and Canny edges of one example (host side), with σ = ``config.inference.sigma``.

    Training runs Canny on the whole image (the original's ``training=True``), so the ground-truth edges inside
    the hole are there for G1 to learn and for G2 to be fed; evaluation and inference run it on the known
    region only (``mask = 1 - hole``), as the original's test mode does.
    """
    return edges_lib.structure_inputs(example["image"], None if train else example["mask"],
                                      sigma=float(config.inference.sigma))


def edge_generator_input(grey, edge, mask):
    """``[grey·(1−m)+m, edge·(1−m), m]``: holes white in the grey channel, no edges inside them."""
    return jnp.concatenate([grey * (1.0 - mask) + mask, edge * (1.0 - mask), mask], axis=-1)


def inpaint_generator_input(image, edge, mask):
    """``[rgb·(1−m)+m, edge]``: the edge map is used as given (the original does not mask it)."""
    return jnp.concatenate([image * (1.0 - mask) + mask, edge], axis=-1)


# ----------------------------------------------------------------------------------------------------------
# Losses.
# ----------------------------------------------------------------------------------------------------------


def _log_clamped(p):
    """``max(log p, -100)`` (PyTorch's BCELoss clamp) with a finite gradient at p = 0."""
    positive = p > 0
    return jnp.where(positive, jnp.maximum(jnp.log(jnp.where(positive, p, 1.0)), -100.0), -100.0)


def adversarial_loss(outputs, *, is_real: bool, for_discriminator: bool, gan_type: str):
    """The original's ``AdversarialLoss(type)(outputs, is_real, is_disc)`` (real label 1, fake label 0).

    Args:
      outputs: D's output: sigmoid probabilities for ``'nsgan'`` and ``'lsgan'``, raw logits for ``'hinge'``.
      is_real: the target label (ignored by the hinge generator loss).
      for_discriminator: only the hinge loss distinguishes D's loss from G's.
      gan_type: ``'nsgan'``, ``'lsgan'`` or ``'hinge'``.
    """
    if gan_type == "hinge":
        if not for_discriminator:
            return jnp.mean(-outputs)
        return jnp.mean(jax.nn.relu(1.0 - outputs if is_real else 1.0 + outputs))
    label = 1.0 if is_real else 0.0
    if gan_type == "nsgan":
        return -jnp.mean(label * _log_clamped(outputs) + (1.0 - label) * _log_clamped(1.0 - outputs))
    if gan_type == "lsgan":
        return jnp.mean(jnp.square(outputs - label))
    raise ValueError(f"adversarial_loss: gan_type must be one of {GAN_TYPES}, got {gan_type!r}")


def vgg_model(config) -> vgg.Model:
    """The losses' VGG19: torchvision's features, fed [0, 1] images without ImageNet normalisation."""
    return vgg.Model(taps=PERCEPTUAL_TAPS + STYLE_TAPS, normalize_input=False, depth=19,
                     width_divisor=int(config.losses.vgg_width_divisor))


def perceptual_and_style(model: vgg.Model, variables, output, target, mask) -> dict[str, jax.Array]:
    """The original's ``PerceptualLoss(output, target)`` and ``StyleLoss(output·m, target·m)`` (unit layer
    weights), from one VGG19 pass over the four images."""
    n = output.shape[0]
    feats = model.apply(jax.lax.stop_gradient(variables), jnp.concatenate(
        [output, target, output * mask, target * mask], axis=0))
    part = lambda taps, k: [feats[t][k * n:(k + 1) * n] for t in taps]  # noqa: E731
    return {"perceptual": losses.perceptual_l1(fake_features=part(PERCEPTUAL_TAPS, 0),
                                               real_features=part(PERCEPTUAL_TAPS, 1)),
            "style": losses.style_loss(fake_features=part(STYLE_TAPS, 2), real_features=part(STYLE_TAPS, 3))}


def random_vgg19_variables(*, width_divisor: int = 1, seed: int = 0) -> dict:
    """Random VGG19 variables (tests and smoke runs only; real training needs the pretrained file)."""
    return vgg.random_variables(depth=19, width_divisor=width_divisor, seed=seed)


def frozen_networks(config) -> dict:
    """The VGG19 of G2's perceptual and style losses, or ``{}`` (edge stage, or both weights 0).

    ``config.losses.vgg_weights``: torchvision's ``vgg19`` state dict (``.pth``, or a ``.npz`` of its keys),
    or ``'random'`` (tests and smoke runs only).

    Raises:
      FileNotFoundError: the field is empty or the file is missing (the message says how to get it).
      ValueError: not a VGG19 file, or ``vgg_width_divisor`` other than 1 with real weights.
    """
    cfg = config.losses
    if config.stage == "edge" or (not cfg.perceptual and not cfg.style):
        return {}
    divisor = int(cfg.vgg_width_divisor)
    if cfg.vgg_weights == "random":
        return {"vgg": random_vgg19_variables(width_divisor=divisor)}
    if divisor != 1:
        raise ValueError(f"config.losses.vgg_width_divisor={divisor} only works with vgg_weights='random'")
    if not cfg.vgg_weights:
        raise FileNotFoundError(
            "config.losses.vgg_weights is empty: EdgeConnect's perceptual and style losses need torchvision's "
            "ImageNet VGG19. Save `torchvision.models.vgg19(weights='IMAGENET1K_V1').state_dict()` with torch.save "
            "(or as a .npz of its keys) and pass --config.losses.vgg_weights=PATH ('random' for smoke tests).")
    try:
        variables = vgg.load(cfg.vgg_weights)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"config.losses.vgg_weights={cfg.vgg_weights!r}: {e}") from e
    if len(variables["params"]) != len(vgg.conv_names(19)):
        raise ValueError(f"config.losses.vgg_weights={cfg.vgg_weights!r} holds a VGG16, EdgeConnect needs VGG19")
    return {"vgg": variables}


# ----------------------------------------------------------------------------------------------------------
# Training updates.
# ----------------------------------------------------------------------------------------------------------


def _generator_side_d_calls(nets: contract.Nets, name: str, real_in, fake_in):
    """D(real), D(fake.detach()), D(fake) in the original's order (three power iterations).

    Returns ``(state at the start, (real outputs, real features), (fake outputs, fake features))``; the
    second call only advances D's spectral vectors (its output is unused, and XLA drops its convolutions).
    """
    start = nets.states.get(name, {})
    real = nets(name, real_in)
    nets(name, jax.lax.stop_gradient(fake_in))
    fake = nets(name, fake_in)
    return start, real, fake


def _discriminator_loss(ctx: contract.Context, name: str, real_in, fake_in):
    """D's loss from its calls on real and detached fake, replayed from the step's starting spectral state."""
    nets, gan_type = ctx.nets, ctx.config.losses.gan_type
    after = nets.states.get(name, {})
    nets.states[name] = ctx.carry["d_state"]  # the original's calls 1 and 2 saw these vectors
    real, _ = nets(name, real_in)
    fake, _ = nets(name, jax.lax.stop_gradient(fake_in))
    nets.states[name] = after  # after call 3 (G's), which the generator update made
    real_loss = adversarial_loss(real, is_real=True, for_discriminator=True, gan_type=gan_type)
    fake_loss = adversarial_loss(fake, is_real=False, for_discriminator=True, gan_type=gan_type)
    loss = (real_loss + fake_loss) / 2.0
    return loss, {"real": real_loss, "fake": fake_loss, "real_outputs": jnp.mean(real),
                  "fake_outputs": jnp.mean(fake)}, {}


def edge_generator_update(ctx: contract.Context):
    """G1: adversarial (weight ``edge_adversarial``, 1 in the original) + feature matching (``fm``, 10)."""
    cfg, b, nets = ctx.config.losses, ctx.batch, ctx.nets
    out = nets(EDGE_G, edge_generator_input(b["grey"], b["edge"], b["mask"]))
    real_in = jnp.concatenate([b["grey"], b["edge"]], axis=-1)
    fake_in = jnp.concatenate([b["grey"], out], axis=-1)
    start, (_, real_feats), (fake, fake_feats) = _generator_side_d_calls(nets, EDGE_D, real_in, fake_in)
    metrics = {"adversarial": adversarial_loss(fake, is_real=True, for_discriminator=False,
                                               gan_type=cfg.gan_type),
               "feature_matching": losses.perceptual_l1(fake_features=fake_feats,
                                                        real_features=jax.lax.stop_gradient(real_feats))}
    total = cfg.edge_adversarial * metrics["adversarial"] + cfg.fm * metrics["feature_matching"]
    return total, metrics, {"fake": out, "d_state": start}


def edge_discriminator_update(ctx: contract.Context):
    """D1 on ``grey ⧺ edge`` against ``grey ⧺ G1(...)`` (the G update's output, before its step)."""
    b = ctx.batch
    return _discriminator_loss(ctx, EDGE_D, jnp.concatenate([b["grey"], b["edge"]], axis=-1),
                               jnp.concatenate([b["grey"], ctx.carry["fake"]], axis=-1))


def _l1_over_hole_fraction(output, image, mask):
    """``mean|out − img| / mean(mask)`` over the batch. The original divides without a guard; a batch without
    any hole pixel (where it would produce inf) gets the plain L1 here."""
    hole = jnp.mean(mask)
    return losses.l1(pred=output, target=image) / jnp.where(hole > 0, hole, 1.0)


def inpaint_generator_update(ctx: contract.Context):
    """G2: adversarial (``inpaint_adversarial``), L1 / mean(mask) (``l1``), perceptual and style (VGG19).

    In the joint stage the frozen G1 runs first (training mode, as the original) and its output replaces the
    ground-truth edges inside the hole.
    """
    cfg, b, nets = ctx.config.losses, ctx.batch, ctx.nets
    image, mask, edge = b["image"], b["mask"], b["edge"]
    if EDGE_G in nets:
        predicted = nets(EDGE_G, edge_generator_input(b["grey"], edge, mask))
        edge = jax.lax.stop_gradient(predicted * mask + edge * (1.0 - mask))
    out = nets(INPAINT_G, inpaint_generator_input(image, edge, mask))
    start, _, (fake, _) = _generator_side_d_calls(nets, INPAINT_D, image, out)
    metrics = {"adversarial": adversarial_loss(fake, is_real=True, for_discriminator=False,
                                               gan_type=cfg.gan_type),
               "l1": _l1_over_hole_fraction(out, image, mask)}
    total = cfg.inpaint_adversarial * metrics["adversarial"] + cfg.l1 * metrics["l1"]
    if "vgg" in ctx.frozen:
        metrics.update(perceptual_and_style(vgg_model(ctx.config), ctx.frozen["vgg"], out, image, mask))
        total = total + cfg.perceptual * metrics["perceptual"] + cfg.style * metrics["style"]
    return total, metrics, {"fake": out, "d_state": start}


def inpaint_discriminator_update(ctx: contract.Context):
    """D2 on the real images against G2's outputs (the G update's, before its step)."""
    return _discriminator_loss(ctx, INPAINT_D, ctx.batch["image"], ctx.carry["fake"])


# ----------------------------------------------------------------------------------------------------------
# Inference.
# ----------------------------------------------------------------------------------------------------------


def predict(nets: contract.Nets, batch, config) -> dict:
    """Eval-mode inference, the original's ``test()`` for whichever generators are present.

    * both (a joint-stage run, converted weights): edges of the masked grey image -> G1 -> G2 -> composite. G2
      gets G1's raw output, as the original's test does; ``config.inference.composite_edges=True`` pastes it
      into the known region's edges first, as its training and ``sample()`` do.
    * G2 only (an inpaint-stage run): G2 on the batch's edges (Canny of the known region at inference);
    * G1 only (an edge-stage run): the edge map, ``'pred'`` and ``'composite'`` as 3-channel images (what the
      original's test writes for its edge model; ``jaxinpaint.load(...).inpaint`` shows it inside the hole).

    Returns ``{'pred', 'composite', 'edges'}`` in [0, 1].
    """
    image, mask, edge = batch["image"], batch["mask"], batch["edge"]
    if EDGE_G in nets:
        predicted = nets(EDGE_G, edge_generator_input(batch["grey"], edge, mask))
        merged = contract.composite(predicted, edge, mask)
        if INPAINT_G not in nets:
            return {"pred": jnp.tile(predicted, (1, 1, 1, 3)), "composite": jnp.tile(merged, (1, 1, 1, 3)),
                    "edges": merged}
        edge = merged if config.inference.get("composite_edges", False) else predicted
    out = nets(INPAINT_G, inpaint_generator_input(image, edge, mask))
    return {"pred": out, "composite": contract.composite(out, image, mask), "edges": edge}


def default_inference() -> dict:
    """Inference settings of converted weights: Canny σ 2 (``config.yml.example``), G1's raw edges into G2."""
    return {"sigma": 2.0, "composite_edges": False}

