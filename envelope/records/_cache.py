"""The key-set cache of :class:`~envelope.records.Records`: unwrapped key sets (by id) and the
writers of scopes (by scope), bounded by age and entries, with counters and single flight.

It is the library's bounded cache (``envelope._cache``: LRU, age, counters, single-flight
fills) with a lock-free front: the entries served recently are also in a plain dict, read
without a lock, each until its own deadline, which is never later than the entry's age
allows. At a few microseconds per record, the lock and bookkeeping of every lookup would be
a visible share of the cost; only a miss, an expired entry and the first use of an entry
after a fill go through the locked cache.

A discard (a shredded scope) also covers the fills in flight when it happens: each fill
takes the cache's mark when it begins and stamps its value with it, and a value loaded
before a discard that matches it is refused when it lands. A refused fill is made again,
with a new mark (it reads the key store again), a bounded number of times; a caller whose
value came from something read before the fill (a document the store named current, a key
set it just made) is told instead (:class:`Discarded`) and starts over from the store.

In a child made by ``fork()`` the cache starts empty, with new locks (``_fork``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar, cast

from .._cache import DEFAULT_MAX_AGE, CacheStats, _BoundedCache
from .._errors import KeyAccessError
from . import _fork

__all__ = ["DEFAULT_KEY_SET_ENTRIES", "Cached", "Discarded", "KeySetCache"]

#: Key sets (and scope writers) held in memory, by default.
DEFAULT_KEY_SET_ENTRIES = 1024
#: Entries here are bounded by age and number only: how many records a key set serves is
#: the writer's rotation policy's business, not the cache's.
_UNLIMITED_USES = 2**62
#: Discards remembered to judge fills in flight; a fill older than all of them is refused
#: (it began before the oldest discard remembered, so whether one covers it is unknown).
_REMEMBERED_DISCARDS = 1024
#: Fills of one key made in a row when each is refused (a discard covered it meanwhile).
FILL_ATTEMPTS = 8


class Discarded(KeyAccessError):
    """A value was discarded while it loaded (its scope shredded, say), as often as the
    caller allowed: the caller starts over from the key store, or gives up with this."""


class Cached(Protocol):
    """What the cache holds: a value that knows until when it may be served, and the cache's
    :meth:`KeySetCache.mark` taken when its load began."""

    @property
    def valid_until(self) -> float: ...

    @property
    def load_mark(self) -> int: ...


_C = TypeVar("_C", bound=Cached)


class KeySetCache:
    """Unwrapped key sets for one :class:`~envelope.records.Records`.

    ``max_age`` (seconds, default 60) bounds how long a key set is used without reading the
    key store again: how long a scope shredded by another process, or a KEK disabled in its
    vault, keeps working here. ``max_entries`` (default 1,024) bounds the key sets and scope
    writers held in memory, least recently filled first.

    Concurrent first uses of a key set load it once: one caller reads the store and unwraps
    one data key per layer while the others wait for it (single flight; asyncio callers
    load on worker threads, so they share it too).

    ``stats()`` returns the counters of the locked cache: ``misses`` and ``kek_calls`` count
    the loads and their unwraps (one per layer); ``hits`` count the lookups the locked cache
    answered (a caller that waited for another's load, or the first use of an entry after
    the lock-free front let it go); lookups the front answers are not counted.

    In a process made by ``fork()`` the cache is empty (the child loads key sets afresh);
    its counters carry on from the parent's.
    """

    def __init__(
        self, *, max_age: float = DEFAULT_MAX_AGE, max_entries: int = DEFAULT_KEY_SET_ENTRIES
    ) -> None:
        self._cache: _BoundedCache[Cached] = _BoundedCache(
            max_age=max_age,
            max_messages=_UNLIMITED_USES,
            max_bytes=None,
            max_entries=max_entries,
        )
        self._front: dict[Hashable, Cached] = {}
        self._lock = threading.Lock()
        self._owner: object = None
        self._mark = 0
        self._discards: list[tuple[int, Callable[[Hashable, Cached], bool]]] = []
        _fork.register(self)

    @property
    def max_age(self) -> float:
        return self._cache.max_age

    @property
    def max_entries(self) -> int:
        return self._cache.max_entries

    def stats(self) -> CacheStats:
        return self._cache.stats()

    def clear(self) -> None:
        """Drop every entry; counters are kept."""
        with self._lock:
            self._front.clear()
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        return f"KeySetCache(max_age={self.max_age}, max_entries={self.max_entries})"

    # -- for Records ------------------------------------------------------------------------

    def claim(self, owner: object) -> None:
        """Serve ``owner`` only: entries are keyed by key-set id and scope, and a key set one
        ``Records`` unwrapped must not be handed to another whose KEKs could not."""
        with self._lock:
            if self._owner is not None and self._owner is not owner:
                raise ValueError("this KeySetCache already serves another Records")
            self._owner = owner

    def lookup(self, key: Hashable) -> Any:
        """The value under ``key`` if the front holds it and its deadline has not passed,
        else None; no lock, no counting. (``Any``: the caller knows what it keyed.)"""
        value = self._front.get(key)
        if value is not None and value.valid_until > time.monotonic():
            return value
        return None

    def remember(self, key: Hashable, value: Cached) -> None:
        """Put ``value`` in the front only (something derived from a cached entry, with the
        entry's deadline and mark), unless a discard since its load covers it."""
        self._admit(key, value)

    def mark(self) -> int:
        """What a fill takes when its load begins (its value's ``load_mark``)."""
        return self._mark

    def get_or_fill(
        self,
        key: Hashable,
        fill: Callable[[], _C | None],
        *,
        kek_calls: int = 0,
        attempts: int = FILL_ATTEMPTS,
    ) -> _C | None:
        """The cached value, or the one ``fill()`` makes (once for all concurrent callers,
        counted as ``kek_calls`` KEK operations); remembered in the front as well. None if
        the fill returns None.

        ``fill`` takes :meth:`mark` when it begins. A value a discard covered meanwhile is
        dropped and ``fill`` called again, up to ``attempts`` fills in all; then
        :class:`Discarded` is raised. A fill that would only bring the same value again (a
        document read before, a key set made before) is given ``attempts=1``."""
        for _ in range(attempts):
            value = cast("_C | None", self._cache.get_or_fill(key, fill, kek_calls=kek_calls))
            if value is None or self._admit(key, value):
                return value
            self._cache.discard(functools.partial(_is, value))
        raise Discarded(
            f"what this key set cache was loading was discarded {attempts} time(s) in a row "
            "(its scope shredded or rotated meanwhile)"
        )

    def discard(self, condition: Callable[[Hashable, Cached], bool]) -> int:
        """Drop the entries that meet ``condition``, from the front and the locked cache,
        and refuse those that fills in flight bring in later."""
        with self._lock:
            self._mark += 1
            self._discards.append((self._mark, condition))
            del self._discards[:-_REMEMBERED_DISCARDS]
            for key in [k for k, v in self._front.items() if condition(k, v)]:
                del self._front[key]
            return self._cache.discard(condition)

    def _admit(self, key: Hashable, value: Cached) -> bool:
        """Whether ``value`` may be served: False if a discard since its load began covers
        it. A value still valid is put in the front."""
        with self._lock:
            if self._discards and value.load_mark < self._discards[0][0] - 1:
                return False  # older than every discard remembered: it cannot be judged
            # Newest first: the discards are in mark order, and only those after the
            # value's load began concern it.
            for mark, condition in reversed(self._discards):
                if mark <= value.load_mark:
                    break
                if condition(key, value):
                    return False
            if value.valid_until > time.monotonic():
                while len(self._front) >= self._cache.max_entries:
                    del self._front[next(iter(self._front))]
                self._front[key] = value
        return True

    def _after_fork(self) -> None:
        # In a forked child: the parent's other threads, their locks and their fills are
        # gone; the child loads what it needs afresh.
        self._lock = threading.Lock()
        self._front = {}
        self._cache.forget_in_child()


def _is(value: object, _: Hashable, cached: object) -> bool:
    return cached is value
