"""Deep Image Prior inpainting as a per-image solver (Ulyanov, Vedaldi, Lempitsky, CVPR 2018;
``DmitryUlyanov/deep-image-prior @ 042e0d4``, ``inpainting.ipynb`` and ``utils/common_utils.py``).

DIP fits a randomly initialised skip encoder-decoder ``f_theta`` to one image: with a fixed input ``z``, Adam
minimises ``mean((f(z) * m - x * m)^2)`` over the parameters, where ``m`` is 1 on known pixels. The network
reproduces the known pixels long before it could reproduce noise, and what it draws in the hole is the prior.
There is no training set and no weight file.

What the notebook does, and this solver reproduces (spec systems-more.md §7):

* ``z = get_noise(input_depth, 'noise', (H, W))``: U[0, 1) * ``input_noise_var`` (0.1), or for ``input='meshgrid'``
  (vase) two channels x and y in [0, 1] (x along the width first).
* Every iteration feeds ``z + reg_noise_std * N(0, 1)`` with a fresh draw (when ``reg_noise_std > 0``).
* Loss: ``MSELoss(out * m, img * m)``, the mean over all 3*H*W elements, hole pixels included as zeros.
* Optimiser: Adam (PyTorch's defaults b1 0.9, b2 0.999, eps 1e-8; optax's Adam has the same update) with a
  constant ``lr`` over the network parameters only, one gradient step per iteration, ``iterations`` steps.
* The result is ``f(z)`` with the *unperturbed* ``z`` after the last step, BatchNorm still in training mode (the
  notebook never calls ``eval()``). ``solve`` returns it uncomposited; ``jaxinpaint.api`` (and therefore
  ``predict``) composites it with the known pixels, which come back byte-identical.
* Library's ``param_noise=True`` is not ported: the notebook's loop rebinds a local name and does nothing (§7.3).

Presets (``config.preset``, the notebook's three inpainting figures; spec table in §7.2):

=========  ========  =====  ==========================================  =====  =====  =========  ==========
preset     input     depth  down / up / skip channels                   k d/u  1x1up  iterations reg_noise
=========  ========  =====  ==========================================  =====  =====  =========  ==========
library    noise 1   6      16,32,64,128,128,128 / same / 0             5/3    no     3001       0
kate       noise 32  5      128 x5 / 128 x5 / 128 x5                    3/3    yes    6001       0.03
vase       meshgrid  5      128 x5 / 128 x5 / 0                         3/3    yes    5001       0.03
=========  ========  =====  ==========================================  =====  =====  =========  ==========

All use lr 0.01, reflection padding, nearest upsampling, LeakyReLU(0.2), a 1x1 skip filter and a sigmoid
output. ``library`` is the default: the smallest network input and the fewest iterations. Every field left at
``None`` in :func:`default_config` takes the preset's value; any other value overrides it.

Randomness comes from the ``rng`` the api derives from the seed: the network's initial weights (PyTorch's default
init, drawn with JAX's generator, so not torch's numbers), ``z`` and the per-step noise (``fold_in(key, i)``),
so the same image, mask and seed give the same bytes. ``loop='scan'`` runs the whole optimisation as one jitted
``lax.scan`` (:func:`solve`, the contract's form; the default on GPU/TPU); ``loop='host'`` runs the same jitted
step from a Python loop (:func:`host_solve`; the default on CPU, ``loop='auto'``), because XLA:CPU runs
while-loop bodies several times slower than top-level programs (library, 256 px: 4.8 vs 0.83 steps/s against
PyTorch's 8.0 in the same window; benchmarks/README.md). The two loops agree up to float rounding; each is
deterministic for a seed.

Sizes: H and W are padded by the api to multiples of ``2**depth`` (64 for library). Below the network's smallest
working size (:func:`min_size`: 192 for library, whose 5x5 reflection pads need a 3x3 deepest map) the solver
fits a symmetric extension of the image and crops the result.

Not ported: the restoration notebook's backtracking (it lives in its plotting branch) and the ``barbara`` preset
(a restoration setting, not inpainting), downsampling other than strided convolutions.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxinpaint import contract
from jaxinpaint.systems.dip.model import Skip

#: The notebook's three inpainting settings (``inpainting.ipynb`` raw lines 164-251, cell 14).
PRESETS = {
    "library": dict(input="noise", input_depth=1, iterations=3001, reg_noise_std=0.0,
                    num_channels_down=(16, 32, 64, 128, 128, 128), num_channels_up=(16, 32, 64, 128, 128, 128),
                    num_channels_skip=(0, 0, 0, 0, 0, 0), filter_size_down=5, filter_size_up=3,
                    filter_skip_size=1, need1x1_up=False, upsample_mode="nearest"),
    "kate": dict(input="noise", input_depth=32, iterations=6001, reg_noise_std=0.03,
                 num_channels_down=(128,) * 5, num_channels_up=(128,) * 5, num_channels_skip=(128,) * 5,
                 filter_size_down=3, filter_size_up=3, filter_skip_size=1, need1x1_up=True, upsample_mode="nearest"),
    "vase": dict(input="meshgrid", input_depth=2, iterations=5001, reg_noise_std=0.03,
                 num_channels_down=(128,) * 5, num_channels_up=(128,) * 5, num_channels_skip=(0,) * 5,
                 filter_size_down=3, filter_size_up=3, filter_skip_size=1, need1x1_up=True, upsample_mode="nearest"),
}
INPUTS = ("noise", "meshgrid")


def default_config() -> ml_collections.ConfigDict:
    """The solver's hyper-parameters. ``None`` = the preset's value (module docstring).

    Fields:
      preset: 'library' (default), 'kate' or 'vase'.
      iterations: Adam steps (library 3001, kate 6001, vase 5001).
      lr: Adam learning rate (0.01 in every preset).
      b1, b2, eps: Adam's moment decays and epsilon (PyTorch's defaults, which the notebook keeps).
      reg_noise_std: std of the Gaussian added to ``z`` afresh every step (library 0, kate/vase 0.03).
      input: 'noise' (U[0,1) * input_noise_var) or 'meshgrid' (x, y in [0, 1]; needs input_depth 2).
      input_depth: channels of ``z`` (library 1, kate 32, vase 2).
      input_noise_var: the scale of the uniform noise input (``get_noise``'s ``var=1/10``).
      num_channels_down, num_channels_up, num_channels_skip: per-scale widths of the skip network (lists of
        equal length; the length is the depth, and H, W are padded to multiples of 2**depth).
      filter_size_down, filter_size_up, filter_skip_size: kernel sizes (an int or one per scale).
      need1x1_up: the extra 1x1 conv -> BN -> act after each up conv.
      upsample_mode: 'nearest' or 'bilinear'.
      pad: 'reflection' (the notebook's) or 'zero'.
      act_fun: 'LeakyReLU' (slope 0.2; the notebook's), 'ELU', 'Swish' or 'none'.
      need_sigmoid, need_bias: the output sigmoid and conv biases (both on in the notebook).
      conv_impl: how convolutions are computed (``jaxinpaint.nn.conv.Conv2D.impl``): None = 'auto'.
      loop: 'auto' (default: 'host' on CPU, 'scan' elsewhere), 'scan' (the whole optimisation one jitted
        ``lax.scan``) or 'host' (a Python loop over the jitted step; 6-8x faster on XLA:CPU, see
        :func:`host_solve`).
    """
    return ml_collections.ConfigDict({
        "preset": "library", "iterations": None, "lr": 0.01, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
        "reg_noise_std": None, "input": None, "input_depth": None, "input_noise_var": 0.1,
        "num_channels_down": None, "num_channels_up": None, "num_channels_skip": None,
        "filter_size_down": None, "filter_size_up": None, "filter_skip_size": None, "need1x1_up": None,
        "upsample_mode": None, "pad": "reflection", "act_fun": "LeakyReLU", "need_sigmoid": True, "need_bias": True,
        "conv_impl": None, "loop": "auto",
    })


@dataclasses.dataclass(frozen=True)
class Settings:
    """A config resolved against its preset (hashable: the jitted solve's static part)."""

    module: Skip
    iterations: int
    lr: float
    b1: float
    b2: float
    eps: float
    reg_noise_std: float
    input: str
    input_depth: int
    input_noise_var: float


def _tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def resolve(config) -> Settings:
    """The preset's values, overridden by every config field that is not ``None``; raises ValueError naming the
    field on an unknown preset, input or a bad value."""
    if config.preset not in PRESETS:
        raise ValueError(f"dip: config field 'preset' must be one of {sorted(PRESETS)}, got {config.preset!r}")
    p = dict(PRESETS[config.preset])
    for key in p:
        if config.get(key) is not None:
            p[key] = _tuple(config.get(key))
    if p["input"] not in INPUTS:
        raise ValueError(f"dip: config field 'input' must be one of {INPUTS}, got {p['input']!r}")
    if p["input"] == "meshgrid" and int(p["input_depth"]) != 2:
        raise ValueError(f"dip: input 'meshgrid' has 2 channels, but input_depth is {p['input_depth']}")
    if int(p["iterations"]) < 0:
        raise ValueError(f"dip: config field 'iterations' must be >= 0, got {p['iterations']}")
    if float(p["reg_noise_std"]) < 0:
        raise ValueError(f"dip: config field 'reg_noise_std' must be >= 0, got {p['reg_noise_std']}")
    module = Skip(num_input_channels=int(p["input_depth"]), num_output_channels=3,
                  num_channels_down=tuple(int(c) for c in p["num_channels_down"]),
                  num_channels_up=tuple(int(c) for c in p["num_channels_up"]),
                  num_channels_skip=tuple(int(c) for c in p["num_channels_skip"]),
                  filter_size_down=p["filter_size_down"], filter_size_up=p["filter_size_up"],
                  filter_skip_size=int(p["filter_skip_size"]), need_sigmoid=bool(config.need_sigmoid),
                  need_bias=bool(config.need_bias), pad=str(config.pad), upsample_mode=p["upsample_mode"],
                  act_fun=str(config.act_fun), need1x1_up=bool(p["need1x1_up"]), conv_impl=config.conv_impl)
    module._check()
    return Settings(module=module, iterations=int(p["iterations"]), lr=float(config.lr), b1=float(config.b1),
                    b2=float(config.b2), eps=float(config.eps), reg_noise_std=float(p["reg_noise_std"]),
                    input=p["input"], input_depth=int(p["input_depth"]), input_noise_var=float(config.input_noise_var))


def network_input(key: jax.Array, s: Settings, height: int, width: int) -> jax.Array:
    """``get_noise(input_depth, input, (H, W))`` in NHWC: (1, H, W, input_depth)."""
    if s.input == "meshgrid":
        x = jnp.arange(width, dtype=jnp.float32) / max(width - 1, 1)
        y = jnp.arange(height, dtype=jnp.float32) / max(height - 1, 1)
        xx, yy = jnp.meshgrid(x, y)  # (H, W) each, x varying along the width
        return jnp.stack([xx, yy], axis=-1)[None]
    return jax.random.uniform(key, (1, height, width, s.input_depth), jnp.float32) * s.input_noise_var


def _pad_small(net: Skip, image, mask):
    """Too small for the deepest reflection padding (library: below 192 px): a symmetric extension whose extra
    pixels are known (copies of the image); the caller crops the result back."""
    h, w = image.shape[1:3]
    if h % net.size_multiple or w % net.size_multiple:
        raise ValueError(f"dip: H and W must be multiples of {net.size_multiple} (2**depth), got {h}x{w}")
    min_side = min_size(net)
    ph, pw = max(min_side - h, 0), max(min_side - w, 0)
    if ph or pw:
        image = jnp.pad(image, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
        mask = jnp.pad(mask, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
    return image, mask


def _setup(s: Settings, image, mask, rng):
    """``(consts, carry)``: what every step reads (z, the known-pixel target, the noise key, BN buffers) and the
    optimisation state (parameters, Adam state)."""
    net = s.module
    h, w = image.shape[1:3]
    k_init, k_input, k_noise = jax.random.split(rng, 3)
    z = network_input(k_input, s, h, w)
    variables = net.init(k_init, z)
    known = 1.0 - mask  # the notebook's mask: 1 = known
    consts = {"z": z, "known": known, "target": image * known, "k_noise": k_noise,
              "stats": {"batch_stats": variables["batch_stats"]}}  # buffers: never read in train mode
    params = variables["params"]
    return consts, (params, _adam(s).init(params))


def _adam(s: Settings):
    return optax.adam(s.lr, b1=s.b1, b2=s.b2, eps=s.eps)


def _step(s: Settings, consts, carry, i):
    """One iteration of the notebook's loop: perturb z, MSE on the known pixels, gradient, Adam update."""
    net, tx = s.module, _adam(s)
    params, opt_state = carry
    z = consts["z"]

    def loss_fn(params, x):
        out = net.apply({"params": params, **consts["stats"]}, x, train=True)
        return jnp.mean(jnp.square(out * consts["known"] - consts["target"]))

    if s.reg_noise_std > 0:
        z = z + s.reg_noise_std * jax.random.normal(jax.random.fold_in(consts["k_noise"], i), z.shape)
    loss, grads = jax.value_and_grad(loss_fn)(params, z)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss


def _finish(s: Settings, consts, params):
    """The result: the network on the unperturbed z, BN in training mode (the notebook's final image)."""
    return s.module.apply({"params": params, **consts["stats"]}, consts["z"], train=True)


def solve(resources, image: jax.Array, mask: jax.Array, config, rng: jax.Array):
    """Fits the skip network to the known pixels as one ``lax.scan``; returns ``(f(z) after the last step,
    {'loss': per step, 'objective': the same})``.

    ``image`` f32[1, H, W, 3] in [0, 1], ``mask`` f32[1, H, W, 1] with 1 = hole (the api pads both to
    :func:`size_multiple`). ``info['loss'][i]`` is the objective evaluated before the i-th Adam step (on the
    perturbed input), as the notebook prints it.
    """
    del resources
    s = resolve(config)
    h, w = image.shape[1:3]
    image, mask = _pad_small(s.module, image, mask)
    consts, carry = _setup(s, image, mask, rng)

    def step(carry, i):
        carry, loss = _step(s, consts, carry, i)
        contract.report_progress(i, s.iterations, objective=loss)
        return carry, loss

    (params, _), losses = jax.lax.scan(step, carry, jnp.arange(s.iterations))
    pred = _finish(s, consts, params)[:, :h, :w]
    # 'objective' is the key predict's progress line reads (as for LaMa's refinement); 'loss' the same values.
    return pred, {"loss": losses, "objective": losses}


@functools.lru_cache(maxsize=8)
def _compiled(config_json: str, kind: str):
    """Jitted pieces for one configuration (cached: one compilation per config and shape)."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    s = resolve(config)
    if kind == "scan":
        return jax.jit(lambda image, mask, rng: solve(None, image, mask, config, rng))
    return (jax.jit(lambda image, mask, rng: _setup(s, image, mask, rng)),
            jax.jit(lambda consts, carry, i: _step(s, consts, carry, i), donate_argnums=1),
            jax.jit(lambda consts, params: _finish(s, consts, params)))


def host_solve(resources, image, mask, config, seed):
    """What ``jaxinpaint.load('dip')`` runs: ``config.loop`` 'scan' = the jitted :func:`solve` (one ``lax.scan``);
    'host' = the same step as its own jitted program, called from a Python loop.

    Why 'host' exists: XLA:CPU runs the body of a while loop (what ``lax.scan`` compiles to) 4-10x slower than
    the same computation as a top-level program (library preset, 256 px, shared 2-core machine: 2.9 s vs 0.40 s
    per step; benchmarks/README.md). The results of both loops are the same computation; their bytes may differ
    by float rounding (different fusion), each being deterministic for a seed.
    """
    del resources
    key = json.dumps(config.to_dict(), sort_keys=True)
    rng = jax.random.key(seed)
    image, mask = jnp.asarray(image), jnp.asarray(mask)
    loop = config.loop
    if loop == "auto":
        loop = "host" if jax.default_backend() == "cpu" else "scan"
    if loop == "scan":
        return _compiled(key, "scan")(image, mask, rng)
    # The host loop's programs do not depend on the number of iterations: one compilation serves every count.
    key = json.dumps({**config.to_dict(), "iterations": 0}, sort_keys=True)
    if loop != "host":
        raise ValueError(f"dip: config field 'loop' must be 'auto', 'scan' or 'host', got {config.loop!r}")
    s = resolve(config)
    h, w = image.shape[1:3]
    setup, step, finish = _compiled(key, "host")
    image, mask = _pad_small(s.module, image, mask)
    consts, carry = setup(image, mask, rng)
    losses = []
    every = max(1, s.iterations // 50)
    for i in range(s.iterations):
        carry, loss = step(consts, carry, jnp.asarray(i, jnp.int32))
        losses.append(loss)
        if (i + 1) % every == 0 or i + 1 == s.iterations:
            contract.host_progress(i + 1, s.iterations, objective=loss)
    losses = jnp.stack(losses) if losses else jnp.zeros((0,), jnp.float32)
    pred = finish(consts, carry[0])[:, :h, :w]
    return pred, {"loss": losses, "objective": losses}


def min_size(net: Skip) -> int:
    """The smallest multiple of ``2**depth`` at which every reflection padding is narrower than its input
    (``ReflectionPad2d`` needs pad < size): 192 for the library preset (its deepest map is 3x3 there)."""
    if net.pad != "reflection":
        return net.size_multiple
    n = net.n_scales
    k_down = net.filter_size_down if isinstance(net.filter_size_down, tuple) else (net.filter_size_down,) * n
    k_up = net.filter_size_up if isinstance(net.filter_size_up, tuple) else (net.filter_size_up,) * n
    # At scale i the down convs see maps of side/2**i (stride 2) and side/2**(i+1); the up conv side/2**i.
    need = 1
    for i in range(n):
        need = max(need, ((k_down[i] - 1) // 2 + 1) * 2 ** (i + 1), ((k_up[i] - 1) // 2 + 1) * 2 ** i,
                   ((net.filter_skip_size - 1) // 2 + 1) * 2 ** i)
    return -(-need // net.size_multiple) * net.size_multiple


def size_multiple(config) -> int:
    return resolve(config).module.size_multiple


def iterations(config) -> int:
    return resolve(config).iterations
