"""``python -m benchmarks [--quick] [--out DIR] [--only CASE ...] [--compare OLD.json]``."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._cases import CASES, run_suite
from ._compare import compare, load, render_comparison
from ._machine import machine_facts, steady_heap
from ._plan import Plan
from ._progress import Progress
from ._recorder import Recorder
from ._report import busy_note, plot, render, write_json

RESULTS = Path(__file__).resolve().parent / "results"
#: The results document's layout. 2: a figure is the best round (``best_s``), with the
#: median kept as ``*_median``; 1 reported the median round.
SCHEMA = 2


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
    parser.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar=("OLD.json", "NEW.json"),
        help="compare this run with an earlier run's JSON, case by case, with a verdict "
        "that respects the spread of both runs' rounds; given NEW.json as well, compare the "
        "two files and run nothing",
    )
    args = parser.parse_args(argv)
    if args.compare is not None and len(args.compare) > 2:
        parser.error("--compare takes OLD.json and, optionally, NEW.json")
    return args


def _replot(json_path: Path, png_path: Path) -> int:
    document = json.loads(json_path.read_text(encoding="utf-8"))
    recorder = Recorder(results=document["results"])
    machine = document["machine"]
    quick = document["kind"] == "quick"
    title = _title(machine, datetime.datetime.fromisoformat(document["started_at"]), quick)
    headline = "best round" if document.get("schema", 1) >= 2 else "median round"
    plot(recorder, png_path, title=title, headline=headline)
    print(f"redrew {png_path} from {json_path}")
    return 0


def _title(machine: dict[str, Any], started: datetime.datetime, quick: bool) -> str:
    return (
        f"envelope vs raw AES and peers — {machine['cpu_model']}, Python {machine['python']}, "
        f"{started:%Y-%m-%d}{' (QUICK run)' if quick else ''}"
    )


def _expected(plan: Plan, previous: Path) -> dict[str, float]:
    """Seconds per case for the progress estimate: the last run of the same kind if there
    is one, else the plan's own figures."""
    expected = plan.expected_seconds()
    try:
        document = json.loads(previous.read_text(encoding="utf-8"))
        expected.update({k: float(v) for k, v in document["case_seconds"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return expected


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.compare is not None and len(args.compare) == 2:
        old, new = (load(path) for path in args.compare)
        print(render_comparison(compare(old, new)))
        return 0
    baseline = load(args.compare[0]) if args.compare else None
    suffix = "-quick" if args.quick else ""
    if args.only:
        suffix += "-partial"
    json_path = args.out / f"latest{suffix}.json"
    png_path = args.out / f"throughput{suffix}.png"
    if args.replot:
        return _replot(json_path, png_path)
    plan = Plan.quick_plan() if args.quick else Plan.full()
    heap = steady_heap()
    machine = machine_facts()
    machine["malloc"] = heap
    cases = [name for name, _ in CASES if not args.only or name in args.only]
    progress = Progress(sys.stderr, cases, _expected(plan, json_path))
    recorder = Recorder(progress=progress)
    started = datetime.datetime.now(datetime.timezone.utc)
    seconds = run_suite(plan, recorder, args.only)
    machine["load_average_at_end"] = machine_facts()["load_average_at_start"]
    text = render(recorder, machine, quick=plan.quick, seconds=seconds)
    print()
    print(text, flush=True)

    document = {
        "schema": SCHEMA,
        "kind": "quick" if plan.quick else "full",
        "partial": list(args.only),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": seconds,
        "machine": machine,
        "load": busy_note(recorder),
        "units": {
            "bytes_per_s": "bytes per second in the best round",
            "bytes_per_s_median": "bytes per second in the median round",
            "*_s": "seconds per operation",
        },
        "results": recorder.results,
        "ratios": recorder.ratios,
        "targets": recorder.targets,
        "skipped": recorder.skipped,
        "errors": recorder.errors,
        "case_seconds": recorder.case_seconds,
        "cases": recorder.cases,
        "table": text,
    }
    if baseline is not None:
        comparison = compare(baseline, document)
        document["comparison"] = comparison.as_dict()
        print()
        print(render_comparison(comparison), flush=True)
    write_json(json_path, document)
    plot(recorder, png_path, title=_title(machine, started, plan.quick))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
