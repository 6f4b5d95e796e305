"""What every command shares: one ``error:`` line with exit status 2 for user mistakes, help text with the
default of every flag, and quiet logging.

Logging: jaxinpaint's own loggers (``jaxinpaint.*``) report at INFO; everything else (JAX's backend probing,
which logs "Unable to initialize backend 'tpu': ... Failed to open libtpu.so" at INFO on every CPU machine;
orbax's and absl's checkpoint internals) only shows warnings, unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn, TextIO


class UsageError(Exception):
    """A user mistake (a bad flag value, a missing file): one ``error:`` line, exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the help already says its default or it has none (None)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default in ([], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with defaults shown in ``--help`` and bad flags reported on one line (no usage block)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="also show the INFO logs of JAX, orbax and absl (backend probing, checkpoint internals)")


def setup_logging(verbose: bool = False, *, stream: TextIO | None = None, fmt: str = "%(message)s") -> None:
    """Root logger at WARNING (INFO with ``verbose``), ``jaxinpaint.*`` at INFO, one handler on ``stream``."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=fmt,
                        stream=stream or sys.stderr, force=True)
    logging.getLogger("jaxinpaint").setLevel(logging.INFO)
    try:  # absl (orbax's logger) keeps its own verbosity; without this its INFO lines pass the root filter
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    except ImportError:
        pass
    logging.getLogger("absl").setLevel(logging.INFO if verbose else logging.WARNING)


def fail(prog: str, message: object) -> int:
    """Prints ``prog: error: message`` on one line and returns 2."""
    text = " ".join(str(message).strip().strip("'\"").split())
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2
