"""How long work reports its progress: a ``progress(stage, done, total)`` callable the caller may pass (the CLI draws
it on stderr; the library itself never prints), and :class:`ProgressLines`, a callback that turns those calls into
plain text lines at a steady cadence for logs that are not a terminal (CI, nohup, pipes), handing each line to a
``write`` function the caller supplies.

Where the library reports: ``load <spec>`` (reading each data source), ``encode <spec>`` (after every batch of the
forward pass), ``metrics <task>`` and ``probes <task>`` (per pooling and layer), ``checkpoints`` (per checkpoint of a
trajectory) and ``compare`` (per matched task, pooling and layer).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

#: ``progress(stage, done, total)``: called as work proceeds; ``done == total`` closes a stage.
Progress = Callable[[str, int, int], None]

#: Seconds between two lines of one stage in :class:`ProgressLines` unless EMBEDGEOM_PROGRESS_INTERVAL says otherwise.
DEFAULT_INTERVAL = 10.0
#: The environment variable that sets the interval (seconds, > 0), e.g. ``EMBEDGEOM_PROGRESS_INTERVAL=30``.
INTERVAL_ENV = "EMBEDGEOM_PROGRESS_INTERVAL"


def emit(progress: Progress | None, stage: str, done: int, total: int) -> None:
    """Report ``done`` of ``total`` for ``stage`` when a callback was given."""
    if progress is not None:
        progress(stage, done, total)


def check_interval(value: object, option: str = "interval") -> float:
    """A finite number of seconds > 0 (a decimal string as the environment holds it is read as one)."""
    raw = value
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = raw
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{option}: expected a number of seconds > 0, got {raw!r}. Set e.g. {INTERVAL_ENV}=10.")
    return float(value)


def progress_interval() -> float:
    """The line interval in seconds: EMBEDGEOM_PROGRESS_INTERVAL when set (a number > 0; anything else raises one
    ValueError naming the variable), else :data:`DEFAULT_INTERVAL` (10 s)."""
    raw = os.environ.get(INTERVAL_ENV)
    return DEFAULT_INTERVAL if raw is None or not raw.strip() else check_interval(raw, INTERVAL_ENV)


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _rate(done: int, seconds: float) -> str:
    """``12.5/s``, or ``30.0 s each`` when under one per second."""
    return f"{done / seconds:.1f}/s" if done >= seconds else f"{seconds / done:.1f} s each"


@dataclass
class _Stage:
    started: float
    last_line: float
    done: int = 0
    finished: bool = False


class ProgressLines:
    """A ``progress(stage, done, total)`` callback that writes plain lines through ``write`` (one line per call,
    no newline): one when a stage starts, then at most one every ``interval`` seconds while it advances (done/total,
    percent, rate, ETA), and one when it ends (``done >= total``) with its duration. Never one line per call: a
    stage reporting every batch writes a line only when ``interval`` seconds have passed since its last one, so the
    log is silent for at most ``interval`` seconds while work advances and never floods. ``clock`` (default
    ``time.monotonic``) is injectable for tests; ``interval`` defaults to :func:`progress_interval`."""

    def __init__(self, write: Callable[[str], None], *, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not callable(write):
            raise ValueError(f"write: expected a callable taking one line of text, got {write!r}.")
        self.interval = progress_interval() if interval is None else check_interval(interval)
        self._write = write
        self._clock = clock
        self._stages: dict[str, _Stage] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self._clock()
        st = self._stages.get(stage)
        if st is None or (st.finished and done < total):  # a new stage, or a finished one starting again
            st = self._stages[stage] = _Stage(started=now, last_line=now)
            self._write(f"{stage}: started ({done}/{total})")
        elif st.finished:
            return
        st.done = done
        if done >= total:
            st.finished = True
            elapsed = now - st.started
            rate = f" ({_rate(total, elapsed)})" if elapsed > 0 and total > 1 else ""
            self._write(f"{stage}: {total} done in {elapsed:.1f} s{rate}")
        elif now - st.last_line >= self.interval:
            st.last_line = now
            self._write(self._line(stage, st, done, total, now))

    @staticmethod
    def _line(stage: str, st: _Stage, done: int, total: int, now: float) -> str:
        elapsed = now - st.started
        pct = 100.0 * done / total if total > 0 else 0.0
        line = f"{stage}: {done}/{total} ({pct:.0f}%), {_duration(elapsed)} elapsed"
        if done > 0 and elapsed > 0:
            line += f", {_rate(done, elapsed)}, ETA {_duration((total - done) * elapsed / done)}"
        return line
