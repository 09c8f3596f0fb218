"""``--compare OLD.json``: the change of every case against an earlier run, with a verdict
that respects the noise of both runs.

A figure is *faster* when the band of this run's rounds lies wholly above the band of the
old run's rounds, *SLOWER* when it lies wholly below, and *same within noise* when the bands
overlap. The band is the middle half of the rounds (the interquartile range) from eight
rounds up, and all of them (minimum to maximum) with three to seven, where quartiles would
understate the spread. With fewer than three rounds on either side there is no spread to
judge by: *too few rounds*. Ratios are judged the same way on their round-by-round values;
they are the steadier signal on a machine whose speed drifts between runs, since both sides
of a ratio ran in the same rounds.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._recorder import size_label
from ._report import figure, table
from ._timing import quartiles

__all__ = [
    "FASTER",
    "SAME",
    "SLOWER",
    "TOO_FEW",
    "Change",
    "Comparison",
    "band",
    "compare",
    "load",
    "render_comparison",
    "verdict",
]

FASTER = "faster"
SLOWER = "SLOWER"
SAME = "same within noise"
TOO_FEW = "too few rounds"
#: Rounds a side needs before its spread means anything.
MIN_ROUNDS = 3
#: Rounds from which the band is the interquartile range rather than the whole range.
QUARTILE_ROUNDS = 8
MB = 1e6


def verdict(old: Sequence[float], new: Sequence[float]) -> str:
    """Judge ``new`` against ``old``: values per round where higher is better."""
    if len(old) < MIN_ROUNDS or len(new) < MIN_ROUNDS:
        return TOO_FEW
    old_low, old_high = band(old)
    new_low, new_high = band(new)
    if new_low > old_high:
        return FASTER
    if new_high < old_low:
        return SLOWER
    return SAME


def band(values: Sequence[float]) -> tuple[float, float]:
    """The spread of one run's rounds that a change must clear (see the module's doc)."""
    ordered = sorted(values)
    if len(ordered) >= QUARTILE_ROUNDS:
        return quartiles(ordered)
    return ordered[0], ordered[-1]


@dataclass(frozen=True)
class Change:
    """One case or ratio found in both runs."""

    kind: str  # "result" or "ratio"
    name: str
    unit: str  # "ops/s", "MB/s" or "x"
    old: float  # the median round
    new: float
    verdict: str

    @property
    def change(self) -> float:
        return self.new / self.old - 1 if self.old else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "unit": self.unit,
            "old_median": self.old,
            "new_median": self.new,
            "change": self.change,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Comparison:
    old: dict[str, Any]
    new: dict[str, Any]
    changes: tuple[Change, ...]
    only_old: tuple[str, ...]
    only_new: tuple[str, ...]
    targets: tuple[tuple[str, str, str], ...]  # (name, old status, new status), changed only

    def counts(self) -> dict[str, int]:
        tally = dict.fromkeys((SLOWER, FASTER, SAME, TOO_FEW), 0)
        for change in self.changes:
            tally[change.verdict] += 1
        return tally

    def as_dict(self) -> dict[str, Any]:
        return {
            "old_started_at": self.old.get("started_at"),
            "counts": self.counts(),
            "changes": [change.as_dict() for change in self.changes],
            "only_in_old": list(self.only_old),
            "only_in_new": list(self.only_new),
            "targets_changed": [
                {"name": name, "old": old, "new": new} for name, old, new in self.targets
            ],
        }


def load(path: Path) -> dict[str, Any]:
    """A results document, checked for the parts a comparison reads."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--compare: cannot read {path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise SystemExit(f"--compare: {path} is not a benchmark results file")
    return document


def _result_key(record: dict[str, Any]) -> str:
    return f"{record['group']}: {record['op']} {size_label(record['size'])}, {record['impl']}"


def _results(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {_result_key(r): r for r in document["results"] if r.get("samples_s") and r.get("size")}


def _ratios(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        r["name"]: r
        for r in document.get("ratios", [])
        if r.get("status") == "ok" and r.get("rounds")
    }


def _status(target: dict[str, Any]) -> str:
    met = target.get("met")
    return "not measured" if met is None else "met" if met else "BELOW"


def compare(old: dict[str, Any], new: dict[str, Any]) -> Comparison:
    changes: list[Change] = []
    old_ratios, new_ratios = _ratios(old), _ratios(new)
    for name in new_ratios.keys() & old_ratios.keys():
        before, after = old_ratios[name]["rounds"], new_ratios[name]["rounds"]
        changes.append(
            Change(
                "ratio",
                name,
                "x",
                statistics.median(before),
                statistics.median(after),
                verdict(before, after),
            )
        )
    old_results, new_results = _results(old), _results(new)
    for key in new_results.keys() & old_results.keys():
        size = new_results[key]["size"]
        # Per-round rates: higher is better, as for ratios.
        before = [size / s for s in old_results[key]["samples_s"]]
        after = [size / s for s in new_results[key]["samples_s"]]
        per_op = size <= 1024
        scale = 1 / size if per_op else 1 / MB
        changes.append(
            Change(
                "result",
                key,
                "ops/s" if per_op else "MB/s",
                statistics.median(before) * scale,
                statistics.median(after) * scale,
                verdict(before, after),
            )
        )
    order = {SLOWER: 0, FASTER: 1, TOO_FEW: 2, SAME: 3}
    changes.sort(key=lambda c: (c.kind != "ratio", order[c.verdict], c.name))
    old_targets = {t["name"]: _status(t) for t in old.get("targets", [])}
    targets = tuple(
        (t["name"], old_targets[t["name"]], _status(t))
        for t in new.get("targets", [])
        if t["name"] in old_targets and old_targets[t["name"]] != _status(t)
    )
    everything_old = old_results.keys() | old_ratios.keys()
    everything_new = new_results.keys() | new_ratios.keys()
    return Comparison(
        old=old,
        new=new,
        changes=tuple(changes),
        only_old=tuple(sorted(everything_old - everything_new)),
        only_new=tuple(sorted(everything_new - everything_old)),
        targets=targets,
    )


def _describe(document: dict[str, Any]) -> str:
    load = document.get("load") or {}
    busy = load.get("busy")
    state = "" if busy is None else ", BUSY" if busy else ", quiet"
    return f"{document.get('kind', '?')} run of {document.get('started_at', '?')}{state}"


def _rows(changes: Iterable[Change]) -> list[list[str]]:
    return [
        [
            c.name,
            figure(c.old, c.unit),
            figure(c.new, c.unit),
            f"{c.change:+.0%}",
            c.verdict,
        ]
        for c in changes
    ]


def render_comparison(comparison: Comparison) -> str:
    """The comparison as text, regressions first."""
    counts = comparison.counts()
    out = [
        f"Compared with the {_describe(comparison.old)}; this is the {_describe(comparison.new)}.",
        "faster / SLOWER: the two runs' rounds do not overlap (their middle halves; with 3 to "
        f"7 rounds, all of them); otherwise {SAME}. Figures are median rounds.",
        f"{counts[SLOWER]} SLOWER, {counts[FASTER]} faster, {counts[SAME]} {SAME}, "
        f"{counts[TOO_FEW]} with {TOO_FEW} to judge",
    ]
    busy = [doc for doc in (comparison.old, comparison.new) if (doc.get("load") or {}).get("busy")]
    if busy:
        out.append(
            "A run was BUSY (others used more than 10% of the CPUs): the load of other "
            "processes moves the figures, and some ratios, as much as a change of code does."
        )
    header = ["", "old", "new", "change", "verdict"]
    ratios = [c for c in comparison.changes if c.kind == "ratio"]
    if ratios:
        out += ["", "Ratios (both sides ran in the same rounds: steady when the machine drifts)"]
        out += table(["ratio", *header[1:]], _rows(ratios))
    results = [c for c in comparison.changes if c.kind == "result"]
    if results:
        out += ["", "Figures"]
        out += table(["case", *header[1:]], _rows(results))
    if comparison.targets:
        out += ["", "Targets whose status changed"]
        out += table(["target", "old", "new"], [list(t) for t in comparison.targets])
    if comparison.only_old or comparison.only_new:
        out += [
            "",
            f"Not compared: {len(comparison.only_old)} only in the old run, "
            f"{len(comparison.only_new)} only in this one.",
        ]
    return "\n".join(out)
