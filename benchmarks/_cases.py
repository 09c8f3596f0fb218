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
from ._blob import CSE_V2, ENVELOPE_BLOB, PLAIN, REUPLOAD, REWRAP, blob_contenders
from ._keyvault import cache_options, keyvault_case, keyvault_load_case
from ._plan import KiB, MiB, Plan
from ._recorder import Recorder, size_label, timing_fields
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
) -> dict[str, Stats]:
    """``op`` of every pair on ``size``-byte messages, in the rounds the plan gives the size."""
    return recorder.measure(
        group,
        op,
        size,
        {label: getattr(pair, op) for label, pair in pairs.items()},
        rounds=plan.rounds(size),
        min_sample_s=plan.min_sample_s,
        warmup=plan.warmup(size),
    )


# -- the cases --------------------------------------------------------------------------


NO_WORKERS = "Envelope has no workers parameter"


def _cpus() -> int:
    """The CPUs this process may run on: what ``workers=None`` means."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def one_shot(plan: Plan, recorder: Recorder) -> None:
    """Every contender on messages of each size, plain encrypt/decrypt and the baselines."""
    env = c.make_envelope()
    workers = c.workers_supported()
    recorder.cases["one_shot"] = {"peers_up_to": plan.peer_max_size}
    for size in plan.sizes:
        recorder.progress.step(f"preparing {size_label(size)}")
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
        if size > plan.peer_max_size:
            peers = ()
        for label, factory in peers:
            pair = _try(recorder, "one-shot", label, factory)
            if pair is not None:
                pairs[label] = pair
        for op in OPS:
            stats = _measure(plan, recorder, "one-shot", op, size, pairs)
            _one_shot_ratios(recorder, stats, op, size, workers)
        del pairs, peers, data


def _one_shot_ratios(
    recorder: Recorder, stats: dict[str, Stats], op: str, size: int, workers: bool
) -> None:
    """The ratios of one size and operation, and the targets at 64 KiB and 64 MiB. The
    64 MiB targets against the raw pipelines and Tink need every CPU: without ``workers``
    in the installed Envelope they are reported as not measured (the ratios still are)."""
    where = {"op": op, "size": size}
    name = f"{size_label(size)} {op}"
    headline = size == 64 * MiB
    pool = f"default workers ({_cpus()} CPUs)"
    gate = None if workers else NO_WORKERS
    recorder.ratio(
        f"{name}: envelope / raw two-layer, fresh output",
        stats,
        ENVELOPE,
        RAW_FRESH,
        target=0.85 if size == 64 * KiB else 1.05 if headline else None,
        target_name=f"{name}: plain API, {pool} / raw single-thread, fresh output"
        if headline
        else None,
        unmeasured=gate if headline else None,
        context=where,
    )
    recorder.ratio(
        f"{name}: envelope into reused buffer / ceiling",
        stats,
        ENVELOPE_INTO,
        CEILING,
        target=1.5 if headline else None,
        target_name=f"{name}: into reused buffer, {pool} / single-thread ceiling",
        unmeasured=gate,
        context=where,
    )
    for peer, multiple, into_multiple in (
        (ESDK_SIGNING, 5.0, 10.0),
        (ESDK_COMMIT, 5.0, 10.0),
        (TINK_KMS, 3.0, 5.0),
        (TINK_AEAD, None, None),
    ):
        recorder.ratio(
            f"{name}: envelope / {peer}",
            stats,
            ENVELOPE,
            peer,
            target=multiple if headline else None,
            target_name=f"{name}: plain API, {pool} / {peer}" if peer == TINK_KMS else None,
            unmeasured=gate if peer == TINK_KMS else None,
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


#: 1 KiB targets against Tink ``KmsEnvelopeAead`` (one layer, local KEK), per operation.
SMALL_TARGETS = (
    (ENVELOPE, "two layers, fresh local data keys", {"encrypt": 1.0, "decrypt": 0.75}),
    (ENVELOPE_CACHED, "DataKeyCache + UnwrapCache", {"encrypt": 1.25, "decrypt": 1.0}),
)


def small_messages(plan: Plan, recorder: Recorder) -> None:
    """1 KiB messages: a fresh data key per message vs data keys from the caches, in the
    same rounds as Tink ``KmsEnvelopeAead`` (and Tink ``Aead``, one key and no envelope)."""
    recorder.progress.step("preparing")
    data = _data(KiB)
    keys = [LocalKey.generate(), LocalKey.generate()]
    contenders = {
        ENVELOPE: c.envelope_pair(Envelope(keys), data),
        ENVELOPE_CACHED: c.envelope_pair(Envelope(keys, **cache_options()), data),
    }
    for label, factory in (
        (TINK_KMS, functools.partial(c.tink_kms_envelope_pair, data)),
        (TINK_AEAD, functools.partial(c.tink_aead_pair, data)),
    ):
        pair = _try(recorder, "1 KiB cache", label, factory)
        if pair is not None:
            contenders[label] = pair
    for op in OPS:
        stats = _measure(plan, recorder, "1 KiB cache", op, KiB, contenders)
        where = {"op": op, "size": KiB}
        recorder.ratio(
            f"1 KiB {op}: cached / fresh data keys", stats, ENVELOPE_CACHED, ENVELOPE, context=where
        )
        for label, what, thresholds in SMALL_TARGETS:
            recorder.ratio(
                f"1 KiB {op}, {what} / {TINK_KMS}",
                stats,
                label,
                TINK_KMS,
                target=thresholds[op],
                context=where,
            )


def layers(plan: Plan, recorder: Recorder) -> None:
    """1, 2 and 3 layers (GCM; GCM+OCB3; GCM+OCB3+GCM-SIV) through plain encrypt/decrypt."""
    for size in plan.layer_sizes:
        recorder.progress.step(f"preparing {size_label(size)}")
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
    recorder.progress.step(f"preparing {size_label(size)}")
    data = _data(size)
    # One worker: several would seal a message this large in frames of at least 1 MiB,
    # whatever the frame size asked for (the thread-scaling case measures them).
    pairs = {
        size_label(frame): c.envelope_into_pair(c.make_envelope(2, frame, workers=1), data)
        for frame in plan.frame_sizes
    }
    plain = {
        size_label(frame): c.envelope_pair(c.make_envelope(2, frame, workers=1), data)
        for frame in plan.frame_sizes
    }
    for op in OPS:
        _measure(plan, recorder, "frame size, into reused buffer", op, size, pairs)
        _measure(plan, recorder, "frame size, plain API", op, size, plain)


def allocation_wall(plan: Plan, recorder: Recorder) -> None:
    """Large messages into buffers of each kind, side by side with the ceiling."""
    env = c.make_envelope()
    for size in plan.wall_sizes:
        recorder.progress.step(f"preparing {size_label(size)}")
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
                    f"{size_label(size)} {op} (allocation wall): {label} / ceiling",
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


COPY = "copy_file"
#: The runs of one round of the stream case: (mode, source, destination) by file name. The
#: copy comes first: the I/O limit the file helpers are held to, on the same file.
_STREAM_RUNS = (
    (COPY, "plain.bin", "copy.bin"),
    ("encrypt_file", "plain.bin", "sealed.env"),
    ("decrypt_file", "sealed.env", "opened.bin"),
    ("encrypt_stream", "plain.bin", os.devnull),
    ("decrypt_stream", "sealed.env", os.devnull),
)


def streaming(plan: Plan, recorder: Recorder) -> None:
    """A file through encrypt_file/decrypt_file, next to a copy of the same file with fsync
    (the I/O limit of the machine), and through the streams to a discarding sink; each run
    in a fresh child process whose peak RSS is the run's alone."""
    size = plan.stream_size
    recorder.progress.step(f"writing a {size_label(size)} file")
    with tempfile.TemporaryDirectory(prefix="envelope-bench-") as tmp:
        root = Path(tmp)
        for index in range(2):
            LocalKey.generate().save(root / f"layer-{index}.key")
        block = os.urandom(min(16 * MiB, size))
        with open(root / "plain.bin", "wb") as handle:
            for _ in range(size // len(block)):
                handle.write(block)
        del block
        runs: dict[str, list[dict[str, Any]]] = {}
        recorder.load.start()
        for repeat in range(plan.stream_repeats):
            for mode, src, dst in _STREAM_RUNS:
                recorder.progress.step(f"{mode}, round {repeat + 1} of {plan.stream_repeats}")
                target = Path(dst) if dst == os.devnull else root / dst
                if target != Path(os.devnull):
                    # Every file run writes a new file; none pays for deleting an old one.
                    target.unlink(missing_ok=True)
                runs.setdefault(mode, []).append(_child(mode, tmp, root / src, target))
            for copy in ("opened.bin", "copy.bin"):
                if (root / copy).stat().st_size != size:
                    raise AssertionError(f"{copy} has the wrong size")
        others = recorder.load.stop()
    stats = {mode: Stats(tuple(run["seconds"] for run in done)) for mode, done in runs.items()}
    for mode, samples in runs.items():
        recorder.results.append(
            {
                "group": "stream",
                "op": mode,
                "size": size,
                "impl": "copy with fsync" if mode == COPY else ENVELOPE,
                **timing_fields(stats[mode], size),
                "peak_rss": max(run["peak_rss"] for run in samples),
                "rss_before": max(run["rss_before"] for run in samples),
                "others_cpu_share": others,
            }
        )
    label = size_label(size)
    for mode in ("encrypt_file", "decrypt_file"):
        recorder.ratio(
            f"{label} {mode} / copying the file with fsync",
            stats,
            mode,
            COPY,
            target=0.7,
            context={"op": mode, "size": size, "group": "stream"},
        )
        peak = max(run["peak_rss"] for run in runs[mode])
        recorder.target(f"{label} {mode} peak RSS (MiB)", peak / MiB, "<", 64, "MiB")


KV_TARGET = "Key Vault calls/message, cache vs none"


def key_vault(plan: Plan, recorder: Recorder) -> None:
    """LocalKeyVault with 20 ms latency on every Key Vault operation: caches off vs on."""
    recorder.progress.step("20 ms latency, caches off, then on")
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


BLOB_GROUP = "blob storage"
REWRAP_TARGET = "Blob rewrap: header only vs re-upload (x faster)"


def blob_storage(plan: Plan, recorder: Recorder) -> None:
    """envelope.blob vs azure-storage-blob's client-side encryption v2 vs no encryption,
    against Azurite; then a header-only rewrap vs a re-upload."""
    size = plan.blob_size
    recorder.progress.step(f"Azurite, {size_label(size)} blobs")
    try:
        with blob_contenders(size) as operations:
            stats = {
                op: recorder.measure(
                    BLOB_GROUP,
                    op,
                    size,
                    contenders,
                    rounds=plan.blob_rounds,
                    min_sample_s=plan.min_sample_s,
                    warmup=False,
                )
                for op, contenders in operations.items()
            }
    except c.Unavailable as exc:
        reason = str(exc)
        recorder.skip(BLOB_GROUP, ENVELOPE_BLOB, reason)
        recorder.cases["blob"] = {"status": "skipped", "reason": reason}
        for name in (f"Blob {op}: envelope / CSE v2" for op in ("upload", "download")):
            recorder.target(name, None, ">=", 0.8, "x", reason=reason)
        recorder.target(REWRAP_TARGET, None, ">=", 20, "x", reason=reason)
        return
    recorder.cases["blob"] = {"status": "ok", "size": size, "concurrency": 4}
    for op in ("upload", "download"):
        context = {"group": BLOB_GROUP, "op": op, "size": size}
        recorder.ratio(
            f"Blob {op}: envelope / CSE v2",
            stats[op],
            ENVELOPE_BLOB,
            CSE_V2,
            target=0.8,
            context=context,
        )
        recorder.ratio(
            f"Blob {op}: envelope / no encryption",
            stats[op],
            ENVELOPE_BLOB,
            PLAIN,
            context=context,
        )
    recorder.ratio(
        "Blob rewrap vs re-upload",
        stats["rotate"],
        REWRAP,
        REUPLOAD,
        target=20,
        target_name=REWRAP_TARGET,
        context={"group": BLOB_GROUP, "op": "rotate", "size": size},
    )


def thread_scaling(plan: Plan, recorder: Recorder) -> None:
    """One large message on 1, 2, 4 ... workers up to every CPU: into a reused buffer (the
    CPU-bound path) and through the plain API (fresh output, page faults included)."""
    if not c.workers_supported():
        recorder.skip("thread scaling", "envelope", NO_WORKERS)
        return
    size = plan.frame_message
    recorder.progress.step(f"preparing {size_label(size)}")
    data = _data(size)
    counts = sorted({1, _cpus(), *(n for n in (2, 4, 8, 16) if n < _cpus())})
    label = {n: f"{n} worker{'s' if n > 1 else ''}" for n in counts}
    into = {label[n]: c.envelope_into_pair(c.make_envelope(workers=n), data) for n in counts}
    plain = {label[n]: c.envelope_pair(c.make_envelope(workers=n), data) for n in counts}
    for group, pairs in (
        ("thread scaling, into reused buffer", into),
        ("thread scaling, plain API", plain),
    ):
        for op in OPS:
            stats = _measure(plan, recorder, group, op, size, pairs)
            for n in counts[1:]:
                recorder.ratio(
                    f"{size_label(size)} {op} ({group}): {label[n]} / 1 worker",
                    stats,
                    label[n],
                    label[1],
                    context={"op": op, "size": size, "group": group},
                )
    del into, plain, data


def key_vault_load(plan: Plan, recorder: Recorder) -> None:
    """Key Vault under load: bursts of concurrent tasks, cold and warm, caches off and on;
    LocalKeyVault's cost per request; failover with one of a layer's vaults down."""
    recorder.progress.step("bursts of concurrent tasks, request cost, failover")
    targets = (
        (KV_LOAD_ERRORS, "<=", 0.0, "messages"),
        # One getKey per key, one wrap under the oct-HSM key, one unwrap per wrapped key.
        (KV_LOAD_CALLS, "<=", 5.0, "calls"),
        (KV_REQUEST, "<", 5.0, "ms"),
        (KV_FAILOVER_HUNG, "<=", 500.0, "ms"),
        (KV_FAILOVER_REFUSED, "<=", 500.0, "ms"),
    )
    try:
        outcome = keyvault_load_case(quick=plan.quick)
    except c.Unavailable as exc:
        reason = str(exc)
        recorder.skip("key vault under load", "envelope with KeyVaultKey", reason)
        recorder.cases["key_vault_load"] = {"status": "skipped", "reason": reason}
        for name, comparison, threshold, unit in targets:
            recorder.target(name, None, comparison, threshold, unit, reason=reason)
        return
    recorder.cases["key_vault_load"] = {"status": "ok", **outcome}
    bursts = [burst for arm in outcome["arms"].values() for burst in arm.values()]
    cold = outcome["arms"]["with_cache"]["cold"]
    values = (
        sum(burst["errors"] for burst in bursts),
        cold["calls_per_message"] * cold["tasks"],
        outcome["request"]["median_ms"],
        outcome["failover"]["hung"]["p95_after_s"] * 1000,
        outcome["failover"]["refusing"]["p95_after_s"] * 1000,
    )
    for (name, comparison, threshold, unit), value in zip(targets, values, strict=True):
        recorder.target(name, value, comparison, threshold, unit)


KV_LOAD_ERRORS = "Key Vault under load: failed messages in every burst"
KV_LOAD_CALLS = "Key Vault under load: calls in a cold burst with caches"
KV_REQUEST = "LocalKeyVault: one request on loopback (median)"
KV_FAILOVER_HUNG = "Failover, one of two vaults hung: p95 decrypt after the first failure"
KV_FAILOVER_REFUSED = "Failover, one of two vaults refusing: p95 decrypt after the first failure"


CASES: tuple[tuple[str, Callable[[Plan, Recorder], None]], ...] = (
    ("one-shot", one_shot),
    ("1 KiB cache", small_messages),
    ("layers", layers),
    ("frame sizes", frame_sizes),
    ("thread scaling", thread_scaling),
    ("allocation wall", allocation_wall),
    ("stream", streaming),
    ("key vault", key_vault),
    ("key vault under load", key_vault_load),
    ("records", records_case),
    ("blob", blob_storage),
)


def run_suite(plan: Plan, recorder: Recorder, only: Sequence[str] = ()) -> float:
    """Run every case (or those named in ``only``); returns the wall time."""
    start = time.perf_counter()
    for name, case in CASES:
        if only and name not in only:
            continue
        recorder.progress.start_case(name)
        began = time.perf_counter()
        try:
            case(plan, recorder)
        except Exception as exc:  # one broken case must not lose the others
            # The library is being edited while the suite runs; report, do not invent.
            reason = f"{type(exc).__name__}: {exc}".strip()[:2000]
            recorder.errors.append({"case": name, "error": reason})
            recorder.progress.note(f"  ERROR in case {name!r}: {reason}")
        recorder.case_seconds[name] = time.perf_counter() - began
        recorder.progress.end_case(name, recorder.case_seconds[name])
    recorder.progress.finish()
    return time.perf_counter() - start
