"""Deep Image Prior: the skip network against the original PyTorch code (``dip_*`` fixtures, through the converter),
parameter counts and key layouts of the notebook's three settings, and the solver end to end (api and predict).

Tolerances (the fixture README's, "Common to ... fixtures"): network outputs 1e-4 absolute; logits and the
``act_level<k>_up`` activations 1e-4 relative to the array's max |value|; the loss scalar 1e-5 relative;
BatchNorm running statistics after the training-mode call 1e-5 relative to their max (tight enough to tell
PyTorch's unbiased running variance from the biased one, a factor 1 + 1/(n - 1) >= 1.1e-4 at the deepest 3x3
maps). Every width, channel list, filter size and input shape comes from the fixtures' ``config_json`` and key
lists, never from this file.

The solver tests use a narrow network (kate's structure, 16 channels, depth 4) on 40-64 px crops of a real photo
so that each compiles and runs in seconds on a shared CPU; the presets themselves are checked structurally.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_file
from PIL import Image

import jaxinpaint
from jaxinpaint import systems
from jaxinpaint.data import photos
from jaxinpaint.systems.dip import convert, model, solver
from jaxinpaint.systems.lama.convert import ConversionError

FIXTURES = ["dip_skip_library_depth6_192.npz", "dip_skip_kate_w16_64.npz"]
#: a small network of the kate structure (skip branches, 1x1 up convs) for the solver tests
SMALL = dict(preset="kate", num_channels_down=[16] * 4, num_channels_up=[16] * 4, num_channels_skip=[4] * 4,
             input_depth=8)


@pytest.fixture()
def _fast_compiles():
    """XLA without most optimisations for the parity tests (restored afterwards): compilation dominates there.
    The solver tests keep the optimisations: their Adam loops would run ~10x slower without them."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def nhwc(a):
    return np.asarray(a).transpose(0, 2, 3, 1)


def assert_close(actual, expected, *, atol=None, rel=None, what=""):
    """``expected`` in the fixtures' NCHW layout for 4-D arrays; ``rel`` is relative to its max |value|."""
    expected = np.asarray(expected)
    expected = nhwc(expected) if expected.ndim == 4 else expected
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    bound = atol if atol is not None else rel * float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(actual - expected)))
    assert err <= bound, f"{what}: max |error| {err:.3g} > {bound:.3g}"


def load_fixture(name):
    z = np.load(reference_file(name))
    return z, json.loads(str(z["config_json"]))


# ----------------------------------------------------------------------------------------------------------
# Parity with models/skip.py.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("_fast_compiles")
@pytest.mark.parametrize("name", FIXTURES)
def test_skip_matches_original(name):
    z, cfg = load_fixture(name)
    net = model.from_kwargs(cfg["kwargs"])
    assert list(z["input"].shape) == cfg["input_shape"]
    variables = convert.convert(z, net)
    x = jnp.asarray(nhwc(z["input"]))

    @jax.jit
    def run(variables, x):
        train_out, state = net.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
        eval_out, eval_state = net.apply(variables, x, train=False, mutable=["intermediates"])
        return train_out, state, eval_out, eval_state["intermediates"]["logits"][0]

    out, state, out_eval, logits_eval = run(variables, x)
    assert_close(out, z["output"], atol=1e-4, what="output (train-mode BN)")
    assert_close(state["intermediates"]["logits"][0], z["output_logits"], rel=1e-4, what="output_logits")
    assert_close(out_eval, z["output_eval"], atol=1e-4, what="output_eval")
    assert_close(logits_eval, z["output_logits_eval"], rel=1e-4, what="output_logits_eval")
    levels = [int(m[1]) for k in z.files if (m := re.fullmatch(r"act_level(\d+)_up", k))]
    assert sorted(levels) == sorted(cfg["levels"]) and levels
    for k in levels:
        assert_close(state["intermediates"][f"level{k}_up"][0], z[f"act_level{k}_up"], rel=1e-4,
                     what=f"act_level{k}_up")
    # The notebook's objective, with the fixture's mask (1 = known).
    m, img = nhwc(z["mask"]), nhwc(z["image"])
    loss = float(np.mean((np.asarray(out) * m - img * m) ** 2))
    assert abs(loss - float(z["loss_mse"])) <= 1e-5 * abs(float(z["loss_mse"])), (loss, float(z["loss_mse"]))
    # Running statistics after the one training-mode call (momentum 0.1, unbiased variance).
    for prefix, (layer, kind) in convert.module_keys(net).items():
        if kind != "bn":
            continue
        for torch_name, ours in (("running_mean", "mean"), ("running_var", "var")):
            assert_close(state["batch_stats"][layer][ours], z[f"after_train_forward.{prefix}.{torch_name}"],
                         rel=1e-5, what=f"{prefix}.{torch_name}")


def test_converter_rejects_wrong_architecture():
    z, cfg = load_fixture("dip_skip_kate_w16_64.npz")
    kwargs = dict(cfg["kwargs"])
    state = {k: z[k] for k in z.files}
    with pytest.raises(ConversionError, match="unused key"):  # the fixture has 1x1 up convs (need1x1_up default)
        convert.convert(state, model.from_kwargs({**kwargs, "need1x1_up": False}))
    wider = [c * 2 for c in kwargs["num_channels_down"]]
    with pytest.raises(ConversionError, match="misshapen"):
        convert.convert(state, model.from_kwargs({**kwargs, "num_channels_down": wider}))
    del state["1.0.2.running_var"]
    with pytest.raises(ConversionError, match="1.0.2.running_var"):
        convert.convert(state, model.from_kwargs(kwargs))


# ----------------------------------------------------------------------------------------------------------
# Parameter counts and key layouts: README table, config_json, dip_keys.txt (full notebook widths).
# ----------------------------------------------------------------------------------------------------------


def _readme_params() -> dict[str, int]:
    """``{fixture file: params}`` from the Deep Image Prior table of the reference README."""
    text = reference_file("README.md").read_text()
    section = text[text.index("## Deep Image Prior"):]
    out = {}
    for line in section.splitlines():
        if m := re.match(r"\| `(dip_[\w]+\.npz)` \|.*\| ([\d,]+) \|\s*$", line):
            out[m[1]] = int(m[2].replace(",", ""))
    return out


def _keys_sections() -> list[dict]:
    """The sections of dip_keys.txt: title, constructor kwargs, (entries, parameters) and {key: shape}."""
    sections = []
    for line in reference_file("dip_keys.txt").read_text().splitlines():
        if m := re.match(r"# === (.*)", line):
            sections.append({"title": m[1], "keys": {}})
        elif m := re.match(r"# constructor: (\{.*\})", line):
            sections[-1]["kwargs"] = json.loads(m[1])
        elif m := re.match(r"# (\d+) state_dict entries, (\d+) parameters", line):
            sections[-1]["counts"] = (int(m[1]), int(m[2]))
        elif line and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            sections[-1]["keys"][key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return sections


@pytest.mark.parametrize("name", FIXTURES)
def test_param_count_of_fixture_config(name):
    _, cfg = load_fixture(name)
    expected = _readme_params()[name]
    assert expected == cfg["n_params"]
    assert model.count_params(model.from_kwargs(cfg["kwargs"])) == expected


def test_full_width_settings_keys_and_counts():
    """library, kate and vase at the notebook's widths: parameter count and the exact state-dict key set/shapes."""
    sections = _keys_sections()
    assert len(sections) == 3
    for sec in sections:
        net = model.from_kwargs(sec["kwargs"])
        entries, params = sec["counts"]
        assert model.count_params(net) == params, sec["title"]
        assert len(sec["keys"]) == entries
        derived = {}
        variables = jax.eval_shape(net.init, jax.random.key(0),
                                   jnp.zeros((1, net.size_multiple, net.size_multiple, net.num_input_channels)))
        for prefix, (layer, kind) in convert.module_keys(net).items():
            if kind == "conv":
                k = variables["params"][layer]["kernel"].shape
                derived[f"{prefix}.weight"] = (k[3], k[2], k[0], k[1])
                derived[f"{prefix}.bias"] = (k[3],)
            else:
                c = variables["params"][layer]["scale"].shape
                for leaf in ("weight", "bias", "running_mean", "running_var"):
                    derived[f"{prefix}.{leaf}"] = c
                derived[f"{prefix}.num_batches_tracked"] = ()
        assert derived == sec["keys"], sec["title"]


@pytest.mark.parametrize("preset", ["library", "kate", "vase"])
def test_presets_are_the_notebook_networks(preset):
    """Each preset builds exactly the constructor recorded for that notebook setting in dip_keys.txt."""
    (sec,) = [s for s in _keys_sections() if preset in s["title"]]
    config = solver.default_config()
    config.preset = preset
    s = solver.resolve(config)
    expected = model.from_kwargs(sec["kwargs"])
    fields = [f for f in model.Skip.__dataclass_fields__ if f not in ("parent", "name", "conv_impl")]
    assert {f: getattr(s.module, f) for f in fields} == {f: getattr(expected, f) for f in fields}
    assert s.lr == 0.01 and solver.size_multiple(config) == 2 ** len(sec["kwargs"]["num_channels_down"])


def test_library_is_default_and_its_smallest_size_is_the_fixtures():
    assert solver.default_config().preset == "library"
    z, cfg = load_fixture("dip_skip_library_depth6_192.npz")
    assert solver.min_size(model.from_kwargs(cfg["kwargs"])) == cfg["input_shape"][-1]  # README: smallest that works


def test_config_errors_name_the_field():
    config = solver.default_config()
    config.preset = "barbara"
    with pytest.raises(ValueError, match="'preset'"):
        solver.resolve(config)
    with pytest.raises(TypeError, match="unknown option"):
        jaxinpaint.load("dip", iterationz=3)
    with pytest.raises(ValueError, match="meshgrid"):
        jaxinpaint.load("dip", preset="vase", input_depth=3)


def test_meshgrid_input():
    config = solver.default_config()
    config.preset = "vase"
    z = np.asarray(solver.network_input(jax.random.key(0), solver.resolve(config), 4, 5))
    assert z.shape == (1, 4, 5, 2)
    np.testing.assert_allclose(z[0, 0, :, 0], np.arange(5) / 4)  # x along the width, channel 0
    np.testing.assert_allclose(z[0, :, 0, 1], np.arange(4) / 3)


# ----------------------------------------------------------------------------------------------------------
# The solver on a real photo.
# ----------------------------------------------------------------------------------------------------------


def photo_crop(h, w):
    path = next(p for p in photos.builtin_photo_paths("all") if p.name == "astronaut.png")
    rgb = (photos.load_image(path)[100:100 + h, 200:200 + w] * 255 + 0.5).astype(np.uint8)
    hole = np.zeros((h, w), bool)
    side = int(round(np.sqrt(0.1 * h * w)))
    top, left = (h - side) // 2, (w - side) // 3
    hole[top:top + side, left:left + side] = True  # ~10 % of the pixels
    return rgb, hole


@pytest.fixture(scope="module")
def small_run():
    rgb, hole = photo_crop(64, 56)  # 56 is not a multiple of the network's 16: the api pads (to the PSNR test's 64)
    inp = jaxinpaint.load("dip", seed=0, iterations=30, **SMALL)
    return rgb, hole, inp, inp.inpaint(rgb, hole), inp.last_info


def test_registered_and_known_pixels_byte_identical(small_run):
    assert "dip" in systems.names("solver")
    rgb, hole, _, out, _ = small_run
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.array_equal(out[~hole], rgb[~hole])
    assert not np.array_equal(out[hole], rgb[hole])


def test_loss_falls(small_run):
    info = small_run[4]
    assert info["loss"].shape == (30,) and np.all(np.isfinite(info["loss"]))
    assert info["loss"][-1] < 0.5 * info["loss"][0], info["loss"]


def test_same_seed_same_bytes_different_seed_different(small_run):
    rgb, hole, _, out, _ = small_run
    again = jaxinpaint.load("dip", seed=0, iterations=30, **SMALL).inpaint(rgb, hole)
    assert np.array_equal(again, out)
    other = jaxinpaint.load("dip", seed=1, iterations=30, **SMALL).inpaint(rgb, hole)
    assert not np.array_equal(other[hole], out[hole])
    assert np.array_equal(other[~hole], rgb[~hole])


def test_predict_cli(small_run, tmp_path):
    from jaxinpaint.cli import predict

    rgb, hole, _, out, _ = small_run
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    Image.fromarray((hole * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    options = [f"--option={k}={json.dumps(v)}" for k, v in {**SMALL, "iterations": 30}.items()]
    argv = ["--model=dip", f"--image={tmp_path / 'photo.png'}", f"--mask={tmp_path / 'mask.png'}",
            f"--output={tmp_path / 'out.png'}", "--seed=0", *options]
    assert predict.main(argv) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), out)  # the same bytes as the api


def test_host_loop_is_the_same_optimisation(small_run):
    """loop='host' (Python loop over the jitted step) runs the scan's step: same start, same trajectory up to
    float rounding (1e-4 relative over the first 3 losses, 2e-3 over the first 5: Adam's normalised updates
    amplify rounding differences step by step), known pixels kept, deterministic."""
    rgb, hole, _, _, scan_info = small_run
    inp = jaxinpaint.load("dip", seed=0, iterations=30, loop="host", **SMALL)
    out = inp.inpaint(rgb, hole)
    np.testing.assert_allclose(inp.last_info["loss"][:3], scan_info["loss"][:3], rtol=1e-4)
    np.testing.assert_allclose(inp.last_info["loss"][:5], scan_info["loss"][:5], rtol=2e-3)
    assert inp.last_info["loss"][-1] < 0.5 * inp.last_info["loss"][0]
    assert np.array_equal(out[~hole], rgb[~hole])
    assert np.array_equal(jaxinpaint.load("dip", seed=0, iterations=30, loop="host", **SMALL).inpaint(rgb, hole), out)
    with pytest.raises(ValueError, match="'loop'"):
        jaxinpaint.load("dip", iterations=1, loop="python", **SMALL).inpaint(rgb, hole)


def test_beats_mean_colour_fill_on_a_photo():
    """64 px, 150 Adam steps: DIP's hole PSNR is above the mean-colour fill's (a real prior, not a blur).
    (loop='host' only for speed: the test above ties it to the scan.)"""
    rgb, hole = photo_crop(64, 64)
    out = jaxinpaint.load("dip", seed=0, iterations=150, loop="host", **SMALL).inpaint(rgb, hole)
    truth = rgb[hole].astype(np.float64) / 255

    def hole_psnr(img):
        return 10 * np.log10(1.0 / np.mean((img[hole].astype(np.float64) / 255 - truth) ** 2))

    mean_fill = rgb.copy()
    mean_fill[hole] = np.round(rgb[~hole].mean(0)).astype(np.uint8)
    dip, mean = hole_psnr(out), hole_psnr(mean_fill)
    assert dip > mean + 1.0, (dip, mean)


def test_image_below_the_networks_smallest_size():
    """A 16 px image with a network that needs 32 px (reflection pads at its deepest 1x1 map would fail): the
    solver works on a symmetric extension and returns the image's size, known pixels intact."""
    rgb, hole = photo_crop(16, 16)
    config = solver.default_config()
    config.update(SMALL)
    assert solver.min_size(solver.resolve(config).module) == 32
    inp = jaxinpaint.load("dip", seed=0, iterations=0, loop="host", **SMALL)  # 0 steps: compiles no step
    out = inp.inpaint(rgb, hole)
    assert out.shape == rgb.shape and np.array_equal(out[~hole], rgb[~hole])
    assert inp.last_info["loss"].shape == (0,)


def test_predict_option_errors(tmp_path, capsys):
    from jaxinpaint.cli import predict

    rgb, hole = photo_crop(16, 16)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    Image.fromarray((hole * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    base = ["--model=dip", f"--image={tmp_path / 'photo.png'}", f"--mask={tmp_path / 'mask.png'}",
            f"--output={tmp_path / 'out.png'}"]
    assert predict.main(base + ["--option=iterations"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert predict.main(base + ["--option=iterationz=3"]) == 2  # unknown solver option, named by the loader
    assert "iterationz" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
