"""Inpaint a folder (or one image): ``jaxinpaint predict`` (``python -m jaxinpaint.predict``).

    jaxinpaint predict --model=big-lama/models/best.ckpt --input_dir=IN --output_dir=OUT
    jaxinpaint predict --model=workdirs/run1 --step=20000 --input_dir=IN --output_dir=OUT
    jaxinpaint predict --model=converted/ --input_dir=photos --mask_dir=masks --output_dir=OUT
    jaxinpaint predict --model=converted/ --image=x.jpg --mask=x_mask.png --output=x_out.png
    jaxinpaint predict --model=converted/ --input_dir=IN --output_dir=OUT --refine   # LaMa, 1-2 MP

``--model`` (SOURCE) is anything ``jaxinpaint.load`` takes: a training workdir (the latest checkpoint, or
``--step=N``; EMA weights when the run kept them, ``--no_ema`` for the raw ones), a directory written by
``jaxinpaint convert``, an original weight file (LaMa's ``.ckpt``/``.pth``), or the name of a per-image
method (``tv``, ``dip``, ``hallucination``, ``msnps``...), whose settings ``--option=KEY=VALUE`` sets
(repeatable; the method's ``default_config`` fields, the keywords ``jaxinpaint.load`` takes), e.g.
``--option=iterations=100``, ``--option=preset=smoke``, ``--model=msnps --option=content_model=workdirs/ce
--option=vgg_weights=vgg19_caffe.npz``. A per-image method shows its iterations while it runs
(``--progress``: a tqdm bar on a terminal, log lines with ``it/s`` and ``ETA`` otherwise, or ``none``).

    jaxinpaint predict --model=tv --image=x.png --mask=x_mask.png --output=x_tv.png

Input layouts:

* **LaMa's** (``--input_dir`` alone; advimman/lama ``bin/predict.py``): the masks are
  ``sorted(IN/**/*mask*.png)`` (recursive); the image of ``a/b_mask001.png`` is ``a/b.png`` (the mask path
  cut at its last ``_mask``). Unlike LaMa, ``a/b.jpg`` (then ``.jpeg``, then upper-case
  ``.PNG``/``.JPG``/``.JPEG``) is accepted when ``a/b.png`` does not exist, because photo folders are mostly
  JPEG. The result goes to
  ``OUT/a/b_mask001.png`` (the mask's path relative to IN), so one image may have several masks.
* **Same-named masks** (``--mask_dir=M``): every image under IN (recursive: .png, .jpg, .jpeg, .bmp, .webp,
  .tif, .tiff) is inpainted with ``M/<same relative path>.png`` (or the same stem with another image
  extension); the result goes to ``OUT/<relative path>.png``. An image without a mask is a failure.
* **One image**: ``--image=I --mask=M --output=O``.

The output directory and the mask directory are never scanned as inputs, even when they lie inside IN.
Folders are walked once (``jaxinpaint.data.images.walk_files``): directory symlinks are followed but each real
folder and file is visited once (a link loop cannot repeat or hang the run), and a broken symbolic link is
reported as a failure rather than skipped silently.

Conversions (what "byte for byte" compares against):

* Images are read by ``jaxinpaint.photos.load_image`` and turned into 8-bit RGB: grey is replicated to three
  channels; alpha (RGBA, LA, palette transparency) is composited over white; 16-bit grey is rounded to 8 bits
  (``round(v / 65535 * 255)``); 16-bit RGB PNGs arrive at 8 bits from Pillow; EXIF orientation is applied.
  Outside the hole, the written PNG equals that 8-bit RGB image byte for byte. Inside, it holds LaMa's
  ``uint8(clip(pred * 255))``.
* Masks: a pixel is a hole when it is > 0 (LaMa's binarisation); for multi-channel masks, when any colour
  channel is > 0. A mask's alpha channel is ignored (LaMa reads masks as greyscale, which drops alpha); a mask
  drawn *only* in alpha (black colour channels) is an error rather than a silent no-op. EXIF orientation is
  applied to masks too; a mask of another size than its image is an error (never resized).
* Images and masks above ``--max_pixels`` (50 megapixels by default) are refused from their header, before
  any decoding.
* Outputs are PNG. ``--output`` with another extension is written in that format with a warning, since a lossy
  format breaks the byte-identity.

Images of identical size are inpainted together, ``--batch_size`` at a time, after padding bottom/right to a
multiple of the model's size requirement (numpy 'symmetric', as LaMa; 8 for LaMa, ``2**layer_size`` for
the PConv U-Net), combined with ``--pad_to`` when given. Each padded size compiles a program; at most
``--max_programs`` (8) are kept, so memory stays flat over thousands of sizes; ``--size_bucket=64`` pads
further so nearby sizes share a program (fewer compilations, slightly different borders). ``--refine`` runs
LaMa's multi-scale refinement
(``jaxinpaint.systems.lama.refine``; one image at a time, only for generators with a front/rear split).

Large photos: ``--hd_strategy=crop`` inpaints crops around the holes (with ``--hd_crop_margin`` pixels of context,
for photos whose long side exceeds ``--hd_crop_trigger``), ``--hd_strategy=resize`` a copy whose long side is
``--hd_resize_limit``; only the hole is pasted back (``jaxinpaint.inference.HDStrategy``, IOPaint's strategies).

Existing outputs are overwritten (the summary says how many); ``--skip_existing`` leaves them and their images
alone, so an interrupted run can be resumed. Unreadable files, missing images or masks and size mismatches are
reported and skipped; a summary ends the run. Exit status: 0 when every image was inpainted, 1 when any failed,
2 for usage errors (bad flags, a SOURCE that is missing or not a model, an input directory without masks).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import fnmatch
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

log = logging.getLogger("jaxinpaint.predict")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LAMA_MASK_PATTERN = "**/*mask*.png"
# Image extensions tried, in order, for a LaMa-layout mask (LaMa itself only tries .png).
LAMA_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


class UsageError(Exception):
    """A problem with the command line or its paths (exit status 2)."""


@dataclasses.dataclass
class Job:
    """One image to inpaint: where its inputs are, where its result goes, and how it is named in reports."""

    label: str
    image: str | None
    mask: str | None
    output: str
    error: str | None = None  # set at discovery when an input is missing


# ------------------------------------------------------------------------------------------------------------
# Reading inputs.
# ------------------------------------------------------------------------------------------------------------


from jaxinpaint.cli import common  # noqa: E402
from jaxinpaint.data import photos  # noqa: E402
from jaxinpaint.data.images import image_size, load_mask, walk_files  # noqa: E402  (shared with evaluate, training)
from jaxinpaint.data.images import load_rgb_uint8 as load_rgb8  # noqa: E402


# ------------------------------------------------------------------------------------------------------------
# Finding the work.
# ------------------------------------------------------------------------------------------------------------


def _walk(input_dir: str, exclude: Sequence[str | None]) -> tuple[list[str], list[str]]:
    """(relative paths of the files under IN, broken links) by the one shared walk: each real file once,
    no directory loop followed (``jaxinpaint.data.images.walk_files``)."""
    walk = walk_files(input_dir, exclude=[e for e in exclude if e])
    return [rel for rel, _ in walk.files], [os.path.relpath(b, input_dir) for b in walk.broken]


def lama_jobs(input_dir: str, output_dir: str) -> list[Job]:
    """Jobs for LaMa's layout: one per ``IN/**/*mask*.png`` (module docstring)."""
    files, broken = _walk(input_dir, [output_dir])
    jobs = []
    for rel in sorted(r for r in files + broken if fnmatch.fnmatchcase(os.path.basename(r), "*mask*.png")):
        mask = os.path.join(input_dir, rel)
        if rel in broken:
            jobs.append(Job(rel, None, mask, os.path.join(output_dir, rel),
                            f"the mask is a broken symbolic link (to {os.readlink(mask)!r})"))
            continue
        base = os.path.join(input_dir, rel.rsplit("_mask", 1)[0])
        candidates = [base + s for s in LAMA_IMAGE_SUFFIXES]
        image = next((c for c in candidates if os.path.isfile(c)), None)
        error = None if image else f"no image for this mask (looked for {', '.join(candidates)})"
        jobs.append(Job(rel, image, mask, os.path.join(output_dir, rel), error))
    return jobs


def _find_same_stem(directory: str, rel_stem: str) -> str | None:
    for ext in (".png",) + tuple(e for e in IMAGE_EXTENSIONS if e != ".png"):
        for e in (ext, ext.upper()):
            path = os.path.join(directory, rel_stem + e)
            if os.path.isfile(path):
                return path
    return None


def mask_dir_jobs(input_dir: str, mask_dir: str, output_dir: str) -> list[Job]:
    """Jobs for same-named masks: one per image under IN (module docstring)."""
    files, broken = _walk(input_dir, [output_dir, mask_dir])
    rels = [rel for rel in files if rel.lower().endswith(IMAGE_EXTENSIONS)]
    jobs, claimed = [], {}
    for rel in broken:
        if rel.lower().endswith(IMAGE_EXTENSIONS):
            jobs.append(Job(rel, None, None, os.path.join(output_dir, os.path.splitext(rel)[0] + ".png"),
                            "the image is a broken symbolic link"))
    for rel in rels:
        stem = os.path.splitext(rel)[0]
        mask = _find_same_stem(mask_dir, stem)
        output = os.path.join(output_dir, stem + ".png")
        error = None if mask else (f"no mask for this image (looked for {os.path.join(mask_dir, stem)}"
                                   f"{{{','.join(IMAGE_EXTENSIONS)}}})")
        if output in claimed:
            error = (f"its result {output} would overwrite the result of {claimed[output]} "
                     "(same name, other extension)")
        else:
            claimed[output] = rel
        jobs.append(Job(rel, os.path.join(input_dir, rel), mask, output, error))
    return jobs


# ------------------------------------------------------------------------------------------------------------
# Progress and summary.
# ------------------------------------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on a terminal, one plain line per image otherwise (logs keep no carriage-return frames)."""

    def __init__(self, total: int, interactive: bool):
        self.total, self.count = total, 0
        self.failures: list[tuple[str, str]] = []
        self._bar = None
        if interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)

    def done(self, job: Job, error: str | None = None, note: str = "") -> None:
        self.count += 1
        if error is not None:
            self.failures.append((job.label, error))
        if self._bar is not None:
            if error is not None:
                self._bar.write(f"FAILED {job.label}: {error}", file=sys.stderr)
            self._bar.update(1)
        else:
            status = f"FAILED: {error}" if error is not None else f"-> {job.output}{note}"
            print(f"[{self.count}/{self.total}] {job.label} {status}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _interactive() -> bool:
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return sys.stderr.isatty() and not ci


# ------------------------------------------------------------------------------------------------------------
# Running.
# ------------------------------------------------------------------------------------------------------------


def _write_png(path: str, pixels: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(pixels).save(path)


def _load_pair(job: Job) -> tuple[np.ndarray, np.ndarray]:
    image = load_rgb8(job.image)
    return image, load_mask(job.mask, shape=image.shape[:2])


def _groups(jobs: Iterable[Job], progress: _Progress) -> dict[tuple[int, int], list[Job]]:
    """Jobs by image size (read from headers), in order of first appearance; unreadable headers fail here."""
    groups: dict[tuple[int, int], list[Job]] = collections.defaultdict(list)
    for job in jobs:
        try:
            groups[image_size(job.image)].append(job)
        except OSError as e:
            progress.done(job, str(e))
    return groups


def _solver_note(inpainter) -> str:
    """A per-image method's objective, first -> last value (per scale for LaMa's refinement)."""
    objective = getattr(inpainter, "last_info", {}).get("objective")
    if objective is None:
        return ""
    parts = objective if isinstance(objective, (list, tuple)) else [objective]
    parts = [np.asarray(p).ravel() for p in parts]
    name = "refinement objective" if inpainter.name == "lama_refine" else "objective"
    return f"; {name} " + ", ".join(f"{p[0]:.4f}->{p[-1]:.4f}" for p in parts if p.size)


def run_jobs(jobs: Sequence[Job], inpainter, *, batch_size: int = 1, interactive: bool | None = None
             ) -> list[tuple[str, str]]:
    """Inpaints every job with ``inpainter`` (``jaxinpaint.load``), writing its output; returns the failures as
    ``(label, reason)``. ``interactive`` forces the tqdm bar on or off (default: on for a terminal outside CI).
    """
    progress = _Progress(len(jobs), _interactive() if interactive is None else interactive)
    step = batch_size if inpainter.kind == "trained" else 1
    try:
        ready = []
        for job in jobs:
            if job.error is not None:
                progress.done(job, job.error)
            else:
                ready.append(job)
        batches = [group[i:i + step] for group in _groups(ready, progress).values()
                   for i in range(0, len(group), step)]
        for batch in batches:
            by_shape = collections.defaultdict(list)  # headers can lie: batch by the decoded shape
            for job in batch:
                try:
                    image, mask = _load_pair(job)
                except (OSError, ValueError) as e:
                    progress.done(job, str(e))
                    continue
                by_shape[image.shape].append((job, image, mask))
            for items in by_shape.values():
                t0 = time.perf_counter()
                try:
                    outs = inpainter.inpaint([i[1] for i in items], [i[2] for i in items])
                except Exception as e:  # one bad batch (e.g. too small for the model) must not stop the run
                    for job, _, _ in items:
                        progress.done(job, f"inpainting failed: {type(e).__name__}: {e}")
                    continue
                note = f" ({(time.perf_counter() - t0) / len(items):.2f} s/img{_solver_note(inpainter)})"
                for (job, _, _), out in zip(items, outs):
                    try:
                        _write_png(job.output, out)
                    except (OSError, ValueError) as e:
                        progress.done(job, f"cannot write {job.output}: {e}")
                    else:
                        progress.done(job, note=note)
    finally:
        progress.close()
    return progress.failures


# ------------------------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from jaxinpaint import inference

    p = common.ArgumentParser(
        prog="jaxinpaint predict",
        description="Inpaint images with a jaxinpaint model or per-image method (LaMa's folder layout, "
                    "same-named masks, or one image). See the module docstring for the layouts and conversions.")
    p.add_argument("--model", required=True, metavar="SOURCE",
                   help="training workdir, converted model directory, original weight file (LaMa .ckpt/.pth), "
                        "or a per-image method's name")
    p.add_argument("--step", type=int, default=None, help="workdir checkpoint step (default: the latest)")
    p.add_argument("--no_ema", action="store_true", help="use the raw generator weights, not the EMA ones")
    p.add_argument("--input_dir",
                   help="folder of images and masks (LaMa layout), or of images with --mask_dir")
    p.add_argument("--mask_dir", help="folder of masks named like the images in --input_dir")
    p.add_argument("--output_dir", help="where results go (relative paths kept)")
    p.add_argument("--image", help="one image (with --mask and --output)")
    p.add_argument("--mask", help="the mask of --image")
    p.add_argument("--output", help="where the result of --image goes (PNG)")
    p.add_argument("--batch_size", type=int, default=1, help="images of identical size inpainted together")
    p.add_argument("--pad_to", type=int, default=None,
                   help="pad H and W to a multiple of this (default: the model's size_multiple when it has "
                        "one, e.g. PConv U-Net, else 8 as LaMa)")
    p.add_argument("--size_bucket", type=int, default=0,
                   help="also pad H and W up to a multiple of this so photos of nearby sizes share one compiled "
                        "program (faster over many sizes; changes results slightly, as any padding does; 0 = off)")
    p.add_argument("--max_programs", type=int, default=8,
                   help="compiled programs (image sizes) kept in memory; a new size beyond them clears JAX's caches, "
                        "so memory stays flat over any number of sizes (0 = no bound)")
    p.add_argument("--max_pixels", type=int, default=None,
                   help="refuse images and masks with more pixels than this, from their header, before decoding "
                        "(default: 50 megapixels, or JAXINPAINT_MAX_PIXELS)")
    p.add_argument("--refine", action="store_true", help="LaMa's multi-scale high-resolution refinement")
    p.add_argument("--refine_n_iters", type=int, default=15, help="refinement: forward passes per scale")
    p.add_argument("--refine_lr", type=float, default=0.002, help="refinement: Adam learning rate")
    p.add_argument("--refine_min_side", type=int, default=512,
                   help="refinement: one more scale per doubling of the short side above this")
    p.add_argument("--refine_max_scales", type=int, default=3, help="refinement: most pyramid levels")
    p.add_argument("--refine_px_budget", type=int, default=1_800_000,
                   help="refinement: larger images are refined at this many pixels, then resized back")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a per-image method's setting (repeatable), e.g. --option=iterations=300 "
                        "--option=weights=vgg19-dcbb9e9d.pth; values are read as Python literals when they parse, "
                        "else as strings; the names are the method's default_config fields")
    p.add_argument("--progress", default="auto", choices=("auto", "bar", "log", "none"),
                   help="a per-image method's iterations while it runs: a tqdm bar (on a terminal), log lines "
                        "with it/s and ETA (otherwise), or nothing")
    p.add_argument("--seed", type=int, default=0, help="a per-image method's seed (same input and seed, same output)")
    p.add_argument("--skip_existing", action="store_true",
                   help="leave images whose output file already exists alone (default: overwrite them, and say so)")
    defaults = inference.HDStrategy()
    p.add_argument("--hd_strategy", default=defaults.mode, choices=inference.HD_MODES,
                   help="large photos: the whole photo (original), crops around the holes (crop) or a smaller copy "
                        "(resize), IOPaint's HD strategies; only the hole is pasted back")
    p.add_argument("--hd_crop_trigger", type=int, default=defaults.crop_trigger,
                   help="crop: only photos whose long side exceeds this are cropped")
    p.add_argument("--hd_crop_margin", type=int, default=defaults.crop_margin,
                   help="crop: pixels of context around each group of holes")
    p.add_argument("--hd_resize_limit", type=int, default=defaults.resize_limit,
                   help="resize: photos whose long side exceeds this are inpainted at this long side")
    common.add_verbose(p)
    return p


def _jobs_from_args(args) -> list[Job]:
    if args.image or args.mask or args.output:
        if not (args.image and args.mask and args.output):
            raise UsageError("single-image mode needs all of --image, --mask and --output")
        if args.input_dir or args.mask_dir or args.output_dir:
            raise UsageError("--image/--mask/--output cannot be combined with "
                             "--input_dir/--mask_dir/--output_dir")
        for flag, path in (("--image", args.image), ("--mask", args.mask)):
            if not os.path.isfile(path):
                raise UsageError(f"{flag}={path}: no such file")
        if not args.output.lower().endswith(".png"):
            log.warning("--output=%s is not a .png: it is written in the format its extension names, and a "
                        "lossy format will not keep the known pixels byte-identical", args.output)
        return [Job(args.image, args.image, args.mask, args.output)]
    if not args.input_dir or not args.output_dir:
        raise UsageError("give --input_dir and --output_dir (optionally --mask_dir), or --image, --mask and "
                         "--output")
    if not os.path.isdir(args.input_dir):
        raise UsageError(f"--input_dir={args.input_dir}: no such directory")
    if args.mask_dir:
        if not os.path.isdir(args.mask_dir):
            raise UsageError(f"--mask_dir={args.mask_dir}: no such directory")
        jobs = mask_dir_jobs(args.input_dir, args.mask_dir, args.output_dir)
        if not jobs:
            raise UsageError(f"--input_dir={args.input_dir} holds no images (looked for **/*{{"
                             f"{','.join(IMAGE_EXTENSIONS)}}}, recursively)")
    else:
        jobs = lama_jobs(args.input_dir, args.output_dir)
        if not jobs:
            raise UsageError(f"--input_dir={args.input_dir} holds no masks: LaMa's layout looks for "
                             f"{LAMA_MASK_PATTERN} (recursively), e.g. x.png with x_mask000.png; for "
                             "masks in a separate folder with the images' names use --mask_dir")
    return jobs


def parse_options(items: Sequence[str]) -> dict:
    """``--option KEY=VALUE`` flags -> {key: value}. A value that reads as a Python or JSON literal (``50``,
    ``1e-4``, ``True``/``true``, ``None``/``null``, ``[16, 32, 64]``) is that literal, anything else the string
    itself (paths). Only scalars, None and lists of them are taken as literals. The method's config then checks
    the key and the type (``jaxinpaint.load`` refuses unknown options, naming the known ones)."""
    import ast
    import json

    def literal(value: str):
        for parse in (ast.literal_eval, json.loads):
            try:
                return parse(value)
            except (ValueError, SyntaxError):
                continue
        return value

    def plain(v) -> bool:
        return v is None or isinstance(v, (int, float, bool, str))

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option {item!r}: expected KEY=VALUE")
        parsed = literal(value)
        if isinstance(parsed, (list, tuple)) and all(plain(v) for v in parsed):
            parsed = list(parsed)
        options[key.strip()] = parsed if plain(parsed) or isinstance(parsed, list) else value
    return options


def _load_model(args, refine_options, hd_strategy):
    import jaxinpaint
    from jaxinpaint.io import checkpoint

    if args.step is not None and not checkpoint.is_training_workdir(args.model):
        raise UsageError(f"--step applies to training workdirs only; {args.model} is not one")
    try:
        return jaxinpaint.load(args.model, step=args.step, ema=not args.no_ema, modulo=args.pad_to,
                               refine=args.refine, hd_strategy=hd_strategy, size_bucket=args.size_bucket,
                               max_programs=args.max_programs, progress=None if args.progress == "none"
                               else args.progress, **refine_options)
    except Exception as e:  # every loader failure means "this is not a usable model": report why
        raise UsageError(f"--model={args.model} is not a model jaxinpaint can load: "
                         f"{type(e).__name__}: {e}") from e


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns the exit status (0 all inpainted, 1 some failed, 2 usage error)."""
    parser = _parser()
    args = parser.parse_args(argv)  # exits with status 2 on unknown or malformed flags
    common.setup_logging(args.verbose)  # ours (refinement objectives) at INFO; JAX's and orbax's stay quiet
    from jaxinpaint import inference

    try:
        if args.batch_size < 1:
            raise UsageError(f"--batch_size must be >= 1, got {args.batch_size}")
        if args.pad_to is not None and args.pad_to < 1:
            raise UsageError(f"--pad_to must be >= 1, got {args.pad_to}")
        try:
            hd_strategy = inference.HDStrategy(args.hd_strategy, crop_trigger=args.hd_crop_trigger,
                                               crop_margin=args.hd_crop_margin, resize_limit=args.hd_resize_limit)
        except inference.InputError as e:
            raise UsageError(str(e).replace("hd_strategy: ", "--hd_")) from e
        if args.size_bucket < 0 or args.max_programs < 0:
            raise UsageError("--size_bucket and --max_programs must be >= 0")
        if args.max_pixels is not None:
            if args.max_pixels < 1:
                raise UsageError(f"--max_pixels must be >= 1, got {args.max_pixels}")
            photos.set_max_pixels(args.max_pixels)
        refine_options = {}
        if args.refine:  # validated before the (slow) model loading
            from jaxinpaint.systems.lama.refine import RefineConfig

            refine_options = dict(n_iters=args.refine_n_iters, lr=args.refine_lr, min_side=args.refine_min_side,
                                  max_scales=args.refine_max_scales, px_budget=args.refine_px_budget)
            try:
                RefineConfig(**refine_options)
            except ValueError as e:
                raise UsageError(str(e)) from e
        from jaxinpaint import systems

        options = parse_options(args.option)
        if options and (args.refine or args.model not in systems.names("solver") or os.path.exists(args.model)):
            raise UsageError("--option applies to per-image methods (--model=NAME with NAME one of "
                             f"{', '.join(systems.names('solver'))}); --refine has its own --refine_* flags")
        refine_options.update(options)
        if args.model in systems.names("solver") and not os.path.exists(args.model):
            refine_options["seed"] = args.seed
        if not os.path.exists(args.model) and args.model not in systems.names("solver"):
            raise UsageError(f"--model={args.model}: no such file or directory, and not a per-image method "
                             f"({', '.join(systems.names('solver'))}); give a training workdir, a directory written "
                             "by `jaxinpaint convert`, or an original weight file")
        jobs = _jobs_from_args(args)
        existing = [job for job in jobs if os.path.exists(job.output)]
        if args.skip_existing:
            jobs = [job for job in jobs if not os.path.exists(job.output)]
        inpainter = _load_model(args, refine_options, hd_strategy) if jobs else None
    except UsageError as e:
        return common.fail(parser.prog, e)
    if args.skip_existing and existing:
        print(f"Skipping {len(existing)} image(s) whose output exists (--skip_existing).", flush=True)
    t0 = time.perf_counter()
    failures = run_jobs(jobs, inpainter, batch_size=args.batch_size) if jobs else []
    n_ok = len(jobs) - len(failures)
    overwritten = "" if args.skip_existing or not existing else (
        f" ({len(existing)} existing output(s) overwritten; --skip_existing keeps them)")
    print(f"Inpainted {n_ok} of {len(jobs)} image(s) in {time.perf_counter() - t0:.1f} s{overwritten}"
          + (f"; {len(failures)} failed:" if failures else "."), flush=True)
    for label, reason in failures:
        print(f"  {label}: {reason}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
