# mypy: allow-untyped-defs, allow-incomplete-defs
"""The caches own their single flight: however many threads or asyncio tasks miss the same
entry at once, one of them fills it and the others wait for its value. A failed fill is
never remembered; each waiter then tries its own."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TypeVar

import pytest

from envelope import (
    DataKeyCache,
    DecryptionError,
    Envelope,
    KeyAccessError,
    UnwrapCache,
)
from tests.conftest import run_threads
from tests.core.conftest import Counting

T = TypeVar("T")

THREADS = 200
TASKS = 500
SALT_OFFSET = 14  # FORMAT.md section 2
DELAY = 0.05  # long enough for every caller to arrive while the first one is at its KEK


def test_one_fill_serves_hundreds_of_threads():
    cache = UnwrapCache()
    fills = []

    def fill() -> bytes:
        fills.append(1)
        time.sleep(0.05)
        return b"k" * 32

    results, errors = run_threads(THREADS, lambda n: cache.get_or_fill("key", fill))
    assert errors == []
    assert results == [b"k" * 32] * THREADS
    assert len(fills) == 1
    stats = cache.stats()
    assert (stats.misses, stats.hits, stats.kek_calls, stats.entries) == (1, THREADS - 1, 1, 1)


def test_a_failed_fill_reaches_its_caller_only_and_the_waiters_fill_again():
    cache = UnwrapCache()
    calls = []

    def fill() -> bytes:
        calls.append(1)
        time.sleep(0.05)
        if len(calls) == 1:
            raise KeyAccessError("vault down", code="ServiceUnavailable")
        return b"v" * 32

    results, errors = run_threads(50, lambda n: cache.get_or_fill("key", fill))
    assert len(errors) == 1
    assert isinstance(errors[0], KeyAccessError)
    assert results == [b"v" * 32] * 49
    assert len(calls) == 2  # the failure was not remembered; one waiter filled again
    assert cache.stats().kek_calls == 2


def test_a_fill_that_returns_none_is_not_remembered():
    cache = UnwrapCache()
    calls = []

    def refused() -> bytes | None:
        calls.append(1)
        return None

    assert cache.get_or_fill("key", refused) is None
    assert cache.get_or_fill("key", refused) is None
    assert len(calls) == 2
    assert len(cache) == 0


@pytest.mark.asyncio
async def test_one_fill_serves_hundreds_of_tasks_and_a_cancelled_waiter_harms_no_one():
    cache = UnwrapCache()
    fills = []
    release = asyncio.Event()

    async def fill() -> bytes:
        fills.append(1)
        await release.wait()
        return b"a" * 32

    tasks = [asyncio.create_task(cache.get_or_fill_async("key", fill)) for _ in range(TASKS)]
    await asyncio.sleep(0.05)
    tasks[-1].cancel()  # a waiter gives up
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[-1], asyncio.CancelledError)
    assert results[:-1] == [b"a" * 32] * (TASKS - 1)
    assert len(fills) == 1


@pytest.mark.asyncio
async def test_a_cancelled_filler_lets_a_waiter_fill():
    cache = UnwrapCache()
    fills = []
    started, never = asyncio.Event(), asyncio.Event()

    async def fill() -> bytes:
        fills.append(1)
        if len(fills) == 1:
            started.set()
            await never.wait()  # the leader's fill ends only by its cancellation
        return b"b" * 32

    leader = asyncio.create_task(cache.get_or_fill_async("key", fill))
    await started.wait()
    waiters = [asyncio.create_task(cache.get_or_fill_async("key", fill)) for _ in range(20)]
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await asyncio.gather(*waiters) == [b"b" * 32] * 20
    assert len(fills) == 2


def test_concurrent_decryptions_unwrap_each_wrapped_key_once():
    inner, outer = Counting(delay=DELAY), Counting(delay=DELAY)
    writer = Envelope([inner, outer])
    blob = writer.encrypt(b"shared")
    inner.unwraps = outer.unwraps = 0
    cache = UnwrapCache()
    reader = Envelope([inner, outer], unwrap_cache=cache)
    results, errors = run_threads(THREADS, lambda n: bytes(reader.decrypt(blob)))
    assert errors == []
    assert results == [b"shared"] * THREADS
    assert (inner.unwraps, outer.unwraps) == (1, 1)
    stats = cache.stats()
    assert stats.misses == 2
    assert stats.hits == 2 * THREADS - 2


def test_a_cold_data_key_cache_wraps_once_for_hundreds_of_threads():
    inner, outer = Counting(delay=DELAY), Counting(delay=DELAY)
    env = Envelope([inner, outer], data_key_cache=DataKeyCache())
    results, errors = run_threads(THREADS, lambda n: (n, env.encrypt(f"m{n}".encode())))
    assert errors == []
    assert (inner.wraps, outer.wraps) == (1, 1)
    inner.delay = outer.delay = 0.0
    for n, blob in results:
        assert env.decrypt(blob) == f"m{n}".encode()


@pytest.mark.asyncio
async def test_concurrent_async_round_trips_wrap_and_unwrap_once():
    inner, outer = Counting(delay=DELAY), Counting(delay=DELAY)
    env = Envelope([inner, outer], data_key_cache=DataKeyCache(), unwrap_cache=UnwrapCache())

    async def one(n: int) -> bytes:
        return bytes(await env.decrypt_async(await env.encrypt_async(f"t{n}".encode())))

    results = await asyncio.gather(*(one(n) for n in range(TASKS)))
    assert results == [f"t{n}".encode() for n in range(TASKS)]
    assert (inner.wraps, outer.wraps) == (1, 1)
    assert (inner.unwraps, outer.unwraps) == (1, 1)


def test_a_forged_header_waiting_on_a_genuine_fill_still_fails_its_own_commitment():
    """A waiter is handed the data key another caller's message unwrapped to; it must still
    check it against its own header's commitment."""
    inner, outer = Counting(delay=DELAY), Counting(delay=DELAY)
    env = Envelope([inner, outer], unwrap_cache=UnwrapCache())
    genuine = env.encrypt(b"genuine")
    forged = bytearray(genuine)
    forged[SALT_OFFSET] ^= 1  # same wrapped keys, but the commitments no longer match

    def work(n: int) -> bytes:
        return bytes(env.decrypt(genuine if n % 2 else forged))

    results, errors = run_threads(40, work)
    assert results == [b"genuine"] * 20
    assert len(errors) == 20
    assert all(isinstance(e, DecryptionError) for e in errors)


def test_threads_and_tasks_of_several_loops_share_one_fill():
    """A miss is shared across threads and event loops: 20 threads and 3 loops of 50 tasks,
    each loop in a thread of its own, all wait for the one fill."""
    cache = UnwrapCache()
    fills = []
    start = threading.Barrier(23)

    def fill() -> bytes:
        fills.append(1)
        time.sleep(DELAY)
        return b"s" * 32

    async def afill() -> bytes:
        return fill()

    def in_a_thread(n: int) -> list[bytes | None]:
        if n < 20:
            start.wait()
            return [cache.get_or_fill("key", fill)]

        async def tasks() -> list[bytes | None]:
            start.wait()
            return list(
                await asyncio.gather(*(cache.get_or_fill_async("key", afill) for _ in range(50)))
            )

        return asyncio.run(tasks())

    results, errors = run_threads(23, in_a_thread)
    assert errors == []
    assert sorted(len(r) for r in results) == [1] * 20 + [50] * 3
    assert all(value == b"s" * 32 for result in results for value in result)
    assert len(fills) == 1
    assert cache.stats().kek_calls == 1


@pytest.mark.asyncio
async def test_a_sync_caller_inside_the_loop_of_the_filling_task_does_not_wait_for_it():
    """Waiting would block the very loop the fill needs: it fills on its own instead."""
    cache = UnwrapCache()
    release = asyncio.Event()

    async def slow_fill() -> bytes:
        await release.wait()
        return b"t" * 32

    leader = asyncio.create_task(cache.get_or_fill_async("key", slow_fill))
    await asyncio.sleep(0.01)
    assert cache.get_or_fill("key", lambda: b"u" * 32) == b"u" * 32  # no deadlock
    release.set()
    assert await leader == b"t" * 32
    assert cache.stats().misses == 2
