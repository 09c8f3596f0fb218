"""Re-wrapping every stored key set under an envelope's current KEKs (``docs/RECORDS.md``
section 5.4): after a KEK rotation or a move to another vault, without touching a record.

Key sets are taken from the store in id order, a batch at a time, and re-wrapped on a few
threads. Each is parsed and checked as a reader does (key ids before any KEK call,
commitments after unwrap), its data keys wrapped again, and the new document put in place
only if the old one is still there unchanged, so a concurrent shred or rewrap is never
undone. A data key unwrapped from a public-key wrap is never wrapped under a KEK whose wraps
need a secret: such a key set is reported as failed. KEK operations are paced to a rate a
key service tolerates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .._datakeys import DataKeys, Layers
from .._errors import EnvelopeError, KeyAccessError
from .._format import encode_wrapped_keys
from .._limits import MAX_KEY_SET_BYTES
from .._unwrap import Unwrapper, check_suite
from ._format import parse_key_set, rewrapped_key_set
from ._keyset import Committing
from ._store import KeyStore

__all__ = ["RewrapProgress", "Rewrapper"]


@dataclass(frozen=True)
class RewrapProgress:
    """How far a :meth:`Records.rewrap <envelope.records.Records.rewrap>` run has come.

    ``rewrapped``: key sets re-wrapped; ``unchanged``: key sets changed or deleted by someone
    else while this run held them (left as they are); ``failed``: ``(key_set_id, reason)``
    of each key set that could not be re-wrapped (a malformed document, no configured KEK,
    a KEK that refused); ``cursor``: the highest id handled, to pass as ``after`` to resume;
    ``done``: whether the store has no key set beyond the cursor; ``kek_calls``: KEK
    operations made; ``seconds``: time taken.
    """

    rewrapped: int = 0
    unchanged: int = 0
    failed: tuple[tuple[int, str], ...] = ()
    cursor: int | None = None
    done: bool = False
    kek_calls: int = 0
    seconds: float = 0.0


class _Pace:
    """At most ``rate`` operations a second, shared by every thread: each caller books its
    operations' slot and sleeps until it comes."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and not rate > 0:
            raise ValueError("kek_calls_per_second must be a positive number, or None")
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self, operations: int) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)
            self._next = start + operations * self._interval
        if start > now:
            time.sleep(start - now)


class Rewrapper:
    """One rewrap run over a store for one envelope's KEKs."""

    def __init__(
        self,
        store: KeyStore,
        layers: Layers,
        unwrapper: Unwrapper,
        data_keys: DataKeys,
        *,
        workers: int,
        kek_calls_per_second: float | None,
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError("workers must be a positive integer")
        self._store = store
        # A key set's KEK operations: one unwrap per layer, one wrap per KEK.
        self._calls = len(layers) + sum(len(keks) for keks in layers)
        self._unwrapper = unwrapper
        self._data_keys = data_keys
        self._workers = workers
        self._pace = _Pace(kek_calls_per_second)

    def run(
        self,
        *,
        after: int | None,
        batch_size: int,
        progress: Callable[[RewrapProgress], None] | None,
    ) -> RewrapProgress:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError("batch_size must be a positive integer")
        started = time.monotonic()
        state = RewrapProgress(cursor=after)
        with ThreadPoolExecutor(self._workers, thread_name_prefix="envelope-rewrap") as pool:
            while True:
                batch = self._scan(state.cursor, batch_size)
                outcomes = list(pool.map(self._one, batch))
                state = _advanced(state, batch, outcomes, started, done=len(batch) < batch_size)
                if progress is not None:
                    progress(state)
                if state.done:
                    return state

    def _scan(self, after: int | None, limit: int) -> list[tuple[int, bytes]]:
        try:
            found = self._store.scan(after=after, limit=limit)
        except Exception as exc:
            raise KeyAccessError(f"the key store failed to list key sets: {exc}") from exc
        batch = []
        for item in found:
            key_set_id, document = item
            if not isinstance(key_set_id, int) or (after is not None and key_set_id <= after):
                raise KeyAccessError("the key store listed key sets out of order")
            if not isinstance(document, (bytes, bytearray, memoryview)):
                raise KeyAccessError("the key store listed a document that is not bytes")
            batch.append((key_set_id, bytes(document[: MAX_KEY_SET_BYTES + 1])))
            after = key_set_id
        return batch

    def _one(self, item: tuple[int, bytes]) -> tuple[str, int, str]:
        """``(outcome, kek_calls, reason)`` for one key set: ``rewrapped``, ``unchanged``
        or ``failed``."""
        key_set_id, document = item
        calls = 0
        try:
            parsed = parse_key_set(document)
            check_suite(parsed.suite, "key set")
            if parsed.key_set_id != key_set_id:
                return "failed", 0, f"its document names key set {parsed.key_set_id}"
            committing = Committing.of(parsed)
            self._unwrapper.plan(committing)  # every key id checked before any KEK call
            calls = self._calls
            self._pace.wait(calls)
            keys = self._unwrapper.unwrap(committing)
            # A data key from a public-key wrap is not wrapped under a KEK that needs a
            # secret: that would vouch for a key anyone could have chosen (RECORDS.md 5.4).
            wrapped = [
                encode_wrapped_keys(
                    self._data_keys.wrap(index, layer.data_key, secret=layer.secret)
                )
                for index, layer in enumerate(keys)
            ]
            new = rewrapped_key_set(parsed, wrapped)
            replaced = self._store.replace(key_set_id, document, new)
        except EnvelopeError as exc:
            return "failed", calls, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the store's own failure, for this key set only
            return "failed", calls, f"key store: {type(exc).__name__}: {exc}"
        return ("rewrapped" if replaced else "unchanged"), calls, ""


def _advanced(
    state: RewrapProgress,
    batch: Sequence[tuple[int, bytes]],
    outcomes: Sequence[tuple[str, int, str]],
    started: float,
    *,
    done: bool,
) -> RewrapProgress:
    failed = list(state.failed)
    counts = {"rewrapped": 0, "unchanged": 0, "failed": 0}
    calls = 0
    for (key_set_id, _), (outcome, kek_calls, reason) in zip(batch, outcomes, strict=True):
        counts[outcome] += 1
        calls += kek_calls
        if outcome == "failed":
            failed.append((key_set_id, reason))
    return RewrapProgress(
        rewrapped=state.rewrapped + counts["rewrapped"],
        unchanged=state.unchanged + counts["unchanged"],
        failed=tuple(failed),
        cursor=batch[-1][0] if batch else state.cursor,
        done=done,
        kek_calls=state.kek_calls + calls,
        seconds=time.monotonic() - started,
    )
