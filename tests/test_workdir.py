"""Workdir integrity: a mistaken command never touches an existing workdir, a finished run says so, and the
model stays usable. Runs ``python train.py``'s code in-process (``jaxinpaint.cli.train.main``)."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from jaxinpaint.cli import predict
from jaxinpaint.cli import train as train_cli

TINY = ["--config.generator.ngf=4", "--config.generator.n_blocks=1", "--config.discriminator.ndf=4",
        "--config.discriminator.n_layers=2", "--config.losses.hrf_perceptual=0", "--config.input.image_size=32",
        "--config.input.batch_size=8", "--config.input.num_workers=0", "--config.ckpt_every_steps=2",
        "--config.image_every_steps=0", "--config.eval_every_steps=0", "--config.log_every_steps=1"]


def _snapshot(workdir):
    """sha256 of config.json and of every file under checkpoints/."""
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, workdir)
            if rel == "config.json" or rel.startswith("checkpoints"):
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def _one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("jaxinpaint train: error: ")
    return err[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("wd") / "run")
    args = ["--config=configs/big_lama.py:smoke", f"--workdir={workdir}", "--config.total_steps=2", *TINY]
    assert train_cli.main(args) == 0
    return workdir, args


def test_mistakes_leave_the_workdir_byte_identical(finished, capsys, tmp_path):
    workdir, args = finished
    before = _snapshot(workdir)
    assert "config.json" in before and any(k.startswith("checkpoints/2/") for k in before)
    capsys.readouterr()

    # A wrong --config path.
    assert train_cli.main(["--config=configs/big_lamma.py", f"--workdir={workdir}"]) == 2
    assert "big_lamma" in _one_error_line(capsys)
    # A typo in an override, and a value of the wrong type.
    assert train_cli.main([*args, "--config.generator.ngff=8"]) == 2
    assert "ngff" in _one_error_line(capsys)
    assert train_cli.main([*args, "--config.total_steps=many"]) == 2
    assert "total_steps" in _one_error_line(capsys)
    # An unknown variant.
    assert train_cli.main([a.replace(":smoke", ":smoky") for a in args]) == 2
    assert "smoky" in _one_error_line(capsys)
    # A resume with a changed generator width: refused, naming the field.
    assert train_cli.main([*args, "--config.total_steps=4", "--config.generator.ngf=8"]) == 2
    line = _one_error_line(capsys)
    assert "generator.ngf: 4 in the workdir, 8 in the config" in line and "new --workdir" in line
    # A missing weight file.
    assert train_cli.main([*args, "--config.total_steps=4", "--config.losses.hrf_perceptual=30",
                           f"--config.losses.hrf_weights={tmp_path / 'encoder.pth'}"]) == 2
    assert "encoder.pth" in _one_error_line(capsys)
    assert _snapshot(workdir) == before

    # Rerunning the finished run says so and changes nothing.
    assert train_cli.main(args) == 0
    assert "already finished at step 2" in capsys.readouterr().out
    assert _snapshot(workdir) == before

    # The workdir still serves inference.
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    mask = np.zeros((37, 29), np.uint8)
    mask[5:20, 4:15] = 255
    Image.fromarray(mask).save(tmp_path / "p_mask.png")
    assert predict.main([f"--model={workdir}", f"--image={tmp_path / 'p.png'}", f"--mask={tmp_path / 'p_mask.png'}",
                         f"--output={tmp_path / 'out.png'}"]) == 0


def test_config_json_follows_the_checkpoint_not_the_other_way_round(finished, tmp_path):
    """Inference reads the config stored with the checkpoint step, so a damaged config.json cannot break it."""
    import shutil

    import jaxinpaint

    workdir, _ = finished
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    with open(os.path.join(copy, "config.json"), "w") as f:
        f.write("")  # what the old trainer left behind after a config typo
    model = jaxinpaint.load(copy)
    assert model.name == "lama" and model.config.generator.ngf == 4


def test_help_and_usage(capsys):
    assert train_cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--workdir" in out and "--config" in out
    assert train_cli.main([]) == 2
    assert "--config is required" in _one_error_line(capsys)
