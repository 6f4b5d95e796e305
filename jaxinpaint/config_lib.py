"""Experiment configs: the shared defaults, the ``:variant`` parser, and finding config files by name.

Configs are code (big_vision's convention): ``configs/<name>.py::get_config(arg)`` returns a ConfigDict, ``arg``
being the text after the colon in ``--config=configs/<name>.py:<arg>`` (e.g. ``smoke``, or several variants
separated by commas). Every field has a typed default (optional strings are ``placeholder(str)``) so that
``--config.a.b=value`` overrides work on the locked config.

The ``configs/`` directory ships with the package (an installed wheel holds it as ``jaxinpaint.configs``), so
commands work from any directory: :func:`resolve` turns ``big_lama:smoke`` into the path of the bundled file
when no such file exists relative to the current directory, and :func:`load_module` lets one config build on
another (``lama_fourier`` on ``big_lama``) without ``configs`` being importable as a package.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import ml_collections
from ml_collections import config_dict

from jaxinpaint.data import pipeline as data_pipeline
from jaxinpaint.train import optim


def base_config() -> ml_collections.ConfigDict:
    """Defaults every experiment starts from (the trainer's own settings; systems add their sections)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.system = ""  # jaxinpaint.systems registry name, e.g. 'lama'
    c.input = data_pipeline.default_input_config()
    c.losses = ml_collections.ConfigDict()
    # What inference needs besides the networks (travels with exported and converted models).
    c.inference = ml_collections.ConfigDict()

    # BatchNorm statistics groups: 1 = global batch (synchronised BN), 0 = one group per device (LaMa's DDP).
    c.bn_groups = 1
    c.mixed_precision = False  # bf16 activations/matmuls; params, FFTs and losses stay float32
    # Convolutions: 'auto' = measured CPU formulations on CPU, the platform's own on GPU/TPU; 'lax'; 'cpu'.
    c.conv_impl = "auto"
    c.ema = ml_collections.ConfigDict({"decay": 0.0, "start_step": 0, "every": 1})  # decay 0 = off

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
    c.fsdp_min_size = 2**18  # arrays at least this large are split over the 'fsdp' mesh axis

    # Start from other weights: training workdirs, converted directories or the original authors' files,
    # separated by commas; every network found there under its name is loaded (fine-tuning, stages).
    c.init_from = config_dict.placeholder(str)

    c.total_steps = 1_000_000
    c.log_every_steps = 250
    c.log_every_secs = 60.0
    c.ckpt_every_steps = 5000
    c.keep_ckpts = 3
    c.image_every_steps = 1000
    # Held-out evaluation (PSNR/SSIM/L1 of the composite on fixed images and masks); 0 = off.
    c.eval_every_steps = 0
    c.eval_num_examples = 2000  # LaMa validates on 2,000 images
    # LPIPS-VGG and FID during evaluation when these local weight files are given (see README: Evaluation).
    c.eval_lpips_weights = config_dict.placeholder(str)
    c.eval_fid_weights = config_dict.placeholder(str)
    c.best_metric = "eval/ssim"  # also keep the best checkpoints by this metric ('' = only the latest ones)
    c.best_mode = "max"
    c.keep_best = 1
    return c


optimizer = optim.optimizer_config


def parse_variants(arg, allowed) -> set[str]:
    """The comma-separated variants after the colon, each checked (a clear error for unknown ones)."""
    parts = {p.strip() for p in (arg or "").split(",") if p.strip()}
    unknown = sorted(parts - set(allowed))
    if unknown:
        raise ValueError(f"unknown config variant(s) {unknown}; expected some of {sorted(allowed)} "
                         "(comma-separated)")
    return parts


def use_nvidia_masks(c) -> None:
    """NVIDIA's irregular mask dataset (PConv's and CTSDG's ``:nvidia_masks``): masks read from a folder the user
    names (``--config.input.mask.kwargs.root=...``), white = valid in those files (hence ``invert``); evaluation
    draws from the same folder."""
    c.input.mask.name = "folder"
    c.input.mask.kwargs = ml_collections.ConfigDict({
        "root": config_dict.placeholder(str), "threshold": 0.5, "invert": True})
    c.input.eval_mask.name = None  # the same folder as training


def smoke_schedule(c, *, total_steps: int = 60) -> None:
    """The step counts every ``:smoke`` variant shares: a few dozen steps, frequent logs and checkpoints."""
    c.total_steps = total_steps
    c.log_every_steps = 10
    c.log_every_secs = 10.0
    c.ckpt_every_steps = 20
    c.image_every_steps = 20


# ----------------------------------------------------------------------------------------------------------
# Finding config files.
# ----------------------------------------------------------------------------------------------------------


def config_dir() -> pathlib.Path:
    """The bundled configs: ``<repo>/configs`` in a source checkout, ``jaxinpaint/configs`` when installed."""
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "big_lama.py").is_file():
            return candidate
    raise FileNotFoundError(f"jaxinpaint's configs are not installed beside {here} (reinstall the package)")


def names() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.py") if not p.stem.startswith("_"))


def resolve(spec: str) -> str:
    """``path.py[:variant]`` or ``name[:variant]`` -> an existing file path with the same variant suffix.

    A path that exists (relative to the current directory or absolute) wins; otherwise ``configs/<name>.py``
    in the current directory, then the bundled ``<name>.py``.
    """
    path, sep, variant = spec.partition(":")
    candidates = [path]
    stem = pathlib.Path(path).name
    if not stem.endswith(".py"):
        stem += ".py"
    candidates += [os.path.join("configs", stem), str(config_dir() / stem)]
    for c in candidates:
        if os.path.isfile(c):
            return c + sep + variant
    raise FileNotFoundError(f"config {path!r} not found (looked for {', '.join(candidates)}); bundled configs: "
                            f"{', '.join(names())}")


def load_module(name: str, *, near: str | None = None):
    """Imports config ``name`` (a file next to ``near`` first, else the bundled one) as a module object."""
    stem = name if name.endswith(".py") else name + ".py"
    candidates = [stem] if os.path.isfile(stem) else []
    if near:
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(near)), os.path.basename(stem)))
    candidates.append(str(config_dir() / os.path.basename(stem)))
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
        raise FileNotFoundError(f"config module {name!r} not found (looked for {', '.join(candidates)})")
    module_name = f"jaxinpaint_config_{pathlib.Path(path).stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(module_name, module)
    spec.loader.exec_module(module)
    return module


def get_config(spec: str) -> ml_collections.ConfigDict:
    """The ConfigDict of ``name[:variant]`` or ``path.py[:variant]`` (what ``--config=`` would give)."""
    path, _, variant = resolve(spec).partition(":")
    module = load_module(path)
    return module.get_config(variant or None)
