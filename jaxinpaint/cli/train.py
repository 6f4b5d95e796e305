"""``jaxinpaint train`` / ``python train.py``: train a system with a config.

    python train.py --config=configs/big_lama.py --workdir=workdirs/big_lama
    jaxinpaint train --config=big_lama:smoke --workdir=/tmp/smoke          # a bundled config by name
    python train.py --config=configs/pconv_unet.py:finetune,smoke --workdir=W --config.input.batch_size=4

``--config`` is a config file (``path.py[:variants]``) or the name of a bundled one; ``--config.a.b=value``
overrides any field of the locked config. Rerunning the same command on an existing workdir resumes from its
latest checkpoint; a finished run says so and changes nothing; a workdir of a different model is refused.

Multi-host (TPU pods, several GPU hosts): run the same command on every host. On Cloud TPU ``--multihost``
lets ``jax.distributed.initialize()`` discover the slice by itself; elsewhere also pass
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.

User mistakes (a missing config, an unknown field, a bad value, a workdir of another model, missing weight
files or data) are reported as one ``error:`` line with exit status 2; nothing in the workdir is touched.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

PROG = "jaxinpaint train"


def _flag_values(argv: list[str]) -> flags.FlagValues:
    """A fresh flag set for this command line (``argv`` without the program name)."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file or bundled config name, [:variant[,variant]]",
                                    flag_values=fv, lock_config=True, sys_argv=[PROG, *argv])
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics.jsonl, TensorBoard events and sample "
                        "grids; an existing workdir is resumed", flag_values=fv)
    flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() (auto-detected on Cloud TPU)",
                      flag_values=fv)
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host)", flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "number of processes (multi-host)", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "index of this process (multi-host)", flag_values=fv)
    flags.DEFINE_bool("verbose", False, "also show the INFO logs of JAX, orbax and absl (backend probing, checkpoint "
                      "internals)", flag_values=fv)
    return fv


def _resolve_config_arg(argv: list[str]) -> list[str]:
    """``--config=NAME[:variant]`` of a bundled config -> its path (works from any directory)."""
    from jaxinpaint import config_lib

    out = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            arg = "--config=" + config_lib.resolve(arg[len("--config="):])
        elif arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = config_lib.resolve(argv[i + 1])
        out.append(arg)
    return out


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv):
        fv = _flag_values([])
        print(__doc__.strip() + "\n\nflags:")
        for name in ("config", "workdir", "multihost", "coordinator_address", "num_processes", "process_id",
                     "verbose"):
            flag = fv[name]
            print(f"  --{name}: {flag.help} (default: {flag.default!r})")
        print("  --config.<field>=<value>: override any field of the config")
        return 0
    try:
        argv = _resolve_config_arg(argv)
        fv = _flag_values(argv)
        rest = fv([PROG, *argv])
    except FileNotFoundError as e:
        return _error(str(e))
    except flags.Error as e:
        return _error(str(e).splitlines()[0])
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # an unknown field or a bad value in overrides
        return _error(f"--config: {' '.join(str(e).replace(chr(92) + 'n', ' ').strip(chr(39) + chr(34)).split())}")
    if len(rest) > 1:
        return _error(f"unexpected arguments: {rest[1:]}")
    if fv["config"].value is None:
        return _error("--config is required (a config file such as configs/big_lama.py, or a bundled name)")
    if not fv["workdir"].value:
        return _error("--workdir is required")

    from jaxinpaint.cli import common

    # Before JAX starts its backends: their probing logs "Failed to open libtpu.so" at INFO on CPU machines.
    common.setup_logging(fv["verbose"].value, stream=sys.stdout, fmt="%(asctime)s %(message)s")
    import jax

    if fv["multihost"].value or fv["coordinator_address"].value:
        # Cross-process collectives on CPU hosts need gloo; GPU/TPU backends ignore this setting.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=fv["coordinator_address"].value,
                                   num_processes=fv["num_processes"].value, process_id=fv["process_id"].value)
    if jax.process_count() > 1:  # say which host a line comes from
        common.setup_logging(fv["verbose"].value, stream=sys.stdout,
                             fmt=f"%(asctime)s [p{jax.process_index()}] %(message)s")
    from jaxinpaint import systems
    from jaxinpaint.data import EmptyDatasetError
    from jaxinpaint.io.tree import TreeMismatchError
    from jaxinpaint.train import trainer

    try:
        trainer.train_and_evaluate(fv["config"].value, os.path.expanduser(fv["workdir"].value))
    except trainer.NonFiniteLossError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except (trainer.WorkdirMismatchError, TreeMismatchError, EmptyDatasetError, systems.UnknownNameError,
            FileNotFoundError, NotADirectoryError, KeyError, ValueError) as e:
        return _error(str(e).strip("'\""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
