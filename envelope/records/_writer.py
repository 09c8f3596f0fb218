"""Writing records: a scope's writer seals under its current key set in prefix epochs
(``docs/RECORDS.md`` section 5.1), with nonces from the operating system's generator.

- A writer draws a random 8-byte prefix when it starts, and again after
  ``RECORDS_PER_PREFIX`` records: each epoch's subkeys are derived once and its AEAD objects
  reused for every record of the epoch.
- Each record's nonce is 12 bytes from ``os.urandom``, drawn when the record is sealed (a
  batch draws its nonces in one call, within the call that seals it). No random bytes are
  kept for later: a copy of the process that runs no fork hook (a VM snapshot resumed twice,
  a cloned VM, CRIU) continues the epoch's prefix, but draws other nonces, because the
  kernel reseeds its generator in each copy (vmgenid). A pool drawn in advance would hand
  both copies the same nonces.
- After ``fork()`` every writer starts a new epoch, so a child never continues its parent's
  prefix.
- An epoch's records are counted without a lock by ``next()`` on an ``itertools.count``,
  which the interpreter lock makes atomic; a free-threaded CPython build is not verified.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
from collections.abc import Sequence

from .. import _limits
from ._fork import Lineage
from ._format import NONCE_BYTES, PREFIX_BYTES
from ._keyset import KeySet, Sealer

__all__ = ["Writer", "nonces"]

_urandom = os.urandom


def nonces(count: int) -> bytes:
    """``count`` fresh nonces in one call to the operating system, for a batch."""
    return _urandom(NONCE_BYTES * count)


class _Epoch:
    """One prefix of one writer: its sealer (whose parts ``Writer.seal`` uses directly), and
    a counter of the records sealed under it."""

    __slots__ = ("aad_head", "aeads", "counter", "fork", "head", "pair", "sealer", "size")

    def __init__(self, sealer: Sealer, size: int) -> None:
        self.sealer = sealer
        self.aeads = sealer.aeads
        #: The inner and outer AEAD when there are two layers (the default): no loop then.
        self.pair = sealer.aeads if len(sealer.aeads) == 2 else None
        self.head = sealer.head
        self.aad_head = sealer.aad_head
        self.size = size
        self.counter = itertools.count()  # next() on it is atomic: no lock per record
        self.fork = Lineage.generation


class Writer:
    """Seals a scope's records under one key set, in epochs of at most
    ``RECORDS_PER_PREFIX`` records each under a fresh random prefix. Thread-safe.

    ``valid_until`` is when the writer must be looked up again (the cache's age, or the key
    set's age under the rotation policy); ``max_records`` (None: no limit) is how many
    records it writes under its key set before it asks for a new one (``exhausted``)."""

    __slots__ = (
        "_epoch",
        "_lock",
        "exhausted",
        "key_set",
        "load_mark",
        "max_records",
        "valid_until",
        "written",
    )

    def __init__(
        self,
        key_set: KeySet,
        *,
        valid_until: float,
        load_mark: int,
        max_records: int | None,
        written: int = 0,
    ) -> None:
        self.key_set = key_set
        # What the cache needs of a value (_cache.Cached).
        self.valid_until, self.load_mark = valid_until, load_mark
        self.max_records = max_records
        #: Records written under this key set by this process before this writer, and by it.
        self.written = written
        self.exhausted = False
        self._lock = threading.Lock()
        self._epoch = self._new_epoch()

    def seal(self, plaintext: bytes | bytearray | memoryview, context: bytes) -> bytes | None:
        """One record of ``plaintext`` whose associated data ends with ``context`` (the
        encoded encryption context); None once the writer has written its share of records
        (``max_records``): the scope's writer must then be looked up again."""
        epoch = self._epoch
        if next(epoch.counter) >= epoch.size or epoch.fork != Lineage.generation:
            reserved = self._reserve(1)[0]
            if reserved is None:
                return None
            epoch = reserved
        # Sealer.seal, inline: at a few microseconds a record, a call is a visible share.
        nonce = _urandom(NONCE_BYTES)
        aad = epoch.aad_head + context
        if epoch.pair is not None:
            inner, outer = epoch.pair
            return (
                epoch.head + nonce + outer.encrypt(nonce, inner.encrypt(nonce, plaintext, aad), aad)
            )
        sealed = plaintext
        for aead in epoch.aeads:
            sealed = aead.encrypt(nonce, sealed, aad)
        return epoch.head + nonce + sealed

    def seal_many(
        self, plaintexts: Sequence[bytes | bytearray | memoryview], context: bytes
    ) -> list[bytes]:
        """Records of the plaintexts, in order, with one draw of random bytes per epoch;
        fewer than given once the writer has written its share (see :meth:`seal`)."""
        out: list[bytes] = []
        while len(out) < len(plaintexts):
            epoch, granted = self._reserve(len(plaintexts) - len(out))
            if epoch is None:
                break
            seal = epoch.sealer.seal
            aad = epoch.sealer.aad_head + context
            pool = nonces(granted)
            start = len(out)
            out += [
                seal(pool[i * NONCE_BYTES : (i + 1) * NONCE_BYTES], plaintexts[start + i], aad)
                for i in range(granted)
            ]
        return out

    def _reserve(self, wanted: int) -> tuple[_Epoch | None, int]:
        """Up to ``wanted`` records of the current epoch, beginning a new one when it is
        used up or the process forked; at least one is granted, unless the writer is
        exhausted: then ``(None, 0)``."""
        with self._lock:
            while not self.exhausted:
                epoch = self._epoch
                if epoch.fork == Lineage.generation:
                    # Claim the counter's next values one by one: next() is the only way to
                    # advance it that the lock-free path in seal() also respects.
                    granted = 0
                    while granted < wanted and next(epoch.counter) < epoch.size:
                        granted += 1
                    if granted:
                        return epoch, granted
                self._epoch = self._new_epoch()
            return None, 0

    def _new_epoch(self) -> _Epoch:
        """A fresh prefix, sized so the writer stops at ``max_records``; called under the
        lock (or from ``__init__``). When the writer has written its share, it is marked
        ``exhausted`` and the epoch is empty."""
        size = _limits.RECORDS_PER_PREFIX
        if self.max_records is not None:
            size = min(size, self.max_records - self.written)
            if size <= 0:
                self.exhausted = True
                self.valid_until = 0.0
                return _Epoch(self._epoch.sealer, 0)
        self.written += size
        return _Epoch(self.key_set.sealer(secrets.token_bytes(PREFIX_BYTES)), size)
