"""``python -m benchmarks [--quick] [--out DIR] [--only CASE ...]``."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._cases import CASES, run_suite
from ._machine import machine_facts
from ._plan import Plan
from ._recorder import Recorder
from ._report import busy_note, plot, render, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark envelope against the raw AES pipelines and its peers.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run in under a minute: small sizes, few rounds, no 1 GiB or 256 MiB; "
        "writes latest-quick.json / throughput-quick.png, never the full results",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"results directory (default: {RESULTS})"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[name for name, _ in CASES],
        default=(),
        help="run only these cases (results are written as latest-partial.json)",
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redraw the PNG from the JSON already in --out (with --quick: the quick one)",
    )
    return parser.parse_args(argv)


def _replot(json_path: Path, png_path: Path) -> int:
    document = json.loads(json_path.read_text(encoding="utf-8"))
    recorder = Recorder(results=document["results"])
    machine = document["machine"]
    quick = document["kind"] == "quick"
    title = _title(machine, datetime.datetime.fromisoformat(document["started_at"]), quick)
    plot(recorder, png_path, title=title)
    print(f"redrew {png_path} from {json_path}")
    return 0


def _title(machine: dict[str, Any], started: datetime.datetime, quick: bool) -> str:
    return (
        f"envelope vs raw AES and peers — {machine['cpu_model']}, Python {machine['python']}, "
        f"{started:%Y-%m-%d}{' (QUICK run)' if quick else ''}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    suffix = "-quick" if args.quick else ""
    if args.only:
        suffix += "-partial"
    json_path = args.out / f"latest{suffix}.json"
    png_path = args.out / f"throughput{suffix}.png"
    if args.replot:
        return _replot(json_path, png_path)
    plan = Plan.quick_plan() if args.quick else Plan.full()
    machine = machine_facts()
    recorder = Recorder()
    started = datetime.datetime.now(datetime.timezone.utc)
    seconds = run_suite(plan, recorder, args.only)
    machine["load_average_at_end"] = machine_facts()["load_average_at_start"]
    text = render(recorder, machine, quick=plan.quick, seconds=seconds)
    print()
    print(text, flush=True)

    document = {
        "schema": 1,
        "kind": "quick" if plan.quick else "full",
        "partial": list(args.only),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": seconds,
        "machine": machine,
        "load": busy_note(recorder),
        "units": {"bytes_per_s": "bytes per second", "*_s": "seconds per operation"},
        "results": recorder.results,
        "ratios": recorder.ratios,
        "targets": recorder.targets,
        "skipped": recorder.skipped,
        "errors": recorder.errors,
        "case_seconds": recorder.case_seconds,
        "cases": recorder.cases,
        "table": text,
    }
    write_json(json_path, document)
    plot(recorder, png_path, title=_title(machine, started, plan.quick))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
