"""Test set-up: 8 fake CPU devices (for the sharding tests), set before JAX is imported."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]

# Compilation dominates the suite's time on 2 cores. Tests build the same programs several times (each training
# run re-jits its step), so a persistent compilation cache turns most of those compiles into disk reads.
jax.config.update("jax_compilation_cache_dir", str(REPO / ".pytest_cache" / "jax_compilation_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


def reference_file(name: str) -> pathlib.Path:
    """Path of a fixture in ../shared/reference; skips when absent, but fails under CI."""
    path = SHARED_REFERENCE / name
    if not path.exists():
        msg = f"reference fixture {path} is missing (it ships in the project's shared/ folder)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def run_update(loss_fn, modules, variables, batch, config, *, carry=None, frozen=None, step=0):
    """Runs one contract loss (``loss(ctx) -> (loss, metrics, outputs)``) outside the trainer.

    ``variables`` maps each network name to ``{'params': ..., <collections>}``. Returns ``(loss, metrics,
    outputs, states)`` where ``states`` are the networks' collections after the call (state updates recorded).
    """
    from jaxinpaint import contract

    params = {n: v.get("params", {}) for n, v in variables.items()}
    states = {n: {k: c for k, c in v.items() if k != "params"} for n, v in variables.items()}
    nets = contract.Nets(modules, params, states, train=True, rng=jax.random.key(0))
    ctx = contract.Context(nets=nets, batch=batch, carry=carry or {}, frozen=frozen or {}, config=config,
                           rng=jax.random.key(1), step=jax.numpy.asarray(step))
    loss, metrics, outputs = loss_fn(ctx)
    return loss, metrics, outputs, nets.states


def inpaint_odd_sized(model, shape=(30, 27), box=((8, 20), (5, 17)), seed: int = 3):
    """Inpaints a random uint8 image of an odd ``shape`` (inference pads it) with a ``box`` hole
    (``((top, bottom), (left, right))``) through ``model``; asserts the shape and dtype of the result and that
    every known pixel comes back byte-identical. Returns ``(image, mask, result)``."""
    import numpy as np

    image = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = np.zeros(shape, bool)
    (top, bottom), (left, right) = box
    mask[top:bottom, left:right] = True
    result = model.inpaint(image, mask)
    assert result.shape == image.shape and result.dtype == np.uint8
    np.testing.assert_array_equal(result[~mask], image[~mask])
    return image, mask, result


def photo_crop(size: int = 64, index: int = 0):
    """A ``size`` px uint8 crop of built-in photo ``index`` (0 astronaut, 1 chelsea the cat; a region with
    structure, not flat sky) and a centred square hole of 10 % (uint8, 1 = hole)."""
    import numpy as np

    from jaxinpaint.data import photos

    image = photos.load_image(photos.builtin_photo_paths("all")[index])
    top, left = image.shape[0] // 4, image.shape[1] // 4
    crop = np.round(image[top:top + size, left:left + size] * 255.0).astype(np.uint8)
    side = int(round(size * np.sqrt(0.10)))
    mask = np.zeros((size, size), np.uint8)
    o = (size - side) // 2
    mask[o:o + side, o:o + side] = 1
    return crop, mask


@pytest.fixture(scope="session")
def tiny_lama_dir(tmp_path_factory):
    """A tiny random LaMa generator (ngf 8, 2 down-samplings, 1 block) saved as `jaxinpaint convert` writes one."""
    from jaxinpaint.io import checkpoint
    from jaxinpaint.systems.lama.model import FFCResNetGenerator

    model = FFCResNetGenerator(ngf=8, n_downsampling=2, n_blocks=1)
    variables = jax.jit(model.init)(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 4)))  # one compile, not per op
    path = tmp_path_factory.mktemp("tiny_lama") / "converted-lama"
    checkpoint.save_models(path, "lama", {"generator": (model, variables)})
    return str(path)
