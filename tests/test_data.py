"""Tests for the input pipeline (jaxinpaint.data), the built-in photos and the loader (jaxinpaint.data.photos)."""

import io
import logging
import struct
import sys
import types
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import data
from jaxinpaint.data import augment, photos

try:
    import tensorflow_datasets as tfds
except ImportError:  # the TFDS tests skip
    tfds = None

if tfds is not None:
    class JaxinpaintTestPhotos(tfds.core.GeneratorBasedBuilder):  # pylint: disable=abstract-method
        """Five train and three validation random photos of varying heights (registered as a TFDS name)."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(None, None, 3))}))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples(5, 0), "validation": self._generate_examples(3, 1)}

        def _generate_examples(self, n, seed):  # pylint: disable=arguments-differ
            for i in range(n):
                yield i, {"image": Image.fromarray(_rgb(20 + 10 * i, 50, seed * 10 + i))}


SIZE = 32


@pytest.fixture(autouse=True)
def _masks_module(monkeypatch):
    """Uses jaxinpaint.masks when it is importable, else a tiny deterministic stand-in with the same API."""
    try:
        import jaxinpaint.masks  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        def get(name, **overrides):
            del name, overrides

            def gen(rng, height, width):
                y, x = rng.integers(0, height), rng.integers(0, width)
                m = np.zeros((height, width), bool)
                m[y:y + height // 2, x:x + width // 2] = True
                return m
            return gen
        monkeypatch.setitem(sys.modules, "jaxinpaint.masks", types.SimpleNamespace(get=get))


def _config(**overrides):
    c = data.default_input_config()
    c.image_size = SIZE
    c.batch_size = 4
    c.num_workers = 2
    c.prefetch = 1
    c.mask.name = "lama_thick_256"  # lama_train's 5-100 px strokes cover nearly all of a 32 px crop
    for k, v in overrides.items():
        c[k] = v
    return c


def _save(path, array, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path, **kw) if mode else Image.fromarray(array).save(path, **kw)
    return path


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16_rgb(arr):
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------------------------
# photos.py
# ------------------------------------------------------------------------------------------------------------


def test_builtin_photos_found_and_split():
    try:
        train = photos.builtin_photo_paths("train")
        holdout = photos.builtin_photo_paths("holdout")
        everything = photos.builtin_photo_paths("all")
    except FileNotFoundError as e:
        pytest.skip(f"built-in photo packages not installed: {e}")
    assert [p.name for p in holdout] == [photos.HOLDOUT_PHOTO]
    assert photos.HOLDOUT_PHOTO not in [p.name for p in train]
    assert sorted(map(str, train + holdout)) == sorted(map(str, everything))
    if len(everything) < 8:
        pytest.skip("some photo packages are missing (scikit-image, scikit-learn, matplotlib)")
    assert {p.name for p in everything} == {
        "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "china.jpg",
        "flower.jpg", "grace_hopper.jpg"}
    for p in everything:
        img = photos.load_image(p)
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
        assert min(img.shape[:2]) >= 300 and 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05


def test_builtin_photos_missing_packages(monkeypatch):
    real = photos._package_dir
    monkeypatch.setattr(photos, "_package_dir", lambda pkg: None if pkg == "sklearn" else real(pkg))
    with pytest.warns(UserWarning, match="scikit-learn"):
        paths = photos.builtin_photo_paths("all")
    assert all("sklearn" not in str(p) for p in paths)
    monkeypatch.setattr(photos, "_package_dir", lambda pkg: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FileNotFoundError, match="scikit-image.*pip install"):
            photos.builtin_photo_paths("train")
    with pytest.raises(ValueError, match="split"):
        photos.builtin_photo_paths("test")


def test_load_image_modes(tmp_path):
    rgb = _rgb(6, 5)
    out = photos.load_image(_save(tmp_path / "rgb.png", rgb))
    np.testing.assert_allclose(out, rgb / 255.0, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (6, 5, 3)

    grey = rgb[..., 0]
    out = photos.load_image(_save(tmp_path / "l.png", grey, "L"))
    np.testing.assert_allclose(out, np.repeat(grey[..., None], 3, -1) / 255.0, atol=1e-6)

    # Alpha is composited over white by default, dropped with background=None.
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere...
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 0, 255, 128  # ...transparent, opaque, half
    path = _save(tmp_path / "rgba.png", rgba, "RGBA")
    out = photos.load_image(path)
    np.testing.assert_allclose(out[0, 0], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[1, 0], [1, 127 / 255, 127 / 255], atol=1e-6)
    np.testing.assert_allclose(photos.load_image(path, background=None)[0, 0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(photos.load_image(path, background=0.0)[0, 0], [0, 0, 0], atol=1e-6)

    la = np.stack([np.full((2, 2), 200, np.uint8), np.array([[0, 255], [255, 255]], np.uint8)], -1)
    out = photos.load_image(_save(tmp_path / "la.png", la, "LA"))
    np.testing.assert_allclose(out[0, 0], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(out[1, 1], [200 / 255] * 3, atol=1e-6)

    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_allclose(photos.load_image(tmp_path / "p.png"),
                               np.asarray(pal.convert("RGB")) / 255.0, atol=1e-6)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    out = photos.load_image(tmp_path / "pt.png")
    assert np.all(out[np.asarray(pal) == 0] == 1.0)  # palette entry 0 is transparent -> white

    g16 = (np.arange(12).reshape(3, 4) * 5000 + 7).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(g16).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_allclose(photos.load_image(path)[..., 1], g16 / 65535.0, atol=1e-6)

    rgb16 = np.random.default_rng(1).integers(0, 65536, (4, 3, 3)).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(_png16_rgb(rgb16))
    out = photos.load_image(tmp_path / "rgb16.png")  # Pillow keeps 8 bits of a 16-bit RGB PNG
    np.testing.assert_allclose(out, rgb16 / 65535.0, atol=1 / 255 + 1e-6)

    smooth = np.zeros((16, 16, 3), np.uint8)
    smooth[..., 0], smooth[..., 2] = 200, 60
    out = photos.load_image(_save(tmp_path / "x.jpg", smooth, quality=95))
    np.testing.assert_allclose(out, smooth / 255.0, atol=4 / 255)
    cmyk = Image.fromarray(smooth).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    np.testing.assert_allclose(photos.load_image(tmp_path / "cmyk.jpg"),
                               np.asarray(cmyk.convert("RGB")) / 255.0, atol=4 / 255)


def test_load_image_exif_orientation_and_draft(tmp_path):
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, :16] = (255, 0, 0)  # left half red, right half blue
    img[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(img).save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = photos.load_image(tmp_path / "o.jpg")
    assert out.shape == (32, 16, 3)
    assert out[4, 8, 0] > 0.8 > out[4, 8, 2]  # the red half is now on top
    assert out[28, 8, 2] > 0.8 > out[28, 8, 0]

    _save(tmp_path / "big.jpg", _rgb(600, 800))
    assert photos.load_image(tmp_path / "big.jpg").shape == (600, 800, 3)
    reduced = photos.load_image(tmp_path / "big.jpg", min_short_side=100)
    assert 100 <= min(reduced.shape[:2]) < 600  # decoded at a DCT scale, still covering the request
    assert photos.load_image(tmp_path / "big.jpg", min_short_side=599).shape == (600, 800, 3)


def test_load_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"this is not an image at all")
    with pytest.raises(photos.UnreadableImageError, match="corrupt.png"):
        photos.load_image(bad)
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(photos.UnreadableImageError, match="truncated.png"):
        photos.load_image(truncated)
    with pytest.raises(OSError, match="missing.jpg"):  # UnreadableImageError is an OSError
        photos.load_image(tmp_path / "missing.jpg")


# ------------------------------------------------------------------------------------------------------------
# Augmentation helpers.
# ------------------------------------------------------------------------------------------------------------


def test_fold_matches_numpy_reflect():
    for n in (1, 2, 5):
        coords = np.arange(-12, 12 + n, dtype=np.float64)
        padded = np.pad(np.arange(n), 12, mode="reflect") if n > 1 else np.zeros(24 + n)
        np.testing.assert_array_equal(augment.fold(coords, n), padded)


def test_shift_hsv_matches_skimage():
    skc = pytest.importorskip("skimage.color")
    x = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    x[:2] = 0.5  # grey: undefined hue
    x[2:4] = 0.0
    shift = np.array([0.03, -0.1, 0.02])
    hsv = skc.rgb2hsv(x)
    hsv[..., 0] = np.mod(hsv[..., 0] + shift[0], 1.0)
    hsv[..., 1:] = np.clip(hsv[..., 1:] + shift[1:], 0.0, 1.0)
    np.testing.assert_allclose(augment.shift_hsv(x, shift), skc.hsv2rgb(hsv), atol=1e-5)


def _no_distortion(**kw):
    params = dict(perspective=False, corners=np.zeros((4, 2)), affine=False, scale=1.0, rotate_deg=0.0,
                  shear_deg=0.0, optical=False, optical_k=0.0, fy=0.0, fx=0.0, flip=False, clahe=False,
                  clahe_clip=1.0, brightness_contrast=False, contrast=1.0, brightness=0.0, hsv=False,
                  hsv_shift=np.zeros(3))
    params.update(kw)
    return augment.DistortParams(**params)


def test_distort_geometry():
    img = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    # With every step off, 'distortions' is an exact crop (the coordinate chain is the identity).
    np.testing.assert_array_equal(augment.distort(img, _no_distortion(fy=0.5, fx=0.999), SIZE),
                                  img[4:36, 18:50])
    np.testing.assert_array_equal(augment.distort(img, _no_distortion(flip=True), SIZE),
                                  img[:SIZE, SIZE - 1::-1])
    # A tiny image is padded (centred, reflect-101), as albumentations' PadIfNeeded does.
    tiny = img[:5, :6]
    expected = np.pad(tiny, ((13, 14), (13, 13), (0, 0)), mode="reflect")
    np.testing.assert_allclose(augment.distort(tiny, _no_distortion(), SIZE), expected, atol=1e-6)
    # Rotating by 180 degrees about the centre flips both axes.
    sq = img[:SIZE, :SIZE]
    np.testing.assert_allclose(augment.distort(sq, _no_distortion(affine=True, rotate_deg=180.0), SIZE),
                               sq[::-1, ::-1], atol=1e-4)
    # The other steps change the image but keep the range.
    on = _no_distortion(perspective=True, corners=np.full((4, 2), 0.05), affine=True, scale=1.2,
                        rotate_deg=20, optical=True, optical_k=0.05, clahe=True, clahe_clip=3.0,
                        brightness_contrast=True, contrast=1.1, brightness=0.1, hsv=True,
                        hsv_shift=np.array([5.0, 30.0, 5.0]))
    out = augment.distort(img, on, SIZE)
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and not np.allclose(out, img[:SIZE, :SIZE])


def test_resize_crop_upscales_and_centres():
    tiny = np.random.default_rng(0).random((3, 7, 3)).astype(np.float32)
    out = augment.resize_crop(tiny, augment.CropParams(SIZE, 0.5, 0.5, False, True), SIZE)
    assert out.shape == (SIZE, SIZE, 3) and 0.0 <= out.min() and out.max() <= 1.0
    exact = np.random.default_rng(1).random((SIZE, SIZE, 3)).astype(np.float32)
    centre = augment.CropParams(SIZE, 0.5, 0.5, False, True)
    np.testing.assert_array_equal(augment.resize_crop(exact, centre, SIZE), exact)
    np.testing.assert_array_equal(augment.resize_crop(exact, centre._replace(flip=True), SIZE), exact[:, ::-1])
    # Halving a smooth 64x128 image, then centre-cropping, samples the middle of the half-size image.
    yy, xx = np.mgrid[0:64, 0:128] / 64.0
    smooth = np.stack([0.5 + 0.4 * np.sin(2 * xx + yy), 0.5 + 0.4 * np.cos(3 * yy), xx / 2], -1)
    out = augment.resize_crop(smooth.astype(np.float32), centre, SIZE)
    np.testing.assert_allclose(out[1:-1, 1:-1], smooth[::2, ::2][:, 16:48][1:-1, 1:-1], atol=0.02)


# ------------------------------------------------------------------------------------------------------------
# The pipeline.
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(name="photo_folder")
def _photo_folder(tmp_path):
    """A LaMa-style folder: nested train dirs, mixed sizes and formats, plus things that must be ignored."""
    root = tmp_path / "ds"
    _save(root / "train" / "a" / "big.png", _rgb(70, 90, 1))
    _save(root / "train" / "a" / "deep" / "tiny.png", _rgb(3, 5, 2))
    _save(root / "train" / "b" / "tall.JPG", _rgb(100, 40, 3))
    _save(root / "train" / "b" / "grey.png", _rgb(40, 40, 4)[..., 0], "L")
    _save(root / "train" / "c.webp", _rgb(33, 50, 5))
    _save(root / "train" / "skip_mask000.png", _rgb(8, 8, 6)[..., 0], "L")
    _save(root / "train" / ".hidden.png", _rgb(8, 8, 7))
    (root / "train" / "notes.txt").write_text("not an image")
    _save(root / "val" / "v1.png", _rgb(48, 64, 8))
    _save(root / "val" / "v2.jpeg", _rgb(64, 48, 9))
    _save(root / "val" / "v1_mask000.png", _rgb(48, 64, 8)[..., 0], "L")
    return root


def _check_batch(batch, n):
    assert set(batch) == {"image", "mask"}
    assert batch["image"].shape == (n, SIZE, SIZE, 3) and batch["image"].dtype == np.float32
    assert batch["mask"].shape == (n, SIZE, SIZE, 1) and batch["mask"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert set(np.unique(batch["mask"])) <= {0.0, 1.0}


def test_default_config_is_typed():
    c = data.default_input_config()
    assert c.source == "builtin" and c.image_size == 256 and c.mask.name == "lama_train"
    c.folder = "/some/where"  # placeholders accept strings
    with pytest.raises(TypeError):
        c.image_size = "big"


@pytest.mark.parametrize("augment", ["lama", "distortions", "none"])
def test_folder_source_shapes(photo_folder, augment):
    with data.InputPipeline(_config(source="folder", folder=str(photo_folder), augment=augment), seed=0) as p:
        assert p.num_examples == 5  # mask file, hidden file, text file and val/ left out
        for step in range(3):  # 12 examples: every file (incl. the 3x5 one) at least twice
            _check_batch(p.local_batch(step), 4)
        assert not p.skipped


def test_folder_without_train_dir_excludes_val(tmp_path):
    _save(tmp_path / "x" / "one.png", _rgb(40, 40))
    _save(tmp_path / "two.png", _rgb(40, 40))
    _save(tmp_path / "val" / "v.png", _rgb(40, 40))
    p = data.InputPipeline(_config(source="folder", folder=str(tmp_path)), seed=0)
    assert p.num_examples == 2
    evals = list(data.eval_batches(_config(source="folder", folder=str(tmp_path)), seed=0, batch_size=2))
    assert [b["_valid"].tolist() for b in evals] == [[1.0, 0.0]]


def test_corrupt_files_skipped_and_counted(tmp_path, caplog):
    for i in range(3):
        _save(tmp_path / f"good{i}.png", _rgb(40, 40, i))
    (tmp_path / "bad0.png").write_bytes(b"garbage")
    (tmp_path / "bad1.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cfg = _config(source="folder", folder=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="jaxinpaint.data"):
        p = data.InputPipeline(cfg, seed=0)
        assert p.num_examples == 5
        batches = [p.local_batch(s) for s in range(4)]  # 16 examples > 3 epochs: every file visited
        p.close()
    assert sorted(k.rsplit("/", 1)[-1] for k in p.skipped) == ["bad0.png", "bad1.jpg"]
    for b in batches:
        _check_batch(b, 4)
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == 2  # once per file
    assert any("were unreadable and skipped" in r.message for r in caplog.records)  # the summary
    # The replacement is deterministic: a fresh pipeline (threads or not) gives the same batches.
    q = data.InputPipeline(_config(source="folder", folder=str(tmp_path), num_workers=0), seed=0)
    for s, b in enumerate(batches):
        np.testing.assert_array_equal(q.local_batch(s)["image"], b["image"])


def test_empty_and_all_corrupt_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(data.EmptyDatasetError, match=r"empty.*\*\.jpg"):
        data.InputPipeline(_config(source="folder", folder=str(tmp_path / "empty")), seed=0)
    with pytest.raises(data.EmptyDatasetError, match="not a directory"):
        data.InputPipeline(_config(source="folder", folder=str(tmp_path / "nope")), seed=0)
    (tmp_path / "bad" / "train").mkdir(parents=True)
    (tmp_path / "bad" / "train" / "x.png").write_bytes(b"nope")
    p = data.InputPipeline(_config(source="folder", folder=str(tmp_path / "bad")), seed=0)
    with pytest.raises(data.EmptyDatasetError, match="unreadable"):
        p.local_batch(0)
    p.close()
    with pytest.raises(data.EmptyDatasetError, match="val"):
        next(data.eval_batches(_config(source="folder", folder=str(tmp_path / "bad")), seed=0, batch_size=2))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="input.source"):
        data.InputPipeline(_config(source="web"), seed=0)
    with pytest.raises(ValueError, match="input.folder"):
        data.InputPipeline(_config(source="folder"), seed=0)
    with pytest.raises(ValueError, match="input.augment"):
        data.InputPipeline(_config(augment="fancy"), seed=0)
    with pytest.raises(ValueError, match="input.short_side_range"):
        data.InputPipeline(_config(short_side_range=(0.5, 2.0)), seed=0)
    with pytest.raises(ValueError, match="input.batch_size.*divisible"):
        data.InputPipeline(_config(batch_size=5), seed=0, process_count=2)
    with pytest.raises(ValueError, match="seed"):
        data.InputPipeline(_config(), seed=-1)
    cfg = _config()
    cfg.mask.name = "no_such_mask"
    if hasattr(sys.modules["jaxinpaint.masks"], "names"):  # the real module validates names
        with pytest.raises(ValueError, match="input.mask"):
            data.InputPipeline(cfg, seed=0)


def test_determinism_and_resume():
    cfg = _config()  # built-in photos
    a = data.InputPipeline(cfg, seed=3)
    b = data.InputPipeline(_config(num_workers=0), seed=3)
    for step in (0, 5):
        x, y = a.local_batch(step), b.local_batch(step)
        _check_batch(x, 4)
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["mask"], y["mask"])
    assert not np.array_equal(a.local_batch(0)["image"], a.local_batch(1)["image"])
    other = data.InputPipeline(cfg, seed=4).local_batch(5)
    assert not np.array_equal(other["image"], a.local_batch(5)["image"])
    assert not np.array_equal(other["mask"], a.local_batch(5)["mask"])
    it = a.iterate(start_step=7)
    for expected_step in (7, 8, 9):
        step, batch = next(it)
        assert step == expected_step
        ref = b.local_batch(step)
        np.testing.assert_array_equal(batch["image"], ref["image"])
        np.testing.assert_array_equal(batch["mask"], ref["mask"])
    it.close()
    a.close()
    b.close()


def test_epochs_visit_every_file_once(photo_folder):
    p = data.InputPipeline(_config(source="folder", folder=str(photo_folder), augment="none", batch_size=5,
                                   num_workers=0), seed=0)
    per_epoch = [p._permutation(e) for e in range(3)]
    for perm in per_epoch:
        assert sorted(perm) == list(range(5))
    assert len({tuple(x) for x in per_epoch}) > 1  # reshuffled between epochs
    # With 'none' the batch of step e is exactly epoch e's files in permuted order.
    imgs = [photos.load_image(path) for path in p._reader.source.paths]
    firsts = [augment.resize_crop(im, augment.CropParams(SIZE, 0.5, 0.5, False, True), SIZE) for im in imgs]
    batch = p.local_batch(1)["image"]
    for i, k in enumerate(per_epoch[1]):
        np.testing.assert_array_equal(batch[i], firsts[k])


@pytest.mark.parametrize("per_batch", [False, True])
def test_process_sharding(per_batch):
    cfg = _config(batch_size=4)
    cfg.mask.per_batch = per_batch
    whole = data.InputPipeline(cfg, seed=1)
    parts = [data.InputPipeline(cfg, seed=1, process_index=i, process_count=2) for i in range(2)]
    assert parts[0].local_batch_size == 2
    for step in (0, 3):
        ref = whole.local_batch(step)
        got = [p.local_batch(step) for p in parts]
        for key in ("image", "mask"):
            np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), ref[key])
        if per_batch:
            assert np.all(ref["mask"] == ref["mask"][:1])  # one mask shared by the whole global batch
            assert ref["mask"].mean() > 0
        else:
            assert not np.array_equal(ref["mask"][0], ref["mask"][1])


def test_tfds_mock_source():
    if tfds is None:
        pytest.skip("tensorflow-datasets not installed")
    cfg = _config(source="tfds", tfds_name="mnist", augment="lama")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        p = data.InputPipeline(cfg, seed=0)
        assert p.num_examples == 6
        batch = p.local_batch(0)  # 28x28 grey digits, upscaled to 32 and replicated to RGB
        _check_batch(batch, 4)
        np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
        np.testing.assert_array_equal(batch["image"], data.InputPipeline(cfg, seed=0).local_batch(0)["image"])
        p.close()
        with pytest.raises(ValueError, match="input.tfds_image_key"):
            data.InputPipeline(_config(source="tfds", tfds_name="mnist", tfds_image_key="photo"), seed=0)


def test_tfds_missing_build_explains_how_to_prepare(tmp_path):
    if tfds is None:
        pytest.skip("tensorflow-datasets not installed")
    cfg = _config(source="tfds", tfds_name="mnist", tfds_data_dir=str(tmp_path))
    with pytest.raises(data.EmptyDatasetError, match=r"(?s)array_record.*download_and_prepare"):
        data.InputPipeline(cfg, seed=0)
    with pytest.raises(ValueError, match="input.tfds_name"):
        data.InputPipeline(_config(source="tfds", tfds_name="no_such_dataset_xyz"), seed=0)


def test_tfds_real_array_record_build(tmp_path):
    """A tiny dataset built locally in array_record format, read back without TensorFlow."""
    if tfds is None:
        pytest.skip("tensorflow-datasets not installed")

    JaxinpaintTestPhotos(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
    cfg = _config(source="tfds", tfds_name="jaxinpaint_test_photos", tfds_data_dir=str(tmp_path))
    with data.InputPipeline(cfg, seed=0) as p:
        assert p.num_examples == 5
        _check_batch(p.local_batch(0), 4)
    batches = list(data.eval_batches(cfg, seed=0, batch_size=2))
    assert [b["_valid"].tolist() for b in batches] == [[1, 1], [1, 0]]
    cfg.tfds_eval_split = "test"
    with pytest.raises(ValueError, match="input.tfds_eval_split"):
        next(data.eval_batches(cfg, seed=0, batch_size=2))


def test_eval_batches_padding_and_sharding():
    cfg = _config()  # built-in: the single held-out photo, cycled with different masks
    batches = list(data.eval_batches(cfg, seed=0, batch_size=4, num_examples=6))
    assert len(batches) == 2
    for b in batches:
        assert set(b) == {"image", "mask", "_valid"} and b["_valid"].dtype == np.float32
        assert b["image"].shape == (4, SIZE, SIZE, 3) and b["mask"].shape == (4, SIZE, SIZE, 1)
    np.testing.assert_array_equal(batches[0]["_valid"], [1, 1, 1, 1])
    np.testing.assert_array_equal(batches[1]["_valid"], [1, 1, 0, 0])
    assert not batches[1]["image"][2:].any() and not batches[1]["mask"][2:].any()
    np.testing.assert_array_equal(batches[0]["image"][0], batches[1]["image"][1])  # same photo, centre crop
    assert not np.array_equal(batches[0]["mask"][0], batches[0]["mask"][1])  # different fixed masks
    again = list(data.eval_batches(_config(num_workers=0), seed=0, batch_size=4, num_examples=6))
    for x, y in zip(batches, again, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    parts = [list(data.eval_batches(cfg, seed=0, batch_size=4, num_examples=6, process_index=i,
                                    process_count=2)) for i in range(2)]
    for j, whole in enumerate(batches):
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([parts[0][j][key], parts[1][j][key]]), whole[key])
    cfg.eval_mask.name = "center_box"
    if "center_box" in getattr(sys.modules["jaxinpaint.masks"], "names", lambda: [])():
        b = next(data.eval_batches(cfg, seed=0, batch_size=2))
        assert b["mask"][0, SIZE // 2, SIZE // 2, 0] == 1 and b["mask"][0, 0, 0, 0] == 0


def test_make_global_batch():
    import jax  # pylint: disable=import-outside-toplevel
    from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel
    devices = np.array(jax.devices()[:8]).reshape(-1)
    mesh = Mesh(devices, ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    n = len(devices)
    local = data.InputPipeline(_config(batch_size=n, num_workers=0), seed=0).local_batch(0)
    local["_valid"] = np.ones((n,), np.float32)
    out = data.make_global_batch(local, sharding)
    for key, value in local.items():
        assert out[key].shape == value.shape and out[key].sharding == sharding
        np.testing.assert_array_equal(np.asarray(out[key]), value)
