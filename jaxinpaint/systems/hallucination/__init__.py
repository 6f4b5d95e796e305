"""Classifier-prior ("hallucination") inpainting: Fawzi, Samulowitz, Turaga, Frossard, IEEE IVMSP 2016.

The paper fills a large hole with what a network pre-trained for classification "hallucinates" there,
constrained by smoothness and consistency regularisation (its abstract; no code was released, and the network,
layer, step sizes and iteration counts are **unverified**). This is the design of the specification
(systems-more.md §6.2), built from the deep-dream primitives of ``google/deepdream: dream.ipynb``:

**Objective** (maximised over x, only the hole pixels H move, x_K = y_K):

    J(x) = s(x) - lambda_tv * TV_H(x) - lambda_graph * x^T L x

* ``s``: with ``objective='logit'`` (default) the pre-softmax fc8 logit of class c*, c* the classifier's argmax on
  the initially filled image (or ``class_index``); with ``objective='activation'`` deep dream's
  ``1/2 ||a_l(x)||^2`` at trunk layer ``layer``. Both **unverified** readings of the paper.
* ``TV_H``: anisotropic L1 total variation over the 4-neighbour pixel pairs with at least one pixel in H,
  averaged over those pairs and the channels, in [0, 1] pixel units (:func:`tv_h`).
* ``x^T L x``: graph smoothness with L the 4-neighbour Laplacian of the hole's graph with Dirichlet boundary
  (the pairs of ``TV_H``; known neighbours are fixed values), i.e. the mean of ``(x_p - x_q)^2`` over those
  pairs (:func:`graph_smoothness`). The simplest reading of "graph-based regularisation" (**unverified**).

**Algorithm** (deep dream's, per octave, coarse to fine):

1. the hole starts at the mean known colour (``init='mean'``) or the TV fill (``init='tv'``, the always-available
   stand-in for the Telea fill the design names);
2. deep dream's octaves: the filled image is shrunk ``octaves - 1`` times by ``octave_scale`` (bilinear), and
   the octaves are processed coarsest first; the *detail* (the change made at an octave) is upsampled and added
   to the next octave's base, as ``deepdream()`` does;
3. at each octave, ``iterations`` of :func:`ascent_step`: jitter (a random roll of up to ``jitter`` px in x and
   y) -> gradient of s on the rolled image, rolled back -> minus the regularisers' gradients -> masked to H ->
   the normalised step ``x += step / mean_H|g| * g`` (0-255 units) -> clip to [0, 255] -> x_K = y_K.

Differences from deep dream, all deliberate: the step is normalised by the mean |g| over the *hole* values
(deep dream's mean over the whole image, which it equals when the hole is the whole image), because the masked
gradient is 0 elsewhere; the image is RGB in [0, 255] fed to a torchvision VGG (ImageNet mean/std) rather than
Caffe's mean-subtracted BGR; the regularisers see the unrolled image (a roll wraps the image around and would
create false edges); octaves smaller than the network's minimum (32 px for the logits, the tap's pooling
otherwise) are skipped; the classifier sees each whole octave (torchvision's ``AdaptiveAvgPool2d(7)`` accepts any
size of at least 32 px) rather than the design's 224 px tiles, so a photo is one forward pass per step.

Resources are the classifier's weights (``weights``: a torchvision ``vgg19``/``vgg16`` state dict; no download
at run time; ``'random'`` for tests and the ``smoke`` preset). Randomness (the jitter) comes from the seed only:
same seed, same bytes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxinpaint import contract
from jaxinpaint.backbones import vgg

OBJECTIVES = ("logit", "activation")
INITS = ("mean", "tv")


def default_config() -> ml_collections.ConfigDict:
    """The design defaults (systems-more.md §6.2); every one **unverified** (the paper gives none: the values
    are deep dream's or the design's, marked below by where they come from).

    Fields:
      weights: path of a torchvision VGG state dict (``vgg19-dcbb9e9d.pth``: ``vgg.VGG19_URL``), or ``'random'``
        (random weights: tests and smoke runs only).
      depth: 19 (default, the design's VGG-19) or 16; read from the weights when they are a file.
      objective: ``'logit'`` (fc8 logit of class c*) or ``'activation'`` (1/2 ||a_layer||^2, deep dream's L2).
      layer: the trunk tap of ``'activation'`` (a mid layer; deep dream used GoogLeNet's inception_4c).
      class_index: c* for ``'logit'``; -1 = the argmax on the initially filled image.
      octaves: deep dream's octave_n (4).
      octave_scale: deep dream's octave_scale (1.4).
      iterations: ascent steps per octave (the design's 50; deep dream's iter_n is 10).
      step: deep dream's step_size (1.5), in 0-255 pixel units.
      jitter: deep dream's jitter (32 px).
      lambda_tv: weight of TV_H in [0, 1] pixel units (0.5; tune).
      lambda_graph: weight of the Laplacian smoothness (0).
      init: hole initialisation, ``'mean'`` (known pixels' mean colour) or ``'tv'`` (the ``tv`` solver's fill).
      width_divisor: divides every VGG width; random weights only (1 is VGG; the smoke preset uses 8).
      preset: the preset applied before the explicit options (``PRESETS``; '' = none).
    """
    return ml_collections.ConfigDict({
        "weights": "", "depth": 19, "objective": "logit", "layer": "relu4_2", "class_index": -1,
        "octaves": 4, "octave_scale": 1.4, "iterations": 50, "step": 1.5, "jitter": 32,
        "lambda_tv": 0.5, "lambda_graph": 0.0, "init": "mean", "width_divisor": 1, "preset": "",
    })


#: Named settings applied before the explicit options (``jaxinpaint.load('hallucination', preset='smoke')``).
PRESETS = {
    # A 64 px smoke run: random narrow VGG-19, two octaves (64 and 46 px; the logits need >= 32 px), few steps.
    "smoke": {"weights": "random", "width_divisor": 8, "octaves": 2, "iterations": 5, "jitter": 8},
}


def _check(config) -> None:
    if config.objective not in OBJECTIVES:
        raise ValueError(f"hallucination: config field 'objective' must be one of {OBJECTIVES}, got "
                         f"{config.objective!r}")
    if config.init not in INITS:
        raise ValueError(f"hallucination: config field 'init' must be one of {INITS}, got {config.init!r}")
    if config.objective == "activation" and config.layer not in vgg.tap_names(int(config.depth)):
        raise ValueError(f"hallucination: config field 'layer' {config.layer!r} is not a VGG{config.depth} tap "
                         f"({', '.join(vgg.tap_names(int(config.depth)))})")
    for field in ("octaves", "iterations", "width_divisor"):
        if int(config[field]) < 1:
            raise ValueError(f"hallucination: config field {field!r} must be >= 1, got {config[field]}")
    if float(config.octave_scale) <= 1.0 or float(config.step) <= 0 or int(config.jitter) < 0:
        raise ValueError("hallucination: config fields need octave_scale > 1, step > 0 and jitter >= 0 (got "
                         f"{config.octave_scale}, {config.step}, {config.jitter})")


# ------------------------------------------------------------------------------------------------------------
# The classifier.
# ------------------------------------------------------------------------------------------------------------


def _network(config, depth: int):
    div = int(config.width_divisor) if config.weights == "random" else 1
    if config.objective == "logit":
        return vgg.Classifier(depth=depth, width_divisor=div)
    return vgg.Model(taps=(str(config.layer),), depth=depth, width_divisor=div)


def load_resources(config):
    """The classifier's variables from ``config.weights`` (a file, or ``'random'``), checked against the objective.

    Raises:
      ValueError: no ``weights`` given, or a file that is not a torchvision VGG (features only, for the logits).
      FileNotFoundError: the file does not exist (the message says where torchvision publishes it).
    """
    _check(config)
    depth = int(config.depth)
    if config.weights == "random":
        if config.objective == "logit":
            return vgg.random_classifier_variables(depth=depth, width_divisor=int(config.width_divisor))
        return vgg.random_variables(depth=depth, width_divisor=int(config.width_divisor))
    if not config.weights:
        raise ValueError("hallucination: config field 'weights' names no file. Download torchvision's ImageNet "
                         f"VGG19 ({vgg.VGG19_URL}) yourself and pass weights=PATH (predict: --option=weights=PATH); "
                         "weights='random' (or preset='smoke') runs with random weights, for tests only")
    if config.objective == "logit":
        return vgg.load_classifier(config.weights)
    return vgg.load(config.weights)


def _depth(variables) -> int:
    params = variables["params"]
    convs = params["features"] if "features" in params else params
    return 19 if "conv5_4" in convs else 16


def min_side(config, depth: int) -> int:
    """The smallest octave side the network accepts: 32 for the logits, the tap's pooling for an activation."""
    if config.objective == "logit":
        return 32
    taps = vgg.tap_names(depth)
    pools = sum(1 for t in taps[:taps.index(str(config.layer)) + 1] if t.startswith("pool"))
    return 2 ** pools


def score_fn(config, variables, class_index):
    """``x01 (1, H, W, 3) in [0, 1] -> s(x)`` (module docstring)."""
    depth = _depth(variables)
    net = _network(config, depth)
    if config.objective == "logit":
        def score(x):
            logits, _ = net.apply(variables, x)
            return logits[0, class_index]
    else:
        layer = str(config.layer)

        def score(x):
            a = net.apply(variables, x)[layer]
            return 0.5 * jnp.sum(a * a)
    return score


# ------------------------------------------------------------------------------------------------------------
# Regularisers and the ascent step.
# ------------------------------------------------------------------------------------------------------------


def _pairs(x: jax.Array, mask: jax.Array):
    """Horizontal and vertical neighbour differences of (N, H, W, C) and the weights of the pairs touching H."""
    dx = x[:, :, 1:] - x[:, :, :-1]
    dy = x[:, 1:] - x[:, :-1]
    wx = jnp.maximum(mask[:, :, 1:], mask[:, :, :-1])
    wy = jnp.maximum(mask[:, 1:], mask[:, :-1])
    count = (jnp.sum(wx) + jnp.sum(wy)) * x.shape[-1]
    return dx, dy, wx, wy, jnp.maximum(count, 1.0)


def tv_h(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Anisotropic L1 TV over the 4-neighbour pairs with at least one pixel in the hole, averaged (pairs x C)."""
    dx, dy, wx, wy, count = _pairs(x, mask)
    return (jnp.sum(jnp.abs(dx) * wx) + jnp.sum(jnp.abs(dy) * wy)) / count


def graph_smoothness(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``x^T L x`` of the hole's 4-neighbour graph with Dirichlet boundary, averaged like :func:`tv_h`: the mean of
    ``(x_p - x_q)^2`` over the pairs touching the hole (the known neighbours enter as fixed values)."""
    dx, dy, wx, wy, count = _pairs(x, mask)
    return (jnp.sum(dx * dx * wx) + jnp.sum(dy * dy * wy)) / count


def ascent_step(x: jax.Array, score_grad, reg_grad, shift: jax.Array, mask: jax.Array, base: jax.Array,
                step: float, clip: bool = True) -> jax.Array:
    """One deep-dream step on the hole, in 0-255 pixel units (module docstring, step 3); ``(x, s(rolled x))``.

    Args:
      x: (1, H, W, 3) current image, [0, 255].
      score_grad: ``x -> (s, d s / d x)`` on the (rolled) image, same units.
      reg_grad: ``x -> d (regularisers) / d x`` on the unrolled image (subtracted: J = s - regularisers).
      shift: int32 (2,), deep dream's ``(ox, oy)``: the roll along width, then height.
      mask: (1, H, W, 1), 1 = hole.
      base: (1, H, W, 3) the known values (x_K is reset to them).
      step: deep dream's step_size.
      clip: clip to [0, 255] (deep dream's ``clip``).
    """
    ox, oy = shift[0], shift[1]
    rolled = jnp.roll(jnp.roll(x, ox, axis=2), oy, axis=1)
    value, g = score_grad(rolled)
    g = jnp.roll(jnp.roll(g, -ox, axis=2), -oy, axis=1) - reg_grad(x)
    g = g * mask
    n = jnp.maximum(jnp.sum(mask) * x.shape[-1], 1.0)
    mean_abs = jnp.sum(jnp.abs(g)) / n
    x = x + jnp.where(mean_abs > 0, step / jnp.where(mean_abs > 0, mean_abs, 1.0), 0.0) * g
    if clip:
        x = jnp.clip(x, 0.0, 255.0)
    return mask * x + (1.0 - mask) * base, value


# ------------------------------------------------------------------------------------------------------------
# The solve.
# ------------------------------------------------------------------------------------------------------------


def _resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize (no anti-aliasing), the role of deep dream's ``nd.zoom(order=1)``."""
    return jax.image.resize(x, (x.shape[0], size[0], size[1], x.shape[3]), "linear", antialias=False)


def octave_sizes(h: int, w: int, config, depth: int) -> list[tuple[int, int]]:
    """(h, w) of the octaves, coarsest first; octaves below :func:`min_side` are left out."""
    sizes = [(h, w)]
    for _ in range(int(config.octaves) - 1):
        ph, pw = sizes[-1]
        sizes.append((int(round(ph / float(config.octave_scale))), int(round(pw / float(config.octave_scale)))))
    smallest = min_side(config, depth)
    kept = [s for s in sizes if min(s) >= smallest]
    if not kept:
        raise ValueError(f"hallucination: a {w}x{h} image is smaller than the {config.objective} objective's "
                         f"minimum of {smallest} px per side")
    return kept[::-1]


def _initial_fill(image, mask, config):
    if config.init == "tv":
        from jaxinpaint.systems import tv

        pred, _ = tv.solve(None, image, mask, tv.default_config(), None)
        return pred
    from jaxinpaint.systems.tv import mean_fill

    return mean_fill(image, mask)


def solve(resources, image: jax.Array, mask: jax.Array, config, rng) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs the design's octaves of masked deep-dream ascent (module docstring).

    Returns ``(pred, info)``: pred (1, H, W, 3) in [0, 1]; info ``objective``, ``score``, ``tv`` and ``graph``
    per iteration (all octaves, coarsest first; the values at the start of each step, the score on the jittered
    image as deep dream evaluates it), ``score_start`` and ``score_end`` (s of the initial fill and of the result,
    unjittered) and ``class_index`` (c* for the logit objective, else -1).
    """
    _check(config)
    variables = resources
    depth = _depth(variables)
    mask = (mask > 0.5).astype(jnp.float32)
    filled = _initial_fill(image, mask, config)
    h, w = image.shape[1:3]
    if config.objective == "logit" and int(config.class_index) < 0:
        logits, _ = _network(config, depth).apply(variables, filled)
        class_index = jnp.argmax(logits[0])
    else:
        class_index = jnp.asarray(int(config.class_index), jnp.int32)
    score = score_fn(config, variables, class_index)
    lam_tv, lam_g = float(config.lambda_tv), float(config.lambda_graph)

    def regularisers(x255, m):
        x01 = x255 / 255.0
        return tv_h(x01, m), graph_smoothness(x01, m)

    sizes = octave_sizes(h, w, config, depth)
    n_iters = int(config.iterations)
    total = n_iters * len(sizes)
    full = filled * 255.0
    bases = [full if s == (h, w) else _resize(full, s) for s in sizes]
    detail = None
    records = []
    for k, (size, base) in enumerate(zip(sizes, bases)):
        m = mask if size == (h, w) else (_resize(mask, size) > 1e-3).astype(jnp.float32)
        x0 = base if detail is None else base + _resize(detail, size)
        x0 = m * jnp.clip(x0, 0.0, 255.0) + (1.0 - m) * base
        score_grad = jax.value_and_grad(lambda x: score(x / 255.0))

        def reg_grad(x, m=m):
            return jax.grad(lambda x: lam_tv * regularisers(x, m)[0] + lam_g * regularisers(x, m)[1])(x)

        def body(x, i, m=m, base=base, score_grad=score_grad, reg_grad=reg_grad, offset=k * n_iters):
            key = jax.random.fold_in(rng, offset + i)
            shift = jax.random.randint(key, (2,), -int(config.jitter), int(config.jitter) + 1)
            t, g = regularisers(x, m)
            x, s = ascent_step(x, score_grad, reg_grad, shift, m, base, float(config.step))
            objective = s - lam_tv * t - lam_g * g
            contract.report_progress(offset + i, total, every=1, objective=objective)  # slow steps: each one
            return x, (objective, s, t, g)

        x, rec = jax.lax.scan(body, x0, jnp.arange(n_iters))
        records.append(rec)
        detail = x - base
    pred = x / 255.0
    objective, s, t, g = (jnp.concatenate([r[j] for r in records]) for j in range(4))
    # s on the whole unjittered image before and after: the per-step scores are taken at random shifts.
    score_start, score_end = score(filled), score(pred)
    return pred, {"objective": objective, "score": s, "tv": t, "graph": g, "score_start": score_start,
                  "score_end": score_end,
                  "class_index": jnp.asarray(class_index if config.objective == "logit" else -1, jnp.int32)}


SOLVER = contract.Solver(
    name="hallucination",
    title="Classifier-prior inpainting (Fawzi et al. 2016): deep-dream ascent of a VGG logit on the hole",
    default_config=default_config,
    solve=solve,
    load_resources=load_resources,
    iterations=lambda config: int(config.iterations) * int(config.octaves),
    presets=PRESETS,
    licence="Apache-2.0 (jaxinpaint; design from the paper's abstract and google/deepdream's primitives)",
)
