"""Convolution formulations per backend: the CPU-tuned formulations (Winograd, matmul, sub-pixel transposed
convolutions) only in programs compiled for CPU; the platforms' own convolutions when Big LaMa is lowered for
CUDA or TPU (``jax.export`` with ``platforms=``, no device needed), and ``conv_impl`` overrides both ways."""

import jax
import jax.numpy as jnp
import pytest

from jaxinpaint.systems.lama.model import FFCResNetGenerator


def _lowered(platform, conv_impl="auto", n_blocks=18, train=False):
    model = FFCResNetGenerator(n_blocks=n_blocks, conv_impl=conv_impl)
    x = jax.ShapeDtypeStruct((1, 256, 256, 4), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
    if train:
        def fn(v, x):
            def loss(p):
                y, _ = model.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])
                return jnp.mean(y)
            return jax.grad(loss)(v["params"])
    else:
        def fn(v, x):
            return model.apply(v, x, train=False)
    exported = jax.export.export(jax.jit(fn), platforms=[platform])(variables, x)
    text = exported.mlir_module()
    return text.count("stablehlo.convolution"), text.count("stablehlo.dot_general")


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_big_lama_keeps_platform_convolutions_on_accelerators(platform):
    convs, dots = _lowered(platform)
    # 18 blocks x 2 FFC layers x 3 local 3x3 paths + 1x1 spectral convs + stem, down, up, head: > 100.
    assert convs > 100, (convs, dots)


def test_big_lama_keeps_the_measured_formulations_on_cpu():
    convs, dots = _lowered("cpu")
    assert convs < 30 and dots > 200, (convs, dots)  # Winograd and matmuls replace most convolutions
    convs_lax, _ = _lowered("cpu", conv_impl="lax")  # the override: the platform's convolutions everywhere
    assert convs_lax > 100
    convs_cpu, _ = _lowered("cuda", conv_impl="cpu")  # and the CPU formulations everywhere
    assert convs_cpu < 30


def test_training_gradient_lowering_follows_the_platform():
    convs_gpu, dots_gpu = _lowered("cuda", n_blocks=2, train=True)
    convs_cpu, dots_cpu = _lowered("cpu", n_blocks=2, train=True)
    # On CPU the forward and the input gradients run as Winograd matmuls (the kernel gradients stay
    # convolutions); for CUDA every one of them is a convolution.
    assert convs_gpu > convs_cpu + 30 and dots_cpu > dots_gpu + 50, (convs_gpu, convs_cpu, dots_gpu, dots_cpu)
