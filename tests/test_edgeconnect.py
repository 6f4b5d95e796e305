"""EdgeConnect: parity with the original's fixtures through the converter, the stages' updates, the released
file layout, inference and the three smoke stages end to end.

Tolerances (float32 CPU, as ../shared/reference/README.md states for these fixtures): network outputs 1e-4
absolute; logits and activations 1e-4 relative to the array's max |value|; spectral-norm vectors 1e-6; loss
scalars 1e-5 relative; Canny maps exactly. Every width, block count and size comes from the fixtures.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_file, run_update
from PIL import Image

import jaxinpaint
from jaxinpaint import config_lib, contract, metrics, systems, writers
from jaxinpaint.backbones import vgg
from jaxinpaint.cli import convert as convert_cli
from jaxinpaint.cli import evaluate as evaluate_cli
from jaxinpaint.cli import predict as predict_cli
from jaxinpaint.data import photos
from jaxinpaint.io import tree as tree_lib
from jaxinpaint.systems.edgeconnect import SYSTEM, convert, objective
from jaxinpaint.systems.edgeconnect.model import EdgeGenerator, InpaintGenerator
from jaxinpaint.systems.edgeconnect.objective import EDGE_D, EDGE_G, INPAINT_D, INPAINT_G
from jaxinpaint.train import trainer

WEIGHT_KEY = re.compile(r"(encoder|middle|decoder|conv\d|features)\.")


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """XLA without most optimisations for this module (restored afterwards): compilation dominates here."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _fixture(name):
    z = np.load(reference_file(name))
    return z, json.loads(str(z["config_json"]))


def _state_dict(z):
    return {k: z[k] for k in z.files if WEIGHT_KEY.match(k)}


def _nhwc(x):
    return np.transpose(np.asarray(x), (0, 2, 3, 1))


def _num_params(variables):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def _assert_relative(actual, expected, what, rel=1e-4):
    scale = float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(np.asarray(actual) - expected)))
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel} x {scale:.3g}"


def _spectral_path(key):
    """``after_train_forward.encoder.1.weight_u`` -> (('encoder_1',), 'u')."""
    path, field = convert._flax_path(key[len("after_train_forward."):])
    return path, field[len("weight_"):]


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _config(variant="edge"):
    return config_lib.get_config(f"configs/edgeconnect.py:{variant}")


# ------------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("fixture", ["edgeconnect_edge_gen_w4.npz", "edgeconnect_inpaint_gen_w4.npz",
                                     "edgeconnect_edge_gen_1block.npz"])
def test_generators_match_the_original_through_the_converter(fixture):
    z, cfg = _fixture(fixture)
    (name, (module, variables)), = convert.load_original(_state_dict(z)).items()
    edge_stage = cfg["network"] == "EdgeGenerator"
    assert name == (EDGE_G if edge_stage else INPAINT_G)
    assert type(module) is (EdgeGenerator if edge_stage else InpaintGenerator)
    assert module.residual_blocks == cfg["constructor"]["residual_blocks"]
    assert module.use_spectral_norm == cfg["constructor"].get("use_spectral_norm", False)
    assert module.width == z["encoder.1.bias"].shape[0]
    assert _num_params(variables) == cfg["n_params"]

    image, grey, edge, mask = (_nhwc(z[k]) for k in ("image", "gray", "edge", "mask"))
    # The test-mode data pipeline: grey of the whole image, Canny (σ from the fixture's pipeline) of the known
    # region, exactly.
    config = _config()
    for i in range(image.shape[0]):
        prepared = objective.prepare_example({"image": image[i], "mask": mask[i]}, config, train=False)
        np.testing.assert_allclose(prepared["grey"], grey[i], atol=1e-7)
        np.testing.assert_array_equal(prepared["edge"], edge[i])
    x = (objective.edge_generator_input(grey, edge, mask) if edge_stage
         else objective.inpaint_generator_input(image, edge, mask))
    np.testing.assert_allclose(x, _nhwc(z["input"]), atol=1e-7)

    out, inter = module.apply(variables, x, mutable=["intermediates"])
    np.testing.assert_allclose(out, _nhwc(z["output"]), atol=1e-4)
    for key in cfg["act_keys"]:
        _assert_relative(inter["intermediates"][key][0], _nhwc(z[key]), key)
    known = edge if edge_stage else image
    np.testing.assert_allclose(contract.composite(out, known, mask), _nhwc(z["output_merged"]), atol=1e-4)

    if module.use_spectral_norm:  # one power iteration per training-mode call, for every SN layer
        out_train, state = module.apply(variables, x, train=True, mutable=["spectral"])
        np.testing.assert_allclose(out_train, _nhwc(z["output_train"]), atol=1e-4)
        after = [k for k in z.files if k.startswith("after_train_forward.")]
        assert len(after) == 2 * len(cfg["sn_sigma_eval"])
        for key in after:
            path, field = _spectral_path(key)
            np.testing.assert_allclose(_get(state["spectral"], path)[field], z[key], atol=1e-6, err_msg=key)


@pytest.mark.parametrize("fixture", ["edgeconnect_disc_edge_w4.npz", "edgeconnect_disc_inpaint_hinge_w4.npz"])
def test_discriminators_match_the_original_through_the_converter(fixture):
    z, cfg = _fixture(fixture)
    (name, (module, variables)), = convert.load_original(_state_dict(z)).items()
    assert name == {2: EDGE_D, 3: INPAINT_D}[cfg["constructor"]["in_channels"]]
    assert module.width == z["conv1.0.weight_orig"].shape[0] and module.use_spectral_norm
    assert _num_params(variables) == cfg["n_params"]
    module = module.clone(use_sigmoid=cfg["constructor"]["use_sigmoid"])  # nsgan (sigmoid) or hinge (logits)
    x = _nhwc(z["input"])
    out, feats = module.apply(variables, x)
    _assert_relative(out, _nhwc(z["output"]), "output")
    assert len(feats) == len(cfg["feat_shapes"])
    for i, (f, shape) in enumerate(zip(feats, cfg["feat_shapes"])):
        assert f.shape == tuple(np.array(shape)[[0, 2, 3, 1]])
        _assert_relative(f, _nhwc(z[f"feat_{i}"]), f"feat_{i}")
    (out_train, _), state = module.apply(variables, x, train=True, mutable=["spectral"])
    _assert_relative(out_train, _nhwc(z["output_train"]), "output_train")
    assert not np.allclose(out_train, out, rtol=0, atol=1e-7)  # the iteration is visible in the logits
    for key in (k for k in z.files if k.startswith("after_train_forward.")):
        path, field = _spectral_path(key.replace("features.0", "conv1.0"))  # the alias shares conv1's vectors
        np.testing.assert_allclose(_get(state["spectral"], path)[field], z[key], atol=1e-6, err_msg=key)


def _vgg19_stand_in(z, divisor):
    """The fixture's width-divided VGG19 (``vgg.relu<b>_<i>.<torchvision index>.*``) as vgg.Model variables."""
    params = {}
    for name, index in zip(vgg.conv_names(19), vgg.torchvision_conv_indices(19)):
        prefix = f"vgg.relu{name[4:]}.{index}."
        params[name] = {"kernel": z[prefix + "weight"].transpose(2, 3, 1, 0), "bias": z[prefix + "bias"]}
    assert params["conv1_1"]["kernel"].shape[-1] == vgg.BLOCKS_BY_DEPTH[19][0][0] // divisor
    return {"params": params}


def test_losses_match_the_original():
    z, cfg = _fixture("edgeconnect_losses_vggw8.npz")
    config = _config("inpaint")
    config.losses.vgg_width_divisor = cfg["vgg_width_div"]
    model = objective.vgg_model(config)
    variables = _vgg19_stand_in(z, cfg["vgg_width_div"])
    assert _num_params(variables) == cfg["vgg_n_params"]
    x, y, mask = (_nhwc(z[k]) for k in ("x", "y", "mask"))
    feats = model.apply(variables, x)
    taps = [k[len("vgg_x_"):] for k in z.files if k.startswith("vgg_x_")]
    assert set(taps) == set(objective.PERCEPTUAL_TAPS + objective.STYLE_TAPS)
    for tap in taps:
        _assert_relative(feats[tap], _nhwc(z[f"vgg_x_{tap}"]), tap)
    masked = objective.perceptual_and_style(model, variables, x, y, mask)
    whole = objective.perceptual_and_style(model, variables, x, y, np.ones_like(mask))
    assert float(masked["perceptual"]) == pytest.approx(float(z["perceptual"]), rel=1e-5)
    assert float(masked["style"]) == pytest.approx(float(z["style_masked"]), rel=1e-5)
    assert float(whole["style"]) == pytest.approx(float(z["style"]), rel=1e-5)

    assert (float(z["adversarial.real_label"]), float(z["adversarial.fake_label"])) == (1.0, 0.0)
    assert np.any(z["d_prob"] == 0) and np.any(z["d_prob"] == 1)  # BCELoss's -100 clamp is exercised
    for case in cfg["adversarial_cases"]:
        value = objective.adversarial_loss(jnp.asarray(z[case["input"]]), is_real=case["is_real"],
                                           for_discriminator=case["is_disc"], gan_type=case["type"])
        assert float(value) == pytest.approx(float(z[case["key"]]), rel=1e-5), case["key"]
    # The clamp keeps the gradient finite at saturated probabilities.
    grad = jax.grad(lambda p: objective.adversarial_loss(p, is_real=True, for_discriminator=True,
                                                         gan_type="nsgan"))(jnp.asarray(z["d_prob"]))
    assert np.all(np.isfinite(grad))


def _key_sections():
    """``{header: (declared parameter count, {key: shape})}`` of the full-width key list."""
    sections, current = {}, None
    for line in reference_file("edgeconnect_keys.txt").read_text().splitlines():
        if line.startswith("# === "):
            current = line[len("# === "):]
            sections[current] = [None, {}]
        elif m := re.match(r"# \d+ state_dict entries, (\d+) parameters", line):
            sections[current][0] = int(m.group(1))
        elif line and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            sections[current][1][key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return sections


def test_full_width_key_lists_convert_exactly_and_parameter_counts():
    sections = _key_sections()
    networks = {name: spec for name, spec in sections.items() if not name.startswith("StyleLoss")}
    assert len(networks) == 4
    config = _config()
    counts = {}
    for header, (declared, shapes) in networks.items():
        sd = {k: np.zeros(s, np.float32) for k, s in shapes.items()}  # aliases equal, as in real files
        (name, (module, variables)), = convert.load_original(sd).items()
        assert _num_params(variables) == declared, header
        counts[name] = declared
        # The config's full-width modules have the same trees (jax.eval_shape; nothing is computed).
        section = {EDGE_G: config.edge_generator, INPAINT_G: config.inpaint_generator}.get(
            name, config.edge_discriminator)
        built = systems.build_module("edgeconnect", section)
        channels = module.in_channels if name in (EDGE_G, INPAINT_G) else sd["conv1.0.weight_orig"].shape[1]
        abstract = jax.eval_shape(lambda m=built, c=channels: m.init(jax.random.key(0), jnp.zeros((1, 256, 256, c))))
        tree_lib.check(abstract, variables, what=header, source="edgeconnect_keys.txt")
    assert set(counts) == {EDGE_G, INPAINT_G, EDGE_D, INPAINT_D}
    # The losses' VGG19 is torchvision's vgg19 features, i.e. backbones.vgg at depth 19.
    declared, shapes = next(v for k, v in sections.items() if k.startswith("StyleLoss"))
    sd = {re.sub(r"^vgg\.relu\d_\d\.", "features.", k): np.zeros(s, np.float32) for k, s in shapes.items()}
    assert _num_params(vgg.variables_from_torchvision(sd, depth=19)) == declared


# ------------------------------------------------------------------------------------------------ updates


def _tiny_config(stage, size=32):
    c = _config(f"{stage},smoke")
    for section in (c.edge_generator, c.inpaint_generator, c.edge_discriminator, c.inpaint_discriminator):
        section.width = 4
    c.edge_generator.residual_blocks = c.inpaint_generator.residual_blocks = 1
    c.input.image_size = size
    return c


def _batch(n=2, size=32, train=True, config=None):
    path = photos.builtin_photo_paths("holdout")[0]
    with Image.open(path) as im:
        image = np.asarray(im.convert("RGB").resize((size, size)), np.float32) / 255.0
    images = np.stack([image, image[:, ::-1]])[:n]
    masks = np.zeros((n, size, size, 1), np.float32)
    masks[0, 4:size // 2, 6:size // 2 + 4] = 1.0
    masks[1:, size // 3:, : size // 2] = 1.0
    config = config or _config()
    prepared = [objective.prepare_example({"image": i, "mask": m}, config, train=train) for i, m in zip(images, masks)]
    return {"image": images, "mask": masks, **{k: np.stack([p[k] for p in prepared]) for k in prepared[0]}}


def _init(config, batch):
    nets = SYSTEM.networks(config)
    variables = {name: net.module.init(jax.random.key(i), *net.init_args(batch))
                 for i, (name, net) in enumerate(nets.items())}
    return {n: net.module for n, net in nets.items()}, variables


def _train_calls(module, variables, inputs):
    """The spectral state after training-mode calls on each input in turn."""
    state = {k: v for k, v in variables.items() if k != "params"}
    for x in inputs:
        _, state = module.apply({"params": variables["params"], **state}, x, train=True, mutable=["spectral"])
    return state


def test_edge_stage_updates_follow_the_original_order_and_losses():
    config = _tiny_config("edge")
    batch = _batch(config=config)
    modules, variables = _init(config, batch)
    assert [u.name for u in SYSTEM.phases(config)[0].updates] == ["g1", "d1"]  # G through the pre-update D
    total, metrics, carry, states = run_update(objective.edge_generator_update, modules, variables, batch, config)
    g_in = objective.edge_generator_input(batch["grey"], batch["edge"], batch["mask"])
    fake, _ = modules[EDGE_G].apply(variables[EDGE_G], g_in, train=True, mutable=["spectral"])
    np.testing.assert_allclose(carry["fake"], fake, atol=1e-6)
    real_in = np.concatenate([batch["grey"], batch["edge"]], -1)
    fake_in = np.concatenate([batch["grey"], fake], -1)
    # Three D calls, three power iterations (real, detached fake, fake); G1's own SN iterated once.
    d, dv = modules[EDGE_D], variables[EDGE_D]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), states[EDGE_D],
                 _train_calls(d, dv, [real_in, fake_in, fake_in]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), states[EDGE_G],
                 _train_calls(modules[EDGE_G], variables[EDGE_G], [g_in]))
    w = config.losses
    assert float(total) == pytest.approx(w.edge_adversarial * float(metrics["adversarial"])
                                         + w.fm * float(metrics["feature_matching"]), rel=1e-6)
    # G's adversarial term sees D after the third iteration; feature matching the real features of the first.
    start = {k: v for k, v in dv.items() if k != "params"}

    def d_call(state, x):
        return d.apply({"params": dv["params"], **state}, x, train=True, mutable=["spectral"])[0]

    real_out, real_feats = d_call(start, real_in)
    fake_out, fake_feats = d_call(_train_calls(d, dv, [real_in, fake_in]), fake_in)
    expected_fm = sum(float(jnp.mean(jnp.abs(f - r))) for f, r in zip(fake_feats, real_feats))
    assert float(metrics["feature_matching"]) == pytest.approx(expected_fm, rel=1e-5)
    assert float(metrics["adversarial"]) == pytest.approx(float(-jnp.mean(jnp.log(fake_out))), rel=1e-5)

    # D's update replays calls 1 and 2 from the step's starting vectors and leaves D after call 3.
    after_g = {**variables, EDGE_D: {"params": dv["params"], **states[EDGE_D]}}
    loss, d_metrics, _, d_states = run_update(objective.edge_discriminator_update, modules, after_g, batch, config,
                                              carry=carry)
    jax.tree.map(np.testing.assert_array_equal, d_states[EDGE_D], states[EDGE_D])
    fake_out, _ = d_call(_train_calls(d, dv, [real_in]), fake_in)
    expected = (-jnp.mean(jnp.log(real_out)) - jnp.mean(jnp.log(1 - fake_out))) / 2
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(d_metrics["real"]) == pytest.approx(float(-jnp.mean(jnp.log(real_out))), rel=1e-5)


def test_inpaint_and_joint_updates():
    config = _tiny_config("inpaint")
    batch = _batch(config=config)
    frozen = SYSTEM.frozen(config)
    assert set(frozen) == {"vgg"} and "conv5_4" in frozen["vgg"]["params"]
    modules, variables = _init(config, batch)
    total, metrics, carry, _ = run_update(objective.inpaint_generator_update, modules, variables, batch, config,
                                          frozen=frozen)
    # Stage 2: G2 on the full ground-truth edges; L1 over all pixels scaled by the batch's hole fraction.
    out = modules[INPAINT_G].apply(variables[INPAINT_G],
                                   objective.inpaint_generator_input(batch["image"], batch["edge"], batch["mask"]))
    np.testing.assert_allclose(carry["fake"], out, atol=1e-6)
    l1 = np.mean(np.abs(np.asarray(out) - batch["image"])) / np.mean(batch["mask"])
    assert float(metrics["l1"]) == pytest.approx(l1, rel=1e-5)
    w = config.losses
    assert set(metrics) == {"adversarial", "l1", "perceptual", "style"}
    assert float(total) == pytest.approx(sum(getattr(w, k) * float(metrics[k]) for k in ("l1", "perceptual",
                                                                                          "style"))
                                         + w.inpaint_adversarial * float(metrics["adversarial"]), rel=1e-5)
    # The edge stage needs no VGG.
    assert SYSTEM.frozen(_tiny_config("edge")) == {}

    # Stage 3: the frozen G1's output replaces the ground-truth edges inside the hole.
    joint = _tiny_config("joint")
    modules, variables = _init(joint, batch)
    nets = SYSTEM.networks(joint)
    assert nets[EDGE_G].optimizer is None and not nets[EDGE_G].trainable and nets[INPAINT_G].trainable
    _, _, carry, states = run_update(objective.inpaint_generator_update, modules, variables, batch, joint,
                                     frozen=frozen)
    g1 = modules[EDGE_G].apply(variables[EDGE_G],
                               objective.edge_generator_input(batch["grey"], batch["edge"], batch["mask"]),
                               train=True, mutable=["spectral"])[0]
    edge = g1 * batch["mask"] + batch["edge"] * (1 - batch["mask"])
    out = modules[INPAINT_G].apply(variables[INPAINT_G],
                                   objective.inpaint_generator_input(batch["image"], edge, batch["mask"]))
    np.testing.assert_allclose(carry["fake"], out, atol=1e-5)
    assert not np.allclose(states[EDGE_G]["spectral"]["encoder_1"]["u"],
                           variables[EDGE_G]["spectral"]["encoder_1"]["u"])  # train mode, as the original
    no_init = _tiny_config("joint")
    no_init.init_from = None
    with pytest.raises(ValueError, match="init_from"):
        SYSTEM.phases(no_init)


def test_config_recipe_and_errors():
    c = _config()
    assert c.stage == "edge" and _config("smoke").stage == "edge"
    assert (c.losses.l1, c.losses.fm, c.losses.style, c.losses.perceptual, c.losses.inpaint_adversarial) == (
        1.0, 10.0, 250.0, 0.1, 0.1)
    assert c.losses.gan_type == "nsgan" and c.inference.sigma == 2.0
    for opt in (c.g_optimizer, c.d_optimizer):
        assert (opt.name, opt.b1, opt.b2) == ("adam", 0.0, 0.9)
    assert c.g_optimizer.lr == pytest.approx(1e-4) and c.d_optimizer.lr == pytest.approx(1e-5)
    c.lr = 1e-5  # LR moves both, keeping D2G_LR
    assert c.d_optimizer.lr == pytest.approx(1e-6)
    assert (c.input.batch_size, c.input.image_size) == (8, 256)
    assert _config("joint").init_from == "workdirs/edgeconnect_edge,workdirs/edgeconnect_inpaint"
    masks = _config("file_masks")
    assert masks.input.mask.name == "folder" and masks.input.mask.kwargs.threshold == 0.0
    with pytest.raises(ValueError, match="one stage"):
        _config("edge,inpaint")
    with pytest.raises(ValueError, match="unknown config variant"):
        _config("edge_inpaint")
    bad = _config()
    bad.losses.gan_type = "wgan"
    with pytest.raises(ValueError, match="gan_type"):
        SYSTEM.networks(bad)
    bad = _config()
    bad.inference.sigma = 0.0
    with pytest.raises(ValueError, match="random σ"):
        SYSTEM.networks(bad)
    hinge = _config()
    hinge.losses.gan_type = "hinge"
    assert not SYSTEM.networks(hinge)[EDGE_D].module.use_sigmoid and SYSTEM.networks(c)[EDGE_D].module.use_sigmoid


# ------------------------------------------------------------------------------------------------ weights


def _torch_save(path, obj):
    """``torch.save`` of nested dicts of float32 arrays and ints, without torch (zip format)."""
    from test_torch_pickle import _Storage, _Tensor, _torch_pickle_bytes, _write_torch_zip

    records = []

    def tensors(x):
        if isinstance(x, dict):
            return {k: tensors(v) for k, v in x.items()}
        if isinstance(x, np.ndarray):
            arr = np.ascontiguousarray(x, "<f4")
            key = str(len(records))
            records.append((key, arr.tobytes()))
            return _Tensor(_Storage(key, arr.size), 0, arr.shape, tuple(s // 4 for s in arr.strides))
        return x

    _write_torch_zip(path, _torch_pickle_bytes(tensors(obj)), records)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A release folder in the original's layout, from the w4 fixtures (the edge D with DataParallel keys)."""
    folder = tmp_path_factory.mktemp("checkpoints") / "places2"
    folder.mkdir()
    parts = {name: _state_dict(_fixture(name)[0]) for name in (
        "edgeconnect_edge_gen_w4.npz", "edgeconnect_inpaint_gen_w4.npz", "edgeconnect_disc_edge_w4.npz")}
    _torch_save(folder / "EdgeModel_gen.pth", {"iteration": 7, "generator": parts["edgeconnect_edge_gen_w4.npz"]})
    _torch_save(folder / "InpaintingModel_gen.pth",
                {"iteration": 7, "generator": parts["edgeconnect_inpaint_gen_w4.npz"]})
    _torch_save(folder / "EdgeModel_dis.pth", {"discriminator": {
        "module." + k: v for k, v in parts["edgeconnect_disc_edge_w4.npz"].items()}})
    return folder


def _expected_inpainting(models, image_u8, hole, composite_edges=False):
    """The original's test path computed module by module: Canny of the known region -> G1 -> G2 -> composite."""
    image = image_u8.astype(np.float32)[None] / 255.0
    mask = hole.astype(np.float32)[None, ..., None]
    prepared = objective.prepare_example({"image": image[0], "mask": mask[0]}, _config(), train=False)
    grey, edge = prepared["grey"][None], prepared["edge"][None]
    (g1, v1), (g2, v2) = models[EDGE_G], models[INPAINT_G]
    edges = g1.apply(v1, objective.edge_generator_input(grey, edge, mask))
    if composite_edges:
        edges = edges * mask + edge * (1 - mask)
    out = g2.apply(v2, objective.inpaint_generator_input(image, edges, mask))
    return np.asarray(contract.composite(out, image, mask))[0]


def test_released_files_convert_load_and_inpaint(release, tmp_path):
    edge_file = release / "EdgeModel_gen.pth"
    assert systems.for_weights(str(edge_file)) is SYSTEM
    assert systems.for_weights(str(release / "EdgeModel_dis.pth")) is SYSTEM
    out = tmp_path / "converted"
    assert convert_cli.main([str(edge_file), str(out)]) == 0  # siblings are read too
    model = jaxinpaint.load(str(out))
    assert set(model.models) == {EDGE_G, INPAINT_G, EDGE_D}
    assert model.modulo == 4 and model.config.inference.sigma == 2.0
    z, _ = _fixture("edgeconnect_edge_gen_w4.npz")
    image = np.round(_nhwc(z["image"])[0] * 255).astype(np.uint8)
    hole = _nhwc(z["mask"])[0, ..., 0] > 0
    result = model.inpaint(image, hole)
    np.testing.assert_array_equal(result[~hole], image[~hole])
    expected = _expected_inpainting(convert.load_original(str(release)), image, hole)
    assert np.abs(result.astype(int) - np.clip(expected * 255, 0, 255).astype(np.uint8)).max() <= 1
    # G1's raw output goes to G2 (the original's test()); pasting it into the known edges differs.
    pasted = _expected_inpainting(convert.load_original(str(release)), image, hole, composite_edges=True)
    assert np.abs(pasted - expected).max() > 1e-3
    # The original file itself loads, and folding the spectral norms changes nothing in evaluation mode.
    direct = jaxinpaint.load(str(release / "InpaintingModel_gen.pth"))
    np.testing.assert_array_equal(direct.inpaint(image, hole), result)
    folded = convert.load_original(str(release), fold_spectral_norm=True)
    assert "spectral" not in folded[EDGE_G][1] and not folded[EDGE_G][0].use_spectral_norm
    assert folded[EDGE_D][0].use_spectral_norm  # discriminators keep their norm (training only)
    np.testing.assert_allclose(_expected_inpainting(folded, image, hole), expected, atol=1e-5)
    # --no-discriminator keeps what inference needs.
    assert convert_cli.main([str(release), str(tmp_path / "gens"), "--system=edgeconnect",
                             "--no-discriminator"]) == 0
    assert set(jaxinpaint.load(str(tmp_path / "gens")).models) == {EDGE_G, INPAINT_G}


def test_converter_errors(release, tmp_path):
    sd = _state_dict(_fixture("edgeconnect_disc_edge_w4.npz")[0])
    bad_alias = dict(sd, **{"features.0.weight_orig": sd["features.0.weight_orig"] + 1})
    with pytest.raises(convert.ConversionError, match="alias"):
        convert.load_original(bad_alias)
    with pytest.raises(tree_lib.TreeMismatchError, match="missing.*conv3_0/u"):
        convert.load_original({k: v for k, v in sd.items() if k != "conv3.0.weight_u"})
    gen = _state_dict(_fixture("edgeconnect_edge_gen_w4.npz")[0])
    with pytest.raises(tree_lib.TreeMismatchError, match="unexpected: spectral/decoder_7/u"):
        convert.load_original({**gen, "decoder.7.weight_u": np.ones(1, np.float32)})  # the last conv has no SN
    with pytest.raises(tree_lib.TreeMismatchError, match="missing: params/middle_0/conv_block_5/bias"):
        convert.load_original({**gen, "middle.0.conv_block.1.bias": np.zeros(64, np.float32)})
    with pytest.raises(convert.ConversionError, match="not an EdgeConnect"):
        convert.load_original({"model.1.weight": np.zeros((2, 2), np.float32)})
    twin = tmp_path / "twin"
    twin.mkdir()
    _torch_save(twin / "EdgeModel_gen.pth", {"generator": gen})
    _torch_save(twin / "copy.pth", {"generator": gen})
    with pytest.raises(convert.ConversionError, match="both hold"):
        convert.load_original(str(twin / "copy.pth"))
    with pytest.raises(FileNotFoundError, match="none of EdgeConnect's weight files"):
        convert.load_original(str(tmp_path))
    assert convert_cli.main([str(tmp_path / "nothing.pth"), str(tmp_path / "o")]) == 2


def _odd_photos(folder, size=(93, 70)):
    """Two real photos at odd sizes, each with a LaMa-layout mask (``x_mask.png``)."""
    folder.mkdir()
    for i, path in enumerate(photos.builtin_photo_paths()[1:3]):
        with Image.open(path) as im:
            w, h = size[0] + 2 * i, size[1] + 3 * i
            im.convert("RGB").resize((w, h)).save(folder / f"photo{i}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4: h // 2, w // 5: w // 2] = 255
        mask[h // 2:, w // 2: w // 2 + 4] = 255
        Image.fromarray(mask).save(folder / f"photo{i}_mask.png")


def test_predict_and_evaluate_cli_on_odd_sized_photos(release, tmp_path):
    converted = tmp_path / "converted"
    assert convert_cli.main([str(release), str(converted), "--system=edgeconnect"]) == 0
    photos_dir, out_dir = tmp_path / "photos", tmp_path / "out"
    _odd_photos(photos_dir)
    assert predict_cli.main([f"--model={converted}", f"--input_dir={photos_dir}", f"--output_dir={out_dir}"]) == 0
    for i in range(2):
        image = np.asarray(Image.open(photos_dir / f"photo{i}.png"))
        hole = np.asarray(Image.open(photos_dir / f"photo{i}_mask.png")) > 0
        result = np.asarray(Image.open(out_dir / f"photo{i}_mask.png"))
        assert result.shape == image.shape and image.shape[0] % 4 and image.shape[1] % 4
        np.testing.assert_array_equal(result[~hole], image[~hole])
        assert np.abs(result[hole].astype(int) - image[hole]).mean() > 1

    # evaluate --edgeconnect_metrics (the folder is an evaluation set: the photos with their masks, as stored):
    # EdgeConnect's numbers beside LaMa's, computed on the saved 8-bit predictions.
    report_path, preds = tmp_path / "report.json", tmp_path / "preds"
    assert evaluate_cli.main(["--model", str(converted), "--input_dir", str(photos_dir), "--edgeconnect_metrics",
                              "--per_image", "--save_predictions", str(preds), "--output", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert len(report["per_image"]) == 2
    for row in report["per_image"]:
        target = np.asarray(Image.open(photos_dir / (row["name"].rsplit("_mask", 1)[0] + ".png")))
        pred = np.asarray(Image.open(preds / (row["name"] + ".png")))
        expected = metrics.edgeconnect_metrics(pred[None] / 255.0, target[None] / 255.0)
        for key in metrics.EDGECONNECT_METRICS:
            assert row[key] == pytest.approx(float(expected[key][0]), rel=1e-5), key
    assert {"ec_psnr", "ec_ssim", "ec_mae", "psnr", "ssim"} <= set(report["total"])
    assert 0 < report["total"]["ec_ssim"] <= 1 and 0 < report["total"]["ec_mae"] < 1
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.png").write_bytes((photos_dir / "photo0.png").read_bytes())
    assert evaluate_cli.main(["--model", str(converted), "--input_dir", str(plain), "--masks", "center_box",
                              "--image_size", "32", "--edgeconnect_metrics"]) == 2  # below the 51-px window


def test_edgeconnect_metrics_match_scikit_image():
    from skimage.color import rgb2gray
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    z, _ = _fixture("edgeconnect_inpaint_gen_w4.npz")
    target = _nhwc(z["image"])
    rng = np.random.default_rng(0)
    noisy = np.round(np.clip(target + rng.normal(0, 0.08, target.shape), 0, 1) * 255) / 255
    pairs = [(noisy.astype(np.float32), target),  # what the original scores: saved 8-bit results
             (_nhwc(z["output_merged"]), target),
             (rng.uniform(size=(2, 53, 75, 3)).astype(np.float32), rng.uniform(size=(2, 53, 75, 3)).astype(np.float32))]
    for pred, gt in pairs:
        ours = metrics.edgeconnect_metrics(pred, gt)
        for i in range(len(pred)):
            g_pred, g_gt = rgb2gray(pred[i]), rgb2gray(gt[i])
            assert float(ours["ec_psnr"][i]) == pytest.approx(peak_signal_noise_ratio(g_gt, g_pred, data_range=1),
                                                              rel=1e-5)
            assert float(ours["ec_ssim"][i]) == pytest.approx(
                structural_similarity(g_gt, g_pred, data_range=1, win_size=51), abs=1e-5)
            assert float(ours["ec_mae"][i]) == pytest.approx(np.sum(np.abs(g_gt - g_pred)) / np.sum(g_gt + g_pred),
                                                             rel=1e-5)
    # Colour SSIM with the default 7-px window, channel by channel, as scikit-image's channel_axis does.
    a, b = pairs[0]
    expected = structural_similarity(a[0], b[0], data_range=1, channel_axis=-1)
    assert float(metrics.ssim_uniform(a, b)[0]) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="exceeds"):
        metrics.ssim_uniform(a[:, :40, :40], b[:, :40, :40], win_size=51)


# ------------------------------------------------------------------------------------------------ end to end


def _train(config, workdir, steps):
    config.total_steps = steps
    config.log_every_steps = 1
    config.ckpt_every_steps = steps
    config.image_every_steps = 0  # no sample grids: one compilation less
    config.input.num_workers = 0
    state = trainer.train_and_evaluate(config, str(workdir))
    rows = [r for r in writers.read_jsonl(workdir / "metrics.jsonl") if any(k.endswith("/total") for k in r)]
    return state, rows


def test_three_stages_train_and_the_joint_stage_starts_from_them(tmp_path):
    edge_dir, inpaint_dir, joint_dir = tmp_path / "edge", tmp_path / "inpaint", tmp_path / "joint"
    edge_state, rows = _train(_tiny_config("edge"), edge_dir, 3)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r[k]) for r in rows for k in ("g1/total", "g1/feature_matching", "d1/total"))
    inpaint_state, rows = _train(_tiny_config("inpaint"), inpaint_dir, 3)
    assert all(np.isfinite(r[k]) for r in rows for k in ("g2/l1", "g2/perceptual", "g2/style", "d2/total"))
    assert rows[-1]["g2/l1"] < rows[0]["g2/l1"]

    joint = _tiny_config("joint")
    joint.init_from = f"{edge_dir},{inpaint_dir}"
    joint.losses.perceptual = joint.losses.style = 0.0  # VGG19 ran in the inpaint stage; spare its compilation
    state, rows = _train(joint, joint_dir, 2)
    assert set(state.nets) == {EDGE_G, INPAINT_G, INPAINT_D}
    assert "grad_norm/edge_generator" not in rows[0]
    # The frozen edge generator is the edge stage's, unchanged by training; its spectral vectors moved (it
    # ran in training mode, as the original's does).
    jax.tree.map(np.testing.assert_array_equal, state.nets[EDGE_G].params, edge_state.nets[EDGE_G].params)
    assert not np.allclose(state.nets[EDGE_G].state["spectral"]["encoder_1"]["u"],
                           edge_state.nets[EDGE_G].state["spectral"]["encoder_1"]["u"])
    # The joint run started from the inpaint stage: after 2 steps it is close to it, not to a fresh init.
    delta = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state.nets[INPAINT_G].params,
                         inpaint_state.nets[INPAINT_G].params)
    assert max(jax.tree.leaves(delta)) < 0.05

    # Inference from each run: the joint run inpaints with both generators; the edge run predicts edges.
    image = np.random.default_rng(0).integers(0, 256, (30, 27, 3), dtype=np.uint8)
    hole = np.zeros((30, 27), bool)
    hole[8:20, 5:17] = True
    result = jaxinpaint.load(str(joint_dir)).inpaint(image, hole)
    assert result.shape == image.shape
    np.testing.assert_array_equal(result[~hole], image[~hole])
    edges = jaxinpaint.load(str(edge_dir)).inpaint(image, hole)  # the edge map in the hole, grey
    assert edges.shape == image.shape and np.all(edges[hole][:, 0] == edges[hole][:, 2])
