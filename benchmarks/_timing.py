"""Timing: calibrated batches, a warm-up, contenders measured in interleaved rounds.

Contenders of one comparison run round-robin rather than one after the other, so that a burst
of load from another process hits all of them alike. The order turns around every round
(A, B, C, then C, B, A, ...), so that a slow drift of the machine's speed favours no position
in the round. A ratio is taken round by round (A's round-k time against B's round-k time) and
summarised by its median.

A contender's own figure is its *best* round. This machine (a VM) runs in speed phases: the
same loop, alone, runs about 1.8 times faster in some stretches of milliseconds to seconds
than in others, and every contender alike (a reference loop swings with it). The median of
the rounds says which phase the run mostly fell into; the best round says what the code does
when the machine lets it, which is what a direct timing loop reports. The median and the
spread are kept next to it.

The garbage collector is paused while a sample runs, as ``timeit`` does.
"""

from __future__ import annotations

import gc
import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Contender", "Stats", "quartiles", "run_rounds", "summarize"]


@dataclass(frozen=True)
class Contender:
    """One thing to time: ``call`` performs one operation on ``size`` bytes."""

    name: str
    call: Callable[[], object]


def quartiles(samples: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (both the sample itself when there is one)."""
    if len(samples) < 2:
        return samples[0], samples[0]
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return q[0], q[2]


@dataclass(frozen=True)
class Stats:
    """Seconds per operation over the measured rounds."""

    samples: tuple[float, ...]

    @property
    def best(self) -> float:
        """The fastest round: the figure a contender is reported at."""
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def minimum(self) -> float:
        return min(self.samples)

    @property
    def maximum(self) -> float:
        return max(self.samples)

    @property
    def quartiles(self) -> tuple[float, float]:
        return quartiles(self.samples)

    def as_dict(self) -> dict[str, object]:
        q1, q3 = self.quartiles
        return {
            "best_s": self.best,
            "median_s": self.median,
            "min_s": self.minimum,
            "max_s": self.maximum,
            "q1_s": q1,
            "q3_s": q3,
            "rounds": len(self.samples),
            "samples_s": list(self.samples),
        }


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a list of ratios or rates."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
    }


def _timed(call: Callable[[], object], repeat: int) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        # itertools.repeat, as timeit uses: no int object per iteration.
        loop = itertools.repeat(None, repeat)
        start = time.perf_counter()
        for _ in loop:
            call()
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def run_rounds(
    contenders: Sequence[Contender],
    *,
    rounds: int,
    min_sample_s: float,
    warmup: bool = True,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, Stats]:
    """Time each contender ``rounds`` times, interleaved. One sample is a batch of calls
    long enough (``min_sample_s``) for the clock to be accurate; its time is divided by the
    batch length. The warm-up call doubles as the calibration of the batch length.
    ``on_round`` is called with the number of rounds done (for progress reports)."""
    batch: dict[str, int] = {}
    for contender in contenders:
        first = _timed(contender.call, 1)
        if warmup:
            # A first call pays for imports, lazy tables and the first page faults.
            first = _timed(contender.call, 1)
        batch[contender.name] = max(1, math.ceil(min_sample_s / max(first, 1e-9)))
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    gc.collect()
    for index in range(rounds):
        order = contenders if index % 2 == 0 else contenders[::-1]
        for contender in order:
            repeat = batch[contender.name]
            samples[contender.name].append(_timed(contender.call, repeat) / repeat)
        if on_round is not None:
            on_round(index + 1)
    return {name: Stats(tuple(values)) for name, values in samples.items()}
