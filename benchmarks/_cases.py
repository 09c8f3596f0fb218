"""The cases of the suite: the functions that measure, and the targets they hold figures to.

Each case is a *group*: contenders timed in interleaved rounds on the same plaintext (see
``_timing``), so the ratios between them are taken round by round within one run.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from envelope import Envelope, LocalKey

from . import _contenders as c
from ._keyvault import cache_options, keyvault_case
from ._plan import GiB, KiB, MiB, Plan
from ._recorder import Recorder, timing_fields
from ._records import records_case
from ._timing import Stats

__all__ = ["CASES", "CEILING", "LABELS", "OPS", "run_suite"]

ENVELOPE = "envelope"
ENVELOPE_INTO = "envelope into reused buffer"
ENVELOPE_CACHED = "envelope, cached data keys"
HUGE_FRESH = "envelope into fresh huge-page mmap"
HUGE_REUSED = "envelope into reused huge-page mmap"
RAW_GCM = "raw AES-256-GCM, 1 layer, reused buffer"
RAW_FRESH = "raw GCM+OCB3, fresh output"
CEILING = "raw GCM+OCB3, reused buffer (ceiling)"
ESDK_SIGNING = "AWS ESDK, default suite (ECDSA-P384 signing)"
ESDK_COMMIT = "AWS ESDK, COMMIT_KEY without signing"
TINK_AEAD = "Tink Aead AES256_GCM"
TINK_KMS = "Tink KmsEnvelopeAead, local KEK"

#: Every contender of the one-shot comparison, in the order of the table and the plot.
LABELS = (
    ENVELOPE,
    ENVELOPE_INTO,
    RAW_GCM,
    RAW_FRESH,
    CEILING,
    ESDK_SIGNING,
    ESDK_COMMIT,
    TINK_AEAD,
    TINK_KMS,
)
OPS = ("encrypt", "decrypt")


def _data(size: int) -> bytes:
    """Random bytes; large sizes repeat a random MiB (AES does not care, and it is quick)."""
    if size <= MiB:
        return os.urandom(size)
    block = os.urandom(MiB)
    return (block * (size // MiB + 1))[:size]


def _size_label(size: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _try(
    recorder: Recorder, group: str, label: str, factory: Callable[[], c.Pair]
) -> c.Pair | None:
    try:
        return factory()
    except c.Unavailable as exc:
        recorder.skip(group, label, str(exc))
        return None


def _envelope_pairs(env: Envelope, data: bytes) -> dict[str, c.Pair]:
    """envelope through the plain API and into a reused buffer."""
    return {
        ENVELOPE: c.envelope_pair(env, data),
        ENVELOPE_INTO: c.envelope_into_pair(env, data),
    }


def _measure(
    plan: Plan,
    recorder: Recorder,
    group: str,
    op: str,
    size: int,
    pairs: dict[str, c.Pair],
    *,
    warmup: bool = True,
) -> dict[str, Stats]:
    """``op`` of every pair on ``size``-byte messages, in the rounds the plan gives the size."""
    return recorder.measure(
        group,
        op,
        size,
        {label: getattr(pair, op) for label, pair in pairs.items()},
        rounds=plan.rounds(size),
        min_sample_s=plan.min_sample_s,
        warmup=warmup,
    )


# -- the cases --------------------------------------------------------------------------


def one_shot(plan: Plan, recorder: Recorder) -> None:
    """Every contender on messages of each size, plain encrypt/decrypt and the baselines."""
    env = c.make_envelope()
    for size in plan.sizes:
        print(f"one-shot {_size_label(size)}", flush=True)
        data = _data(size)
        pairs = _envelope_pairs(env, data)
        raw = c.raw_pairs(data)
        pairs[RAW_GCM] = raw["gcm"]
        pairs[RAW_FRESH] = raw["gcm+ocb3 fresh"]
        pairs[CEILING] = raw["gcm+ocb3 reused"]
        peers: Sequence[tuple[str, Callable[[], c.Pair]]] = (
            (ESDK_SIGNING, functools.partial(c.aws_esdk_pair, data, signing=True)),
            (ESDK_COMMIT, functools.partial(c.aws_esdk_pair, data, signing=False)),
            (TINK_AEAD, functools.partial(c.tink_aead_pair, data)),
            (TINK_KMS, functools.partial(c.tink_kms_envelope_pair, data)),
        )
        for label, factory in peers:
            pair = _try(recorder, "one-shot", label, factory)
            if pair is not None:
                pairs[label] = pair
        for op in OPS:
            stats = _measure(plan, recorder, "one-shot", op, size, pairs, warmup=size <= 64 * MiB)
            where = {"op": op, "size": size}
            headline = size == 64 * MiB
            name = f"{_size_label(size)} {op}"
            recorder.ratio(
                f"{name}: envelope / raw two-layer, fresh output",
                stats,
                ENVELOPE,
                RAW_FRESH,
                target=0.85 if headline else None,
                context=where,
            )
            recorder.ratio(
                f"{name}: envelope into reused buffer / ceiling",
                stats,
                ENVELOPE_INTO,
                CEILING,
                target=0.8 if headline else None,
                context=where,
            )
            for peer, multiple, into_multiple in (
                (ESDK_SIGNING, 5.0, 10.0),
                (ESDK_COMMIT, 5.0, 10.0),
                (TINK_KMS, 2.5, 5.0),
                (TINK_AEAD, None, None),
            ):
                recorder.ratio(
                    f"{name}: envelope / {peer}",
                    stats,
                    ENVELOPE,
                    peer,
                    target=multiple if headline else None,
                    context=where,
                )
                recorder.ratio(
                    f"{name}: envelope into reused buffer / {peer}",
                    stats,
                    ENVELOPE_INTO,
                    peer,
                    target=into_multiple if headline else None,
                    context=where,
                )
            if size == KiB:
                recorder.target(
                    f"1 KiB {op}, fresh local data keys (ops/s)",
                    1 / stats[ENVELOPE].median,
                    ">=",
                    50_000,
                    "ops/s",
                )
        del pairs, peers, data


def small_messages(plan: Plan, recorder: Recorder) -> None:
    """1 KiB messages: a fresh data key per message vs data keys from the cache."""
    print("1 KiB: fresh vs cached data keys", flush=True)
    data = _data(KiB)
    keys = [LocalKey.generate(), LocalKey.generate()]
    contenders = {
        ENVELOPE: c.envelope_pair(Envelope(keys), data),
        ENVELOPE_CACHED: c.envelope_pair(Envelope(keys, **cache_options()), data),
    }
    for op in OPS:
        stats = _measure(plan, recorder, "1 KiB cache", op, KiB, contenders)
        recorder.target(
            f"1 KiB {op}, cached data keys (ops/s)",
            1 / stats[ENVELOPE_CACHED].median,
            ">=",
            100_000,
            "ops/s",
        )
        recorder.ratio(
            f"1 KiB {op}: cached / fresh data keys",
            stats,
            ENVELOPE_CACHED,
            ENVELOPE,
            context={"op": op, "size": KiB},
        )


def layers(plan: Plan, recorder: Recorder) -> None:
    """1, 2 and 3 layers (GCM; GCM+OCB3; GCM+OCB3+GCM-SIV) through plain encrypt/decrypt."""
    for size in plan.layer_sizes:
        print(f"layers 1-3, {_size_label(size)}", flush=True)
        data = _data(size)
        pairs = {
            f"{n} layer{'s' if n > 1 else ''}": c.envelope_pair(c.make_envelope(n), data)
            for n in (1, 2, 3)
        }
        for op in OPS:
            _measure(plan, recorder, "layers", op, size, pairs)
        del pairs, data


def frame_sizes(plan: Plan, recorder: Recorder) -> None:
    """Frame sizes, through the plain API and into a reused buffer (where only the
    framing and the CPU caches matter, not the page faults)."""
    size = plan.frame_message
    print(f"frame sizes, {_size_label(size)}", flush=True)
    data = _data(size)
    pairs = {
        _size_label(frame): c.envelope_into_pair(c.make_envelope(2, frame), data)
        for frame in plan.frame_sizes
    }
    plain = {
        _size_label(frame): c.envelope_pair(c.make_envelope(2, frame), data)
        for frame in plan.frame_sizes
    }
    for op in OPS:
        _measure(plan, recorder, "frame size, into reused buffer", op, size, pairs)
        _measure(plan, recorder, "frame size, plain API", op, size, plain)


def allocation_wall(plan: Plan, recorder: Recorder) -> None:
    """Large messages into buffers of each kind, side by side with the ceiling."""
    env = c.make_envelope()
    for size in plan.wall_sizes:
        print(f"allocation wall, {_size_label(size)}", flush=True)
        data = _data(size)
        pairs = _envelope_pairs(env, data)
        try:
            huge = c.envelope_mmap_pairs(env, data)
            pairs[HUGE_FRESH] = huge["fresh"]
            pairs[HUGE_REUSED] = huge["reused"]
        except c.Unavailable as exc:
            recorder.skip("allocation wall", HUGE_FRESH, str(exc))
        raw = c.raw_pairs(data)
        pairs[RAW_FRESH] = raw["gcm+ocb3 fresh"]
        pairs[CEILING] = raw["gcm+ocb3 reused"]
        for op in OPS:
            stats = _measure(plan, recorder, "allocation wall", op, size, pairs)
            where = {"op": op, "size": size, "group": "allocation wall"}
            for label in (ENVELOPE, ENVELOPE_INTO, HUGE_FRESH, HUGE_REUSED):
                recorder.ratio(
                    f"{_size_label(size)} {op} (allocation wall): {label} / ceiling",
                    stats,
                    label,
                    CEILING,
                    context=where,
                )
        del pairs, data


def _child(mode: str, key_dir: str, src: Path, dst: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks._stream_child", mode, key_dir, str(src), str(dst)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"stream child {mode} failed: {completed.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def streaming(plan: Plan, recorder: Recorder) -> None:
    """A file through encrypt_file/decrypt_file (and through the streams to a discarding
    sink), each run in a fresh child process whose peak RSS is the stream's alone."""
    size = plan.stream_size
    print(f"stream {_size_label(size)} file (child processes)", flush=True)
    with tempfile.TemporaryDirectory(prefix="envelope-bench-") as tmp:
        root = Path(tmp)
        for index in range(2):
            LocalKey.generate().save(root / f"layer-{index}.key")
        plain, sealed, opened = root / "plain.bin", root / "sealed.env", root / "opened.bin"
        block = os.urandom(16 * MiB)
        with open(plain, "wb") as handle:
            for _ in range(size // len(block)):
                handle.write(block)
        del block
        runs: dict[str, list[dict[str, Any]]] = {}
        recorder.load.start()
        for _ in range(plan.stream_repeats):
            for mode, src, dst in (
                ("encrypt_file", plain, sealed),
                ("decrypt_file", sealed, opened),
                ("encrypt_stream", plain, Path(os.devnull)),
                ("decrypt_stream", sealed, Path(os.devnull)),
            ):
                runs.setdefault(mode, []).append(_child(mode, tmp, src, dst))
            if opened.stat().st_size != size:
                raise AssertionError("the decrypted file has the wrong size")
            opened.unlink()
        others = recorder.load.stop()
    for mode, samples in runs.items():
        stats = Stats(tuple(run["seconds"] for run in samples))
        peak = max(run["peak_rss"] for run in samples)
        recorder.results.append(
            {
                "group": "stream",
                "op": mode,
                "size": size,
                "impl": ENVELOPE,
                **timing_fields(stats, size),
                "peak_rss": peak,
                "rss_before": max(run["rss_before"] for run in samples),
                "others_cpu_share": others,
            }
        )
        if mode.endswith("_file"):
            name = f"{_size_label(size)} {mode} peak RSS (MiB)"
            if size == GiB:
                recorder.target(name, peak / MiB, "<", 64, "MiB")


KV_TARGET = "Key Vault calls/message, cache vs none"


def key_vault(plan: Plan, recorder: Recorder) -> None:
    """LocalKeyVault with 20 ms latency on every Key Vault operation: caches off vs on."""
    print("Key Vault, 20 ms latency, cache off vs on", flush=True)
    try:
        outcome = keyvault_case(
            cached_messages=plan.kv_cached,
            uncached_messages=plan.kv_uncached,
            latency_s=0.020,
            budget_s=plan.kv_budget_s,
        )
    except c.Unavailable as exc:
        reason = str(exc)
        recorder.skip("key vault", "envelope with KeyVaultKey", reason)
        recorder.cases["key_vault"] = {"status": "skipped", "reason": reason}
        recorder.target(KV_TARGET, None, "<=", 0.01, "x", reason=reason)
        return
    recorder.cases["key_vault"] = {"status": "ok", **outcome}
    recorder.target(KV_TARGET, outcome["calls_ratio"], "<=", 0.01, "x")
    recorder.target("Key Vault messages/s, cache vs none", outcome["speedup"], ">=", 50, "x")


CASES: tuple[tuple[str, Callable[[Plan, Recorder], None]], ...] = (
    ("one-shot", one_shot),
    ("1 KiB cache", small_messages),
    ("layers", layers),
    ("frame sizes", frame_sizes),
    ("allocation wall", allocation_wall),
    ("stream", streaming),
    ("key vault", key_vault),
    ("records", records_case),
)


def run_suite(plan: Plan, recorder: Recorder, only: Sequence[str] = ()) -> float:
    """Run every case (or those named in ``only``); returns the wall time."""
    start = time.perf_counter()
    for name, case in CASES:
        if only and name not in only:
            continue
        began = time.perf_counter()
        try:
            case(plan, recorder)
        except Exception as exc:  # one broken case must not lose the others
            # The library is being edited while the suite runs; report, do not invent.
            reason = f"{type(exc).__name__}: {exc}".strip()[:2000]
            recorder.errors.append({"case": name, "error": reason})
            print(f"  ERROR in case {name!r}: {reason}", flush=True)
        recorder.case_seconds[name] = time.perf_counter() - began
    return time.perf_counter() - start
