"""Training parity: one Big LaMa step of jaxinpaint's trainer equals one step of LaMa's own trainer.

Reference: ``lama_train_step_small_seed0.npz`` in ../shared/reference (README section "LaMa: one training
step"): LaMa's ``DefaultInpaintingTrainingModule`` (big-lama.yaml) driven through one batch the way
pytorch-lightning 1.2.9 runs its two optimisers (G update, then D update), shrunk to a small generator and
discriminator, with the HRF perceptual encoder's weights from a numpy recipe.

Everything runs through the project's own code path: ``configs/big_lama.py`` (``config_lib``) overridden only by
the sizes the fixture states; the initial weights through ``config.init_from`` (``trainer.load_init_weights`` and
LaMa's converter, as a user fine-tuning from a LaMa checkpoint); the HRF encoder through
``resnet_ade20k.variables_from_state_dict``; the step through ``trainer.make_train_step`` with the LaMa system's
updates (the function ``train_and_evaluate`` jits). No loss is re-implemented here.

The fixture README's advice is to test the pieces separately: Adam's first step is about p - lr·sign(g), so
float32 noise in near-zero gradients flips signs and moves a parameter by 2·lr, and the generator gradient
end to end carries the HRF encoder's ReLU/max-pool routing noise (1e-3). Tolerances (the README's table):

=============================================  ======================================================
G losses (trainer step)                        1e-5 relative
G forward, D logits and features               1e-5 absolute; 1e-4 relative to the array's max
loss-term gradients w.r.t. the prediction      1e-4 relative L2 (on the stored prediction)
generator backward (stored cotangent)          1e-4 of each tensor's max; ``generator.model.1.*`` 5e-2
G gradients end to end (via Adam's state)      5e-2 of each tensor's max; grad norm 3e-3 relative
update rule (stored grads -> clip -> Adam)     params 1e-7 absolute plus one float32 ulp of the value;
                                               Adam moments 1e-6 relative (G's clip coefficient is one ulp
                                               apart: float32 sums the gradient norm in another order)
Adam alone on torch's clipped gradients        moments bit for bit, params 2e-8 (torch's arithmetic)
G parameters end to end                        1e-6 where both clipped gradients agree in sign and are
                                               >= 1e-5; 2·lr elsewhere
running statistics                             1e-5 relative to the array's max
D update from ``after_g_step.*``               losses 1e-5 rel; grads 1e-4 of max; params 1e-5; buffers 1e-5
D update end to end (the whole LaMa step)      no tight comparison (README): losses 5e-3 rel, params 2·lr,
                                               buffers 5e-3 relative to max
=============================================  ======================================================

``zero_gradient_params`` (conv biases in front of a train-mode BatchNorm: mathematically zero gradient, float32
noise that Adam turns into steps of up to lr) are held only to |Δ| <= lr after a step, the README's alternative
to leaving them out. BatchNorm's ``num_batches_tracked`` has no counterpart here (the momentum is fixed, so it
feeds no number).

``test_changing_a_loss_weight_by_one_percent_fails`` shows that the comparison really compares: each loss weight
of the config moved by 1 % makes the loss check fail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import reference_file, run_update

from jaxinpaint import config_lib, contract, losses
from jaxinpaint.backbones import resnet_ade20k
from jaxinpaint.systems.lama import convert, objective
from jaxinpaint.train import optim, trainer

FIXTURE = "lama_train_step_small_seed0.npz"

LOSS_RTOL = 1e-5
PRED_ATOL = 1e-5
D_OUTPUT_RTOL_MAX = 1e-4
DPRED_REL_L2 = 1e-4
VJP_REL_MAX, VJP_STEM_REL_MAX, STEM = 1e-4, 5e-2, "generator.model.1."
E2E_GRAD_REL_MAX, GRAD_NORM_RTOL = 5e-2, 3e-3
UPDATE_ATOL, UPDATE_RTOL, MOMENT_RTOL, ADAM_ATOL = 1e-7, 2.0**-23, 1e-6, 2e-8
SIGN_RULE_ATOL, SIGN_RULE_MIN_GRAD = 1e-6, 1e-5
BUFFER_RTOL_MAX = 1e-5
D_GRAD_REL_MAX, D_PARAM_ATOL = 1e-4, 1e-5
D_E2E_LOSS_RTOL, D_E2E_BUFFER_RTOL_MAX = 5e-3, 5e-3

# LaMa's logged G terms -> (our unweighted metric, the config weight that multiplies it; None: inside the term).
G_TERMS = {"gen_l1": ("l1", None), "gen_adv": ("adversarial", "adversarial"),
           "gen_fm": ("feature_matching", "feature_matching"), "gen_resnet_pl": ("hrf_perceptual", "hrf_perceptual")}
NETS = ("generator", "discriminator")


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles_full_precision():
    """XLA without most optimisations (compile time dominates on 2 cores) and float32 matmuls/convolutions at
    full precision (a GPU's TF32 default would miss every tolerance above)."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    with jax.default_matmul_precision("highest"):
        yield
    jax.config.update("jax_disable_most_optimizations", previous)


# ---------------------------------------------------------------------------------------------------------------
# The fixture, the config, the initial state.
# ---------------------------------------------------------------------------------------------------------------


def hrf_recipe(keys_shapes, seed: int, bn3_scale: float) -> dict[str, np.ndarray]:
    """The HRF encoder's initial state dict, the fixture README's numpy recipe (the weights are not stored)."""
    out = {}
    for i, (key, shape) in enumerate(keys_shapes):
        rng = np.random.default_rng([seed, i])
        parts = key.split(".")
        leaf = parts[-1]
        if leaf == "num_batches_tracked":
            out[key] = np.array(1000, dtype=np.int64)
            continue
        if leaf == "weight" and len(shape) == 4:  # conv (out, in, kh, kw): kaiming normal, fan_out
            a = rng.normal(0.0, np.sqrt(2.0 / (shape[0] * shape[2] * shape[3])), shape)
        elif leaf == "weight" and len(shape) == 1:
            a = rng.uniform(0.75, 1.25, shape)
        elif leaf in ("bias", "running_mean") and len(shape) == 1:
            a = rng.normal(0.0, 0.1, shape)
        elif leaf == "running_var" and len(shape) == 1:
            a = rng.uniform(0.5, 1.5, shape)
        else:
            raise ValueError(f"no recipe for {key} {shape}")
        if parts[0].startswith("layer") and len(parts) == 4 and parts[2] == "bn3" and leaf in ("weight", "bias"):
            a = a * bn3_scale  # every Bottleneck's bn3, not the stem's top-level bn3
        out[key] = a.astype(np.float32)
    return out


@dataclasses.dataclass
class Reference:
    path: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    hrf_state_dict: dict[str, np.ndarray]

    def sub(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays under ``prefix``, with the prefix stripped (original LaMa keys)."""
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def batch(self) -> dict[str, jax.Array]:
        """The fixture's batch in the project's layout (NHWC, mask 1 = hole: LaMa's polarity too)."""
        return {k: jnp.asarray(self.arrays[k].transpose(0, 2, 3, 1)) for k in ("image", "mask")}


@pytest.fixture(scope="module")
def ref() -> Reference:
    path = reference_file(FIXTURE)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("config_json")))
    recipe = meta["hrf_recipe"]
    keys_shapes = [(key, tuple(int(d) for d in shape)) for key, shape in recipe["keys"]]
    hrf = hrf_recipe(keys_shapes, recipe["seed"], recipe["bn3_scale"])
    digest = hashlib.sha256(b"".join(hrf[k].tobytes() for k, _ in keys_shapes)).hexdigest()
    if digest != recipe["sha256"]:
        pytest.fail(f"the HRF recipe gives sha256 {digest}, the fixture says {recipe['sha256']}: this NumPy "
                    f"({np.__version__}) draws other random streams than the fixture's, so nothing can be compared")
    return Reference(str(path), arrays, meta, hrf)


def parity_config(ref: Reference):
    """``configs/big_lama.py`` with the fixture's sizes; every loss weight, mode and optimiser setting is Big LaMa's."""
    g, d, batch = ref.meta["config"]["generator"], ref.meta["config"]["discriminator"], ref.meta["batch"]
    assert (g["kind"], d["kind"]) == ("ffc_resnet", "pix2pixhd_nlayer") and batch["h"] == batch["w"]
    c = config_lib.get_config("big_lama")
    assert c.generator.kind == "FFCResNetGenerator" and c.discriminator.kind == "NLayerDiscriminator"
    c.generator.update(input_nc=g["input_nc"], output_nc=g["output_nc"], ngf=g["ngf"],
                       n_downsampling=g["n_downsampling"], n_blocks=g["n_blocks"], add_out_act=g["add_out_act"],
                       init_ratio_gin=g["init_conv_kwargs"]["ratio_gin"],
                       init_ratio_gout=g["init_conv_kwargs"]["ratio_gout"],
                       downsample_ratio_gin=g["downsample_conv_kwargs"]["ratio_gin"],
                       downsample_ratio_gout=g["downsample_conv_kwargs"]["ratio_gout"],
                       resnet_ratio_gin=g["resnet_conv_kwargs"]["ratio_gin"],
                       resnet_ratio_gout=g["resnet_conv_kwargs"]["ratio_gout"],
                       enable_lfu=g["init_conv_kwargs"]["enable_lfu"],
                       resnet_enable_lfu=g["resnet_conv_kwargs"]["enable_lfu"])
    c.discriminator.update(input_nc=d["input_nc"], ndf=d["ndf"], n_layers=d["n_layers"])
    c.input.image_size, c.input.batch_size = batch["h"], batch["n"]
    c.bn_groups = 1  # the fixture is one process: one statistics group (LaMa's 8-GPU grouping is not modelled)
    c.init_from = ref.path
    return c


@dataclasses.dataclass
class Setup:
    config: Any
    system: contract.System
    networks: dict[str, contract.Network]
    txs: dict[str, optax.GradientTransformation]
    state: Any  # the initial TrainState
    frozen: dict[str, Any]
    key_maps: dict[str, Any]  # network -> original key -> (collection, flax path, transform)


def _key_maps(ref: Reference) -> dict[str, Any]:
    gen, disc = ref.sub("generator."), ref.sub("discriminator.")
    return {"generator": convert.generator_key_map(convert.infer_generator_config(gen)),
            "discriminator": convert.discriminator_key_map(convert.infer_discriminator_config(disc))}


def make_setup(ref: Reference, config) -> Setup:
    system, networks, _ = trainer.build(config)
    txs = {n: optim.make(net.optimizer) for n, net in networks.items() if net.trainable}
    # make_init_fn's random initialisation is replaced whole by init_from (below), so it runs as zeros of its
    # shapes: executing it compiles a threefry initialiser per parameter shape (a minute on 2 cores). A fresh
    # Adam state is zeros too, so the state is the one train_and_evaluate starts from.
    rng = jax.random.key_data(jax.random.key(config.seed))
    abstract = jax.eval_shape(trainer.make_init_fn(config, networks, txs), rng)
    zeros = jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), abstract)
    state = trainer.load_init_weights(config, zeros, system).replace(rng=rng)
    for name, tx in txs.items():
        fresh = jax.jit(tx.init)(state.nets[name].params)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.nets[name].opt_state),
                                                        jax.tree.leaves(fresh)))
    frozen = {"hrf": resnet_ade20k.variables_from_state_dict(ref.hrf_state_dict, source="the HRF recipe")}
    return Setup(config, system, networks, txs, state, frozen, _key_maps(ref))


@pytest.fixture(scope="module")
def setup(ref) -> Setup:
    return make_setup(ref, parity_config(ref))


def with_weights(setup: Setup, state, ref: Reference, prefix: str):
    """``state`` with both networks' parameters and BatchNorm statistics replaced by the fixture's ``prefix``
    ones (e.g. ``after_g_step.``), through LaMa's converter."""
    nets = dict(state.nets)
    for name, load in (("generator", convert.load_lama_generator), ("discriminator", convert.load_lama_discriminator)):
        _, variables = load(ref.sub(f"{prefix}{name}."))
        variables = dict(variables)
        params = variables.pop("params")
        jax.tree.map(lambda a, b: np.testing.assert_equal(np.shape(a), np.shape(b)), nets[name].params, params)
        nets[name] = nets[name].replace(params=params, state=variables)
    return state.replace(nets=nets)


def run_step(setup: Setup, state, batch, *update_names: str):
    """One step of the trainer over the named updates of LaMa's phase (all of them: the step train.py runs)."""
    (phase,) = setup.system.phases(setup.config)
    updates = tuple(u for u in phase.updates if not update_names or u.name in update_names)
    if update_names:
        phase = contract.Phase("+".join(update_names), updates)
    step = jax.jit(trainer.make_train_step(setup.config, setup.system, setup.networks, setup.txs, phase))
    new_state, metrics = step(state, batch, setup.frozen)
    return new_state, {k: float(v) for k, v in metrics.items()}


@pytest.fixture(scope="module")
def after_g(setup, ref):
    """The trainer's G update alone, from the initial state."""
    return run_step(setup, setup.state, ref.batch(), "g")


# ---------------------------------------------------------------------------------------------------------------
# Comparison helpers (flax trees vs the fixture's original keys).
# ---------------------------------------------------------------------------------------------------------------


def _flat(tree) -> dict[tuple, np.ndarray]:
    return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def reference_tree(setup: Setup, ref: Reference, net: str, prefix: str) -> dict[tuple, tuple[str, np.ndarray]]:
    """``{(collection, *flax path): (original key, array in our layout)}`` of the fixture's arrays under
    ``prefix`` + ``net`` + ``.`` (``num_batches_tracked`` left out)."""
    out = {}
    for key, value in ref.sub(f"{prefix}{net}.").items():
        target = setup.key_maps[net](key)
        if target is not None:
            collection, path, transform = target
            out[(collection, *path)] = (f"{net}.{key}", np.asarray(transform(np.asarray(value, np.float32))))
    return out


def ours_tree(net_state, *, adam: str | None = None) -> dict[tuple, np.ndarray]:
    """A network's ``{(collection, *path): array}``: params and state, or one field of its Adam state."""
    if adam is None:
        return _flat({"params": net_state.params, **net_state.state})
    return _flat({"params": getattr(adam_state(net_state.opt_state), adam)})


def adam_state(opt_state) -> optax.ScaleByAdamState:
    """The Adam moments inside an optimiser state (a chain: clip, Adam, learning rate)."""
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)  # noqa: E731
    (found,) = [s for s in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(s)]
    return found


def rel(a, b) -> float:
    return abs(float(a) / float(b) - 1.0)


def rel_max(a, b) -> float:
    """max |a - b| relative to max |b| (the README's "relative to the array's max")."""
    return float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-30))


def rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def assert_within(errors: dict[str, float], tol, what: str) -> float:
    """All errors within ``tol`` (a number, or ``key -> number``); the message lists the worst ones."""
    limit = tol if callable(tol) else (lambda key: tol)
    bad = {k: v for k, v in errors.items() if not v <= limit(k)}
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    assert not bad, f"{what}: {len(bad)} over the tolerance: " + ", ".join(
        f"{k} {v:.3g} (tol {limit(k):.0e})" for k, v in sorted(bad.items(), key=lambda kv: -kv[1])[:8])
    print(f"{what}: max {worst[0][1]:.2e} ({worst[0][0]})" if worst else f"{what}: nothing compared")
    return worst[0][1] if worst else 0.0


def zero_gradient(ref: Reference) -> set[str]:
    return set(ref.meta["zero_gradient_params"])


# ---------------------------------------------------------------------------------------------------------------
# What each comparison checks.
# ---------------------------------------------------------------------------------------------------------------


def g_loss_errors(metrics: dict[str, float], ref: Reference, config) -> dict[str, float]:
    """Relative errors of the G update's total and LaMa's logged (weighted) terms."""
    errors = {"g_step.loss": rel(metrics["g/total"], ref["g_step.loss"])}
    for term, (metric, weight) in G_TERMS.items():
        ours = metrics[f"g/{metric}"] * (config.losses[weight] if weight else 1.0)
        errors[f"g_step.train_{term}"] = rel(ours, ref[f"g_step.train_{term}"])
    return errors


def d_loss_errors(metrics: dict[str, float], ref: Reference, config) -> dict[str, float]:
    """Relative errors of the D update's total, its two softplus terms, the R1 term and the mean logits."""
    return {"d_step.loss": rel(metrics["d/total"], ref["d_step.loss"]),
            "d_step.real+fake_loss_mean": rel(metrics["d/adversarial"],
                                              ref["d_step.real_loss_mean"] + ref["d_step.fake_loss_mean"]),
            "d_step.train_adv_discr_real_gp": rel(config.losses.r1_gamma * metrics["d/r1"],
                                                  ref["d_step.train_adv_discr_real_gp"]),
            "d_step.train_adv_discr_real_out": rel(metrics["d/real_logits"], ref["d_step.train_adv_discr_real_out"]),
            "d_step.train_adv_discr_fake_out": rel(metrics["d/fake_logits"], ref["d_step.train_adv_discr_fake_out"])}


def buffer_errors(setup, ref, new_state, prefix: str) -> dict[str, float]:
    """Running mean/var of both networks vs the fixture's ``prefix`` state, relative to each array's max."""
    errors = {}
    for net in NETS:
        ours = ours_tree(new_state.nets[net])
        for path, (key, expected) in reference_tree(setup, ref, net, prefix).items():
            if path[0] == "batch_stats":
                errors[key] = rel_max(ours[path], expected)
    assert errors
    return errors


def unchanged(before, after) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def check_params_after_adam(setup, ref, net: str, new_net, stored_prefix: str, lr: float, b1: float,
                            what: str, adam_prefix: str | None = None) -> dict[str, float]:
    """Parameters after Adam's first step vs the fixture, by the README's sign rule.

    Where our clipped gradient (Adam's m / (1 - b1)) and the stored one agree in sign and both are at least
    1e-5, the parameters must agree to 1e-6; elsewhere a flipped sign may move them by 2·lr. The stored Adam
    state is read under ``adam_prefix`` (default ``stored_prefix``). Returns per-tensor maximum errors where the
    rule is tight.
    """
    skip = zero_gradient(ref)
    ours, ours_m = ours_tree(new_net), ours_tree(new_net, adam="mu")
    stored = reference_tree(setup, ref, net, stored_prefix)
    stored_m = reference_tree(setup, ref, net, f"{adam_prefix or stored_prefix}adam_exp_avg.")
    tight, loose, zero_grad, excluded, total = {}, {}, {}, 0, 0
    for path, (key, expected) in stored.items():
        if path[0] != "params":
            continue
        if key in skip:  # float32 noise that Adam turns into steps of up to lr (README)
            zero_grad[key] = float(np.abs(ours[path] - expected).max())
            continue
        g_ours, g_ref = ours_m[path] / (1 - b1), stored_m[path][1] / (1 - b1)
        agree = (np.sign(g_ours) == np.sign(g_ref)) & (np.abs(g_ours) >= SIGN_RULE_MIN_GRAD) & (
            np.abs(g_ref) >= SIGN_RULE_MIN_GRAD)
        err = np.abs(ours[path] - expected)
        tight[key] = float(err[agree].max()) if agree.any() else 0.0
        loose[key] = float(err.max())
        excluded += int((~agree).sum())
        total += err.size
    print(f"{what}: {excluded} of {total} elements outside the sign rule")
    assert excluded < 0.05 * total, f"{what}: {excluded} of {total} elements have disagreeing or tiny gradients"
    assert_within(loose, 2 * lr * (1 + 1e-3), f"{what} (all elements, <= 2 lr)")
    assert_within(zero_grad, lr * (1 + 1e-3), f"{what} (zero_gradient_params, <= lr)")
    assert_within(tight, SIGN_RULE_ATOL, f"{what} (sign rule)")
    return tight


def adam_errors(setup, ref, net, new_net, stored_prefix: str) -> tuple[dict[str, float], dict[str, float]]:
    """Adam's m and v vs the fixture's exp_avg and exp_avg_sq, relative to each tensor's max."""
    skip = zero_gradient(ref)
    out = []
    for field, stored_field in (("mu", "adam_exp_avg"), ("nu", "adam_exp_avg_sq")):
        ours = ours_tree(new_net, adam=field)
        errors = {key: rel_max(ours[path], expected)
                  for path, (key, expected)
                  in reference_tree(setup, ref, net, f"{stored_prefix}{stored_field}.").items()
                  if key not in skip}
        assert len(errors) + len([k for k in skip if k.startswith(net)]) == len(_flat(new_net.params))
        out.append(errors)
    return out[0], out[1]


def check_gradients(setup, ref, net: str, new_state, metrics, phase: str, after: str, norm_rtol: float,
                    grad_rel_max: float, what: str) -> None:
    """The trainer's gradient norm (before clipping) and Adam's moments after one update (m = (1 - b1)·clipped
    gradient) vs the fixture."""
    err = rel(metrics[f"grad_norm/{net}"], ref[f"{phase}.grad_norm"])
    assert err <= norm_rtol, f"{what}: gradient norm {err:.3g} relative (tol {norm_rtol:.0e})"
    print(f"{what}: gradient norm {err:.2e} relative")
    net_state = new_state.nets[net]
    assert int(adam_state(net_state.opt_state).count) == int(ref[f"{after}adam_step"])
    mu, nu = adam_errors(setup, ref, net, net_state, after)
    assert_within(mu, grad_rel_max, f"{what}: clipped gradients (Adam m, of the tensor's max)")
    assert_within(nu, 2 * grad_rel_max, f"{what}: Adam v (of the tensor's max)")


def test_big_lama_config_has_the_settings_the_fixture_ran_with(setup, ref):
    """The settings that are not sizes come from configs/big_lama.py; they are LaMa's own (a clear message here,
    before any numerical comparison fails)."""
    c, m = setup.config, ref.meta
    lw, adam, clip = m["loss_weights"], m["adam"], m["clip"]
    assert (c.losses.l1_weight_known, c.losses.l1_weight_missing) == (lw["l1_weight_known"], lw["l1_weight_missing"])
    assert c.losses.adversarial == lw["adversarial_weight_generator_only"]
    assert c.losses.feature_matching == lw["feature_matching_weight"]
    assert c.losses.hrf_perceptual == lw["resnet_pl_weight"]
    assert c.losses.r1_gamma == lw["r1_gp_coef"] and c.losses.mask_as_fake_target == lw["mask_as_fake_target"]
    assert c.losses.hrf_bn_mode == "train" and c.d_fake == "regenerate"  # bn_modes, order_of_operations
    for opt, lr in ((c.g_optimizer, adam["lr_generator"]), (c.d_optimizer, adam["lr_discriminator"])):
        assert (opt.name, opt.lr, (opt.b1, opt.b2), opt.eps, opt.weight_decay) == (
            "adam", lr, tuple(adam["betas"]), adam["eps"], adam["weight_decay"])
        assert opt.clip_norm == clip["max_norm"] and opt.impl == "torch"
    assert c.bn_groups == 1  # one process: one statistics group (DDP is not modelled by the fixture)


# ---------------------------------------------------------------------------------------------------------------
# The trainer's step: G update, D update from after_g_step, the whole step.
# ---------------------------------------------------------------------------------------------------------------


def test_g_update(setup, ref, after_g):
    """The trainer's G update from the initial state: losses, grad norm, Adam state, parameters, all BN buffers."""
    config = setup.config
    new_state, metrics = after_g
    assert_within(g_loss_errors(metrics, ref, config), LOSS_RTOL, "G losses (relative)")
    check_gradients(setup, ref, "generator", new_state, metrics, "g_step", "after_g_step.", GRAD_NORM_RTOL,
                    E2E_GRAD_REL_MAX, "G end to end")
    g_net = new_state.nets["generator"]
    check_params_after_adam(setup, ref, "generator", g_net, "after_g_step.", config.g_optimizer.lr,
                            config.g_optimizer.b1, "G parameters after the G update")
    # The D is not updated, but its two train-mode calls moved its statistics; G's moved once.
    assert unchanged(setup.state.nets["discriminator"].params, new_state.nets["discriminator"].params)
    assert_within(buffer_errors(setup, ref, new_state, "after_g_step."), BUFFER_RTOL_MAX,
                  "BN running statistics after the G update (of the max)")


@pytest.fixture(scope="module")
def after_d_from_stored(setup, ref):
    """The trainer's D update alone, started from the fixture's whole ``after_g_step`` state."""
    state = with_weights(setup, setup.state, ref, "after_g_step.")
    return state, run_step(setup, state, ref.batch(), "d")


def test_d_update_from_after_g_step(setup, ref, after_d_from_stored):
    """The D update (second G forward, R1 by double backprop, mask-as-fake-target) from ``after_g_step.*``."""
    config = setup.config
    start, (new_state, metrics) = after_d_from_stored
    assert_within(d_loss_errors(metrics, ref, config), LOSS_RTOL, "D losses from after_g_step (relative)")
    check_gradients(setup, ref, "discriminator", new_state, metrics, "d_step", "after_d_step.", D_GRAD_REL_MAX,
                    D_GRAD_REL_MAX, "D")
    skip, ours = zero_gradient(ref), ours_tree(new_state.nets["discriminator"])
    params = {key: float(np.abs(ours[path] - expected).max())
              for path, (key, expected) in reference_tree(setup, ref, "discriminator", "after_d_step.").items()
              if path[0] == "params"}
    assert_within({k: v for k, v in params.items() if k not in skip}, D_PARAM_ATOL,
                  "D parameters after the D update (absolute)")
    assert_within({k: v for k, v in params.items() if k in skip}, config.d_optimizer.lr * (1 + 1e-3),
                  "D zero_gradient_params after the D update (<= lr)")
    # The mask that weights the fake term, resized to the logits' grid the way torch's 'nearest' does.
    logits_hw = ref["d_step.discr_fake_logits"].shape[2:]
    resized = losses.interpolate_mask_nearest(ref.batch()["mask"], logits_hw)
    np.testing.assert_array_equal(np.asarray(resized).transpose(0, 3, 1, 2), ref["d_step.mask_at_discr"])
    assert unchanged(start.nets["generator"].params, new_state.nets["generator"].params)
    assert_within(buffer_errors(setup, ref, new_state, "after_d_step."), BUFFER_RTOL_MAX,
                  "BN running statistics after the D update (of the max)")


def test_whole_lama_step_end_to_end(setup, ref):
    """The step train.py runs (G update, then D update on the updated G), from the initial state, compared with
    the stored step end to end: the G half tightly, the D half within the README's end-to-end drift."""
    config = setup.config
    new_state, metrics = run_step(setup, setup.state, ref.batch())
    assert_within(g_loss_errors(metrics, ref, config), LOSS_RTOL, "whole step: G losses (relative)")
    assert_within(d_loss_errors(metrics, ref, config), D_E2E_LOSS_RTOL, "whole step: D losses (relative)")
    assert rel(metrics["grad_norm/discriminator"], ref["d_step.grad_norm"]) <= D_E2E_LOSS_RTOL
    assert [int(adam_state(new_state.nets[n].opt_state).count) for n in NETS] == [1, 1]
    check_params_after_adam(setup, ref, "generator", new_state.nets["generator"], "after_d_step.",
                            config.g_optimizer.lr, config.g_optimizer.b1, "whole step: G parameters",
                            adam_prefix="after_g_step.")
    check_params_after_adam(setup, ref, "discriminator", new_state.nets["discriminator"], "after_d_step.",
                            config.d_optimizer.lr, config.d_optimizer.b1, "whole step: D parameters")
    assert_within(buffer_errors(setup, ref, new_state, "after_d_step."), D_E2E_BUFFER_RTOL_MAX,
                  "whole step: BN running statistics (of the max)")


# ---------------------------------------------------------------------------------------------------------------
# The pieces: forward values, loss-term gradients, the generator's backward, the update rule.
# ---------------------------------------------------------------------------------------------------------------


def _nets(setup: Setup, state) -> contract.Nets:
    modules = {n: net.module for n, net in setup.networks.items()}
    return contract.Nets(modules, state.params(), state.states(), train=True)


def test_loss_terms_and_their_gradients_at_the_stored_prediction(setup, ref):
    """LaMa's ``generator_loss`` on the stored G-phase prediction: D's logits and features, each weighted term,
    the per-layer MSEs, each term's gradient w.r.t. the prediction, and the HRF encoder's running statistics."""
    config, batch = setup.config, ref.batch()
    pred = jnp.asarray(ref["g_step.predicted_image"].transpose(0, 2, 3, 1))
    encoder = resnet_ade20k.Model()

    @jax.jit  # everything passed as arguments: closed-over arrays would be constant-folded through the encoder
    def terms(state, pred, batch, hrf):
        def weighted(pred):
            nets = _nets(setup, state)
            _, metrics = objective.generator_loss(nets, batch, pred, config.losses, hrf)
            values = {t: metrics[m] * (config.losses[w] if w else 1.0) for t, (m, w) in G_TERMS.items()}
            return values, (nets("discriminator", batch["image"], update_state=False),
                            nets("discriminator", pred, update_state=False))

        values, vjp, d_outputs = jax.vjp(weighted, pred, has_aux=True)
        grads = {t: vjp({u: jnp.asarray(float(u == t)) for u in values})[0] for t in values}
        # The encoder's two train-mode calls (prediction first), each moving its running statistics.
        stats, feats = hrf, []
        for x in (pred, batch["image"]):
            f, new = encoder.apply(stats, resnet_ade20k.normalize_imagenet(x), train=True, mutable=["batch_stats"])
            stats = {**stats, **new}
            feats.append(f)
        hrf_mse = jnp.stack([jnp.mean(jnp.square(a - b)) for a, b in zip(*feats)])
        return values, grads, d_outputs, hrf_mse, stats["batch_stats"]

    values, grads, d_outputs, hrf_mse, hrf_stats = terms(setup.state, pred, batch, setup.frozen["hrf"])
    (real_logits, real_feats), (fake_logits, fake_feats) = d_outputs

    nchw = lambda x: np.asarray(x).transpose(0, 3, 1, 2)  # noqa: E731
    outputs = {"g_step.discr_real_logits": rel_max(nchw(real_logits), ref["g_step.discr_real_logits"]),
               "g_step.discr_fake_logits": rel_max(nchw(fake_logits), ref["g_step.discr_fake_logits"])}
    for i, (r, f) in enumerate(zip(real_feats, fake_feats)):
        outputs[f"g_step.discr_real_feat_{i}"] = rel_max(nchw(r), ref[f"g_step.discr_real_feat_{i}"])
        outputs[f"g_step.discr_fake_feat_{i}"] = rel_max(nchw(f), ref[f"g_step.discr_fake_feat_{i}"])
    assert_within(outputs, D_OUTPUT_RTOL_MAX, "D logits and features on the stored prediction (of the max)")

    term_errors = {f"g_step.train_{t}": rel(v, ref[f"g_step.train_{t}"]) for t, v in values.items()}
    # Per-layer unweighted MSEs: feature matching through the project's loss, one layer at a time.
    fm = [float(losses.feature_matching(fake_features=[f], real_features=[r])) for f, r in zip(fake_feats, real_feats)]
    term_errors.update({f"g_step.fm_layer_mse[{i}]": rel(v, ref["g_step.fm_layer_mse"][i]) for i, v in enumerate(fm)})
    term_errors.update({f"g_step.resnet_pl_layer_mse[{i}]": rel(v, ref["g_step.resnet_pl_layer_mse"][i])
                        for i, v in enumerate(np.asarray(hrf_mse))})
    assert_within(term_errors, LOSS_RTOL, "G loss terms on the stored prediction (relative)")

    dpred = {f"g_step.dpred.{t}": rel_l2(nchw(g), ref[f"g_step.dpred.{t}"]) for t, g in grads.items()}
    dpred["g_step.dpred.total"] = rel_l2(nchw(sum(grads.values())), ref["g_step.dpred.total"])
    assert_within(dpred, DPRED_REL_L2, "loss-term gradients w.r.t. the prediction (relative L2)")

    # The frozen encoder's statistics: not kept by the trainer (nothing reads them while it trains, see
    # jaxinpaint.losses.hrf_perceptual), but its BatchNorm moves them as LaMa's does.
    stats = _flat(hrf_stats)
    hrf_errors = {}
    for key, (collection, path, _) in resnet_ade20k.key_map().items():
        if collection == "batch_stats":
            expected = ref[f"after_g_step.loss_resnet_pl.impl.{key}"]
            hrf_errors[key] = rel_max(stats[path], expected)
    assert_within(hrf_errors, BUFFER_RTOL_MAX, "HRF encoder running statistics after its two calls (of the max)")


def test_generator_forward_and_backward(setup, ref):
    """The generator at the initial state (train mode): its prediction, and its VJP with the stored cotangent
    ``g_step.dpred.total`` against the stored raw gradients."""
    batch = ref.batch()
    cotangent = jnp.asarray(ref["g_step.dpred.total"].transpose(0, 2, 3, 1))

    @jax.jit
    def forward_backward(state, batch, cotangent):
        def apply(params):
            nets = _nets(setup, state)
            nets.params["generator"] = params
            return nets("generator", objective.generator_input(batch))

        pred, vjp = jax.vjp(apply, state.nets["generator"].params)
        return pred, vjp(cotangent)[0]

    pred, grads = forward_backward(setup.state, batch, cotangent)
    # The D phase's second forward, by the generator after its update (LaMa's _do_step runs it again).
    pred_d, _ = forward_backward(with_weights(setup, setup.state, ref, "after_g_step."), batch, cotangent)
    for name, ours in (("g_step.predicted_image", pred), ("d_step.predicted_image", pred_d)):
        err = float(np.abs(np.asarray(ours).transpose(0, 3, 1, 2) - ref[name]).max())
        assert err <= PRED_ATOL, f"{name} differs by {err:.3g}"
        print(f"{name}: {err:.2e} absolute")
    ours = _flat({"params": grads})
    errors = {key: rel_max(ours[path], expected)
              for path, (key, expected) in reference_tree(setup, ref, "generator", "g_step.grad.").items()
              if key not in zero_gradient(ref)}
    assert len(errors) + 2 == len(ours)
    assert_within(errors, lambda key: VJP_STEM_REL_MAX if key.startswith(STEM) else VJP_REL_MAX,
                  "generator VJP with the stored cotangent (of the tensor's max)")


@pytest.mark.parametrize("net,phase,start,after", [("generator", "g_step", "", "after_g_step"),
                                                   ("discriminator", "d_step", "after_g_step.", "after_d_step")])
def test_update_rule_on_stored_gradients(setup, ref, net, phase, start, after):
    """The config's optimiser on the stored raw gradients reproduces the stored parameters and Adam state.

    Whole (clip, then Adam): at the README's tolerance. Adam alone, on torch's own clipped gradients (raw ×
    the stored clip coefficient, rounded as torch's ``mul_``): the moments bit for bit and the parameters to
    ``ADAM_ATOL``, which optax's Adam arithmetic (``impl='optax'``: 1.2e-7 and 6e-8 here) would miss.
    """
    cfg = setup.config.g_optimizer if net == "generator" else setup.config.d_optimizer

    def tree(prefix):
        return flax.traverse_util.unflatten_dict(
            {path[1:]: v for path, (_, v) in reference_tree(setup, ref, net, prefix).items() if path[0] == "params"})

    def run(tx, grads):
        updates, opt_state = jax.jit(tx.update)(grads, tx.init(params), params)
        return optax.apply_updates(params, updates), adam_state(opt_state)

    def max_abs(a, b):
        return max(float(np.abs(np.asarray(x) - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    params, grads = tree(start), tree(f"{phase}.grad.")
    expected = {"params": tree(f"{after}."), "mu": tree(f"{after}.adam_exp_avg."),
                "nu": tree(f"{after}.adam_exp_avg_sq.")}
    new, found = run(setup.txs[net], grads)
    for name, ours in (("params", new), ("mu", found.mu), ("nu", found.nu)):
        for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(ours)[0], jax.tree.leaves(expected[name])):
            np.testing.assert_allclose(a, b, rtol=UPDATE_RTOL if name == "params" else MOMENT_RTOL,
                                       atol=UPDATE_ATOL if name == "params" else 0,
                                       err_msg=f"{net} {name} {jax.tree_util.keystr(path)}")
    coef = np.float32(ref[f"{phase}.clip_coef"])
    assert coef < 1 and cfg.clip_norm == ref.meta["clip"]["max_norm"]
    print(f"{net} clip + Adam on the stored gradients: parameters {max_abs(new, expected['params']):.2e} absolute")

    adam_cfg = cfg.copy_and_resolve_references()
    adam_cfg.clip_norm = 0.0
    new, found = run(optim.make(adam_cfg), jax.tree.map(lambda g: np.asarray(g, np.float32) * coef, grads))
    for name, ours in (("mu", found.mu), ("nu", found.nu)):
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(expected[name])):
            np.testing.assert_array_equal(a, b, err_msg=f"{net} Adam {name}")
    err = max_abs(new, expected["params"])
    assert err <= ADAM_ATOL, f"{net}: Adam alone moves the parameters {err:.3g} away from torch's"
    print(f"{net} Adam alone on torch's clipped gradients: parameters {err:.2e} absolute, moments exact")


# ---------------------------------------------------------------------------------------------------------------
# The comparison really compares.
# ---------------------------------------------------------------------------------------------------------------

WEIGHTS = ["l1_weight_known", "l1_weight_missing", "adversarial", "feature_matching", "hrf_perceptual", "r1_gamma"]


@pytest.fixture(scope="module")
def losses_with_weights(setup, ref):
    """``weights -> (G metrics, D metrics)``: the LaMa system's two update losses (G from the initial state, D from
    ``after_g_step``) with the config's loss weights replaced by ``weights``.

    Compiled once: the weights enter as arguments, set into a copy of the config (``type_safe=False`` lets the
    copy hold traced values), so the loss functions read them from ``config.losses`` exactly as in training. A
    compile per config (the weights as constants) would cost minutes on 2 cores.
    """
    config = setup.config
    updates = {u.name: u for u in setup.system.phases(config)[0].updates}
    modules = {n: net.module for n, net in setup.networks.items()}
    variables = lambda state: {n: {"params": s.params, **s.state} for n, s in state.nets.items()}  # noqa: E731

    @jax.jit
    def update_losses(weights, g_variables, d_variables, batch, frozen):
        cfg = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
        cfg.losses.update(weights)
        out = {}
        for name, update_variables, update_frozen in (("g", g_variables, frozen), ("d", d_variables, {})):
            loss, metrics, _, _ = run_update(updates[name].loss, modules, update_variables, batch, cfg,
                                             frozen=update_frozen)
            out.update({f"{name}/total": loss, **{f"{name}/{k}": v for k, v in metrics.items()}})
        return out

    args = (variables(setup.state), variables(with_weights(setup, setup.state, ref, "after_g_step.")), ref.batch(),
            setup.frozen)
    return lambda weights: {k: float(v) for k, v in update_losses(weights, *args).items()}


@pytest.mark.parametrize("weight", [None] + WEIGHTS)
def test_changing_a_loss_weight_by_one_percent_fails(ref, setup, losses_with_weights, weight):
    """Each loss weight of the config moved by 1 % (the zero one by 0.01) makes the loss comparison fail; the
    unchanged weights pass it."""
    config = parity_config(ref)
    if weight is not None:
        value = config.losses[weight]
        config.losses[weight] = value * 1.01 if value else 0.01
    metrics = losses_with_weights({w: config.losses[w] for w in WEIGHTS})
    errors = {**g_loss_errors(metrics, ref, config), **d_loss_errors(metrics, ref, config)}
    if weight is None:
        assert_within(errors, LOSS_RTOL, "G and D losses, unchanged weights (relative)")
    else:
        with pytest.raises(AssertionError, match="over the tolerance"):
            assert_within(errors, LOSS_RTOL, f"losses with {weight} moved by 1 %")


# ---------------------------------------------------------------------------------------------------------------
# The torch arithmetic beyond the fixture's single step (impl='torch' in configs/big_lama.py).
# ---------------------------------------------------------------------------------------------------------------


def _torch_adam_float64(params, grads_per_step, lr, b1=0.9, b2=0.999, eps=1e-8, max_norm=1.0, clip_eps=1e-6):
    """torch's clip_grad_norm_ + Adam (single-tensor path), written out in float64."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
        coef = min(1.0, max_norm / (norm + clip_eps))
        for k, g in grads.items():
            g = g.astype(np.float64) * coef
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            denom = np.sqrt(v2[k]) / np.sqrt(1 - b2**t) + eps
            p[k] = p[k] - lr / (1 - b1**t) * m[k] / denom
    return p


def test_torch_adam_and_clip_follow_torch_over_several_steps():
    """impl='torch' over 6 steps (bias corrections past t = 1, the lerp of m, the clip on and off) against a
    float64 transcription of torch's formulas; the state layout is optax.adam's (checkpoints resume under either
    impl); and impl='torch' is refused where it is not implemented."""
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 5)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
    scales = [3.0, 0.01, 1.0, 50.0, 1e-4, 0.3]  # global norms above and below clip_norm = 1
    grads = [{k: (rng.normal(size=v.shape) * s).astype(np.float32) for k, v in params.items()} for s in scales]
    cfg = config_lib.optimizer("adam", 1e-2, clip_norm=1.0, impl="torch")
    tx = optim.make(cfg)
    optax_tx = optim.make(config_lib.optimizer("adam", 1e-2, clip_norm=1.0))
    assert jax.tree.structure(tx.init(params)) == jax.tree.structure(optax_tx.init(params))
    update = jax.jit(tx.update)
    p, state = params, tx.init(params)
    for g in grads:
        u, state = update(g, state, p)
        p = optax.apply_updates(p, u)
    expected = _torch_adam_float64(params, grads, cfg.lr)
    for k in params:
        np.testing.assert_allclose(p[k], expected[k], rtol=0, atol=1e-6, err_msg=k)
    assert int(adam_state(state).count) == len(grads)
    # Below the threshold the clip multiplies by exactly 1; above it by max_norm / (norm + 1e-6).
    clip = optim.clip_by_global_norm_torch(1.0)
    small = {"a": jnp.asarray([0.3, -0.4])}
    np.testing.assert_array_equal(clip.update(small, clip.init(small))[0]["a"], small["a"])
    big = {"a": jnp.asarray([3.0, -4.0])}
    np.testing.assert_allclose(clip.update(big, clip.init(big))[0]["a"], np.asarray([3.0, -4.0]) / (5.0 + 1e-6),
                               rtol=1e-7)
    with pytest.raises(ValueError, match="impl 'torch' is implemented for 'adam' only"):
        optim.make(config_lib.optimizer("sgd", 0.1, impl="torch"))
    with pytest.raises(ValueError, match="impl 'jax'"):
        optim.make(config_lib.optimizer("adam", 0.1, impl="jax"))
