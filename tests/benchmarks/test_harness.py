"""The parts of the benchmark harness that decide what a figure means: the progress line,
the order of the rounds, the heap held steady, the targets that need worker threads."""

from __future__ import annotations

import functools
import io
import platform

import pytest

from benchmarks import _cases
from benchmarks._contenders import workers_supported
from benchmarks._machine import steady_heap
from benchmarks._progress import Progress, clock
from benchmarks._recorder import Recorder, timing_fields
from benchmarks._timing import Contender, Stats, run_rounds


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_case_elapsed_and_estimate_on_a_terminal():
    screen = Terminal()
    progress = Progress(screen, ["one", "two", "three"], {"one": 10, "two": 20, "three": 30})
    progress.start_case("two")
    progress.step("encrypt 64 MiB")
    line = screen.getvalue().split("\r")[-1]
    assert line.startswith("[2/3] two: encrypt 64 MiB | ")
    assert "elapsed, about" in line
    assert line.rstrip().endswith("left")
    progress.note("  skipped: a peer")
    assert "  skipped: a peer\n" in screen.getvalue()
    progress.finish()
    assert screen.getvalue().endswith("\r")


def test_progress_is_silent_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(stream, ["one"], {"one": 1})
    progress.start_case("one")
    progress.step("anything")
    progress.note("a note")
    progress.finish()
    assert stream.getvalue() == ""
    assert not progress.active


def test_estimate_scales_with_how_the_finished_cases_went():
    progress = Progress(None, ["a", "b", "c"], {"a": 10, "b": 20})
    # "c" has no expectation: it is assumed to be like the average of the others.
    assert progress.remaining() == pytest.approx(10 + 20 + 15)
    progress.end_case("a", 30)  # three times slower than expected
    assert progress.remaining() == pytest.approx(3 * (20 + 15))


def test_clock():
    assert clock(0) == "0:00"
    assert clock(61.4) == "1:01"
    assert clock(3 * 3600 + 5) == "3:00:05"


def test_rounds_turn_around():
    order: list[str] = []
    contenders = [Contender(name, functools.partial(order.append, name)) for name in "abc"]
    run_rounds(contenders, rounds=4, min_sample_s=0.0, warmup=False)
    # One calibration call each, then four rounds of one call each.
    assert order[3:] == list("abccbaabccba")


def test_a_contender_is_reported_at_its_best_round():
    timing = timing_fields(Stats((3.0, 1.0, 2.0, 4.0)), 100)
    assert timing["best_s"] == 1.0
    assert timing["bytes_per_s"] == 100.0
    assert timing["bytes_per_s_median"] == 100 / 2.5
    assert timing["bytes_per_s_min"] == 25.0


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_steady_heap_reports_what_it_set():
    facts = steady_heap()
    assert facts["applied"] is True
    assert facts["mmap_threshold"] == 32 * 1024 * 1024
    assert facts["trim_threshold"] >= facts["mmap_threshold"]


def test_workers_are_detected_from_the_signature():
    class Pool:
        def __init__(self, layers: object, *, workers: int | None = None) -> None:
            pass

    class Single:
        def __init__(self, layers: object, *, frame_size: int = 65536) -> None:
            pass

    assert workers_supported(Pool)
    assert not workers_supported(Single)


def _stats(median_ratio: float) -> dict[str, Stats]:
    """Every one-shot contender, with the envelope ones ``median_ratio`` times as fast."""
    base = (1.0, 1.1, 0.9)
    stats = {label: Stats(base) for label in _cases.LABELS}
    for label in (_cases.ENVELOPE, _cases.ENVELOPE_INTO):
        stats[label] = Stats(tuple(s / median_ratio for s in base))
    return stats


@pytest.mark.parametrize("workers", [False, True])
def test_worker_targets_are_measured_only_with_workers(workers):
    recorder = Recorder()
    size = 64 * 1024 * 1024
    _cases._one_shot_ratios(recorder, _stats(4.0), "encrypt", size, workers)
    pooled = [t for t in recorder.targets if "default workers" in t["name"]]
    assert len(pooled) == 3
    for target in pooled:
        if workers:
            assert target["value"] == pytest.approx(4.0)
            assert target["met"] is True
        else:
            assert target["value"] is None
            assert target["met"] is None
            assert target["reason"] == "Envelope has no workers parameter"
    # The ratios themselves are recorded either way.
    assert any(
        r["numerator"] == _cases.ENVELOPE_INTO and r["denominator"] == _cases.CEILING
        for r in recorder.ratios
    )
