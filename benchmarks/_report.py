"""The terminal table, ``latest.json`` and the throughput plot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._cases import CEILING, LABELS, OPS
from ._recorder import Recorder

__all__ = ["busy_note", "plot", "render", "write_json"]

MB = 1e6
MiB = 1024 * 1024


def _size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _spread(record: dict[str, Any]) -> str:
    median = record["median_s"]
    half = (record["max_s"] - record["min_s"]) / 2 / median if median else 0.0
    return f"±{half * 100:.0f}%"


def _rate(record: dict[str, Any] | None, *, ops: bool = False) -> str:
    if record is None:
        return "—"
    if ops:
        return f"{record['ops_per_s']:,.0f}/s {_spread(record)}"
    return f"{record['bytes_per_s'] / MB:,.0f} {_spread(record)}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    body = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    lines = []
    for index, row in enumerate(body):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _find(results: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    for record in results:
        if all(record.get(k) == v for k, v in where.items()):
            return record
    return None


def busy_note(recorder: Recorder) -> dict[str, Any]:
    shares = recorder.load.shares
    if not shares:
        return {"others_cpu_share_mean": None, "others_cpu_share_max": None, "busy": None}
    mean, peak = statistics.fmean(shares), max(shares)
    return {"others_cpu_share_mean": mean, "others_cpu_share_max": peak, "busy": peak > 0.10}


def render(recorder: Recorder, machine: dict[str, Any], *, quick: bool, seconds: float) -> str:
    results = recorder.results
    out: list[str] = []
    load = busy_note(recorder)
    out.append(
        f"envelope benchmarks ({'QUICK smoke run' if quick else 'full run'}, {seconds:.0f} s)"
    )
    out.append(
        f"{machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, flags "
        f"{' '.join(machine['cpu_flags'])}; Python {machine['python']}, {machine['openssl']}, "
        f"cryptography {machine['packages'].get('cryptography')}"
    )
    if load["busy"] is not None:
        verdict = "BUSY: figures are noisier and lower" if load["busy"] else "quiet"
        out.append(
            f"other processes used {load['others_cpu_share_mean']:.0%} of the CPUs on average "
            f"(max {load['others_cpu_share_max']:.0%} during a case): {verdict}"
        )
    out.append("MB/s = 10^6 bytes/s, median of the rounds; ± is half the min-max range.")

    sizes = sorted({r["size"] for r in results if r["group"] == "one-shot"})
    for op in OPS if sizes else ():
        out += ["", f"One-shot {op} (MB/s; 1 KiB also in operations/s)"]
        header = ["implementation", "1 KiB ops/s"] + [_size(s) for s in sizes]
        rows = []
        for label in LABELS:
            cells = [
                _rate(_find(results, group="one-shot", op=op, size=s, impl=label)) for s in sizes
            ]
            if all(cell == "—" for cell in cells):
                continue
            first = _find(results, group="one-shot", op=op, size=1024, impl=label)
            rows.append([label, _rate(first, ops=True), *cells])
        out += _table(header, rows)

    cache_rows = []
    for label in sorted({r["impl"] for r in results if r["group"] == "1 KiB cache"}):
        cache_rows.append(
            [label]
            + [
                _rate(_find(results, group="1 KiB cache", op=op, impl=label), ops=True)
                for op in OPS
            ]
        )
    if cache_rows:
        out += ["", "1 KiB messages, local KEKs (operations/s)"]
        out += _table(["data keys", "encrypt", "decrypt"], cache_rows)

    layer_sizes = sorted({r["size"] for r in results if r["group"] == "layers"})
    if layer_sizes:
        out += ["", "Layers (plain encrypt/decrypt: 1 KiB in ops/s, larger in MB/s)"]
        header = ["layers"] + [f"{op} {_size(s)}" for s in layer_sizes for op in OPS]
        rows = []
        for label in ("1 layer", "2 layers", "3 layers"):
            rows.append(
                [label]
                + [
                    _rate(_find(results, group="layers", op=op, size=s, impl=label), ops=s <= 1024)
                    for s in layer_sizes
                    for op in OPS
                ]
            )
        out += _table(header, rows)

    frame_records = [r for r in results if r["group"].startswith("frame size")]
    if frame_records:
        size = frame_records[0]["size"]
        out += ["", f"Frame size ({_size(size)} message, MB/s)"]
        groups = ("frame size, plain API", "frame size, into reused buffer")
        header = ["frame"] + [f"{op} {g.split(', ')[1]}" for g in groups for op in OPS]
        rows = []
        for label in dict.fromkeys(r["impl"] for r in frame_records):
            rows.append(
                [label]
                + [_rate(_find(results, group=g, op=op, impl=label)) for g in groups for op in OPS]
            )
        out += _table(header, rows)

    wall_sizes = sorted({r["size"] for r in results if r["group"] == "allocation wall"})
    if wall_sizes:
        out += ["", "Beyond the allocation wall (MB/s, and x of the ceiling in the same rounds)"]
        header = ["output buffer"] + [f"{op} {_size(s)}" for s in wall_sizes for op in OPS]
        rows = []
        labels = dict.fromkeys(r["impl"] for r in results if r["group"] == "allocation wall")
        for label in labels:
            cells = []
            for s in wall_sizes:
                for op in OPS:
                    record = _find(results, group="allocation wall", op=op, size=s, impl=label)
                    ratio = _find(
                        recorder.ratios,
                        group="allocation wall",
                        op=op,
                        size=s,
                        numerator=label,
                        denominator=CEILING,
                    )
                    cell = _rate(record)
                    if ratio is not None and ratio.get("status") == "ok":
                        cell += f" ({ratio['median']:.2f}x)"
                    cells.append(cell)
            rows.append([label, *cells])
        out += _table(header, rows)

    stream = [r for r in results if r["group"] == "stream"]
    if stream:
        out += ["", f"Streaming a {_size(stream[0]['size'])} file, each run in a fresh process"]
        rows = [
            [
                r["op"] + (" (fsync)" if r["op"].endswith("_file") else " (to a null sink)"),
                f"{r['bytes_per_s'] / MB:,.0f} {_spread(r)}",
                f"{r['peak_rss'] / MiB:.1f}",
                f"{r['rss_before'] / MiB:.1f}",
            ]
            for r in stream
        ]
        out += _table(["operation", "MB/s", "peak RSS MiB", "RSS before MiB"], rows)

    kv = recorder.cases.get("key_vault")
    if kv is not None:
        out += ["", "Key Vault (LocalKeyVault over TLS, 20 ms added to every Key Vault call)"]
        if kv["status"] != "ok":
            out.append(f"  skipped: {kv['reason']}")
        else:
            rows = []
            for arm in ("without_cache", "with_cache"):
                a = kv[arm]
                rows.append(
                    [
                        arm.replace("_", " "),
                        f"{a['messages']:,}",
                        f"{a['encrypt_calls_per_message']:.4f}",
                        f"{a['decrypt_calls_per_message']:.4f}",
                        f"{a['encrypt_messages_per_s']:,.1f}",
                        f"{a['decrypt_messages_per_s']:,.1f}",
                    ]
                )
            out += _table(
                ["caches", "messages", "calls/msg enc", "calls/msg dec", "enc msg/s", "dec msg/s"],
                rows,
            )
            out.append(
                f"  {kv['layers']}; RSA wraps run locally on the public key (a getKey at most "
                "every key_info_ttl), unwraps call the vault; the arm without caches is cut "
                "short on purpose and reported per message."
            )

    for case in recorder.cases.values():
        out += case.get("table", [])  # cases that bring a table of their own

    out += ["", "Targets (the benchmark never fails on speed)"]
    rows = []
    for t in recorder.targets:
        if t["met"] is None:
            status, value = "SKIPPED", t["reason"] or "not measured"
        else:
            status = "met" if t["met"] else "BELOW TARGET"
            value = _value(t["value"], t["unit"])
        rows.append(
            [t["name"], value, f"{t['comparison']} {_value(t['threshold'], t['unit'])}", status]
        )
    out += _table(["target", "measured", "target", "status"], rows)

    if recorder.errors:
        out += ["", "ERRORS (cases that crashed; their figures are missing, not invented)"]
        out += [f"  {e['case']}: {e['error']}" for e in recorder.errors]
    if recorder.skipped:
        out += ["", "Skipped"]
        out += [f"  {s['impl']} ({s['group']}): {s['reason']}" for s in recorder.skipped]
    return "\n".join(out)


def _value(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.3g}x"
    if unit == "ops/s":
        return f"{value:,.0f}/s"
    return f"{value:.1f} {unit}"


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def plot(recorder: Recorder, path: Path, *, title: str) -> None:
    """Throughput vs message size, log-log, one line per contender, the ceiling bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    results = [r for r in recorder.results if r["group"] == "one-shot"]
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    markers = "os^vDPX*hp"
    for axis, op in zip(axes, OPS, strict=True):
        for index, label in enumerate(LABELS):
            points = sorted(
                (
                    r["size"],
                    r["bytes_per_s"],
                    r["bytes_per_s_min"],
                    r["bytes_per_s_max"],
                )
                for r in results
                if r["op"] == op and r["impl"] == label
            )
            if not points:
                continue
            xs = [p[0] for p in points]
            ys = [p[1] / MB for p in points]
            low = [(p[1] - p[2]) / MB for p in points]
            high = [(p[3] - p[1]) / MB for p in points]
            if label == CEILING:
                axis.plot(xs, ys, "k--", linewidth=2.5, label=label, zorder=5)
            else:
                axis.errorbar(
                    xs,
                    ys,
                    yerr=[low, high],
                    marker=markers[index % len(markers)],
                    linewidth=2.0 if label.startswith("envelope") else 1.2,
                    capsize=2,
                    label=label,
                )
        axis.set_xscale("log", base=2)
        sizes = sorted({r["size"] for r in results})
        axis.set_xticks(sizes, [_size(size) for size in sizes])
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_yscale("log")
        axis.set_xlabel("message size (bytes)")
        axis.set_title(op)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("throughput (MB/s, median; bars: min-max)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.12, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
