"""Host-side sinks for solver progress (``jaxinpaint.contract.report_progress``): a tqdm bar or log lines.

A per-image solver runs hundreds of iterations inside one jitted ``lax.scan``; the scan body reports every few
iterations through ``jax.debug.callback`` to the sink installed with ``contract.set_progress_sink``. These are
the two sinks ``jaxinpaint predict`` and ``jaxinpaint.load(..., progress=...)`` use:

* :class:`BarProgress`: a tqdm bar on a terminal (``it/s`` and the remaining time are tqdm's own);
* :class:`LogProgress`: a plain line through ``logging`` (``it/s``, ``ETA``) at most every ``interval`` seconds
  and at the end, for logs and CI where carriage-return frames are noise.

The rate is measured from the first report of a solve, so compiling the solver (which happens before the first
iteration runs) does not count against it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping

from jaxinpaint import contract

log = logging.getLogger("jaxinpaint.progress")


def _format_values(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.5g}" for k, v in values.items())


class _Clock:
    """Rate and ETA of one solve from its first report (compilation excluded)."""

    def __init__(self):
        self.t0 = None
        self.done0 = 0

    def rate(self, done: int) -> float | None:
        now = time.perf_counter()
        if self.t0 is None:
            self.t0, self.done0 = now, done
            return None
        elapsed = now - self.t0
        return (done - self.done0) / elapsed if elapsed > 0 and done > self.done0 else None


class LogProgress(contract.ProgressSink):
    """One log line per ``interval`` seconds (and at the end): ``tv: 300/1000 it, 812.4 it/s, ETA 0.9 s, ...``.

    Attributes:
      interval: the least number of seconds between two lines (0: a line per report).
      lines: every line written (kept for tests and for the caller's summary).
    """

    def __init__(self, interval: float = 5.0, logger: logging.Logger | None = None):
        self.interval = float(interval)
        self.logger = logger or log
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._label, self._total, self._clock = "", 0, _Clock()
        self._last_line, self._last_done = 0.0, 0

    def start(self, label: str, total: int) -> None:
        with self._lock:
            self._label, self._total, self._clock = label, int(total), _Clock()
            self._last_line, self._last_done = 0.0, 0

    def update(self, done: int, total: int, values: Mapping[str, float]) -> None:
        with self._lock:
            if done <= self._last_done:  # an unordered late report: progress never goes backwards
                return
            self._last_done = done
            rate = self._clock.rate(done)
            now = time.perf_counter()
            if done < total and now - self._last_line < self.interval:
                return
            self._last_line = now
            text = f"{self._label or 'solver'}: {done}/{total} it"
            if rate:
                text += f", {rate:.1f} it/s, ETA {(total - done) / rate:.1f} s"
            if values:
                text += ", " + _format_values(values)
            self.lines.append(text)
            self.logger.info("%s", text)

    def finish(self) -> None:
        pass


class BarProgress(contract.ProgressSink):
    """A tqdm bar per solve, on stderr (``it/s`` and remaining time are tqdm's), the values as its postfix."""

    def __init__(self, file=None, leave: bool = False):
        self.file = file or sys.stderr
        self.leave = leave
        self._bar = None
        self._lock = threading.Lock()

    def start(self, label: str, total: int) -> None:
        from tqdm import tqdm

        with self._lock:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=int(total) or None, desc=label, unit="it", file=self.file, leave=self.leave,
                             dynamic_ncols=True)

    def update(self, done: int, total: int, values: Mapping[str, float]) -> None:
        with self._lock:
            if self._bar is None:
                return
            if total and self._bar.total != total:
                self._bar.total = total
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
            if values:
                self._bar.set_postfix_str(_format_values(values), refresh=False)

    def finish(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def make_sink(kind) -> contract.ProgressSink | None:
    """A sink from ``kind``: None/False/'none' (silent), 'bar', 'log', True/'auto' (a bar on a terminal outside
    CI, log lines otherwise), or a :class:`jaxinpaint.contract.ProgressSink` (returned as it is)."""
    if kind is None or kind is False or kind == "none":
        return None
    if isinstance(kind, contract.ProgressSink):
        return kind
    if kind is True or kind == "auto":
        import os

        ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
        kind = "bar" if sys.stderr.isatty() and not ci else "log"
    if kind == "bar":
        return BarProgress()
    if kind == "log":
        return LogProgress()
    raise ValueError(f"progress: expected None, 'auto', 'bar', 'log' or a ProgressSink, got {kind!r}")
