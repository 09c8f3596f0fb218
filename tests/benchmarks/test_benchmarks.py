"""Smoke test of the benchmark suite: ``python -m benchmarks --quick`` completes and writes
its results. Speed is not checked here; the suite reports targets, it never fails on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_quick_run_writes_json_and_png(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "Targets" in completed.stdout

    document = json.loads((tmp_path / "latest-quick.json").read_text(encoding="utf-8"))
    assert document["kind"] == "quick"
    assert document["machine"]["python"]
    measured = {(r["group"], r["op"], r["impl"]) for r in document["results"]}
    assert ("one-shot", "encrypt", "envelope") in measured
    assert ("one-shot", "decrypt", "raw GCM+OCB3, reused buffer (ceiling)") in measured
    assert any(r["group"] == "stream" for r in document["results"])
    for record in document["results"]:
        assert record["median_s"] > 0
    for target in document["targets"]:
        assert target["met"] in (True, False, None)
        assert target["met"] is not None or target["reason"]
    # A peer that cannot run is reported, never invented.
    assert all(entry["reason"] for entry in document["skipped"])

    png = tmp_path / "throughput-quick.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert not (tmp_path / "latest.json").exists(), "a quick run must not write full results"
