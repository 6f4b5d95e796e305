"""Tests for the grouped-statistics BatchNorm: Flax equivalence, per-group semantics, gradients, sharding."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinpaint.nn.norm import BatchNorm

_COLLECTIVE = re.compile(r"\b(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(-start)?\(")


def _input(shape=(8, 5, 6, 3), seed=0):
    # Non-zero mean and non-unit variance per channel, so wrong statistics show.
    x = jax.random.normal(jax.random.key(seed), shape)
    return x * jnp.array([0.5, 2.0, 3.0]) + jnp.array([1.0, -2.0, 0.3])


def _perturbed(variables, seed=1):
    """Non-trivial params and running stats (init gives ones/zeros, which hide mix-ups)."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [leaf + 0.3 * jnp.abs(jax.random.normal(k, leaf.shape)) for leaf, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def _flax_bn(train: bool) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=jnp.float32)


def _assert_trees_close(a, b, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-6)


def test_variables_match_flax():
    x = _input()
    ours = BatchNorm(use_running_average=False).init(jax.random.key(0), x)
    theirs = _flax_bn(True).init(jax.random.key(0), x)
    _assert_trees_close(ours, theirs, atol=0)
    assert jax.tree.map(jnp.shape, ours) == {"params": {"scale": (3,), "bias": (3,)},
                                            "batch_stats": {"mean": (3,), "var": (3,)}}
    # Initialisation does not update the running statistics (Flax's behaviour).
    np.testing.assert_array_equal(ours["batch_stats"]["mean"], 0.0)
    np.testing.assert_array_equal(ours["batch_stats"]["var"], 1.0)


@pytest.mark.parametrize("train", [True, False])
def test_one_group_equals_flax(train):
    x = _input()
    variables = _perturbed(_flax_bn(train).init(jax.random.key(0), x))
    y_ref, upd_ref = _flax_bn(train).apply(variables, x, mutable=["batch_stats"])
    ours = BatchNorm(use_running_average=not train, num_groups=1)
    y, upd = ours.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_ref, atol=1e-6, rtol=1e-6)
    _assert_trees_close(upd, upd_ref)
    if train:  # the stats did move, and the output is really normalised
        assert not np.allclose(upd["batch_stats"]["mean"], variables["batch_stats"]["mean"])
    else:
        _assert_trees_close(upd, {"batch_stats": variables["batch_stats"]}, atol=0)


def test_one_group_equals_flax_bfloat16():
    x = _input().astype(jnp.bfloat16)
    variables = _perturbed(_flax_bn(True).init(jax.random.key(0), x))
    ref = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=jnp.bfloat16)
    y_ref, upd_ref = ref.apply(variables, x, mutable=["batch_stats"])
    ours = BatchNorm(use_running_average=False, dtype=jnp.bfloat16)
    y, upd = ours.apply(variables, x, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16 and upd["batch_stats"]["var"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), atol=1e-2)
    _assert_trees_close(upd, upd_ref, atol=1e-5)


def _per_group_reference(variables, x, groups):
    """Flax BatchNorm applied to each contiguous group separately, concatenated."""
    outs, stats = [], []
    for xg in jnp.split(x, groups, axis=0):
        y, upd = _flax_bn(True).apply(variables, xg, mutable=["batch_stats"])
        outs.append(y)
        stats.append(upd["batch_stats"])
    return jnp.concatenate(outs, axis=0), jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), axis=0), *stats)


def test_groups_equal_per_group_flax():
    x = _input((8, 4, 5, 3))
    # Make the groups differ strongly, so global statistics would give a different answer.
    x = x + jnp.repeat(jnp.arange(4.0), 2)[:, None, None, None] * 3.0
    variables = _perturbed(_flax_bn(True).init(jax.random.key(0), x))
    y_ref, stats_ref = jax.jit(_per_group_reference, static_argnums=2)(variables, x, 4)
    y, upd = BatchNorm(use_running_average=False, num_groups=4).apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    # Running stats: momentum update with the group-averaged statistics == mean of the per-group updates.
    _assert_trees_close(upd["batch_stats"], stats_ref, atol=1e-6)
    y_global = _flax_bn(True).apply(variables, x, mutable=["batch_stats"])[0]
    assert not np.allclose(y, y_global, atol=1e-2)
    # Each group is normalised on its own: per group, (y - bias) / scale has zero mean per channel.
    z = (y - variables["params"]["bias"]) / variables["params"]["scale"]
    np.testing.assert_allclose(z.reshape(4, -1, 3).mean(axis=1), 0.0, atol=1e-5)


def test_eval_ignores_groups_and_batch():
    x = _input()
    variables = _perturbed(_flax_bn(False).init(jax.random.key(0), x))
    y = BatchNorm(use_running_average=True, num_groups=4).apply(variables, x)
    y_ref = _flax_bn(False).apply(variables, x)
    np.testing.assert_allclose(y, y_ref, atol=1e-6)
    # Eval mode is per-example: an odd batch size is fine and examples do not interact.
    y3 = BatchNorm(use_running_average=True, num_groups=4).apply(variables, x[:3])
    np.testing.assert_allclose(y3, y_ref[:3], atol=1e-6)


def test_gradient_matches_per_group_reference():
    x = _input((8, 4, 4, 3))
    variables = _perturbed(_flax_bn(True).init(jax.random.key(0), x))
    weights = jax.random.normal(jax.random.key(7), x.shape)

    def loss_ours(params, x):
        v = {"params": params, "batch_stats": variables["batch_stats"]}
        y, _ = BatchNorm(use_running_average=False, num_groups=4).apply(v, x, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(y) * weights)

    def loss_ref(params, x):
        v = {"params": params, "batch_stats": variables["batch_stats"]}
        return jnp.sum(jnp.sin(_per_group_reference(v, x, 4)[0]) * weights)

    grads = jax.jit(jax.grad(loss_ours, argnums=(0, 1)))(variables["params"], x)
    grads_ref = jax.jit(jax.grad(loss_ref, argnums=(0, 1)))(variables["params"], x)
    for g, g_ref in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-3
        np.testing.assert_allclose(g, g_ref, atol=1e-4, rtol=1e-4)


def test_indivisible_batch_is_a_clear_error():
    x = _input((6, 4, 4, 3))
    bn = BatchNorm(use_running_average=False, num_groups=4, name="bn_l")
    with pytest.raises(ValueError, match=r"bn_l.*batch size 6.*num_groups=4"):
        bn.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="num_groups must be >= 1"):
        BatchNorm(use_running_average=False, num_groups=0).init(jax.random.key(0), x)


def _collectives(hlo: str) -> list[str]:
    return [line.strip() for line in hlo.splitlines() if _COLLECTIVE.search(line)]


def test_sharded_per_device_statistics():
    assert jax.device_count() == 8, "tests/conftest.py should provide 8 CPU devices"
    mesh = Mesh(np.array(jax.devices()).reshape(8), ("data",))
    x = _input((16, 4, 4, 3)) + jnp.repeat(jnp.arange(8.0), 2)[:, None, None, None]
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    variables = _perturbed(_flax_bn(True).init(jax.random.key(0), x))
    bn = BatchNorm(use_running_average=False, num_groups=8)

    def step(v, x):
        return bn.apply(v, x, mutable=["batch_stats"])

    def forward(v, x):
        return step(v, x)[0]

    y, upd = jax.jit(step)(variables, xs)
    y_ref, upd_ref = step(variables, x)
    # E[x^2] - E[x]^2 (Flax's formula) on groups of 32 values with means up to 7x the std: reduction order
    # alone moves the variance by ~1e-5 relative, hence the tolerance.
    np.testing.assert_allclose(y, y_ref, atol=2e-4, rtol=1e-4)
    _assert_trees_close(upd, upd_ref, atol=1e-5)
    assert y.sharding.is_equivalent_to(xs.sharding, y.ndim)

    # Normalising (forward and backward) needs no communication when each device holds one group...
    assert _collectives(jax.jit(forward).lower(variables, xs).compile().as_text()) == []
    grad_fn = jax.jit(jax.grad(lambda x: jnp.sum(forward(variables, x) ** 3)))
    assert _collectives(grad_fn.lower(xs).compile().as_text()) == []
    # ...only averaging the running statistics does: a reduction of (C,)-vectors, never of activations.
    step_collectives = _collectives(jax.jit(step).lower(variables, xs).compile().as_text())
    for line in step_collectives:
        result_type = line[line.index("=") + 1:_COLLECTIVE.search(line).start()]
        shapes = re.findall(r"f32\[([\d,]*)\]", result_type)
        assert shapes and all(s == "3" for s in shapes), line
    # Sanity check of the detector: global statistics on the same sharded input do need an all-reduce.
    global_bn = BatchNorm(use_running_average=False, num_groups=1)
    global_fwd = jax.jit(lambda v, x: global_bn.apply(v, x, mutable=["batch_stats"])[0])
    assert _collectives(global_fwd.lower(variables, xs).compile().as_text())


def test_axis_name_under_shard_map_equals_global():
    """``axis_name`` works as in Flax: under shard_map, moments are averaged across the named axis."""
    mesh = Mesh(np.array(jax.devices()).reshape(8), ("data",))
    x = _input((16, 4, 4, 3))
    variables = _perturbed(_flax_bn(True).init(jax.random.key(0), x))
    bn = BatchNorm(use_running_average=False, axis_name="data")

    @jax.jit
    @jax.shard_map(mesh=mesh, in_specs=(P(), P("data")), out_specs=(P("data"), P()))
    def step(v, x):
        return bn.apply(v, x, mutable=["batch_stats"])

    y, upd = step(variables, x)
    y_ref, upd_ref = _flax_bn(True).apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    _assert_trees_close(upd, upd_ref, atol=1e-6)


def test_unbiased_running_var_is_torchs():
    """``unbiased_running_var``: the running variance moves with each group's var·n/(n-1), as torch's BatchNorm2d
    (the torch-semantics helper ``nn.conv.batch_norm`` sets it); outputs and running means are unchanged."""
    from jaxinpaint.nn.conv import batch_norm

    x = _input((8, 5, 6, 3))
    variables = _perturbed(_flax_bn(True).init(jax.random.key(0), x))
    y, upd = BatchNorm(use_running_average=False, num_groups=2).apply(variables, x, mutable=["batch_stats"])
    y_u, upd_u = BatchNorm(use_running_average=False, num_groups=2, unbiased_running_var=True).apply(
        variables, x, mutable=["batch_stats"])
    np.testing.assert_array_equal(y_u, y)
    np.testing.assert_array_equal(upd_u["batch_stats"]["mean"], upd["batch_stats"]["mean"])
    groups = np.asarray(x, np.float64).reshape(2, -1, 3)
    unbiased = np.mean([g.var(axis=0, ddof=1) for g in groups], axis=0)
    expected = 0.9 * np.asarray(variables["batch_stats"]["var"], np.float64) + 0.1 * unbiased
    np.testing.assert_allclose(upd_u["batch_stats"]["var"], expected, rtol=1e-5)
    assert not np.allclose(upd_u["batch_stats"]["var"], upd["batch_stats"]["var"], rtol=1e-4)
    assert batch_norm(True, "bn").unbiased_running_var
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm(use_running_average=False, unbiased_running_var=True).apply(variables, x[:1, :1, :1],
                                                                              mutable=["batch_stats"])
