"""``python -m benchmarks --compare``: two synthetic results files whose rounds are built so
that the verdict follows from the numbers: a change beyond the spread of both runs' rounds is
faster or SLOWER, the same change within a wider spread is not."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks._compare import FASTER, SAME, SLOWER, TOO_FEW, compare, verdict
from benchmarks._timing import quartiles

ROOT = Path(__file__).resolve().parents[2]
KiB = 1024
MiB = 1024 * KiB


def _rounds(rng: random.Random, centre: float, spread: float, count: int = 9) -> list[float]:
    """``count`` values spread evenly over centre * (1 +- spread), shuffled."""
    values = [centre * (1 + spread * (2 * i / (count - 1) - 1)) for i in range(count)]
    rng.shuffle(values)
    return values


def _iqr_ratio(values: list[float]) -> float:
    """q3 / q1: the factor by which a change must exceed the middle half of the rounds."""
    q1, q3 = quartiles(sorted(values))
    return q3 / q1


def _result(group: str, op: str, size: int, impl: str, seconds: list[float]) -> dict[str, Any]:
    return {"group": group, "op": op, "size": size, "impl": impl, "samples_s": seconds}


def _ratio(name: str, rounds: list[float]) -> dict[str, Any]:
    return {"name": name, "status": "ok", "rounds": sorted(rounds), "median": 0.0}


def _document(
    results: list[dict[str, Any]], ratios: list[dict[str, Any]], targets: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "schema": 2,
        "kind": "full",
        "started_at": "2026-11-29T12:00:00+00:00",
        "load": {"busy": False},
        "results": results,
        "ratios": ratios,
        "targets": targets,
    }


def _pair(seed: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """An old and a new document, and the verdict each of their cases must get."""
    rng = random.Random(seed)
    expected: dict[str, str] = {}
    old_results: list[dict[str, Any]] = []
    new_results: list[dict[str, Any]] = []
    old_ratios: list[dict[str, Any]] = []
    new_ratios: list[dict[str, Any]] = []

    # Seconds per operation: a faster case takes fewer seconds. Each factor is set against
    # the spread of the old rounds, so the verdict follows from the numbers, not from a
    # threshold written here.
    base = _rounds(rng, 1e-4, 0.05)
    beyond = _iqr_ratio([1 / s for s in base]) * 1.05
    within = _iqr_ratio([1 / s for s in base]) ** 0.5
    cases = {
        "faster": ([s / beyond for s in base], FASTER),
        "slower": ([s * beyond for s in base], SLOWER),
        "noise": ([s / within for s in base], SAME),
    }
    for impl, (seconds, outcome) in cases.items():
        old_results.append(_result("one-shot", "encrypt", KiB, impl, base))
        new_results.append(_result("one-shot", "encrypt", KiB, impl, rng.sample(seconds, 9)))
        expected[f"one-shot: encrypt 1 KiB, {impl}"] = outcome

    # The same 20% gain: beyond a tight spread it is faster, within a wide one it is noise.
    tight = _rounds(rng, 0.01, 0.02)
    wide = _rounds(rng, 0.01, 0.40)
    for impl, seconds, outcome in (("tight", tight, FASTER), ("wide", wide, SAME)):
        gained = [s / 1.2 for s in seconds]
        old_results.append(_result("stream", "encrypt_file", 64 * MiB, impl, seconds))
        new_results.append(_result("stream", "encrypt_file", 64 * MiB, impl, gained))
        expected[f"stream: encrypt_file 64 MiB, {impl}"] = outcome

    # Two rounds have no spread to judge by, whatever the change.
    old_results.append(_result("stream", "copy_file", MiB, "copy", [1.0, 1.1]))
    new_results.append(_result("stream", "copy_file", MiB, "copy", [5.0, 5.5]))
    expected["stream: copy_file 1 MiB, copy"] = TOO_FEW

    # Ratios: higher is better for the numerator.
    ratio = _rounds(rng, 0.8, 0.05)
    ratio_beyond = _iqr_ratio(ratio) * 1.05
    old_ratios += [_ratio("up", ratio), _ratio("down", ratio), _ratio("flat", ratio)]
    new_ratios += [
        _ratio("up", [r * ratio_beyond for r in ratio]),
        _ratio("down", [r / ratio_beyond for r in ratio]),
        _ratio("flat", list(reversed(ratio))),
    ]
    expected.update(up=FASTER, down=SLOWER, flat=SAME)

    old_results.append(_result("layers", "encrypt", KiB, "gone", base))
    new_results.append(_result("layers", "encrypt", KiB, "new", base))
    targets_old = [{"name": "a target", "met": True}, {"name": "steady", "met": True}]
    targets_new = [{"name": "a target", "met": False}, {"name": "steady", "met": True}]
    old = _document(old_results, old_ratios, targets_old)
    new = _document(new_results, new_ratios, targets_new)
    return old, new, expected


@pytest.mark.parametrize("seed", range(5))
def test_verdicts_follow_the_spread_of_both_runs(seed):
    old, new, expected = _pair(seed)
    comparison = compare(old, new)
    got = {change.name: change.verdict for change in comparison.changes}
    assert got == expected
    assert comparison.targets == (("a target", "met", "BELOW"),)
    assert comparison.only_old == ("layers: encrypt 1 KiB, gone",)
    assert comparison.only_new == ("layers: encrypt 1 KiB, new",)
    counts = comparison.counts()
    assert sum(counts.values()) == len(expected)
    assert counts[SLOWER] == list(expected.values()).count(SLOWER)


def test_change_is_of_the_median_rounds():
    old, new, _ = _pair(0)
    for change in compare(old, new).changes:
        if change.kind != "ratio":
            continue
        before = next(r for r in old["ratios"] if r["name"] == change.name)["rounds"]
        after = next(r for r in new["ratios"] if r["name"] == change.name)["rounds"]
        assert change.change == pytest.approx(
            statistics.median(after) / statistics.median(before) - 1
        )


def test_verdict_is_symmetric():
    rng = random.Random(7)
    for _ in range(200):
        old = [rng.uniform(0.5, 1.5) for _ in range(rng.randint(3, 12))]
        new = [rng.uniform(0.5, 2.5) for _ in range(rng.randint(3, 12))]
        forward, backward = verdict(old, new), verdict(new, old)
        swapped = {FASTER: SLOWER, SLOWER: FASTER, SAME: SAME}
        assert backward == swapped[forward]


def _compare_files(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--compare", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_command_line_compares_two_files_and_puts_regressions_first(tmp_path):
    old, new, expected = _pair(1)
    old_path, new_path = tmp_path / "old.json", tmp_path / "new.json"
    old_path.write_text(json.dumps(old), encoding="utf-8")
    new_path.write_text(json.dumps(new), encoding="utf-8")
    completed = _compare_files(old_path, new_path)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    slower = sum(1 for v in expected.values() if v == SLOWER)
    faster = sum(1 for v in expected.values() if v == FASTER)
    assert f"{slower} SLOWER, {faster} faster" in completed.stdout
    for name, outcome in expected.items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert row.rstrip().endswith(outcome), row
    # Within each table, the regressions come first.
    for section in ("Ratios", "Figures"):
        start = next(i for i, line in enumerate(lines) if line.startswith(section))
        rows = []
        for line in lines[start + 3 :]:
            if not line.strip():
                break
            rows.append(line)
        verdicts = [SLOWER if row.rstrip().endswith(SLOWER) else "other" for row in rows]
        assert verdicts == sorted(verdicts, key=lambda v: v != SLOWER)
    assert "a target" in completed.stdout
    assert not (tmp_path / "latest.json").exists()


def test_command_line_refuses_a_file_that_is_not_results(tmp_path):
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}', encoding="utf-8")
    completed = _compare_files(bogus, bogus)
    assert completed.returncode != 0
    assert "not a benchmark results file" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("count", [3, 5, 7])
def test_few_rounds_are_judged_on_all_of_them(count):
    rng = random.Random(count)
    old = _rounds(rng, 100.0, 0.2, count)
    whole = max(old) / min(old)
    middle = _iqr_ratio(old)
    assert middle < whole
    # Beyond the middle half but not beyond every round: not enough with so few rounds.
    between = (middle * whole) ** 0.5
    assert verdict(old, [v * between for v in old]) == SAME
    assert verdict(old, [v * whole * 1.01 for v in old]) == FASTER
    assert verdict(old, [v / whole / 1.01 for v in old]) == SLOWER
