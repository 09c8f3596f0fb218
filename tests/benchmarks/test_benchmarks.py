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


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )


def test_quick_run_writes_json_and_png(tmp_path: Path) -> None:
    completed = _run("--quick", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "Targets" in completed.stdout
    # Not a terminal: no progress line.
    assert "elapsed" not in completed.stderr

    document = json.loads((tmp_path / "latest-quick.json").read_text(encoding="utf-8"))
    assert document["kind"] == "quick"
    assert document["machine"]["python"]
    assert "applied" in document["machine"]["malloc"]
    measured = {(r["group"], r["op"], r["impl"]) for r in document["results"]}
    assert ("one-shot", "encrypt", "envelope") in measured
    assert ("one-shot", "decrypt", "raw GCM+OCB3, reused buffer (ceiling)") in measured
    assert ("1 KiB cache", "decrypt", "envelope, cached data keys") in measured
    # Blob Storage against Azurite (which make test installs): envelope.blob, the Storage
    # SDK's own client-side encryption, and a rewrap against a re-upload.
    assert ("blob storage", "download", "envelope.blob (2 layers)") in measured
    assert ("blob storage", "upload", "azure-storage-blob client-side encryption v2") in measured
    assert ("blob storage", "rotate", "envelope.blob rewrap (header block only)") in measured
    streams = {r["op"] for r in document["results"] if r["group"] == "stream"}
    assert streams == {
        "copy_file",
        "encrypt_file",
        "decrypt_file",
        "encrypt_stream",
        "decrypt_stream",
    }
    for record in document["results"]:
        assert 0 < record["best_s"] <= record["median_s"]
    for target in document["targets"]:
        assert target["met"] in (True, False, None)
        assert target["met"] is not None or target["reason"]
    names = [t["name"] for t in document["targets"]]
    assert any("encrypt_file / copying the file with fsync" in name for name in names)
    assert any("Tink KmsEnvelopeAead" in name for name in names) or any(
        s["impl"].startswith("Tink") for s in document["skipped"]
    )
    # Key Vault under load: every burst ran, none lost a message, the caches asked the vault
    # once per key and per wrapped key.
    load = document["cases"]["key_vault_load"]
    assert load["status"] == "ok"
    bursts = [b for arm in load["arms"].values() for b in arm.values()]
    assert len(bursts) == 4
    assert [b["errors"] for b in bursts] == [0, 0, 0, 0]
    cold = load["arms"]["with_cache"]["cold"]["operations"]
    assert (cold["getKey"], cold["wrapKey"], cold["unwrapKey"]) == (2, 1, 2)
    assert set(load["failover"]) == {"hung", "refusing"}
    # A peer that cannot run is reported, never invented.
    assert all(entry["reason"] for entry in document["skipped"])

    png = tmp_path / "throughput-quick.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert not (tmp_path / "latest.json").exists(), "a quick run must not write full results"

    # The run against itself: nothing is faster or slower than itself.
    missing = _run("--compare", str(tmp_path / "latest-quick.json"), str(tmp_path / "no.json"))
    assert missing.returncode != 0
    assert "cannot read" in missing.stderr
    assert "Traceback" not in missing.stderr
    itself = _run("--compare", *[str(tmp_path / "latest-quick.json")] * 2)
    assert itself.returncode == 0, itself.stderr[-4000:]
    assert "0 SLOWER, 0 faster" in itself.stdout

    # A partial run compared with the full quick run: the comparison is printed and kept.
    partial = _run("--quick", "--only", "layers", "--out", str(tmp_path), "--compare")
    assert partial.returncode != 0  # --compare needs a file
    partial = _run(
        "--quick",
        "--only",
        "layers",
        "--out",
        str(tmp_path),
        "--compare",
        str(tmp_path / "latest-quick.json"),
    )
    assert partial.returncode == 0, partial.stderr[-4000:]
    assert "Compared with the quick run of" in partial.stdout
    kept = json.loads((tmp_path / "latest-quick-partial.json").read_text(encoding="utf-8"))
    verdicts = {change["name"]: change["verdict"] for change in kept["comparison"]["changes"]}
    assert any(name.startswith("layers: encrypt 1 KiB") for name in verdicts)
