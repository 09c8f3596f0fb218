"""The terminal table, ``latest.json`` and the throughput plot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._cases import CEILING, LABELS, OPS
from ._recorder import Recorder, size_label

__all__ = ["busy_note", "figure", "plot", "render", "table", "write_json"]

MB = 1e6
MiB = 1024 * 1024


def _steadiness(record: dict[str, Any]) -> str:
    """The median round as a share of the best: 100% steady, lower for a run that spent
    most of its rounds in a slow phase of the machine or under others' load."""
    return f"({record['best_s'] / record['median_s']:.0%})"


def _rate(record: dict[str, Any] | None, *, ops: bool = False) -> str:
    if record is None:
        return "—"
    if ops:
        return f"{record['ops_per_s']:,.0f}/s {_steadiness(record)}"
    return f"{record['bytes_per_s'] / MB:,.0f} {_steadiness(record)}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
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


def _blob_section(blob: dict[str, Any] | None, results: list[dict[str, Any]]) -> list[str]:
    """The Blob Storage table: every contender of each operation, then what rotate means."""
    if blob is None:
        return []
    title = ["", "Blob Storage (Azurite over TLS on loopback, 4 requests at a time)"]
    if blob["status"] != "ok":
        return [*title, f"  skipped: {blob['reason']}"]
    rows = [
        [r["impl"], r["op"], size_label(r["size"]), _rate(r), f"{r['median_s']:.3f}"]
        for r in results
        if r["group"] == "blob storage"
    ]
    note = (
        "  rotate: envelope rewrites the header block only; azure-storage-blob's encryption "
        "has no rewrap, so rotating its key means downloading and uploading the blob again."
    )
    return [*title, *table(["implementation", "operation", "blob", "MB/s", "median s"], rows), note]


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
    heap = machine.get("malloc") or {}
    if heap.get("applied"):
        out.append(
            f"glibc malloc held steady: mmap threshold {size_label(heap['mmap_threshold'])}, "
            f"trim threshold {size_label(heap['trim_threshold'])} (the same for every contender)"
        )
    out.append(
        "MB/s = 10^6 bytes/s. Each figure is the contender's best round; in brackets the "
        "median round as a share of it"
    )
    out.append(
        "(100% steady; this VM runs in speed phases about 1.8x apart). Ratios and targets: "
        "median of the round-by-round ratios."
    )

    sizes = sorted({r["size"] for r in results if r["group"] == "one-shot"})
    for op in OPS if sizes else ():
        out += ["", f"One-shot {op} (MB/s; 1 KiB also in operations/s)"]
        header = ["implementation", "1 KiB ops/s"] + [size_label(s) for s in sizes]
        rows = []
        for label in LABELS:
            cells = [
                _rate(_find(results, group="one-shot", op=op, size=s, impl=label)) for s in sizes
            ]
            if all(cell == "—" for cell in cells):
                continue
            first = _find(results, group="one-shot", op=op, size=1024, impl=label)
            rows.append([label, _rate(first, ops=True), *cells])
        out += table(header, rows)
    limit = recorder.cases.get("one_shot", {}).get("peers_up_to")
    if limit is not None and sizes and max(sizes) > limit:
        out.append(
            f"The peers are measured up to {size_label(limit)}, the size of the targets: a "
            "larger call takes them seconds."
        )

    cache_rows = []
    for label in dict.fromkeys(r["impl"] for r in results if r["group"] == "1 KiB cache"):
        cache_rows.append(
            [label]
            + [
                _rate(_find(results, group="1 KiB cache", op=op, impl=label), ops=True)
                for op in OPS
            ]
        )
    if cache_rows:
        out += ["", "1 KiB messages, local KEKs (operations/s)"]
        out += table(["data keys", "encrypt", "decrypt"], cache_rows)

    layer_sizes = sorted({r["size"] for r in results if r["group"] == "layers"})
    if layer_sizes:
        out += ["", "Layers (plain encrypt/decrypt: 1 KiB in ops/s, larger in MB/s)"]
        header = ["layers"] + [f"{op} {size_label(s)}" for s in layer_sizes for op in OPS]
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
        out += table(header, rows)

    out += _variants(results, "frame size", "Frame size", "frame")
    out += _variants(results, "thread scaling", "One message on several threads", "workers")

    wall_sizes = sorted({r["size"] for r in results if r["group"] == "allocation wall"})
    if wall_sizes:
        out += ["", "Beyond the allocation wall (MB/s, and x of the ceiling in the same rounds)"]
        header = ["output buffer"] + [f"{op} {size_label(s)}" for s in wall_sizes for op in OPS]
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
                        cell += f", {ratio['median']:.2f}x"
                    cells.append(cell)
            rows.append([label, *cells])
        out += table(header, rows)

    stream = [r for r in results if r["group"] == "stream"]
    if stream:
        size = size_label(stream[0]["size"])
        out += ["", f"Streaming a {size} file, each run in a fresh process"]
        rows = []
        for r in stream:
            ratio = _find(recorder.ratios, group="stream", numerator=r["op"])
            versus = (
                f"{ratio['median']:.2f}x"
                if ratio is not None and ratio.get("status") == "ok"
                else ""
            )
            how = " (fsync)" if r["op"].endswith("_file") else " (to a null sink)"
            rows.append(
                [
                    r["op"] + how,
                    _rate(r),
                    versus,
                    f"{r['peak_rss'] / MiB:.1f}",
                    f"{r['rss_before'] / MiB:.1f}",
                ]
            )
        out += table(["operation", "MB/s", "x copy", "peak RSS MiB", "RSS before MiB"], rows)

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
            out += table(
                ["caches", "messages", "calls/msg enc", "calls/msg dec", "enc msg/s", "dec msg/s"],
                rows,
            )
            out.append(
                f"  {kv['layers']}; RSA wraps run locally on the public key (a getKey at most "
                "every key_info_ttl), unwraps call the vault; the arm without caches is cut "
                "short on purpose and reported per message."
            )

    out += _key_vault_load(recorder.cases.get("key_vault_load"))
    for case in recorder.cases.values():
        out += case.get("table", [])  # cases that bring a table of their own
    out += _blob_section(recorder.cases.get("blob"), results)

    out += ["", "Targets (the benchmark never fails on speed)"]
    rows = []
    for t in recorder.targets:
        if t["met"] is None:
            status, value = f"not measured: {t['reason'] or 'no figure'}", "—"
        else:
            status = "met" if t["met"] else "BELOW"
            value = figure(t["value"], t["unit"])
        rows.append(
            [t["name"], value, f"{t['comparison']} {figure(t['threshold'], t['unit'])}", status]
        )
    out += table(["target", "measured", "target", "status"], rows)

    if recorder.errors:
        out += ["", "ERRORS (cases that crashed; their figures are missing, not invented)"]
        out += [f"  {e['case']}: {e['error']}" for e in recorder.errors]
    if recorder.skipped:
        out += ["", "Skipped"]
        out += [f"  {s['impl']} ({s['group']}): {s['reason']}" for s in recorder.skipped]
    return "\n".join(out)


def _key_vault_load(case: dict[str, Any] | None) -> list[str]:
    """The under-load case: one row per burst, then the request cost and failover."""
    if case is None:
        return []
    out = ["", "Key Vault under load (LocalKeyVault over TLS, no added latency, asyncio tasks)"]
    if case["status"] != "ok":
        return [*out, f"  skipped: {case['reason']}"]
    rows = []
    for arm, bursts in case["arms"].items():
        for when, b in bursts.items():
            rows.append(
                [
                    f"{arm.replace('_', ' ')}, {when}",
                    f"{b['tasks']:,}",
                    f"{b['messages_per_s']:,.1f}",
                    f"{b['calls_per_message']:.4f}",
                    f"{b['p50_s'] * 1000:,.0f}" if b["p50_s"] is not None else "—",
                    f"{b['p99_s'] * 1000:,.0f}" if b["p99_s"] is not None else "—",
                    f"{b['errors']:,}",
                ]
            )
    header = ["caches, burst", "tasks", "msg/s", "calls/msg", "p50 ms", "p99 ms", "errors"]
    out += table(header, rows)
    request = case["request"]
    out.append(
        f"  {case['layers']}; {case['message_bytes']:,}-byte messages, each task one encrypt "
        "and one decrypt; cold: new keys, credential and caches; warm: the same again. "
        f"One request to LocalKeyVault: {request['median_ms']:.2f} ms median, "
        f"{request['p95_ms']:.2f} ms p95."
    )
    rows = []
    for how, f in case["failover"].items():
        rows.append(
            [
                how,
                f"{f['first_s']:.2f}",
                f"{f['messages_after']}",
                f"{f['p50_after_s'] * 1000:,.0f}",
                f"{f['p95_after_s'] * 1000:,.0f}",
                f"{f['max_after_s'] * 1000:,.0f}",
            ]
        )
    out += ["", "Failover: a layer's first vault down, decrypts one after the other"]
    out += table(["first vault", "first s", "then", "p50 ms", "p95 ms", "max ms"], rows)
    settings = next(iter(case["failover"].values()))["down_key_settings"]
    out.append(f"  the down vault's key: {settings}")
    return out


def figure(value: float, unit: str) -> str:
    """A measured value for the tables: ``1.23x``, ``12,345/s``, ``1,234 MB/s``, ``31.2 MiB``."""
    if unit == "x":
        return f"{value:.3g}x"
    if unit == "ops/s":
        return f"{value:,.0f}/s"
    if unit == "MB/s":
        return f"{value:,.0f} MB/s"
    if unit in ("calls", "messages"):
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}"


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def plot(recorder: Recorder, path: Path, *, title: str, headline: str = "best round") -> None:
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
        axis.set_xticks(sizes, [size_label(size) for size in sizes])
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_yscale("log")
        axis.set_xlabel("message size (bytes)")
        axis.set_title(op)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"throughput (MB/s, {headline}; bars: slowest to fastest round)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.12, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _variants(results: list[dict[str, Any]], kind: str, title: str, column: str) -> list[str]:
    """A table of one message's variants (frame sizes, worker counts): MB/s through the
    plain API and into a reused buffer, encrypt and decrypt."""
    records = [r for r in results if r["group"].startswith(kind)]
    if not records:
        return []
    groups = (f"{kind}, plain API", f"{kind}, into reused buffer")
    header = [column] + [f"{op} {g.split(', ')[1]}" for g in groups for op in OPS]
    rows = [
        [label] + [_rate(_find(results, group=g, op=op, impl=label)) for g in groups for op in OPS]
        for label in dict.fromkeys(r["impl"] for r in records)
    ]
    return ["", f"{title} ({size_label(records[0]['size'])} message, MB/s)", *table(header, rows)]
