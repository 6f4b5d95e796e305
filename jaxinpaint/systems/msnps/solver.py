"""MSNPS as a per-image solver: content network, three-scale texture optimisation, blend (systems-more.md §5).

Yang et al., "High-Resolution Image Inpainting using Multi-Scale Neural Patch Synthesis" (CVPR 2017), the
released "fast" code ``leehomyc/Faster-High-Res-Neural-Inpainting`` (Torch7). MSNPS trains nothing itself:

1. **Content network** (``run_content_network.lua``): a Context Encoder centre generator (systems-more.md §2;
   train one with ``python train.py --config=configs/msnps.py``, then give its workdir or model directory as
   ``content_model``). The image, its hole filled with the CE mean colour, is resized to the generator's
   ``fine_size``² (128²), the inner centre box is filled (``overlapPred``), and the F/2² prediction is
   upscaled to the centre half of the working image; its inner part (without the overlap ring, scaled) is
   pasted there (512²: a 64² prediction to 256², the inner 224² at rows/columns [144, 368)). Clamped to
   [-1, 1], that is the *content image*. Hole pixels outside the pasted box keep the mean colour: the released
   content net handles a centred hole only (§5.4 pitfall 2), and no hole pixel of the input is ever read.
2. **Texture optimisation** (``transfer_CNNMRF_wrapper.lua``): the image itself (Caffe space: BGR, ×256, minus
   the mean (103.939, 116.779, 123.68)) is optimised at ``num_scales`` scales, sides ``ceil(S * 0.5^(n-i))``
   (128 → 256 → 512 for a 512² image), bilinear. Scale 1 starts from the content image (``init='image'``) or
   from N(0, 1e-3²) noise (``'random'``, drawn from the seed); each later scale from the previous result
   upscaled. Per scale, with the whole image free (the original's gradient mask is all ones), the objective's
   gradient is

   * ``content_weight`` (20) × the MSE of VGG-19 relu4_2 against relu4_2 of the *content image at this scale*
     (not the previous scale's output: the code's choice, §5.2);
   * ``mrf_weight`` (1e-4) × the CNNMRF term on relu4_1 (:mod:`jaxinpaint.systems.msnps.mrf`): 3×3 patches,
     stride 2, from 9 augmented *texture images* (rotations ±π/24, scales 1.05^±1), normalised
     cross-correlation, matched once per scale;
   * ``tv_weight`` (1e-4) × ½Σ of squared horizontal and vertical differences in Caffe pixel space
     (``mylib/tv.lua``: over the top-left (H-1)×(W-1) pixels only);

   minimised by ``mylbfgs`` (:mod:`jaxinpaint.systems.msnps.lbfgs`), 100 iterations, history 25, no line
   search, value 0 (the original computes none). The *texture image* is the input with its hole overwritten
   by copies of the rows above (upper half of the hole's box) and below (lower half), ``texture_fill='rows'``:
   the demo's hard-coded 512² copy (``wrapper:39-41``), generalised to any box; ``'content'`` uses the content
   image instead (the maintainer suggests any fill that keeps hole pixels out of the patches, #28).
3. **Blend** (``blend.lua``): the result, clamped to [0, 1] (``image.minmax``), optionally through a JPEG round
   trip (``jpeg_round_trip``, off: the original reads its result back from a JPEG, which only loses
   information and makes bytes depend on the codec; on, quality ``jpeg_quality``, 75 as Torch's
   ``image.save``), then composited with the known pixels by the inference path (byte-identical
   outside the hole). The demo's soft ``mask.png`` is not reproduced: jaxinpaint's masks are binary.

Reported per scale and iteration (``info``): the texture (MRF) loss, the content and TV terms, each at the
point where the iteration starts, so a caller can check the texture loss falls.

Measured (2-core CPU shared with other jobs, load average ~5; no accelerator): a 192×128 photo, 2 scales
(96×64, 192×128) × 100 iterations, 9 texture images, full-width random VGG-19, the smoke content network:
242 s per image, 1.16 GB peak RSS (``predict --model=msnps ... --option max_size=192 --option
num_scales=2``); the texture loss fell 3688 → 2954 and 13907 → 7576. 512² with three scales is a GPU job.

Deviations and open points:

* Frozen VGG-19: the Caffe ``VGG_ILSVRC_19_layers`` weights from ``vgg_weights``: the ``.caffemodel`` itself
  (read by :mod:`~jaxinpaint.systems.msnps.caffe_vgg`, no Caffe needed) or its ``.npz`` in torchvision's
  ``features.<i>`` layout. jaxinpaint ships and downloads none. A torchvision VGG-19
  file loads too, but its features have other scales (RGB, [0, 1] normalised input): the weights 20 / 1e-4 /
  1e-4 are tuned to the Caffe network (§5.4 pitfall 1).
* The content image stays float: the original saves it as an 8-bit PNG (``fake_*.png``) and reads it back.
* Images of any size: the working image has its longer side resized to ``max_size`` (512, as the wrapper's
  ``image.scale(img, max_size)``; 0 keeps the input size), and the result is resized back (not in the
  original, whose inputs are 512²). The content box is the centre half in both directions.
* Every resize is Torch's ``image.scale`` (bilinear: corner-aligned when enlarging, area-averaging when
  shrinking) and every rotation ``image.rotate``, as read in ``torch/image``
  (:mod:`~jaxinpaint.systems.msnps.torch_image`).
* ``content_bn='batch'`` (batch statistics, the README's pre-2018-05-30 mode) needs a batch: the original
  ran its 32 demo images as one. The solver inpaints one image at a time, whose 1×1 bottleneck has a single
  value per channel, so it refuses the mode with an explanation; :func:`content_image` takes it for a batch
  of images. The default is ``'eval'`` (running statistics), the code since 2018-05-30.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxinpaint.backbones import vgg
from jaxinpaint.systems.context_encoder import model as ce_model
from jaxinpaint.systems.msnps import lbfgs, mrf, torch_image

log = logging.getLogger(__name__)

#: Caffe's VGG mean, B, G, R (``helper.lua::preprocess``).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

#: Settings the ``smoke`` preset changes when they are left at their defaults (explicit options win).
SMOKE = {"max_size": 64, "num_scales": 1, "iterations": 8, "texture_rotations": 0, "texture_scales": 0}


def default_config() -> ml_collections.ConfigDict:
    """MSNPS's documented settings: the released demo's (``run_texture_optimization.lua:36``, ``wrapper:533-580``)."""
    return ml_collections.ConfigDict({
        # Resources.
        "content_model": "",  # workdir / model dir of a Context Encoder centre generator (configs/msnps.py)
        "content_bn": "eval",  # 'eval' (running statistics, the code since 2018-05-30) or 'batch' (several images)
        "content_overlap": -1,  # overlapPred; -1 = the content model's own (config.inference.overlap)
        "vgg_weights": "",  # Caffe VGG-19 in torchvision layout (.pth/.npz), or 'random' (tests only)
        "vgg_width_divisor": 1,  # narrower random VGG ('random' only; tests)
        "preset": "",  # '' or 'smoke': one scale at 64 px, 8 iterations, no augmentation (see SMOKE)
        # Pyramid and optimiser.
        "max_size": 512,  # the working image's longer side (the demo renders at 512); 0 = the input size
        "num_scales": 3,  # pyramid levels, sides ceil(S * 0.5^(n-i))
        "iterations": 100,  # mylbfgs iterations per scale
        "history": 25,  # mylbfgs nCorrection (stored correction pairs)
        "lr": 1.0,  # mylbfgs fixed step (the first step is min(1, 1/|g|_1) times this)
        "tol_x": 0.0,  # mylbfgs tolX (0: only a non-descent direction stops; the value seen is always 0)
        "tol_fun": 0.0,  # mylbfgs tolFun (stop when sum|g| <= tol_fun)
        "init": "image",  # 'image' (the content image) or 'random' (N(0, 1e-3^2) in Caffe space, from the seed)
        # Terms.
        "mrf_layer": "relu4_1",  # loadcaffe layer 21
        "mrf_weight": 1e-4,  # the texture term's weight (MRF "strength")
        "patch_size": 3,  # MRF patch side on the feature map
        "target_stride": 2,  # texture patches
        "source_stride": 2,  # patches of the image being optimised
        "confidence_threshold": 0.0,  # a source patch counts when its best correlation is >= this
        "texture_rotations": 1,  # rotations k * step for k in [-1, 1]
        "texture_rotation_step": math.pi / 24,
        "texture_scales": 1,  # scales step^s for s in [-1, 1]
        "texture_scale_step": 1.05,
        "texture_fill": "rows",  # how the texture image's hole is filled: 'rows' (the demo's) or 'content'
        "content_layer": "relu4_2",  # loadcaffe layer 23
        "content_weight": 20.0,  # times the MSE of content_layer features (MSECriterion, mean)
        "tv_weight": 1e-4,  # times 1/2 sum of squared neighbour differences in Caffe pixel space
        # Output.
        "jpeg_round_trip": False,  # blend.lua reads the result from a JPEG; off: lossy, codec-dependent bytes
        "jpeg_quality": 75,  # for jpeg_round_trip (Torch image.save's JPEG quality, torch/image init.lua)
    })


def resolve(config) -> ml_collections.ConfigDict:
    """``config`` with its preset applied to the fields still at their defaults; checks every choice field."""
    config = ml_collections.ConfigDict(config.to_dict())
    if config.preset not in ("", "smoke"):
        raise ValueError(f"msnps: preset must be '' or 'smoke', got {config.preset!r}")
    if config.preset == "smoke":
        defaults = default_config()
        for key, value in SMOKE.items():
            if config[key] == defaults[key]:
                config[key] = value
    choices = {"content_bn": ("eval", "batch"), "init": ("image", "random"), "texture_fill": ("rows", "content")}
    for key, allowed in choices.items():
        if config[key] not in allowed:
            raise ValueError(f"msnps: {key} must be one of {allowed}, got {config[key]!r}")
    for key in ("num_scales", "iterations", "history", "patch_size", "target_stride", "source_stride"):
        if int(config[key]) < 1:
            raise ValueError(f"msnps: {key} must be >= 1, got {config[key]}")
    taps = vgg.tap_names(19)
    for key in ("mrf_layer", "content_layer"):
        if config[key] not in taps:
            raise ValueError(f"msnps: {key}={config[key]!r} is not a VGG-19 tap ({', '.join(taps)})")
    return config


# ------------------------------------------------------------------------------------------------------------
# Resources.
# ------------------------------------------------------------------------------------------------------------


def _missing_vgg(path: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"msnps: vgg_weights={path!r}: no such file. MSNPS needs the Caffe VGG-19, VGG_ILSVRC_19_layers."
        "caffemodel (linked from leehomyc/Faster-High-Res-Neural-Inpainting's README, Google Drive folder; "
        "also the 'VGG_ILSVRC_19_layers' model of the Caffe Model Zoo); jaxinpaint downloads nothing. Pass "
        "the .caffemodel itself, or the .npz that `python -m jaxinpaint.systems.msnps.caffe_vgg IN.caffemodel "
        "OUT.npz` writes, as vgg_weights=PATH (predict: --option vgg_weights=PATH). A torchvision "
        "vgg19(weights='IMAGENET1K_V1').state_dict() file also loads, but its feature scales differ from "
        "Caffe's. vgg_weights='random' gives random weights for tests.")


def load_vgg(config) -> Any:
    """VGG-19 variables for ``config.vgg_weights`` (a local file, or ``'random'``)."""
    config = resolve(config)
    needed = 1 + max(vgg.conv_names(19).index("conv" + config[k][4:]) for k in ("mrf_layer", "content_layer"))
    if config.vgg_weights == "random":
        return vgg.random_variables(depth=19, num_convs=needed, width_divisor=int(config.vgg_width_divisor))
    if not config.vgg_weights:
        raise _missing_vgg("")
    if int(config.vgg_width_divisor) != 1:
        raise ValueError("msnps: vgg_width_divisor applies to vgg_weights='random' only")
    if not os.path.isfile(os.path.expanduser(config.vgg_weights)):
        raise _missing_vgg(config.vgg_weights)
    if config.vgg_weights.endswith(".caffemodel"):
        from jaxinpaint.systems.msnps import caffe_vgg

        variables = caffe_vgg.load(os.path.expanduser(config.vgg_weights))
    else:
        variables = vgg.load(config.vgg_weights)
    if "conv3_4" not in variables["params"]:
        raise ValueError(f"msnps: {config.vgg_weights} holds a VGG-16; MSNPS needs VGG-19")
    return variables


def load_content_model(config) -> tuple[Any, Any, int]:
    """``(generator module, variables, overlap)`` of the Context Encoder centre generator ``config.content_model``."""
    from jaxinpaint import api

    if not config.content_model:
        raise ValueError("msnps: give the content network as content_model=WORKDIR (a Context Encoder centre "
                         "generator: python train.py --config=configs/msnps.py --workdir=WORKDIR; predict: "
                         "--option content_model=WORKDIR)")
    model = api.load(config.content_model)
    if getattr(model, "name", None) != "context_encoder":
        raise ValueError(f"msnps: content_model={config.content_model} is a {getattr(model, 'name', '?')} model; "
                         "MSNPS needs a Context Encoder centre generator (configs/msnps.py)")
    module, variables = model.network("generator")
    if not module.center_only:
        raise ValueError(f"msnps: content_model={config.content_model} is a random-region Context Encoder; MSNPS "
                         "needs the centre generator (configs/msnps.py)")
    overlap = int(config.content_overlap)
    if overlap < 0:
        overlap = int(model.config.get("inference", {}).get("overlap", 4))
    ce_model.inner_box(module.fine_size, overlap)  # validates the overlap
    return module, variables, overlap


def load_resources(config) -> dict[str, Any]:
    """The content generator and the VGG-19, from local files only."""
    config = resolve(config)
    module, variables, overlap = load_content_model(config)
    return {"content": (module, variables, overlap), "vgg": load_vgg(config)}


# ------------------------------------------------------------------------------------------------------------
# Host-side image preparation (numpy).
# ------------------------------------------------------------------------------------------------------------


def to_caffe(rgb01: np.ndarray) -> np.ndarray:
    """[0, 1] RGB (..., 3) -> Caffe space: BGR ×256 minus the mean (``helper.lua::preprocess``)."""
    return (rgb01[..., ::-1] * 256.0 - np.asarray(CAFFE_MEAN_BGR, np.float32)).astype(np.float32)


def from_caffe(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_caffe` (``deprocess``)."""
    return ((x + np.asarray(CAFFE_MEAN_BGR, np.float32))[..., ::-1] / 256.0).astype(np.float32)


def center_paste_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the centre half where the content prediction goes (512: 128..384)."""
    return round(height / 4), round(3 * height / 4), round(width / 4), round(3 * width / 4)


def content_image(module, variables, overlap: int, image: np.ndarray, hole: np.ndarray, *,
                  bn: str = "eval") -> np.ndarray:
    """The content network's image (1, H, W, 3) in [0, 1] (module docstring, step 1).

    Args:
      image: (N, H, W, 3) in [0, 1]; hole pixels are never read.
      hole: (N, H, W, 1), 1 = hole.
      bn: 'eval' (running statistics) or 'batch' (statistics of these N images, N >= 2).
    """
    fine = int(module.fine_size)
    h, w = image.shape[1:3]
    signed = np.where(hole > 0.5, np.asarray(ce_model.MEAN_FILL, np.float32), image * 2.0 - 1.0).astype(np.float32)
    small = ce_model.fill_center(jnp.asarray(torch_image.scale(signed, (fine, fine))), overlap)
    if bn == "batch":
        pred, _ = module.apply(variables, small, train=True, mutable=["batch_stats"])
    else:
        pred = module.apply(variables, small, train=False)
    pred = np.asarray(pred, np.float32)
    top, bottom, left, right = center_paste_box(h, w)
    up = torch_image.scale(pred, (bottom - top, right - left))
    oy, ox = round(overlap * (bottom - top) / pred.shape[1]), round(overlap * (right - left) / pred.shape[2])
    out = signed.copy()
    out[:, top + oy:bottom - oy, left + ox:right - ox] = up[:, oy:up.shape[1] - oy, ox:up.shape[2] - ox]
    return (np.clip(out, -1.0, 1.0) + 1.0) / 2.0


def fill_rows(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The texture image: the hole's bounding box rows copied from above (upper half) and below (lower half).

    ``wrapper:39-41`` hard-codes this for the demo's 512² hole (rows 117-232 from 1-116, 233-280 from
    69-116, 281-396 from 397-512, 1-based: 164 rows from above, 116 from below). Generalised to a box of rows
    [r0, r1): its upper ``ceil((r1 - r0) / 2)`` rows (``top``) copy the ``top`` rows just above the box
    (row ``r0 - top + k``), or rows ``k mod r0`` when fewer than ``top`` exist; the lower rows copy the rows just
    below (``r1 + j``), or ``r1 + (j mod (H - r1))``; with no rows on one side the other side fills the whole
    box. The demo's split differs (164/116 instead of 140/140). Only hole pixels are overwritten (the demo's box
    is all hole). (1, H, W, C) and (1, H, W, 1) -> (1, H, W, C).
    """
    out = image.copy()
    m = hole[0, ..., 0] > 0.5
    if not m.any():
        return out
    rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    h = image.shape[1]
    above, below = r0, h - r1
    if above == 0 and below == 0:
        raise ValueError("msnps: texture_fill='rows' needs known rows above or below the hole; "
                         "use texture_fill='content'")
    top = (r1 - r0 + 1) // 2 if above and below else (r1 - r0 if above else 0)
    src = np.empty(r1 - r0, np.int64)
    for k in range(r1 - r0):
        if k < top:  # rows above, the block [r0 - top, r0) moved down (periodic when fewer exist)
            src[k] = r0 - top + k if above >= top else (k % above)
        else:
            j = k - top
            n = r1 - r0 - top
            src[k] = r1 + j if below >= n else r1 + (j % below)
    block = image[:, src, c0:c1]
    region = m[r0:r1, c0:c1][None, ..., None]
    out[:, r0:r1, c0:c1] = np.where(region, block, image[:, r0:r1, c0:c1])
    return out


def jpeg_round_trip(image01: np.ndarray, quality: int) -> np.ndarray:
    """(1, H, W, 3) in [0, 1] through an 8-bit JPEG and back (``blend.lua`` reads its input from a JPEG)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.clip(image01[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return (np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255.0)[None]


def pyramid_sizes(height: int, width: int, num_scales: int) -> list[tuple[int, int]]:
    """``ceil(side * 0.5^(n-i))`` for i = 1..n (``wrapper:51-59``), coarse to fine."""
    return [(math.ceil(height * 0.5 ** (num_scales - i)), math.ceil(width * 0.5 ** (num_scales - i)))
            for i in range(1, num_scales + 1)]


# ------------------------------------------------------------------------------------------------------------
# One scale: match once, then mylbfgs (one jitted function per scale shape).
# ------------------------------------------------------------------------------------------------------------


def total_variation(x: jax.Array) -> jax.Array:
    """½Σ over the top-left (H-1)×(W-1) pixels of squared right and down differences (``mylib/tv.lua``)."""
    core = x[:, :-1, :-1]
    return 0.5 * (jnp.sum((core - x[:, :-1, 1:]) ** 2) + jnp.sum((core - x[:, 1:, :-1]) ** 2))


def _vgg_model(config) -> vgg.Model:
    width = int(config.vgg_width_divisor) if config.vgg_weights == "random" else 1
    return vgg.Model(taps=tuple(sorted({config.mrf_layer, config.content_layer})), normalize_input=False,
                     width_divisor=width, depth=19)


@functools.lru_cache(maxsize=16)
def _features_fn(model: vgg.Model):
    return jax.jit(lambda variables, x: model.apply(variables, x))


def _scale_settings(config) -> tuple:
    keys = ("mrf_layer", "content_layer", "mrf_weight", "content_weight", "tv_weight", "patch_size",
            "source_stride", "confidence_threshold", "iterations", "history", "lr", "tol_x", "tol_fun",
            "vgg_weights", "vgg_width_divisor")
    return tuple((k, config[k]) for k in keys)


@functools.lru_cache(maxsize=16)
def _scale_fn(settings: tuple):
    """The jitted optimisation of one scale: ``(vgg_vars, x0, content_target, targets, offset, total) -> (x,
    info)``; ``offset`` and ``total`` (traced: every scale shares the program) place its iterations in the
    whole solve's progress."""
    s = dict(settings)
    model = _vgg_model(ml_collections.ConfigDict(s))
    patch = int(s["patch_size"])

    @jax.jit
    def run(variables, x0, content_target, targets, offset, total):
        feat0 = model.apply(variables, x0)[s["mrf_layer"]][0]
        ys, xs = mrf.patch_origins(feat0.shape[0], feat0.shape[1], patch, int(s["source_stride"]))
        index, confident = mrf.match(feat0, targets, ys, xs, float(s["confidence_threshold"]))
        matched = targets[index]
        weights = mrf.coverage_weights(feat0.shape[:2], ys, xs, patch, confident)

        def terms(x):
            feats = model.apply(variables, x)
            texture = mrf.mrf_loss(feats[s["mrf_layer"]][0], matched, ys, xs, confident, weights,
                                   float(s["mrf_weight"]))
            content = float(s["content_weight"]) * jnp.mean((feats[s["content_layer"]] - content_target) ** 2)
            tv = float(s["tv_weight"]) * total_variation(x)
            return texture + content + tv, {"texture": texture, "content": content, "tv": tv}

        grad_fn = jax.value_and_grad(terms, has_aux=True)

        def opfunc(x):
            (_, aux), g = grad_fn(x)
            return jnp.zeros((), jnp.float32), g, aux  # the original's objective value is always 0

        cfg = lbfgs.LBFGSConfig(max_iter=int(s["iterations"]), history=int(s["history"]), lr=float(s["lr"]),
                                tol_x=float(s["tol_x"]), tol_fun=float(s["tol_fun"]))
        x, info = lbfgs.minimize(opfunc, x0, cfg, progress=(offset, total))
        return x, {**info["aux"], "n_iter": info["n_iter"], "confident": jnp.mean(confident.astype(jnp.float32))}

    return run


def synthesize(resources, content01: np.ndarray, texture01: np.ndarray, config, seed: int = 0
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """The texture optimisation (module docstring, step 2) of (1, H, W, 3) [0, 1] images; returns the result
    in [0, 1] (clamped) and the per-scale info."""
    config = resolve(config)
    variables = resources["vgg"]
    features = _features_fn(_vgg_model(config))
    content_caffe, texture_caffe = to_caffe(content01), to_caffe(texture01)
    h, w = content01.shape[1:3]
    run = _scale_fn(_scale_settings(config))
    x = None
    info: dict[str, list] = {"texture_loss": [], "content_loss": [], "tv_loss": [], "n_iter": [], "sizes": [],
                             "confident": []}
    for i, size in enumerate(pyramid_sizes(h, w, int(config.num_scales))):
        content_s = torch_image.scale(content_caffe, size)
        texture_s = torch_image.scale(texture_caffe, size)
        if x is None:
            if config.init == "random":
                x = (np.random.default_rng(seed).standard_normal(content_s.shape) * 0.001).astype(np.float32)
            else:
                x = content_s
        else:
            x = torch_image.scale(np.asarray(x), size)
        content_target = features(variables, jnp.asarray(content_s))[config.content_layer]
        augmented = mrf.augment(texture_s[0], num_rotations=int(config.texture_rotations),
                                rotation_step=float(config.texture_rotation_step),
                                num_scales=int(config.texture_scales), scale_step=float(config.texture_scale_step))
        texture_feats = [features(variables, jnp.asarray(a[None]))[config.mrf_layer][0] for a in augmented]
        targets = mrf.target_patches(texture_feats, int(config.patch_size), int(config.target_stride))
        per_scale, scales = int(config.iterations), int(config.num_scales)
        x, scale_info = run(variables, jnp.asarray(x), content_target, targets, jnp.int32(i * per_scale),
                            jnp.int32(scales * per_scale))
        scale_info = jax.tree.map(np.asarray, scale_info)
        n = int(scale_info["n_iter"])
        for key, name in (("texture", "texture_loss"), ("content", "content_loss"), ("tv", "tv_loss")):
            info[name].append(scale_info[key][:n])
        info["n_iter"].append(n)
        info["sizes"].append(size)
        info["confident"].append(float(scale_info["confident"]))
        tex = scale_info["texture"][:n]
        log.info("msnps scale %d/%d (%dx%d, %d target patches): texture loss %.5g -> %.5g in %d iterations",
                 i + 1, config.num_scales, size[1], size[0], targets.shape[0], tex[0] if n else float("nan"),
                 tex[-1] if n else float("nan"), n)
    return np.clip(from_caffe(np.asarray(x)), 0.0, 1.0), info


def host_solve(resources, image, mask, config, seed):
    """The whole pipeline for one image: (1, H, W, 3) [0, 1] and (1, H, W, 1) hole -> prediction (1, H, W, 3)."""
    config = resolve(config)
    image = np.asarray(image, np.float32)
    hole = (np.asarray(mask, np.float32) > 0.5).astype(np.float32)
    h, w = image.shape[1:3]
    work_img, work_hole = image, hole
    if int(config.max_size) > 0 and max(h, w) != int(config.max_size):
        longer = int(config.max_size)
        size = (max(1, int(h * longer / max(h, w))), max(1, int(w * longer / max(h, w))))  # image.scale(img, MAX)
        work_img = torch_image.scale(np.where(hole > 0.5, 0.0, image).astype(np.float32), size)
        work_hole = (torch_image.scale(hole, size) > 1e-8).astype(np.float32)  # any trace of hole is a hole
    module, variables, overlap = resources["content"]
    if config.content_bn == "batch" and image.shape[0] < 2:
        raise ValueError("msnps: content_bn='batch' needs several images in one batch (the released code ran "
                         "its 32 demo images as one batch); for one image the generator's 1x1 bottleneck has a "
                         "single value per channel, so batch statistics are undefined. Use content_bn='eval', or "
                         "call jaxinpaint.systems.msnps.solver.content_image on a batch")
    content = content_image(module, variables, overlap, work_img, work_hole, bn=config.content_bn)
    if config.texture_fill == "rows":
        texture = fill_rows(np.where(work_hole > 0.5, 0.0, work_img).astype(np.float32), work_hole)
    else:
        texture = np.where(work_hole > 0.5, content, work_img).astype(np.float32)
    result, info = synthesize(resources, content, texture, config, seed)
    if config.jpeg_round_trip:
        result = jpeg_round_trip(result, int(config.jpeg_quality))
    if result.shape[1:3] != (h, w):
        result = np.clip(torch_image.scale(result, (h, w)), 0.0, 1.0)
    info["content"] = content
    return result, info


def iterations(config) -> int:
    config = resolve(config)
    return int(config.iterations) * int(config.num_scales)
