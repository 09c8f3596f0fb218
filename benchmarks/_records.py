"""The records case: ``envelope.records`` against Tink ``Aead``, Tink ``KmsEnvelopeAead``, the
AWS ESDK and envelope messages, at 16 B, 256 B and 1 KiB: bytes added per value and
operations per second, one call at a time and in batches, all in interleaved rounds; the
size of a SQLite table of card numbers and notes; and a cold ``decrypt_many`` of 10,000
records, counting the unwraps it makes."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from envelope import DataKeyCache, Envelope, LocalKey, UnwrapCache, WrappedKey
from envelope.records import MemoryKeyStore, Records, SQLiteKeyStore

from . import _contenders as c
from ._plan import KiB, Plan
from ._recorder import Recorder
from ._timing import Stats

__all__ = ["records_case"]

RECORDS = "records"
RECORDS_MANY = "records, encrypt_many/decrypt_many"
TINK_AEAD = "Tink Aead AES256_GCM"
TINK_AEAD_LOOP = "Tink Aead AES256_GCM, a loop over the batch"
TINK_KMS = "Tink KmsEnvelopeAead, local KEK"
ESDK = "AWS ESDK, COMMIT_KEY without signing"
MESSAGES = "envelope messages, cached data keys"
SIZES = (16, 256, KiB)
#: Values per call of the batch contenders; their times are reported per value.
BATCH = 100
SCOPE = "tenant-42"
COLUMN = {"column": "pan"}
COLD_RECORDS = 10_000


class _CountingKey(LocalKey):
    """A local KEK that counts its unwraps (one thread at a time)."""

    __slots__ = ("unwraps",)
    unwraps: int

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        self.unwraps = getattr(self, "unwraps", 0) + 1
        return super().unwrap_key(wrapped)


def _records_pair(records: Records, data: bytes, *, batch: bool) -> c.Pair:
    """One value a call, or ``BATCH`` values a call through the batch verbs."""
    where: dict[str, Any] = {"scope": SCOPE, "context": COLUMN}
    values = [data] * BATCH
    if batch:
        sealed = records.encrypt_many(values, **where)
        pair = c.Pair(
            lambda: records.encrypt_many(values, **where),
            lambda: records.decrypt_many(sealed, **where),
        )
    else:
        record = records.encrypt(data, **where)
        pair = c.Pair(
            lambda: records.encrypt(data, **where), lambda: records.decrypt(record, **where)
        )
    if pair.decrypt() != (values if batch else data):
        raise AssertionError("records round trip failed")
    return pair


def _loop_pair(single: c.Pair) -> c.Pair:
    """A peer's single calls in a loop over a batch, keeping each result as a batch API
    does (fresh memory for every output is part of a batch's cost)."""
    encrypt, decrypt = single.encrypt, single.decrypt
    return c.Pair(
        lambda: [encrypt() for _ in range(BATCH)],
        lambda: [decrypt() for _ in range(BATCH)],
    )


def _overhead(pair: c.Pair, size: int) -> int:
    sealed = pair.encrypt()
    assert isinstance(sealed, (bytes, bytearray))
    return len(sealed) - size


def _per_value(stats: Stats) -> Stats:
    return Stats(tuple(sample / BATCH for sample in stats.samples))


def _contenders(
    records: Records, messages: Envelope, data: bytes, recorder: Recorder
) -> dict[str, c.Pair]:
    pairs = {
        RECORDS: _records_pair(records, data, batch=False),
        RECORDS_MANY: _records_pair(records, data, batch=True),
        MESSAGES: c.envelope_pair(messages, data),
    }
    peers: Sequence[tuple[str, Callable[[], c.Pair]]] = (
        (TINK_AEAD, lambda: c.tink_aead_pair(data)),
        (TINK_KMS, lambda: c.tink_kms_envelope_pair(data)),
        (ESDK, lambda: c.aws_esdk_pair(data, signing=False)),
    )
    for label, factory in peers:
        try:
            pairs[label] = factory()
        except c.Unavailable as exc:
            recorder.skip("records", label, str(exc))
    if TINK_AEAD in pairs:
        pairs[TINK_AEAD_LOOP] = _loop_pair(pairs[TINK_AEAD])
    return pairs


def _cold_decrypt_many() -> dict[str, Any]:
    """10,000 records of one scope decrypted by a reader that has never seen their key set."""
    inner, outer = _CountingKey(os.urandom(32)), _CountingKey(os.urandom(32))
    writer = Records(Envelope([inner, outer]), MemoryKeyStore())
    values = [os.urandom(16) for _ in range(COLD_RECORDS)]
    sealed = writer.encrypt_many(values, scope=SCOPE, context=COLUMN)
    reader = Records(Envelope([inner, outer]), writer.store)
    start = time.perf_counter()
    opened = reader.decrypt_many(sealed, scope=SCOPE, context=COLUMN)
    seconds = time.perf_counter() - start
    if opened != values:
        raise AssertionError("cold decrypt_many round trip failed")
    return {
        "records": COLD_RECORDS,
        "unwraps_per_layer": [getattr(key, "unwraps", 0) for key in (inner, outer)],
        "seconds": seconds,
        "records_per_s": COLD_RECORDS / seconds,
    }


def _table_sizes(rows: int) -> dict[str, Any]:
    """A SQLite table of ``rows`` rows of a 16-byte card number and 200 bytes of notes, each
    column stored as plaintext, as envelope messages and as records (two local keys)."""
    keys = [LocalKey.generate(), LocalKey.generate()]
    messages = Envelope(keys, data_key_cache=DataKeyCache())
    out: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory(prefix="envelope-records-") as tmp:
        root = Path(tmp)
        records = Records(Envelope(keys), SQLiteKeyStore(root / "keys.db"))
        kinds: dict[str, Callable[[bytes, str, str], bytes]] = {
            "plaintext": lambda value, scope, column: value,
            "messages": lambda value, scope, column: bytes(
                messages.encrypt(value, {"scope": scope, "column": column})
            ),
            "records": lambda value, scope, column: records.encrypt(
                value, scope=scope, context={"column": column}
            ),
        }
        for kind, seal in kinds.items():
            path = root / f"{kind}.db"
            start = time.perf_counter()
            with sqlite3.connect(path) as db:
                db.execute("CREATE TABLE cards (id INTEGER PRIMARY KEY, pan BLOB, notes BLOB)")
                db.executemany(
                    "INSERT INTO cards (pan, notes) VALUES (?, ?)",
                    (
                        (
                            seal(b"%016d" % i, f"tenant-{i % 50}", "pan"),
                            seal(os.urandom(200), f"tenant-{i % 50}", "notes"),
                        )
                        for i in range(rows)
                    ),
                )
            seconds = time.perf_counter() - start
            with sqlite3.connect(path) as db:
                db.execute("VACUUM")
                pan = db.execute("SELECT length(pan) FROM cards LIMIT 1").fetchone()[0]
            out[kind] = {
                "table_bytes": path.stat().st_size,
                "pan_bytes": pan,
                "rows_per_s": rows / seconds,
            }
        out["key_store_bytes"] = (root / "keys.db").stat().st_size
    return out


def records_case(plan: Plan, recorder: Recorder) -> None:
    """Records against their peers at 16 B, 256 B and 1 KiB."""
    keys = [LocalKey.generate(), LocalKey.generate()]
    records = Records(Envelope(keys), MemoryKeyStore())
    messages = Envelope(keys, data_key_cache=DataKeyCache(), unwrap_cache=UnwrapCache())
    case: dict[str, Any] = {"batch": BATCH, "sizes": {}}
    lines = ["", f"Records (field-level encryption), two local KEKs; batches of {BATCH}"]
    header = f"{'contender':48s} {'size':>6s} {'+bytes':>7s} {'enc/s':>10s} {'dec/s':>10s}"
    lines += [header, "-" * len(header)]
    for size in SIZES:
        recorder.progress.step(f"preparing {size} B")
        data = os.urandom(size)
        pairs = _contenders(records, messages, data, recorder)
        batches = (RECORDS_MANY, TINK_AEAD_LOOP)
        overheads = {
            label: _overhead(pair, size) for label, pair in pairs.items() if label not in batches
        }
        overheads[RECORDS_MANY] = overheads[RECORDS]
        per_op: dict[str, dict[str, Stats]] = {}
        for op in ("encrypt", "decrypt"):
            stats = recorder.measure(
                "records",
                op,
                size,
                {label: getattr(pair, op) for label, pair in pairs.items()},
                rounds=plan.rounds_small,
                min_sample_s=plan.min_sample_s,
            )
            for label in (RECORDS_MANY, TINK_AEAD_LOOP):
                if label in stats:
                    stats[label] = _per_value(stats[label])
            per_op[op] = stats
            _targets(recorder, op, size, stats)
        case["sizes"][size] = {
            label: {
                "added_bytes": overheads.get(label),
                **{
                    f"{op}_per_s": 1 / per_op[op][label].median
                    for op in per_op
                    if label in per_op[op]
                },
            }
            for label in pairs
        }
        for label, figures in case["sizes"][size].items():
            added = "" if figures["added_bytes"] is None else figures["added_bytes"]
            encrypt, decrypt = figures.get("encrypt_per_s", 0), figures.get("decrypt_per_s", 0)
            lines.append(f"{label:48s} {size:>6d} {added:>7} {encrypt:>10,.0f} {decrypt:>10,.0f}")
    overhead = case["sizes"][KiB][RECORDS]["added_bytes"]
    recorder.target("records: bytes added per value, two layers", overhead, "<=", 64, "B")
    recorder.progress.step(f"cold decrypt_many of {COLD_RECORDS:,} records")
    cold = _cold_decrypt_many()
    case["cold_decrypt_many"] = cold
    recorder.target(
        f"records: cold decrypt_many of {COLD_RECORDS:,}: unwraps per layer",
        max(cold["unwraps_per_layer"]),
        "<=",
        1,
        "calls",
    )
    recorder.progress.step("a SQLite table")
    tables = _table_sizes(2_000 if plan.quick else 20_000)
    case["sqlite_table"] = tables
    lines += [
        f"cold decrypt_many of {COLD_RECORDS:,} records of one scope: unwraps per layer "
        f"{cold['unwraps_per_layer']}, {cold['records_per_s']:,.0f} records/s",
        f"SQLite table of {tables['rows']:,} rows (16-byte card number + 200 bytes of notes):",
    ]
    for kind in ("plaintext", "messages", "records"):
        lines.append(
            f"  {kind:10s} {tables[kind]['table_bytes'] / 1e6:6.1f} MB, "
            f"a card number stored in {tables[kind]['pan_bytes']} B, "
            f"{tables[kind]['rows_per_s']:,.0f} rows/s"
        )
    lines.append(f"  key store: {tables['key_store_bytes']:,} bytes for 50 scopes")
    case["table"] = lines
    recorder.cases["records"] = {"status": "ok", **case}


def _targets(recorder: Recorder, op: str, size: int, stats: dict[str, Stats]) -> None:
    if size != KiB:
        return
    name = f"records 1 KiB {op}"
    where = {"op": op, "size": size, "group": "records"}
    for numerator, denominator, threshold in (
        (RECORDS, TINK_AEAD, 0.45),
        (RECORDS, TINK_KMS, 2.0),
        (RECORDS_MANY, TINK_AEAD, 0.6),
        (RECORDS_MANY, TINK_AEAD_LOOP, None),  # the peer's calls in a loop keeping results
    ):
        label = "one call at a time" if numerator == RECORDS else "encrypt_many/decrypt_many"
        recorder.ratio(
            f"{name}, {label} / {denominator}",
            stats,
            numerator,
            denominator,
            target=threshold,
            context=where,
        )
