"""A quiet, consistent command line: ``python train.py`` on the smoke config prints no TPU/orbax noise and no line
twice, says it is compiling, and ends with a summary; TensorBoard gets numeric hparams beside the final metrics
and labelled sample grids; every command reports bad input as one ``error:`` line with exit status 2 and shows
help and a default for every flag; ``predict --skip_existing``; ``evaluate`` shows its progress."""

import glob
import os
import re
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxinpaint import cli
from jaxinpaint.cli import convert, evaluate, export, make_eval_set, predict, serve, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# test_workdir's tiny Big LaMa (the same training step program), with an evaluation and a sample grid at step 2.
TINY = ["--config=configs/big_lama.py:smoke", "--config.total_steps=2", "--config.generator.ngf=4",
        "--config.generator.n_blocks=1", "--config.discriminator.ndf=4", "--config.discriminator.n_layers=2",
        "--config.losses.hrf_perceptual=0", "--config.input.image_size=32", "--config.input.batch_size=8",
        "--config.input.num_workers=0", "--config.ckpt_every_steps=2", "--config.image_every_steps=2",
        "--config.eval_every_steps=2", "--config.eval_num_examples=8", "--config.log_every_steps=1"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``python train.py`` exactly as a user runs it (a subprocess: every line it prints, C++ logs included).

    It shares the suite's persistent compilation cache and fake devices, so its training step (the same program as
    test_workdir's) is read from disk rather than compiled again."""
    workdir = str(tmp_path_factory.mktemp("cli") / "run")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or "",
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2"}
    proc = subprocess.run([sys.executable, "train.py", f"--workdir={workdir}", *TINY], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return workdir, proc.stdout, proc.stderr


def test_training_output_is_quiet_and_summarised(smoke_run):
    workdir, out, err = smoke_run
    text = out + err
    for noise in ("libtpu", "TPU", "orbax", "absl", "Checkpointer", "hparams:", "DeprecationWarning"):
        assert noise not in text, (noise, text)
    lines = [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", "", line) for line in text.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), text  # no report printed twice
    assert all(len(line) < 600 for line in lines), max(lines, key=len)
    order = ["initialising the networks", "compiling the training step", "first step", "evaluation at step 2",
             "finished: steps 0 -> 2 of 2", "final losses: d/total", "last evaluation (step 2): psnr",
             f"outputs: checkpoint {workdir}/checkpoints/2"]
    positions = [text.find(marker) for marker in order]
    assert -1 not in positions and positions == sorted(positions), list(zip(order, positions))
    assert err == "", err  # everything is on stdout, nothing alarming on stderr


def _events(path):
    """The Event protos of a TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    with open(path, "rb") as f:
        data = f.read()
    events, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[pos + 12:pos + 12 + length])
        events.append(event)
        pos += 12 + length + 4
    return events


def test_tensorboard_hparams_are_numeric_with_final_metrics(smoke_run):
    from tensorboardX.proto import plugin_hparams_pb2

    workdir, _, _ = smoke_run
    (path,) = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    plugin = {}
    scalars = set()
    for event in _events(path):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = plugin_hparams_pb2.HParamsPluginData()
                data.ParseFromString(value.metadata.plugin_data.content)
                plugin[value.tag] = data
            elif value.HasField("simple_value"):
                scalars.add(value.tag)
    start = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert start["g_optimizer.lr"].number_value == pytest.approx(2e-3)
    assert start["input.batch_size"].number_value == 8 and start["system"].string_value == "lama"
    assert start["ema.decay"].HasField("number_value")
    metrics = {m.name.tag for m in plugin["_hparams_/experiment"].experiment.metric_infos}
    assert {"g/total", "d/total", "eval/psnr", "eval/ssim"} <= metrics
    assert metrics <= scalars  # the view reads their values from this run's scalars


def test_sample_grids_are_labelled(smoke_run):
    workdir, _, _ = smoke_run
    grid = np.asarray(Image.open(os.path.join(workdir, "images", "samples_00000002.png")))
    # A label band above 8 rows of 32-px cells with 2-px separators; dark text on the white band.
    assert grid.shape[0] > 8 * 32 + 7 * 2 and grid.shape[1] == 5 * 32 + 4 * 2
    band = grid[: grid.shape[0] - (8 * 32 + 7 * 2)]
    assert band.min() < 100 and band.max() == 255


def test_finished_workdir_says_so(smoke_run, capsys):
    workdir, _, _ = smoke_run
    assert train.main([f"--workdir={workdir}", *TINY]) == 0
    assert "already finished at step 2" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------------
# Every command: user mistakes are one line with exit status 2; every flag has help and a shown default.
# ------------------------------------------------------------------------------------------------------------


def _one_error(capsys, prog):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(f"{prog}: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def model_dir(tiny_lama_dir):
    return tiny_lama_dir


def test_every_command_reports_mistakes_on_one_line(tmp_path, capsys, model_dir):
    missing = str(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (train.main, "jaxinpaint train", ["--config=configs/nope.py", f"--workdir={tmp_path / 'w'}"], "nope"),
        (train.main, "jaxinpaint train", ["--config=configs/big_lama.py:smoke"], "--workdir"),
        (predict.main, "jaxinpaint predict", [f"--model={missing}", f"--input_dir={empty}", "--output_dir=o"],
         "missing"),
        (predict.main, "jaxinpaint predict", [f"--model={model_dir}", "--input_dir=x", "--output_dir=o",
                                              "--hd_strategy=crop", "--hd_crop_margin=-1"], "crop_margin"),
        (evaluate.main, "jaxinpaint evaluate", [f"--model={model_dir}", f"--input_dir={missing}"], "missing"),
        (evaluate.main, "jaxinpaint evaluate", [f"--input_dir={empty}"], "--model"),
        (convert.main, "jaxinpaint convert", [missing, str(tmp_path / "c")], "no such file"),
        (make_eval_set.main, "jaxinpaint make_eval_set", [f"--input_dir={missing}", f"--output_dir={tmp_path}"],
         "missing"),
        (export.main, "jaxinpaint export", [missing, str(tmp_path / "e")], "no such file"),
        (serve.main, "jaxinpaint serve", [f"--model={missing}"], "no such file"),
        (cli.main, "jaxinpaint", ["trian"], "unknown command 'trian'"),
    ]
    for main, prog, args, needle in cases:
        assert main(args) == 2, (prog, args)
        assert needle in _one_error(capsys, prog), (prog, args)
    for main, prog in ((predict.main, "jaxinpaint predict"), (evaluate.main, "jaxinpaint evaluate"),
                       (convert.main, "jaxinpaint convert"), (make_eval_set.main, "jaxinpaint make_eval_set"),
                       (export.main, "jaxinpaint export"), (serve.main, "jaxinpaint serve")):
        with pytest.raises(SystemExit) as e:  # argparse's own refusals: one line too, no usage block
            main(["--no_such_flag=1"])
        assert e.value.code == 2
        _one_error(capsys, prog)
    assert train.main(["--config=configs/big_lama.py:smoke", "--workdir=w", "--no_such_flag"]) == 2
    assert "no_such_flag" in _one_error(capsys, "jaxinpaint train")


@pytest.mark.parametrize("module", [predict, evaluate, convert, make_eval_set, export, serve])
def test_every_flag_has_help_and_a_shown_default(module):
    parser = module._parser()
    text = parser.format_help()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help text"
        if action.option_strings and action.default not in (None, []) and "default" not in action.help:
            assert f"(default: {action.default})" in " ".join(text.split()), (parser.prog, action.dest)
    assert "--verbose" in text


def test_train_help_lists_every_flag_with_its_default(capsys):
    assert train.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("config", "workdir", "multihost", "coordinator_address", "num_processes", "process_id", "verbose"):
        assert re.search(rf"--{flag}: \S.* \(default: ", out), flag


# ------------------------------------------------------------------------------------------------------------
# predict --skip_existing; evaluate's progress.
# ------------------------------------------------------------------------------------------------------------


def _pair(directory, name, size=(40, 48)):
    rng = np.random.default_rng(len(name))
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(directory / f"{name}.png")
    mask = np.zeros(size, np.uint8)
    mask[5:20, 10:30] = 255
    Image.fromarray(mask).save(directory / f"{name}_mask.png")


def test_predict_skip_existing(model_dir, tmp_path, capsys):
    indir, outdir = tmp_path / "in", tmp_path / "out"
    indir.mkdir()
    _pair(indir, "a")
    _pair(indir, "b")
    args = [f"--model={model_dir}", f"--input_dir={indir}", f"--output_dir={outdir}"]
    assert predict.main(args) == 0
    assert "Inpainted 2 of 2" in capsys.readouterr().out
    (outdir / "a_mask.png").write_bytes(b"kept")
    os.remove(outdir / "b_mask.png")
    assert predict.main([*args, "--skip_existing"]) == 0
    out = capsys.readouterr().out
    assert "Skipping 1 image(s) whose output exists" in out and "Inpainted 1 of 1" in out
    assert (outdir / "a_mask.png").read_bytes() == b"kept" and (outdir / "b_mask.png").exists()
    assert predict.main(args) == 0
    assert "2 existing output(s) overwritten" in capsys.readouterr().out
    assert (outdir / "a_mask.png").read_bytes() != b"kept"


def test_evaluate_shows_progress(model_dir, tmp_path, capsys):
    indir = tmp_path / "evalset"
    indir.mkdir()
    for name in ("a", "b", "c"):
        _pair(indir, name)
    assert evaluate.main([f"--model={model_dir}", f"--input_dir={indir}", "--batch_size=2"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"2/3 images \(.* img/s\)", captured.err) and "3/3 images" in captured.err
    assert "total" in captured.out
