"""Progress on a terminal: which case of how many, time elapsed, an estimate of the time
left. Silent when the output is not a terminal (CI logs, pipes, files)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

__all__ = ["Progress", "clock"]

#: Least time between two redraws of the status line, in seconds.
_REDRAW_S = 0.25


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """One status line, redrawn in place::

        [3/7] frame sizes: decrypt 64 MiB | 1:05 elapsed, about 3:40 left

    The estimate starts from ``expected`` (seconds per case: the previous run's, or the
    plan's) and is scaled by how this run's finished cases compare with what was expected
    of them, so a busy machine lengthens it as the run goes.
    """

    def __init__(
        self,
        stream: TextIO | None,
        cases: Sequence[str],
        expected: Mapping[str, float],
        *,
        now: float | None = None,
    ) -> None:
        self._stream = stream if stream is not None and stream.isatty() else None
        self._cases = list(cases)
        known = [expected[name] for name in self._cases if name in expected]
        fallback = sum(known) / len(known) if known else 30.0
        self._expected = {name: expected.get(name, fallback) for name in self._cases}
        self._start = time.monotonic() if now is None else now
        self._done: dict[str, float] = {}
        self._case = ""
        self._case_start = self._start
        self._step = ""
        self._drawn = 0.0
        self._width = 0

    @property
    def active(self) -> bool:
        return self._stream is not None

    def start_case(self, name: str) -> None:
        self._case, self._step = name, ""
        self._case_start = time.monotonic()
        self._draw(force=True)

    def end_case(self, name: str, seconds: float) -> None:
        self._done[name] = seconds

    def step(self, text: str, *, force: bool = True) -> None:
        """What the current case is doing now (a size, an operation, a round); ``force``
        redraws now, else at most a few times a second."""
        # "layers: layers, encrypt 1 KiB" says the case twice.
        self._step = text.removeprefix(f"{self._case}, ")
        self._draw(force=force)

    def note(self, line: str) -> None:
        """A line that stays above the status line (a peer skipped, a case that failed)."""
        if self._stream is None:
            return
        self._clear()
        self._stream.write(line + "\n")
        self._draw(force=True)

    def finish(self) -> None:
        if self._stream is not None:
            self._clear()
            self._stream.flush()

    def remaining(self, now: float | None = None) -> float:
        """Seconds left by the estimate."""
        now = time.monotonic() if now is None else now
        done_expected = sum(self._expected[name] for name in self._done)
        done_actual = sum(self._done.values())
        scale = done_actual / done_expected if done_expected > 0 and done_actual > 0 else 1.0
        left = 0.0
        for name in self._cases:
            if name in self._done:
                continue
            expected = self._expected[name] * scale
            if name == self._case:
                left += max(expected - (now - self._case_start), 0.0)
            else:
                left += expected
        return left

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        index = self._cases.index(self._case) + 1 if self._case in self._cases else 0
        what = f"{self._case}: {self._step}" if self._step else self._case
        return (
            f"[{index}/{len(self._cases)}] {what} | {clock(now - self._start)} elapsed, "
            f"about {clock(self.remaining(now))} left"
        )

    def _draw(self, *, force: bool) -> None:
        if self._stream is None:
            return
        now = time.monotonic()
        if not force and now - self._drawn < _REDRAW_S:
            return
        self._drawn = now
        # A line longer than the terminal would wrap, and "\r" returns to its last row only.
        text = self.line(now)[: shutil.get_terminal_size().columns - 1]
        # Pad over the previous line's tail rather than rely on terminal escapes.
        self._stream.write("\r" + text.ljust(self._width))
        self._width = len(text)
        self._stream.flush()

    def _clear(self) -> None:
        assert self._stream is not None
        self._stream.write("\r" + " " * self._width + "\r")
        self._width = 0
