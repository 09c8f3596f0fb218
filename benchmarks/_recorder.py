"""The recorder of a run: every result record, ratio, target, skip and error, in the shape
``latest.json`` stores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._machine import LoadMeter
from ._progress import Progress
from ._timing import Contender, Stats, run_rounds

__all__ = ["Recorder", "size_label", "timing_fields"]


def size_label(size: int) -> str:
    """``64 MiB`` for 67108864; bytes when no binary unit divides the size."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def timing_fields(stat: Stats, size: int) -> dict[str, Any]:
    """The timing part of a result record: the sample statistics of ``stat`` and the rates
    they give for messages of ``size`` bytes. ``ops_per_s`` and ``bytes_per_s`` are the best
    round's (see ``_timing``); ``*_median`` the median round's; ``bytes_per_s_min`` the
    slowest round's."""
    return {
        **stat.as_dict(),
        "ops_per_s": 1 / stat.best,
        "ops_per_s_median": 1 / stat.median,
        "bytes_per_s": size / stat.best,
        "bytes_per_s_median": size / stat.median,
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
    progress: Progress = field(default_factory=lambda: Progress(None, (), {}))

    def skip(self, group: str, impl: str, reason: str) -> None:
        entry = {"group": group, "impl": impl, "reason": reason}
        if entry not in self.skipped:
            self.skipped.append(entry)
            self.progress.note(f"  skipped: {impl} ({group}): {reason}")

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
        label = f"{group}, {op} {size_label(size)}"
        self.progress.step(label)

        def on_round(done: int) -> None:
            self.progress.step(f"{label}, round {done} of {rounds}", force=False)

        self.load.start()
        stats = run_rounds(
            [Contender(name, call) for name, call in contenders.items()],
            rounds=rounds,
            min_sample_s=min_sample_s,
            warmup=warmup,
            on_round=on_round,
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
        target_name: str | None = None,
        unmeasured: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        """Throughput of ``numerator`` over ``denominator``, round by round; with ``target``,
        a target on its median (named ``target_name``, else like the ratio). ``unmeasured``
        reports the target as not measured, with that reason, whatever the ratio: for a
        target whose condition (a feature of the library) this run does not meet."""
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
                target_name or name,
                None if unmeasured else record.get("median"),
                ">=",
                target,
                "x",
                reason=unmeasured or record.get("reason"),
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
