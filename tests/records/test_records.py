"""Records through the public API: round trips of every size, scope, context, layer count and
form; the sizes RECORDS.md promises; the errors of section 8 and their precedence; rotation;
shredding in this process; the key store's failures; the key-set cache's counters."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

import envelope._cache
import envelope._message
import envelope.records._cache
import envelope.records._records
from envelope import DecryptionError, Envelope, EnvelopeError, FormatError, KeyAccessError, LocalKey
from envelope._format import Suite
from envelope._limits import MAX_RECORD_BYTES, MAX_SCOPE_BYTES
from envelope.records import (
    KeySetCache,
    KeyStore,
    MemoryKeyStore,
    Records,
    RotationPolicy,
    SQLiteKeyStore,
    from_text,
    to_text,
)
from envelope.records._format import parse_key_set
from tests.conftest import FrozenClock
from tests.core.conftest import Counting
from tests.records.conftest import DictStore

SIZES = [0, 1, 15, 16, 17, 255, 256, 1024, 65536]
CONTEXTS = [None, {}, {"column": "pan"}, {"b": "2", "a": "1", "\u00e9": "", "\U0001f600": "\x00"}]
SCOPES = ["", "tenant-42", "t\u00e9nant-\U0001f600", "x" * MAX_SCOPE_BYTES, "\u00e9" * 128]


def _id(record: bytes) -> int:
    return int.from_bytes(record[1:9], "big")


def test_the_issue_example(tmp_path: Path, keys):
    records = Records(Envelope(list(keys)), SQLiteKeyStore(tmp_path / "keys.db"))
    token = records.encrypt(b"4111 1111 1111 1111", scope="tenant-42", context={"column": "pan"})
    assert type(token) is bytes
    opened = records.decrypt(token, scope="tenant-42", context={"column": "pan"})
    assert opened == b"4111 1111 1111 1111"
    assert type(opened) is bytes


def test_envelope_and_store_are_exposed(env, store):
    records = Records(env, store)
    assert records.envelope is env
    assert records.store is store
    assert isinstance(records.cache, KeySetCache)
    assert records.rotation == RotationPolicy()
    assert isinstance(store, KeyStore)
    assert "Records(" in repr(records)


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_sizes(store, env, size):
    records = Records(env, store)
    data = os.urandom(size)
    record = records.encrypt(data, scope="s", context={"column": "c"})
    assert len(record) == size + 29 + 16 * 2  # RECORDS.md section 2: 61 bytes with two layers
    assert records.decrypt(record, scope="s", context={"column": "c"}) == data


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_overhead_is_29_plus_16_per_layer(layers: int):
    records = Records(Envelope([LocalKey.generate() for _ in range(layers)]), MemoryKeyStore())
    record = records.encrypt(b"x" * 16)
    assert len(record) == 16 + 29 + 16 * layers
    assert records.decrypt(record) == b"x" * 16


@pytest.mark.parametrize(
    "algorithms",
    [("AES-256-GCM-SIV", "AES-256-OCB3"), ("AES-256-OCB3", "AES-256-GCM"), ("AES-256-GCM",)],
)
def test_every_algorithm_in_every_position(algorithms):
    keys = [LocalKey.generate() for _ in algorithms]
    records = Records(Envelope(keys, algorithms=algorithms), MemoryKeyStore())
    record = records.encrypt(b"modes")
    assert records.decrypt(record) == b"modes"
    parsed = parse_key_set(records.store.get(_id(record)))  # type: ignore[arg-type]
    assert [layer.algorithm.label for layer in parsed.layers] == list(algorithms)


@pytest.mark.parametrize("suite", [Suite.HKDF_SHA256, Suite.BLAKE2B])
def test_both_suites(monkeypatch, env, suite):
    monkeypatch.setattr(envelope._message, "SUITE", suite)
    records = Records(env, MemoryKeyStore())
    record = records.encrypt(b"suite")
    assert parse_key_set(records.store.get(_id(record))).suite is suite  # type: ignore[arg-type]
    assert Records(env, records.store).decrypt(record) == b"suite"


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("context", CONTEXTS)
def test_round_trip_scopes_and_contexts(records, scope, context):
    record = records.encrypt(b"value", scope=scope, context=context)
    assert records.decrypt(record, scope=scope, context=context) == b"value"
    fresh = Records(records.envelope, records.store)  # a cold reader
    assert fresh.decrypt(record, scope=scope, context=context) == b"value"


def test_none_and_empty_context_are_the_same(records):
    assert records.decrypt(records.encrypt(b"v", context=None), context={}) == b"v"
    assert records.decrypt(records.encrypt(b"v", context={}), context=None) == b"v"


def test_context_order_does_not_matter(records):
    record = records.encrypt(b"v", context={"a": "1", "b": "2"})
    assert records.decrypt(record, context={"b": "2", "a": "1"}) == b"v"


def test_buffers_are_accepted(records):
    for data in (bytearray(b"buffer"), memoryview(b"buffer")):
        record = records.encrypt(data)
        assert records.decrypt(bytearray(record)) == b"buffer"
        assert records.decrypt(memoryview(record)) == b"buffer"


def test_text_form(records):
    text = records.encrypt_text(b"4111 1111 1111 1111", scope="t")
    assert isinstance(text, str)
    assert len(text) == 107  # RECORDS.md 2.1: ceil(4 * 80 / 3)
    assert len(records.encrypt_text(b"4111111111111111")) == 103  # 16 bytes
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert records.decrypt(text, scope="t") == b"4111 1111 1111 1111"
    assert records.decrypt_many([text], scope="t") == [b"4111 1111 1111 1111"]
    raw = from_text(text)
    assert to_text(raw) == text
    assert records.decrypt(raw, scope="t") == b"4111 1111 1111 1111"


@pytest.mark.parametrize(
    "text",
    ["AQ==", "AQ=", "A", "AQ\n", " AQ", "AR", "+/AA", "AQ.A", "\u00e9AAA"],
)
def test_non_canonical_text_is_a_format_error(text):
    with pytest.raises(FormatError):
        from_text(text)


def test_many(records):
    values = [os.urandom(n) for n in range(200)]
    sealed = records.encrypt_many(values, scope="batch", context={"c": "1"})
    assert [len(r) for r in sealed] == [n + 61 for n in range(200)]
    assert len({r[17:29] for r in sealed}) == 200  # a nonce each
    assert records.decrypt_many(sealed, scope="batch", context={"c": "1"}) == values
    assert records.decrypt_many([], scope="batch") == []
    assert records.encrypt_many([], scope="batch") == []
    singles = [records.decrypt(r, scope="batch", context={"c": "1"}) for r in sealed]
    assert singles == values
    texts = [to_text(r) for r in sealed[:5]]
    assert records.decrypt_many(texts, scope="batch", context={"c": "1"}) == values[:5]


def test_many_across_key_sets_and_prefixes(records):
    first = records.encrypt_many([b"a", b"b"], scope="s")
    records.rotate("s")
    second = records.encrypt_many([b"c", b"d"], scope="s")
    other = Records(records.envelope, records.store).encrypt_many([b"e"], scope="s")
    assert _id(first[0]) != _id(second[0])
    mixed = [first[0], second[0], first[1], other[0], second[1]]
    assert records.decrypt_many(mixed, scope="s") == [b"a", b"c", b"b", b"e", b"d"]


def test_many_names_the_record_that_failed(records):
    sealed = records.encrypt_many([b"a", b"b", b"c"])
    broken = bytearray(sealed[1])
    broken[-1] ^= 1
    with pytest.raises(DecryptionError, match="record 1") as caught:
        records.decrypt_many([sealed[0], bytes(broken), sealed[2]])
    assert not isinstance(caught.value, FormatError)
    with pytest.raises(FormatError, match="record 2"):
        records.decrypt_many([sealed[0], sealed[1], b"\x01"])
    gone = records.encrypt(b"x", scope="gone")
    records.shred("gone")
    with pytest.raises(KeyAccessError, match="record 0"):
        records.decrypt_many([gone], scope="gone")
    # Same key set and prefix as the run before it, but truncated into its fixed fields.
    with pytest.raises(FormatError, match="record 1"):
        records.decrypt_many([sealed[0], sealed[1][:20]])


def test_async(records):
    async def main() -> list[bytes]:
        sealed = await asyncio.gather(
            *(records.encrypt_async(b"%d" % i, scope=f"s{i % 3}") for i in range(30))
        )
        return list(
            await asyncio.gather(
                *(records.decrypt_async(r, scope=f"s{i % 3}") for i, r in enumerate(sealed))
            )
        )

    assert asyncio.run(main()) == [b"%d" % i for i in range(30)]


def test_async_errors(records):
    record = records.encrypt(b"x", scope="a")
    with pytest.raises(DecryptionError):
        asyncio.run(records.decrypt_async(record, scope="b"))
    with pytest.raises(FormatError):
        asyncio.run(records.decrypt_async(b"\x01", scope="a"))
    with pytest.raises(ValueError, match="scope"):
        asyncio.run(records.encrypt_async(b"x", scope="x" * 300))


# -- the errors of RECORDS.md section 8 ---------------------------------------------------


def test_wrong_scope_and_context_are_decryption_failures(records):
    record = records.encrypt(b"v", scope="tenant-42", context={"column": "pan"})
    records.encrypt(b"w", scope="tenant-43")  # the other scope exists too
    for where in (
        {"scope": "tenant-43", "context": {"column": "pan"}},
        {"scope": "", "context": {"column": "pan"}},
        {"scope": "tenant-42", "context": {"column": "notes"}},
        {"scope": "tenant-42", "context": {}},
        {"scope": "tenant-42", "context": {"column": "pan", "x": ""}},
    ):
        with pytest.raises(DecryptionError) as caught:
            records.decrypt(record, **where)
        assert type(caught.value) is DecryptionError, where


def test_a_wrong_scope_contacts_no_key_service(keys):
    inner, outer = Counting(), Counting()
    writer = Records(Envelope([inner, outer]), MemoryKeyStore())
    record = writer.encrypt(b"v", scope="tenant-42")
    reader = Records(Envelope([inner, outer]), writer.store)  # cold
    with pytest.raises(DecryptionError):
        reader.decrypt(record, scope="tenant-43")
    assert inner.unwraps == outer.unwraps == 0


def test_unknown_and_shredded_key_sets_are_key_access_errors(records):
    record = records.encrypt(b"v", scope="gone")
    kept = records.encrypt(b"k", scope="kept")
    with pytest.raises(KeyAccessError, match="unknown, or shredded"):
        Records(records.envelope, MemoryKeyStore()).decrypt(record, scope="gone")
    assert records.shred("gone") == 1
    with pytest.raises(KeyAccessError):
        records.decrypt(record, scope="gone")  # at once, in this process
    assert records.decrypt(kept, scope="kept") == b"k"  # no other scope is touched
    assert records.shred("gone") == 0


def test_a_shredded_scope_starts_afresh(records):
    old = records.encrypt(b"old", scope="s")
    records.shred("s")
    new = records.encrypt(b"new", scope="s")
    assert _id(new) != _id(old)
    assert records.decrypt(new, scope="s") == b"new"
    with pytest.raises(KeyAccessError):
        records.decrypt(old, scope="s")


@pytest.mark.parametrize(
    "record",
    [b"", b"\x01", bytes(28), b"\x02" + bytes(60), b"\x01" + bytes(8) + bytes(60)],
    ids=["empty", "one byte", "28 zero bytes", "version 2", "key-set id 0"],
)
def test_malformed_records_are_format_errors(records, record):
    with pytest.raises(FormatError):
        records.decrypt(record)


def test_a_record_longer_than_any_record_is_a_format_error(records):
    huge = b"\x01" + bytes(29 + MAX_RECORD_BYTES + 64)
    for form in (huge, bytearray(huge), memoryview(huge)):
        with pytest.raises(FormatError):
            records.decrypt(form)


@pytest.mark.parametrize(
    ("scope", "error"),
    [
        ("x" * (MAX_SCOPE_BYTES + 1), ValueError),
        ("\u00e9" * 129, ValueError),
        ("\ud800", ValueError),
        (b"tenant", TypeError),
        (None, TypeError),
    ],
)
def test_bad_scopes_are_the_callers_mistake(records, scope: Any, error):
    good = records.encrypt(b"v")
    with pytest.raises(error):
        records.encrypt(b"v", scope=scope)
    for record in (good, b"\x07garbage", "not base64!"):
        with pytest.raises(error):
            records.decrypt(record, scope=scope)
    with pytest.raises(error):
        records.shred(scope)
    with pytest.raises(error):
        records.rotate(scope)


@pytest.mark.parametrize(
    ("context", "error"),
    [
        ({"": "v"}, ValueError),
        ({"k": 1}, TypeError),
        ({"k": ["unhashable"]}, TypeError),
        ("column=pan", TypeError),
        ({"\ud800": "v"}, ValueError),
    ],
)
def test_bad_contexts_are_the_callers_mistake(records, context: Any, error):
    with pytest.raises(error):
        records.encrypt(b"v", context=context)
    with pytest.raises(error):
        records.decrypt(b"\x07garbage", context=context)  # before the record is read


def test_values_over_the_limit_are_refused(records):
    with pytest.raises(ValueError, match="messages"):
        records.encrypt(bytes(MAX_RECORD_BYTES + 1))
    with pytest.raises(ValueError, match="messages"):
        records.encrypt_many([b"", bytes(MAX_RECORD_BYTES + 1)])


def test_wrong_types_are_refused(env):
    with pytest.raises(TypeError, match="Envelope"):
        Records("not an envelope", MemoryKeyStore())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="KeyStore"):
        Records(env, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="KeySetCache"):
        Records(env, MemoryKeyStore(), cache={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RotationPolicy"):
        Records(env, MemoryKeyStore(), rotation=60)  # type: ignore[arg-type]
    records = Records(env, MemoryKeyStore())
    with pytest.raises(TypeError):
        records.encrypt("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        records.decrypt(12)  # type: ignore[arg-type]


def test_a_cache_serves_one_records(env):
    cache = KeySetCache()
    Records(env, MemoryKeyStore(), cache=cache)
    with pytest.raises(ValueError, match="another Records"):
        Records(env, MemoryKeyStore(), cache=cache)


@pytest.mark.parametrize(
    "policy",
    [{"max_age": 0}, {"max_age": -1.0}, {"max_records": 0}, {"max_records": 1.5}],
)
def test_bad_rotation_policies(policy):
    with pytest.raises(ValueError):
        RotationPolicy(**policy)


# -- the key store misbehaving -------------------------------------------------------------


class Failing(DictStore):
    def get(self, key_set_id: int) -> Any:
        raise OSError("disk on fire")

    def current(self, scope: str) -> Any:
        raise RuntimeError("database is locked")


def test_a_failing_store_is_a_key_access_error(env):
    good = Records(env, MemoryKeyStore()).encrypt(b"v")
    records = Records(env, Failing())
    with pytest.raises(KeyAccessError, match="disk on fire") as caught:
        records.decrypt(good)
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(KeyAccessError, match="database is locked"):
        records.encrypt(b"v")


@pytest.mark.parametrize("returned", ["text", 12, ["list"]])
def test_a_store_returning_no_bytes_is_a_key_access_error(env, returned):
    writer = Records(env, MemoryKeyStore())
    record = writer.encrypt(b"v")
    store = DictStore({_id(record): returned})
    with pytest.raises(KeyAccessError, match="returned"):
        Records(env, store).decrypt(record)


def test_a_store_returning_a_huge_document_is_a_format_error(env):
    record = Records(env, MemoryKeyStore()).encrypt(b"v")
    store = DictStore({_id(record): bytes(200_000)})
    with pytest.raises(FormatError):
        Records(env, store).decrypt(record)


def test_a_store_that_never_takes_a_key_set(env):
    class Refusing(DictStore):
        def add(self, scope: str, key_set_id: int, document: bytes, *, replaces: Any) -> Any:
            return None

    with pytest.raises(KeyAccessError, match="did not take"):
        Records(env, Refusing()).encrypt(b"v")


def test_a_store_whose_current_key_set_is_another_scopes(env):
    store = DictStore()
    Records(env, store).encrypt(b"v", scope="a")
    store.currents["b"] = store.currents["a"]
    with pytest.raises(KeyAccessError, match="another scope"):
        Records(env, store).encrypt(b"v", scope="b")


def test_an_id_the_store_already_has_is_drawn_again(env, monkeypatch):
    import secrets

    store = MemoryKeyStore()
    records = Records(env, store)
    taken = _id(records.encrypt(b"v", scope="a"))
    draws = iter([taken - 1, taken - 1, 41])  # randbelow(n) + 1: the taken id twice, then 42
    monkeypatch.setattr(secrets, "randbelow", lambda n: next(draws))
    record = records.encrypt(b"w", scope="b")
    assert _id(record) == 42
    assert records.decrypt(record, scope="b") == b"w"


# -- rotation -------------------------------------------------------------------------------


def test_rotate(records):
    first = records.encrypt(b"1", scope="s")
    new_id = records.rotate("s")
    second = records.encrypt(b"2", scope="s")
    assert _id(second) == new_id != _id(first)
    assert records.decrypt(first, scope="s") == b"1"
    assert records.decrypt(second, scope="s") == b"2"
    other = Records(records.envelope, records.store)
    assert _id(other.encrypt(b"3", scope="s")) == new_id  # the store's current one
    assert records.rotate("fresh") > 0  # a scope's first key set


def test_rotation_by_age(env, monkeypatch):
    now = [time.time()]
    monkeypatch.setattr(time, "time", lambda: now[0])
    records = Records(env, MemoryKeyStore(), rotation=RotationPolicy(max_age=3600))
    first = records.encrypt(b"1", scope="s")
    assert _id(records.encrypt(b"2", scope="s")) == _id(first)
    now[0] += 3601
    records.cache.clear()  # another process, or the cache's age: the writer is looked up
    later = records.encrypt(b"3", scope="s")
    assert _id(later) != _id(first)
    assert records.decrypt(first, scope="s") == b"1"


def test_rotation_by_age_without_a_reload(env, monkeypatch):
    """The writer's own deadline: a key set that comes of age while cached is replaced."""
    wall, clock = [time.time()], [time.monotonic()]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    records = Records(env, MemoryKeyStore(), rotation=RotationPolicy(max_age=10))
    first = records.encrypt(b"1", scope="s")
    for step in (5, 6):
        wall[0] += step
        clock[0] += step
        if step == 5:
            assert _id(records.encrypt(b"2", scope="s")) == _id(first)
    later = records.encrypt(b"3", scope="s")
    assert _id(later) != _id(first)
    assert records.decrypt(first, scope="s") == b"1"


def test_rotation_by_record_count(env, monkeypatch):
    import envelope._limits

    monkeypatch.setattr(envelope._limits, "RECORDS_PER_PREFIX", 4)
    records = Records(env, MemoryKeyStore(), rotation=RotationPolicy(max_records=10))
    sealed = [records.encrypt(b"%d" % i, scope="s") for i in range(25)]
    ids = [_id(r) for r in sealed]
    assert len(set(ids)) == 3
    assert ids.count(ids[0]) == 10
    assert ids.count(ids[10]) == 10
    assert len({r[9:17] for r in sealed}) >= 7  # a prefix per 4 records at most
    for i, record in enumerate(sealed):
        assert records.decrypt(record, scope="s") == b"%d" % i


def test_rotation_by_count_in_batches(env, monkeypatch):
    import envelope._limits

    monkeypatch.setattr(envelope._limits, "RECORDS_PER_PREFIX", 3)
    records = Records(env, MemoryKeyStore(), rotation=RotationPolicy(max_records=7))
    sealed = records.encrypt_many([b"%d" % i for i in range(20)], scope="s")
    ids = [_id(r) for r in sealed]
    assert ids == [ids[0]] * 7 + [ids[7]] * 7 + [ids[14]] * 6
    assert len(set(ids)) == 3
    assert records.decrypt_many(sealed, scope="s") == [b"%d" % i for i in range(20)]
    later = records.encrypt(b"x", scope="s")
    assert _id(later) == ids[14]


def test_prefixes_change_every_records_per_prefix(env, monkeypatch):
    import envelope._limits

    monkeypatch.setattr(envelope._limits, "RECORDS_PER_PREFIX", 5)
    records = Records(env, MemoryKeyStore())
    sealed = [records.encrypt(b"v") for _ in range(12)] + records.encrypt_many([b"w"] * 9)
    prefixes = [r[9:17] for r in sealed]
    counts: dict[bytes, int] = {}
    for prefix in prefixes:
        counts[prefix] = counts.get(prefix, 0) + 1
    assert max(counts.values()) <= 5
    assert len(counts) >= 5


# -- the cache --------------------------------------------------------------------------------


def test_cache_counters_and_limits(env):
    inner, outer = Counting(), Counting()
    writer = Records(Envelope([inner, outer]), MemoryKeyStore())
    sealed = [writer.encrypt(b"v", scope=f"s{i}") for i in range(5)]
    cache = KeySetCache(max_age=30, max_entries=3)
    assert (cache.max_age, cache.max_entries) == (30, 3)
    reader = Records(Envelope([inner, outer]), writer.store, cache=cache)
    for _ in range(3):
        for i, record in enumerate(sealed):
            assert reader.decrypt(record, scope=f"s{i}") == b"v"
    stats = cache.stats()
    assert stats.entries <= 3
    assert stats.misses >= 5
    assert stats.kek_calls == 2 * stats.misses
    assert inner.unwraps == outer.unwraps == stats.misses
    assert "KeySetCache(" in repr(cache)
    cache.clear()
    assert len(cache) == 0


def test_a_key_set_is_reloaded_after_the_cache_max_age(env, monkeypatch):
    records_modules = (envelope._cache, envelope.records._cache, envelope.records._records)
    clock = FrozenClock(monkeypatch, *records_modules)
    inner, outer = Counting(), Counting()
    writer = Records(Envelope([inner, outer]), MemoryKeyStore())
    record = writer.encrypt(b"v")
    reader = Records(Envelope([inner, outer]), writer.store, cache=KeySetCache(max_age=0.2))
    reader.decrypt(record)
    clock.advance(0.19)
    reader.decrypt(record)
    assert inner.unwraps == 1
    clock.advance(0.02)
    reader.decrypt(record)
    assert inner.unwraps == 2


def test_errors_are_envelope_errors(records):
    for bad in (b"", b"\x01" * 80, "??"):
        with pytest.raises(EnvelopeError):
            records.decrypt(bad)


def test_a_bad_scope_is_the_callers_mistake_even_for_a_key_set_not_loaded(records):
    record = records.encrypt(b"v", scope="s")
    cold = Records(records.envelope, records.store)
    with pytest.raises(ValueError, match="scope"):
        cold.decrypt(record, scope="x" * (MAX_SCOPE_BYTES + 1))
    with pytest.raises(ValueError, match="scope"):
        Records(records.envelope, MemoryKeyStore()).decrypt(record, scope="\ud800")


def test_public_names_are_pinned():
    import envelope.records

    expected = "KeySetCache KeyStore MemoryKeyStore Records RewrapProgress RotationPolicy"
    expected += " SQLiteKeyStore from_text to_text"
    assert sorted(envelope.records.__all__) == expected.split()
    for name in envelope.records.__all__:
        assert hasattr(envelope.records, name), name
