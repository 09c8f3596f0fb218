# mypy: allow-untyped-defs, allow-incomplete-defs
"""DataKeyCache and UnwrapCache: limits, counters, safety, threads, crypto-shredding."""

from __future__ import annotations

import io
import os

import pytest

import envelope
from envelope import (
    CacheStats,
    DataKeyCache,
    DecryptionError,
    Envelope,
    KeyAccessError,
    LocalKey,
    UnwrapCache,
    inspect,
)
from envelope.testing import LocalKeyVault
from tests.conftest import FrozenClock, kek, round_trips_in_threads
from tests.core.conftest import Counting


def test_cache_names_are_public():
    for name in ("DataKeyCache", "UnwrapCache", "CacheStats"):
        assert name in envelope.__all__


def test_defaults_are_the_documented_ones():
    cache = DataKeyCache()
    assert (cache.max_age, cache.max_messages, cache.max_bytes, cache.max_entries) == (
        60.0,
        100_000,
        1 << 34,
        64,
    )
    unwrap = UnwrapCache()
    assert (unwrap.max_age, unwrap.max_messages, unwrap.max_entries) == (60.0, 100_000, 1024)
    for bad in ({"max_age": 0}, {"max_messages": 0}, {"max_bytes": 0}, {"max_entries": 0}):
        with pytest.raises(ValueError):
            DataKeyCache(**bad)
    with pytest.raises(TypeError):
        Envelope([LocalKey.generate()], data_key_cache=UnwrapCache())  # type: ignore[arg-type]


def test_data_key_is_reused_with_a_fresh_salt_per_message():
    a, b = Counting(), Counting()
    cache = DataKeyCache()
    env = Envelope([a, b], data_key_cache=cache)
    blobs = [env.encrypt(f"m{i}".encode()) for i in range(100)]
    assert (a.wraps, b.wraps) == (1, 1)
    assert cache.stats() == CacheStats(hits=99, misses=1, kek_calls=2, evictions=0, entries=1)
    infos = [inspect(blob) for blob in blobs]
    assert len({info.layers[0].key_ids for info in infos}) == 1
    # Same data keys, yet every message has its own salt, so its own message keys.
    assert len({bytes(blob)[14:46] for blob in blobs}) == 100
    for i, blob in enumerate(blobs):
        assert env.decrypt(blob) == f"m{i}".encode()


def test_cache_off_wraps_every_message():
    a = Counting()
    env = Envelope([a, LocalKey.generate()])
    for _ in range(5):
        env.encrypt(b"x")
    assert a.wraps == 5


def test_max_messages_bytes_age_and_entries(monkeypatch):
    a = Counting()
    env = Envelope([a, LocalKey.generate()], data_key_cache=DataKeyCache(max_messages=3))
    for _ in range(7):
        env.encrypt(b"x")
    assert a.wraps == 3  # messages 1-3, 4-6, 7

    b = Counting()
    env = Envelope([b, LocalKey.generate()], data_key_cache=DataKeyCache(max_bytes=2500))
    for _ in range(5):
        env.encrypt(bytes(1000))
    assert b.wraps == 3  # two messages of 1000 bytes fit under 2500, the third does not

    c = Counting()
    clock = FrozenClock(monkeypatch, envelope._cache)
    cache = DataKeyCache(max_age=0.2)
    env = Envelope([c, LocalKey.generate()], data_key_cache=cache)
    env.encrypt(b"x")
    clock.advance(0.19)
    env.encrypt(b"x")
    clock.advance(0.02)
    env.encrypt(b"x")
    assert c.wraps == 2
    assert cache.stats().evictions == 1

    shared = DataKeyCache(max_entries=2)
    keks = [Counting() for _ in range(3)]
    envs = [Envelope([k, LocalKey.generate()], data_key_cache=shared) for k in keks]
    for _ in range(2):
        for e in envs:  # three envelopes round-robin through two entries: always a miss
            e.encrypt(b"x")
    assert [k.wraps for k in keks] == [2, 2, 2]
    assert len(shared) == 2


def test_streams_never_use_the_data_key_cache():
    a = Counting()
    cache = DataKeyCache()
    env = Envelope([a, LocalKey.generate()], data_key_cache=cache)
    for _ in range(3):
        env.encrypt_stream(io.BytesIO(b"stream"), io.BytesIO())
    assert a.wraps == 3
    assert cache.stats().misses == 0


def test_unwrap_cache_skips_the_kek_and_still_checks_commitments():
    a, b = Counting(), Counting()
    writer = Envelope([a, b])
    cache = UnwrapCache()
    reader = Envelope([a, b], unwrap_cache=cache)
    blob = writer.encrypt(b"x")
    for _ in range(10):
        assert reader.decrypt(blob) == b"x"
    assert (a.unwraps, b.unwraps) == (1, 1)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.kek_calls, stats.entries) == (18, 2, 2, 2)
    # A cached data key does not open a tampered body.
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        reader.decrypt(tampered)


def test_a_wrapped_key_that_fails_its_commitment_is_never_cached():
    a, b = LocalKey.generate(), LocalKey.generate()
    cache = UnwrapCache()
    env = Envelope([a, b], unwrap_cache=cache)
    real = [os.urandom(32), os.urandom(32)]
    other = os.urandom(32)
    # Layer 0 names a wrapped key that unwraps fine, to a data key its commitment rejects.
    forged = env._encrypt_with(
        b"x",
        None,
        salt=os.urandom(32),
        data_keys=[(real[0], [a.wrap_key(other)]), (real[1], [b.wrap_key(real[1])])],
    )
    for _ in range(2):
        with pytest.raises(DecryptionError):
            env.decrypt(forged)
    stats = cache.stats()
    assert stats.hits == 0
    assert stats.kek_calls == 2  # asked the KEK both times: nothing was remembered
    assert stats.entries == 0


def test_another_kek_reporting_the_same_id_gets_nothing_from_the_cache():
    real = LocalKey.generate("shared-id")
    impostor = LocalKey.generate("shared-id")  # same id, other key
    other = LocalKey.generate()
    cache = UnwrapCache()
    owner = Envelope([real, other], unwrap_cache=cache)
    blob = owner.encrypt(b"secret")
    assert owner.decrypt(blob) == b"secret"
    with pytest.raises(DecryptionError):
        Envelope([impostor, other], unwrap_cache=cache).decrypt(blob)


def test_eight_threads_share_both_caches():
    a, b = Counting(), Counting()
    data_keys, unwraps = DataKeyCache(max_messages=50), UnwrapCache()
    env = Envelope([a, b], data_key_cache=data_keys, unwrap_cache=unwraps)
    assert round_trips_in_threads(env, threads=8, messages=100) == []
    stats = data_keys.stats()
    assert stats.hits + stats.misses == 800
    assert 16 <= a.wraps <= 16 + 8  # 800 / 50 rotations, plus racing misses
    assert unwraps.stats().hits + unwraps.stats().misses == 1600


@pytest.fixture
def clean(vault: LocalKeyVault, fresh: None) -> LocalKeyVault:
    return vault


def test_key_vault_calls_per_message_with_caches(clean):
    vault = clean
    vault.create_key("cache-oct", "oct-HSM")
    vault.create_key("cache-rsa")
    with kek(vault, "cache-rsa") as inner, kek(vault, "cache-oct") as outer:
        cached = Envelope([inner, outer], data_key_cache=DataKeyCache(), unwrap_cache=UnwrapCache())
        blobs = [cached.encrypt(bytes(1024)) for _ in range(200)]
        for blob in blobs:
            cached.decrypt(blob)
        counts = vault.operation_counts()
        assert counts.get("wrapKey", 0) == 1
        assert counts.get("unwrapKey", 0) == 2
        vault.reset_counts()
        uncached = Envelope([inner, outer])
        blobs = [uncached.encrypt(bytes(1024)) for _ in range(20)]
        for blob in blobs:
            uncached.decrypt(blob)
        counts = vault.operation_counts()
        assert counts["wrapKey"] == 20
        assert counts["unwrapKey"] == 40


def test_disabled_key_stops_working_within_the_cache_max_age(clean, monkeypatch):
    vault = clean
    vault.create_key("shred-oct", "oct-HSM")
    clock = FrozenClock(monkeypatch, envelope._cache)  # the caches' clock, not the client's
    with kek(vault, "shred-oct", key_info_ttl=0) as key:
        max_age = 0.5
        env = Envelope(
            [key, LocalKey.generate()],
            data_key_cache=DataKeyCache(max_age=max_age),
            unwrap_cache=UnwrapCache(max_age=max_age),
        )
        blob = env.encrypt(b"x")
        assert env.decrypt(blob) == b"x"
        vault.update_key("shred-oct", enabled=False)
        # Within max_age the caches may still serve ...
        env.encrypt(b"y")
        env.decrypt(blob)
        clock.advance(max_age)
        # ... and after it, the vault's refusal reaches the caller.
        with pytest.raises(KeyAccessError):
            env.encrypt(b"z")
        with pytest.raises(KeyAccessError) as caught:
            env.decrypt(blob)
        assert caught.value.code == "Forbidden"
        vault.update_key("shred-oct", enabled=True)
