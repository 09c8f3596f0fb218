"""The recorder of a run: every result record, ratio, target, skip and error, in the shape
``latest.json`` stores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._machine import LoadMeter
from ._timing import Contender, Stats, run_rounds

__all__ = ["Recorder", "timing_fields"]


def timing_fields(stat: Stats, size: int) -> dict[str, Any]:
    """The timing part of a result record: the sample statistics of ``stat`` and the rates
    they give for messages of ``size`` bytes (the slowest sample gives the lowest rate)."""
    return {
        **stat.as_dict(),
        "ops_per_s": 1 / stat.median,
        "bytes_per_s": size / stat.median,
        "bytes_per_s_min": size / stat.maximum,
        "bytes_per_s_max": size / stat.minimum,
    }


@dataclass
class Recorder:
    """Every figure of the run, in the shape ``latest.json`` stores."""

    results: list[dict[str, Any]] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    cases: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    case_seconds: dict[str, float] = field(default_factory=dict)
    load: LoadMeter = field(default_factory=LoadMeter)

    def skip(self, group: str, impl: str, reason: str) -> None:
        entry = {"group": group, "impl": impl, "reason": reason}
        if entry not in self.skipped:
            self.skipped.append(entry)
            print(f"  skipped: {impl} ({group}): {reason}", flush=True)

    def measure(
        self,
        group: str,
        op: str,
        size: int,
        contenders: dict[str, Callable[[], object]],
        *,
        rounds: int,
        min_sample_s: float,
        warmup: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Stats]:
        self.load.start()
        stats = run_rounds(
            [Contender(name, call) for name, call in contenders.items()],
            rounds=rounds,
            min_sample_s=min_sample_s,
            warmup=warmup,
        )
        others = self.load.stop()
        for name, stat in stats.items():
            record: dict[str, Any] = {
                "group": group,
                "op": op,
                "size": size,
                "impl": name,
                **(extra or {}),
                **timing_fields(stat, size),
                "others_cpu_share": others,
            }
            self.results.append(record)
        return stats

    def ratio(
        self,
        name: str,
        stats: dict[str, Stats],
        numerator: str,
        denominator: str,
        *,
        target: float | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        """Throughput of ``numerator`` over ``denominator``, round by round."""
        record: dict[str, Any] = {"name": name, "numerator": numerator, "denominator": denominator}
        record.update(context or {})
        if numerator not in stats or denominator not in stats:
            missing = numerator if numerator not in stats else denominator
            record.update(status="skipped", reason=f"{missing} was not measured")
        else:
            per_round = sorted(
                d / n
                for n, d in zip(stats[numerator].samples, stats[denominator].samples, strict=True)
            )
            median = per_round[len(per_round) // 2]
            if len(per_round) % 2 == 0:
                median = (per_round[len(per_round) // 2 - 1] + median) / 2
            record.update(
                status="ok", median=median, min=per_round[0], max=per_round[-1], rounds=per_round
            )
        self.ratios.append(record)
        if target is not None:
            self.target(
                name,
                record.get("median"),
                ">=",
                target,
                "x",
                reason=record.get("reason"),
            )

    def target(
        self,
        name: str,
        value: float | None,
        comparison: str,
        threshold: float,
        unit: str,
        *,
        reason: str | None = None,
    ) -> None:
        met: bool | None
        if value is None:
            met = None
        elif comparison == ">=":
            met = value >= threshold
        elif comparison == "<":
            met = value < threshold
        else:
            met = value <= threshold
        self.targets.append(
            {
                "name": name,
                "value": value,
                "comparison": comparison,
                "threshold": threshold,
                "unit": unit,
                "met": met,
                "reason": reason if value is None else None,
            }
        )
