"""Timing: calibrated batches, a warm-up, contenders measured in interleaved rounds.

Contenders of one comparison run round-robin (A, B, C, A, B, C, ...) rather than one after
the other, so a burst of load from another process hits all of them alike; a ratio is then
taken round by round (A's round-k time against B's round-k time) and summarised by its
median. The garbage collector is paused while a sample runs, as ``timeit`` does.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Contender", "Stats", "run_rounds", "summarize"]


@dataclass(frozen=True)
class Contender:
    """One thing to time: ``call`` performs one operation on ``size`` bytes."""

    name: str
    call: Callable[[], object]


@dataclass(frozen=True)
class Stats:
    """Seconds per operation over the measured rounds."""

    samples: tuple[float, ...]

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
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[0], q[2]

    def as_dict(self) -> dict[str, object]:
        q1, q3 = self.quartiles
        return {
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
        start = time.perf_counter()
        for _ in range(repeat):
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
) -> dict[str, Stats]:
    """Time each contender ``rounds`` times, interleaved. One sample is a batch of calls
    long enough (``min_sample_s``) for the clock to be accurate; its time is divided by the
    batch length. The warm-up call doubles as the calibration of the batch length."""
    batch: dict[str, int] = {}
    for contender in contenders:
        first = _timed(contender.call, 1)
        if warmup:
            # A first call pays for imports, lazy tables and the first page faults.
            first = _timed(contender.call, 1)
        batch[contender.name] = max(1, math.ceil(min_sample_s / max(first, 1e-9)))
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    gc.collect()
    for _ in range(rounds):
        for contender in contenders:
            repeat = batch[contender.name]
            samples[contender.name].append(_timed(contender.call, repeat) / repeat)
    return {name: Stats(tuple(values)) for name, values in samples.items()}
