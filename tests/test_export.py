"""``jaxinpaint export``: the inference networks (EMA weights) as safetensors + config + model card, read back by
``jaxinpaint.load``, and a StableHLO artefact with symbolic sizes (LaMa's FFTs included) that runs in a process
that cannot import jaxinpaint and matches ``jaxinpaint.load(SOURCE)`` at two image sizes."""

import json
import os
import subprocess
import sys
import textwrap

import flax
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

import jaxinpaint
from jaxinpaint.cli import export as export_cli
from jaxinpaint.cli import train as train_cli
from jaxinpaint.io import checkpoint
from jaxinpaint.nn import ffc

# A two-step Big LaMa smoke run, shrunk (no HRF loss), with an EMA and one evaluation, so that the card has a
# step, training data and metrics to report and the export has EMA weights that differ from the raw ones.
TINY = ["--config=configs/big_lama.py:smoke", "--config.total_steps=2", "--config.generator.ngf=8",
        "--config.generator.n_blocks=1", "--config.discriminator.ndf=4", "--config.discriminator.n_layers=2",
        "--config.losses.hrf_perceptual=0", "--config.input.image_size=32", "--config.input.batch_size=8",
        "--config.input.num_workers=0", "--config.ckpt_every_steps=2", "--config.image_every_steps=0",
        "--config.eval_every_steps=2", "--config.eval_num_examples=8", "--config.ema.decay=0.5",
        "--config.log_every_steps=1"]

# Runs with -I (no PYTHONPATH, no user site, no current directory on sys.path) and, since the test environment
# has jaxinpaint installed (editable), an import hook that refuses it: the artefact must need JAX alone.
STANDALONE = textwrap.dedent("""
    import importlib.abc, sys

    class NoJaxinpaint(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "jaxinpaint" or name.startswith("jaxinpaint."):
                raise ImportError("jaxinpaint is not available in this process")

    sys.meta_path.insert(0, NoJaxinpaint())
    import numpy as np
    from jax import export
    from safetensors.numpy import load_file

    directory, inputs, outputs = sys.argv[1:]
    exported = export.deserialize(open(directory + "/model.stablehlo", "rb").read())
    weights = load_file(directory + "/model.safetensors")
    data = np.load(inputs)
    results = {}
    for key in sorted(k for k in data.files if k.startswith("image")):
        results[key] = np.asarray(exported.call(weights, data[key], data[key.replace("image", "mask")]))
    assert not any(m == "jaxinpaint" or m.startswith("jaxinpaint.") for m in sys.modules)
    np.savez(outputs, **results)
""")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "run")
    assert train_cli.main([f"--workdir={path}", *TINY]) == 0
    return path


def _inputs(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    image = (np.stack([np.sin(xx / 5), np.cos(yy / 7), np.sin((xx + yy) / 9)], -1) * 0.4 + 0.5).astype(np.float32)
    mask = np.zeros((h, w, 1), np.float32)
    mask[h // 4: h // 2, w // 3: w - 4] = 1
    mask[rng.random((h, w, 1)) < 0.05] = 1
    return image, mask


def test_export_runs_without_jaxinpaint_and_matches_load(workdir, tmp_path, capsys):
    out = tmp_path / "exported"
    assert export_cli.main([workdir, str(out), "--platforms=cpu"]) == 0
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors", "model.stablehlo"]
    assert "wrote" in capsys.readouterr().out

    # The inference networks alone, with the EMA weights.
    weights = load_file(out / "model.safetensors")
    assert {k.split("/")[0] for k in weights} == {"generator"}
    _, raw, _ = checkpoint.load_training_state(workdir)
    ema = flax.traverse_util.flatten_dict(raw["nets"]["generator"]["ema"], sep="/")
    params = flax.traverse_util.flatten_dict(raw["nets"]["generator"]["params"], sep="/")
    assert set(ema) == {k[len("generator/params/"):] for k in weights if k.startswith("generator/params/")}
    for key, value in ema.items():
        np.testing.assert_array_equal(weights[f"generator/params/{key}"], value)
    assert any(not np.array_equal(ema[k], params[k]) for k in ema)  # so the check above means something

    # The config and the model card: system, licence, where the weights come from, training, last eval.
    meta = json.loads((out / "config.json").read_text())
    assert meta["system"] == "lama" and meta["provenance"]["step"] == 2 and meta["training"]["step"] == 2
    assert meta["training"]["total_steps"] == 2 and meta["training"]["data"]["image_size"] == 32
    assert meta["metrics"]["step"] == 2 and 0 < meta["metrics"]["eval/ssim"] <= 1
    card = (out / "README.md").read_text()
    for text in ("Apache-2.0", "checkpoint step 2", "eval/psnr", "lama.FFCResNetGenerator", "export.deserialize"):
        assert text in card, text

    # jaxinpaint.load reads the export: the same model as the workdir's.
    reference, exported = jaxinpaint.load(workdir), jaxinpaint.load(str(out))
    sizes = [(32, 48), (56, 40)]
    inputs = {}
    expected = {}
    for i, (h, w) in enumerate(sizes):
        image, mask = _inputs(h, w, i)
        inputs[f"image{i}"], inputs[f"mask{i}"] = image[None], mask[None]
        expected[f"image{i}"] = reference.inpaint(image, mask[..., 0])
        np.testing.assert_array_equal(exported.inpaint(image, mask[..., 0]), expected[f"image{i}"])

    # The StableHLO artefact in a process that cannot import jaxinpaint, at two sizes (one compile each).
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    proc = subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(out), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "outputs.npz")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "outputs.npz") as results:
        for key, want in expected.items():
            got = results[key][0]
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # DFT products vs FFT: float32 rounding
            hole = inputs[key.replace("image", "mask")][0, ..., 0] > 0
            np.testing.assert_array_equal(got[~hole], inputs[key][0][~hole])  # known pixels untouched


def test_symbolic_dft_matches_the_fft():
    """The DFT products the export uses for symbolic sizes equal rfft2/irfft2 (odd and even sizes)."""
    rng = np.random.default_rng(0)
    for shape in [(2, 6, 10, 3), (1, 7, 9, 2)]:
        x = rng.standard_normal(shape).astype(np.float32)
        re, im = jax.jit(ffc._rfft2_dft)(x)
        ref = np.fft.rfft2(x, axes=(1, 2), norm="ortho")
        np.testing.assert_allclose(re, ref.real, atol=2e-6)
        np.testing.assert_allclose(im, ref.imag, atol=2e-6)
        back = jax.jit(ffc._irfft2_dft, static_argnums=2)(ref.real.astype(np.float32), ref.imag.astype(np.float32),
                                                           shape[1:3])
        np.testing.assert_allclose(back, x, atol=2e-6)


def test_export_user_mistakes(workdir, tmp_path, capsys):
    def one_error(args, *needles):
        assert export_cli.main(args) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("jaxinpaint export: error: "), err
        for needle in needles:
            assert needle in err[0], (needle, err[0])

    one_error([str(tmp_path / "nothing"), str(tmp_path / "o1")], "no such file")
    one_error(["lama_refine", str(tmp_path / "o2")], "per-image method")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    one_error([workdir, str(tmp_path / "full")], "not an empty directory")
    one_error([workdir, str(tmp_path / "o3"), "--platforms=gpu"], "--platforms")
    one_error([workdir, str(tmp_path / "o4"), "--step=7"], "no checkpoint for step 7")
    one_error([str(tmp_path / "full"), str(tmp_path / "o5")], "neither a training workdir")
    with pytest.raises(SystemExit) as e:
        export_cli.main([workdir])  # missing OUT
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]
    assert not any(p.exists() for p in (tmp_path / "o1", tmp_path / "o3", tmp_path / "o4"))


def test_weights_only_export_of_a_converted_directory(tiny_lama_dir, tmp_path, capsys):
    out = tmp_path / "weights-only"
    assert export_cli.main([tiny_lama_dir, str(out), "--no_stablehlo"]) == 0
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["stablehlo"] is None and meta["provenance"] == {"model_dir": tiny_lama_dir}
    assert meta["training"] == {} and meta["metrics"] == {}
    assert "No evaluation recorded" in (out / "README.md").read_text()
    image, mask = _inputs(24, 40, 3)
    np.testing.assert_array_equal(jaxinpaint.load(str(out)).inpaint(image, mask[..., 0]),
                                  jaxinpaint.load(tiny_lama_dir).inpaint(image, mask[..., 0]))

