"""Tests for jaxinpaint.writers: JSONL/TensorBoard/PNG/logging writers, image grids and progress output."""

import io
import json
import logging
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxinpaint import writers


def _strict_loads(line):
    def reject(token):
        raise AssertionError(f"non-strict JSON token {token} in {line!r}")

    return json.loads(line, parse_constant=reject)


# ---------------------------------------------------------------------------------------------------- JSONL


def test_jsonl_writes_one_strict_json_object_per_call(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    w = writers.JsonlWriter(path)
    w.write_scalars(1, {"loss_g": 3, "loss_d": np.float32(0.5), "lr": jnp.asarray(1e-3)})
    w.write_scalars(np.int64(2), {"bad": float("nan"), "up": float("inf"), "down": -np.inf})
    w.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first, second = (_strict_loads(ln) for ln in lines)
    assert first == {"step": 1, "loss_g": 3.0, "loss_d": 0.5, "lr": pytest.approx(1e-3)}
    assert isinstance(first["loss_g"], float)  # ints are written as floats
    assert second == {"step": 2, "bad": "NaN", "up": "Infinity", "down": "-Infinity"}
    back = writers.read_jsonl(path)
    assert np.isnan(back[1]["bad"]) and back[1]["up"] == np.inf and back[1]["down"] == -np.inf


def test_jsonl_appends_across_writers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with writers.JsonlWriter(path) as w:
        w.write_scalars(1, {"a": 1.0})
    with writers.JsonlWriter(path) as w:
        w.write_scalars(2, {"a": 2.0})
    assert [r["step"] for r in writers.read_jsonl(path)] == [1, 2]


def test_jsonl_truncate_after_matches_an_uninterrupted_run(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = writers.JsonlWriter(path)
    for step in range(1, 6):
        w.write_scalars(step, {"loss": float(step)})
    w.close()
    with open(path, "a") as f:  # a crash in the middle of a write
        f.write('{"step": 6, "loss": 6.')
    assert writers.JsonlWriter(path).truncate_after(3) == 3  # steps 4, 5 and the broken line
    assert [r["step"] for r in writers.read_jsonl(path)] == [1, 2, 3]
    # Resuming through the constructor, then going on writing.
    w = writers.JsonlWriter(path, resume_step=2)
    w.write_scalars(3, {"loss": 30.0})
    w.close()
    assert [(r["step"], r["loss"]) for r in writers.read_jsonl(path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert not (tmp_path / "metrics.jsonl.tmp").exists()


def test_jsonl_bad_input_gives_clear_errors(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = writers.JsonlWriter(path)
    with pytest.raises(ValueError, match="'step' is reserved"):
        w.write_scalars(1, {"step": 1.0})
    with pytest.raises(ValueError, match=r"scalar 'vec': expected a single number"):
        w.write_scalars(1, {"vec": np.zeros(3)})
    with pytest.raises(ValueError, match="non-negative integer"):
        w.write_scalars(1.5, {"a": 1.0})
    w.close()
    path.write_text('{"step": 1, "a": 1.0}\nnot json\n{"step": 2, "a": 2.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: bad metrics line"):
        writers.JsonlWriter(path).truncate_after(1)


# ---------------------------------------------------------------------------------------------- TensorBoard


def _read_events(logdir):
    from tensorboardX.proto import event_pb2

    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    data = files[0].read_bytes()
    events, pos = [], 0
    while pos < len(data):  # TFRecord framing: u64 length, u32 crc, payload, u32 crc
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        pos += 12
        events.append(event_pb2.Event.FromString(data[pos:pos + length]))
        pos += length + 4
    return events


def test_tensorboard_writer_writes_readable_events(tmp_path):
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    w = writers.TensorBoardWriter(logdir)
    w.write_scalars(7, {"train/loss_g": 1.25})
    w.write_images(7, {"samples": np.full((2, 6, 5, 1), 0.5, np.float32)})
    w.write_texts(7, {"note": "hello"})
    w.write_hparams({"lr": 1e-3, "model": {"kind": "lama", "widths": [1, 2]}})
    w.close()
    values = {}
    for ev in _read_events(logdir):
        for v in ev.summary.value:
            values[v.tag] = (ev.step, v)
    step, scalar = values["train/loss_g"]
    assert step == 7 and scalar.simple_value == pytest.approx(1.25)
    step, image = values["samples"]
    assert step == 7 and (image.image.height, image.image.width) == (6, 2 * 5)  # tensorboardX tiles N
    assert "note/text_summary" in values
    assert "_hparams_/experiment" in values


# --------------------------------------------------------------------------------------------------- images


def test_image_grid_layout_and_content():
    rng = np.random.default_rng(0)
    n, h, w = 3, 8, 10
    image = rng.random((n, h, w, 3), dtype=np.float32)
    mask = np.zeros((n, h, w, 1), np.float32)
    mask[:, :4] = 1.0
    mask_bool = np.zeros((n, h, w), bool)
    mask_bool[:, :, :5] = True
    grid = writers.image_grid([image, mask, mask_bool])
    assert grid.dtype == np.uint8 and grid.shape == (3 * h + 2 * 2, 3 * w + 2 * 2, 3)
    # Row 1, column 0 is image 1; row 2, column 1 is mask 2 shown as grey RGB.
    np.testing.assert_array_equal(grid[h + 2:2 * h + 2, :w], np.round(image[1] * 255).astype(np.uint8))
    cell = grid[2 * (h + 2):2 * (h + 2) + h, w + 2:2 * w + 2]
    assert np.all(cell[:4] == 255) and np.all(cell[4:] == 0) and cell.shape[-1] == 3
    cell = grid[:h, 2 * (w + 2):]
    assert np.all(cell[:, :5] == 255) and np.all(cell[:, 5:] == 0)
    # Separator lines (2 px) between rows and columns.
    assert np.all(grid[h:h + 2] == 255) and np.all(grid[:, w:w + 2] == 255)
    assert writers.image_grid([image, mask], max_rows=1).shape == (h, 2 * w + 2, 3)


def test_image_grid_labels():
    cells = [np.full((2, 48, 64, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    plain = writers.image_grid(cells)
    labelled = writers.image_grid(cells, labels=["masked input", "prediction", "a very long column title"])
    band = labelled[: labelled.shape[0] - plain.shape[0]]
    assert band.shape[0] >= 14 and band.shape[1] == plain.shape[1]
    np.testing.assert_array_equal(labelled[band.shape[0]:], plain)  # the grid itself is unchanged
    for k in range(3):  # dark text inside each column's own span, nothing in the separators
        span = band[:, k * 66:k * 66 + 64]
        assert span.min() < 100, k
    assert np.all(band[:, 64:66] == 255) and np.all(band[:, 130:132] == 255)
    with pytest.raises(ValueError, match="2 labels for 3 columns"):
        writers.image_grid(cells, labels=["a", "b"])


def test_image_grid_rejects_mismatched_columns():
    with pytest.raises(ValueError, match="column 1 has N, H, W"):
        writers.image_grid([np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 9, 1))])
    with pytest.raises(ValueError, match="column 0 must be"):
        writers.image_grid([np.zeros((2, 8, 8, 2))])


def test_png_writer_tiles_a_batch_into_one_file(tmp_path):
    images = np.zeros((4, 8, 10, 3), np.float32)
    images[0] = 1.0
    images[3, :, :, 2] = 0.5
    w = writers.PngWriter(tmp_path / "png")
    w.write_images(12, {"train/samples": images, "grid": writers.image_grid([images[:2], images[:2]])})
    path = tmp_path / "png" / "train_samples_00000012.png"
    assert path.exists()
    got = np.asarray(Image.open(path))
    assert got.shape == (2 * 8 + 2, 2 * 10 + 2, 3)
    assert np.all(got[:8, :10] == 255)  # image 0 top-left
    np.testing.assert_array_equal(got[10:, 12:, 2], 128)  # image 3 bottom-right, blue 0.5
    grid = np.asarray(Image.open(tmp_path / "png" / "grid_00000012.png"))
    assert grid.shape == (2 * 8 + 2, 2 * 10 + 2, 3)  # a single image is written as is


# --------------------------------------------------------------------------------------------- logging etc.


def test_logging_writer_lines(caplog):
    logger = logging.getLogger("test_writers")
    with caplog.at_level(logging.INFO, logger="test_writers"):
        w = writers.LoggingWriter(logger)
        w.write_scalars(5, {"loss": 1.5, "acc": np.float32(0.25)})
        w.write_texts(5, {"note": "hi"})
    assert "[5] loss=1.5, acc=0.25" in caplog.text
    assert "[5] note: hi" in caplog.text


def test_create_default_writer_per_process(tmp_path):
    w = writers.create_default_writer(tmp_path / "p0", process_index=0, tensorboard=True)
    assert isinstance(w, writers.MetricWriter)
    w.write_scalars(1, {"loss": 0.5})
    w.write_images(1, {"grid": np.zeros((8, 8, 3), np.float32)})
    w.write_hparams({"seed": 0})
    w.close()
    assert writers.read_jsonl(tmp_path / "p0" / "metrics.jsonl") == [{"step": 1, "loss": 0.5}]
    assert (tmp_path / "p0" / "images" / "grid_00000001.png").exists()
    assert list((tmp_path / "p0" / "tensorboard").glob("events.out.tfevents.*"))
    # Other processes only log: nothing appears in their workdir.
    w1 = writers.create_default_writer(tmp_path / "p1", process_index=1)
    w1.write_scalars(1, {"loss": 0.5})
    w1.close()
    assert not (tmp_path / "p1").exists()
    assert [type(x).__name__ for x in w1.writers] == ["LoggingWriter"]


def test_create_default_writer_resume_truncates_jsonl(tmp_path):
    w = writers.create_default_writer(tmp_path, tensorboard=False)
    for step in (10, 20, 30):
        w.write_scalars(step, {"loss": 1.0})
    w.close()
    w = writers.create_default_writer(tmp_path, tensorboard=False, resume_step=20)
    w.close()
    assert [r["step"] for r in writers.read_jsonl(tmp_path / "metrics.jsonl")] == [10, 20]


# ------------------------------------------------------------------------------------------------- progress


class _FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_plain_lines_exclude_compilation():
    clock, out = _FakeClock(), io.StringIO()
    rep = writers.ProgressReporter(1000, batch_size=8, every_steps=10, every_secs=None, interactive=False,
                                   stream=out, clock=clock)
    clock.t = 5.2  # the first step compiles
    assert rep.report(1, {"loss_g": 2.0}) == {}
    perfs = []
    for step in range(2, 12):
        clock.t += 0.25
        perfs.append(rep.report(step, {"loss_g": 1.2344, "loss_d": 0.5, "perf/ignored": 1.0}))
    assert all(p == {} for p in perfs[:-1])
    assert perfs[-1] == {"perf/steps_per_sec": pytest.approx(4.0), "perf/img_per_sec": pytest.approx(32.0)}
    lines = out.getvalue().splitlines()
    assert lines == [
        "step 1/1000 | first step 5.2s (includes compilation) | loss_g 2",
        "step 11/1000 | 4 steps/s | 32 img/s | ETA 4m07s | elapsed 8s | loss_g 1.234 | loss_d 0.5",
    ]
    assert rep.first_step_secs == pytest.approx(5.2)


def test_progress_time_trigger_and_last_step():
    clock, out = _FakeClock(), io.StringIO()
    rep = writers.ProgressReporter(20, batch_size=2, start_step=10, every_secs=60.0, interactive=False,
                                   stream=out, clock=clock)
    clock.t = 1.0
    rep.report(11)
    clock.t = 30.0
    assert rep.report(12) == {}  # neither 60 s nor the last step
    clock.t = 62.0
    assert rep.report(13)["perf/steps_per_sec"] == pytest.approx(2 / 61.0)
    clock.t = 63.0
    assert rep.report(20)["perf/img_per_sec"] == pytest.approx(14.0)  # the last step always reports
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("step 20/20 | 7 steps/s | 14 img/s | ETA 0s")


def test_progress_interactive_detection(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("CI", raising=False)
    rep = writers.ProgressReporter(10, batch_size=1, stream=Tty())
    assert rep.interactive
    rep.report(1, {"loss_g": 1.5})
    rep.report(10, {"loss_g": 0.5})
    rep.close()
    monkeypatch.setenv("CI", "true")
    assert not writers.ProgressReporter(10, batch_size=1, stream=Tty()).interactive
    assert not writers.ProgressReporter(10, batch_size=1, stream=io.StringIO()).interactive


def test_progress_tqdm_bar_shows_losses():
    out = io.StringIO()
    clock = _FakeClock()
    with writers.ProgressReporter(10, batch_size=4, interactive=True, every_secs=None, stream=out,
                                  clock=clock) as rep:
        for step in range(1, 11):
            clock.t += 1.0
            rep.report(step, {"loss_g": 0.125})
    text = out.getvalue()
    assert "10/10" in text and "loss_g 0.125" in text and "img/s" in text
    assert "first step 1.0s (includes compilation)" in text  # on a terminal too


def testformat_duration():
    assert [writers.format_duration(s) for s in (0.4, 35, 275, 7500, 97200)] == [
        "0s", "35s", "4m35s", "2h05m", "1d03h"]
