"""``Records``: field-level encryption under an envelope's layers, with the wrapped data keys
kept once per key set in a key store (``docs/RECORDS.md``).

The front reads like a table of contents; each verb hands its work to a module:

======================  ==================================================================
``_format``             records, their text form and key-set documents (bounded parsing)
``_keyset``             derivations, new key sets, per-prefix subkeys
``_writer``             prefix epochs and nonces of a scope's writer
``_cache``              the key-set cache: age, entries, counters, single flight
``_store``/``_sqlite``  key stores
``_rewrap``             re-wrapping every stored key set
======================  ==================================================================

The hot path of a record is a lookup in the cache's lock-free front, the encoded context from
a small memo, and one AEAD call per layer. Everything else (reading the store, unwrapping,
making and storing a key set) happens once per key set, or per scope, per cache age.
"""

from __future__ import annotations

import asyncio
import functools
import struct
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

from .. import _limits, _message
from .._datakeys import DataKeys, to_wrapped_key
from .._engine import suite_available
from .._envelope import Envelope
from .._errors import DecryptionError, EnvelopeError, FormatError, KeyAccessError
from .._format import Aead, Suite, context_encoding, encode_context
from .._keys import wrap_needs_secret
from .._unwrap import Unwrapper, check_suite
from . import _fork
from ._cache import FILL_ATTEMPTS, Discarded, KeySetCache
from ._format import (
    FIXED_BYTES,
    HEAD_BYTES,
    PREFIX_BYTES,
    RECORD_VERSION,
    KeySetDocument,
    check_scope,
    from_text,
    max_record_bytes,
    parse_key_set,
    to_text,
)
from ._keyset import Committing, KeySet, Sealer, key_set_info, new_key_set
from ._rewrap import Rewrapper, RewrapProgress
from ._store import KeyStore
from ._writer import Writer

__all__ = ["Records", "RotationPolicy"]

Buffer = bytes | bytearray | memoryview
_EMPTY_CONTEXT = context_encoding(())
#: Encoded contexts remembered per Records (by their items), before the memo is emptied.
_CONTEXT_MEMO = 256
#: Attempts at storing a new key set: its random id was taken, the scope was shredded
#: meanwhile, or another writer's key set, which this one may not adopt, became current.
_ADD_ATTEMPTS = 32
#: Scopes for which a Records remembers the newest key set it made (section 5.5).
_OWN_KEY_SETS = 65536
# Read once: the hot path should not look them up per record.
_MAX_RECORD = max_record_bytes()
_MAX_KEY_SET_ID = _limits.MAX_KEY_SET_ID
_MAX_PLAINTEXT = _limits.MAX_RECORD_BYTES
_FIXED_BYTES = FIXED_BYTES
_RECORD_START = struct.Struct(">BQ")


@dataclass(frozen=True)
class RotationPolicy:
    """When a scope's writer starts a new key set by itself.

    ``max_age``: seconds after a key set was made (its ``created``, shared by every process);
    ``max_records``: records this ``Records`` writes under one key set, counted per prefix
    epoch it reserves (so a little early). None turns either off. With the defaults, 30 days
    and 2^32 records per writer, a key set stays within the 2^48 records of the nonce bound
    (RECORDS.md 6.1) as long as fewer than 65,536 writers (``Records`` objects, processes)
    write under it before it comes of age.
    """

    max_age: float | None = 30 * 24 * 3600.0
    max_records: int | None = 2**32

    def __post_init__(self) -> None:
        if self.max_age is not None and not self.max_age > 0:
            raise ValueError("max_age must be a positive number of seconds, or None")
        if self.max_records is not None and (
            not isinstance(self.max_records, int) or self.max_records < 1
        ):
            raise ValueError("max_records must be a positive integer, or None")


class Records:
    """Encrypt small values one by one under every layer of ``envelope``, with the wrapped data
    keys stored once per key set in ``store`` (a :class:`KeyStore`).

    Each record adds 29 bytes plus 16 per layer (61 with two layers) and is bound to its
    scope, its key set and its encryption context. Each scope (a tenant, a user, a table…)
    has its own key sets, made on its first use; :meth:`shred` deletes them. Thread-safe.

    ``cache`` (a :class:`KeySetCache`, one per ``Records``) bounds how long and how many
    unwrapped key sets are kept; ``rotation`` (a :class:`RotationPolicy`) when a scope moves
    to a new key set by itself.
    """

    def __init__(
        self,
        envelope: Envelope,
        store: KeyStore,
        *,
        cache: KeySetCache | None = None,
        rotation: RotationPolicy | None = None,
    ) -> None:
        if not isinstance(envelope, Envelope):
            raise TypeError("envelope must be an Envelope")
        if not isinstance(store, KeyStore):
            raise TypeError(
                "store must be a KeyStore (get, current, add, replace, delete_scope, scan)"
            )
        if cache is not None and not isinstance(cache, KeySetCache):
            raise TypeError("cache must be a KeySetCache")
        if rotation is not None and not isinstance(rotation, RotationPolicy):
            raise TypeError("rotation must be a RotationPolicy")
        self._envelope = envelope
        self._store = store
        self._cache = KeySetCache() if cache is None else cache
        self._cache.claim(self)
        self._rotation = RotationPolicy() if rotation is None else rotation
        self._algorithms = tuple(Aead.from_label(name) for name in envelope.algorithms)
        self._data_keys = DataKeys(envelope.layers, None)
        self._unwrapper = Unwrapper(envelope.layers, None, info=key_set_info)
        self._contexts: dict[object, bytes] = {}
        # Records written per key set by this process, carried across writer reloads.
        self._tallies: dict[int, int] = {}
        # The newest key set this Records made for each scope (id, key-set digest): one it
        # may write under whatever its wraps are (section 5.5).
        self._own: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()  # of _tallies and _own
        _fork.register(self)

    # -- configuration --------------------------------------------------------------------

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    @property
    def store(self) -> KeyStore:
        return self._store

    @property
    def cache(self) -> KeySetCache:
        return self._cache

    @property
    def rotation(self) -> RotationPolicy:
        return self._rotation

    def __repr__(self) -> str:
        return f"Records({self._envelope!r}, {self._store!r})"

    # -- encryption -----------------------------------------------------------------------

    def encrypt(
        self, plaintext: Buffer, *, scope: str = "", context: Mapping[str, str] | None = None
    ) -> bytes:
        """One record of ``plaintext`` in ``scope``, bound to ``context``."""
        try:  # _context's memo, inline: this is the path of every record
            encoded = _EMPTY_CONTEXT if context is None else self._contexts[tuple(context.items())]
        except (KeyError, AttributeError, TypeError):
            encoded = self._context(context)
        if len(plaintext) > _MAX_PLAINTEXT:
            _too_large()
        # Only a str can be a scope: the cache's front also holds key sets by id (int) and
        # sealers by record head (bytes).
        writer: Writer | None = self._cache.lookup(scope) if type(scope) is str else None
        record = (writer or self._writer(scope)).seal(plaintext, encoded)
        return record if record is not None else self._seal(scope, [plaintext], encoded)[0]

    def encrypt_text(
        self, plaintext: Buffer, *, scope: str = "", context: Mapping[str, str] | None = None
    ) -> str:
        """:meth:`encrypt`, in the record's text form (base64url without padding), for text
        and JSON columns. :meth:`decrypt` takes either form."""
        return to_text(self.encrypt(plaintext, scope=scope, context=context))

    def encrypt_many(
        self,
        plaintexts: Iterable[Buffer],
        *,
        scope: str = "",
        context: Mapping[str, str] | None = None,
    ) -> list[bytes]:
        """A record of each plaintext, in order, all in ``scope`` under ``context``: one
        lookup and one draw of random bytes for the batch instead of one per record."""
        check_scope(scope)
        encoded = self._context(context)
        values = list(plaintexts)
        if any(len(value) > _MAX_PLAINTEXT for value in values):
            _too_large()
        return self._seal(scope, values, encoded)

    async def encrypt_async(
        self, plaintext: Buffer, *, scope: str = "", context: Mapping[str, str] | None = None
    ) -> bytes:
        """The asyncio twin of :meth:`encrypt`. A scope's first use (reading the store,
        making or unwrapping its key set) runs on a worker thread, never on the event loop;
        concurrent first uses share one load."""
        check_scope(scope)  # a caller's mistake is reported before any work
        self._context(context)
        if self._cache.lookup(scope) is None:
            await asyncio.to_thread(self._writer, scope)
        return self.encrypt(plaintext, scope=scope, context=context)

    # -- decryption -----------------------------------------------------------------------

    def decrypt(
        self,
        record: Buffer | str,
        *,
        scope: str = "",
        context: Mapping[str, str] | None = None,
    ) -> bytes:
        """The plaintext of ``record`` (bytes, or its text form), which must have been made
        in ``scope`` under ``context``.

        Raises :class:`~envelope.DecryptionError` for a record that was tampered with,
        truncated, or made for another scope or context; :class:`~envelope.KeyAccessError`
        when its key set is unknown or was shredded, or no configured KEK can unwrap it; and
        :class:`~envelope.FormatError` for input that is not a record.
        """
        try:  # _context's memo, inline: this is the path of every record
            encoded = _EMPTY_CONTEXT if context is None else self._contexts[tuple(context.items())]
        except (KeyError, AttributeError, TypeError):
            encoded = self._context(context)
        data = record if type(record) is bytes else _record_bytes(record, scope)
        # The records of a prefix seen before: one lookup by their head gives the sealer.
        sealer: Sealer | None = self._cache.lookup(data[:HEAD_BYTES])
        if (
            sealer is not None
            and sealer.scope == scope
            and sealer.min_length <= len(data) <= _MAX_RECORD
        ):
            return sealer.open(data, sealer.aad_head + encoded)
        return self._decrypt(data, scope, encoded)[0]

    def decrypt_many(
        self,
        records: Iterable[Buffer | str],
        *,
        scope: str = "",
        context: Mapping[str, str] | None = None,
    ) -> list[bytes]:
        """The plaintexts of ``records``, in order, all of ``scope`` under ``context``.
        Nothing is returned unless every record opens; the error raised names the index of
        the first that did not."""
        encoded = self._context(context)
        out: list[bytes] = []
        # Records of one key set and prefix follow one another in a batch: a run of them is
        # opened here, with what they share (scope checked, AEADs, associated data) taken
        # from the first, which went through every check.
        head: bytes | None = None  # no record's head: open_run is set with the first
        open_run: Callable[[bytes, bytes], bytes] = _open_nothing
        aad = b""
        for index, record in enumerate(records):
            try:
                data = record if type(record) is bytes else _record_bytes(record, scope)
                if data[:HEAD_BYTES] == head and _FIXED_BYTES <= len(data) <= _MAX_RECORD:
                    out.append(open_run(data, aad))
                    continue
                plaintext, sealer = self._decrypt(data, scope, encoded)
                out.append(plaintext)
                if sealer is not None:
                    head, open_run, aad = sealer.head, sealer.open, sealer.aad_head + encoded
            except EnvelopeError as exc:
                raise _at(index, exc) from exc
        return out

    async def decrypt_async(
        self,
        record: Buffer | str,
        *,
        scope: str = "",
        context: Mapping[str, str] | None = None,
    ) -> bytes:
        """The asyncio twin of :meth:`decrypt`: loading a key set (the store, the KEKs) runs
        on a worker thread; concurrent first reads of a key set share one load."""
        self._context(context)  # a caller's mistake is reported before the record is read
        data = record if type(record) is bytes else _record_bytes(record, scope)
        if self._cache.lookup(data[:HEAD_BYTES]) is None:
            key_set_id = _key_set_id(data, scope)
            if self._cache.lookup(key_set_id) is None:
                await asyncio.to_thread(self._key_set, key_set_id, scope)
        return self.decrypt(data, scope=scope, context=context)

    # -- key lifecycle --------------------------------------------------------------------

    def rotate(self, scope: str = "") -> int:
        """Start a new key set for ``scope``'s new records and return its id; the records
        made before keep opening. If another process rotated the scope at the same moment,
        both end up with that one key set, when this one may adopt it (a key set is adopted
        only if each of its data keys came from a wrap that needs a secret: see
        ``docs/RECORDS.md`` section 5.5); otherwise this one writes under its own."""
        raw = check_scope(scope)
        for _ in range(FILL_ATTEMPTS):
            with _store_call("read the current key set"):
                current = self._store.current(scope)
            replaces = None if current is None else _parsed(current, scope).key_set_id
            try:
                key_set = self._add_key_set(scope, raw, replaces)
            except Discarded:
                continue  # shredded meanwhile: the store is read again
            self._cache.discard(lambda key, _: key == scope)
            return key_set.key_set_id
        raise Discarded(f"scope {scope!r} kept being shredded while it was rotated")

    def shred(self, scope: str) -> int:
        """Delete every key set of ``scope``; returns how many were deleted. Its records then
        fail with :class:`~envelope.KeyAccessError`: at once through this ``Records``, and
        through every other (in this process or another) once its cache's ``max_age`` has
        passed. No other scope is touched."""
        check_scope(scope)
        with _store_call("delete the key sets of a scope"):
            deleted = int(self._store.delete_scope(scope))
        # After the store: a load that began before the delete and lands after this is
        # refused by the cache; one that begins after it finds nothing.
        self._cache.discard(lambda key, value: key == scope or _scope_of(value) == scope)
        with self._lock:
            self._own.pop(scope, None)
        return deleted

    def rewrap(
        self,
        *,
        after: int | None = None,
        batch_size: int = 100,
        workers: int = 4,
        kek_calls_per_second: float | None = 100.0,
        progress: Callable[[RewrapProgress], None] | None = None,
    ) -> RewrapProgress:
        """Re-wrap every stored key set's data keys under the envelope's current KEKs (after
        a KEK rotation, or a move to another vault), without touching a single record.

        Key sets are taken in id order, ``batch_size`` at a time, on ``workers`` threads,
        with at most ``kek_calls_per_second`` KEK operations a second in all (None: no
        limit); Key Vault's own throttling is honoured on top by its client's retries.
        ``progress`` is called after each batch. It is resumable: pass the ``cursor`` of the
        last progress seen as ``after`` to continue where a run stopped (re-wrapping a key
        set twice is harmless). A key set that cannot be re-wrapped is reported in
        ``failed`` and the rest go on.
        """
        return Rewrapper(
            self._store,
            self._envelope.layers,
            self._unwrapper,
            self._data_keys,
            workers=workers,
            kek_calls_per_second=kek_calls_per_second,
        ).run(after=after, batch_size=batch_size, progress=progress)

    # -- internals --------------------------------------------------------------------------

    def _decrypt(self, data: bytes, scope: str, context: bytes) -> tuple[bytes, Sealer | None]:
        """Steps 2 to 8 of RECORDS.md section 8 for one record's bytes, through the cache;
        the sealer of the record's prefix is then kept by record head, and returned."""
        key_set_id = _key_set_id(data, scope)
        key_set: KeySet | None = self._cache.lookup(key_set_id)
        if key_set is None:
            key_set = self._key_set(key_set_id, scope)
        plaintext = _open(key_set, data, scope, context)
        sealer = key_set.sealers.get(data[HEAD_BYTES - PREFIX_BYTES : HEAD_BYTES])
        if sealer is not None:
            self._cache.remember(sealer.head, sealer)
        return plaintext, sealer

    def _context(self, context: Mapping[str, str] | None) -> bytes:
        """The encoded context: checked and encoded once, then remembered by its items."""
        if context is None:
            return _EMPTY_CONTEXT
        try:
            return self._contexts[tuple(context.items())]
        except (KeyError, AttributeError, TypeError):  # new, not a mapping, or unhashable
            pass
        encoded = context_encoding(encode_context(context))
        if len(self._contexts) >= _CONTEXT_MEMO:
            self._contexts.clear()
        self._contexts[tuple(context.items())] = encoded
        return encoded

    def _seal(self, scope: str, plaintexts: list[Buffer], context: bytes) -> list[bytes]:
        """Records of ``plaintexts``, through as many writers of the scope as it takes (a
        writer that has written its share hands over to the scope's next key set)."""
        out: list[bytes] = []
        while len(out) < len(plaintexts):
            writer: Writer | None = self._cache.lookup(scope)
            out += (writer or self._writer(scope)).seal_many(plaintexts[len(out) :], context)
        return out

    def _writer(self, scope: str) -> Writer:
        """The scope's writer from the cache, or a new one (once for concurrent callers)."""
        raw = check_scope(scope)
        stale: Writer | None = None
        while True:
            writer = self._cache.get_or_fill(
                scope, functools.partial(self._load_writer, scope, raw, stale)
            )
            assert writer is not None  # a fill makes a writer or raises
            if writer.valid_until > time.monotonic():
                return writer
            # Its age ran out or it wrote its share: look the scope up again.
            stale = writer
            self._cache.discard(functools.partial(_is, writer))

    def _load_writer(self, scope: str, raw: bytes, stale: Writer | None) -> Writer:
        """A writer of the key set the scope's records are to be written under now, read
        from the store afresh whenever a discard (a shred) covered what it was loading."""
        for _ in range(FILL_ATTEMPTS):
            mark = self._cache.mark()
            try:
                key_set = self._writable(scope, raw, stale)
            except Discarded:
                continue
            return self._new_writer(key_set, mark)
        raise Discarded(f"scope {scope!r} kept being shredded while its writer loaded")

    def _writable(self, scope: str, raw: bytes, stale: Writer | None) -> KeySet:
        """The key set to write the scope's records under (RECORDS.md 5.2, 5.3 and 5.5): the
        scope's current one if this writer may adopt it and it is not due for rotation;
        else the newest one this writer made for the scope, if the store still holds it
        and it is not due; else a new one."""
        with _store_call("read the current key set"):
            current = self._store.current(scope)
        if current is None:
            return self._add_key_set(scope, raw, None)
        found, key_set_id = self._adoptable(current, scope)
        if found is None:
            found = self._own_key_set(scope)
        if found is not None and not self._due(found, stale):
            return found
        return self._add_key_set(scope, raw, key_set_id)

    def _adoptable(self, document: object, scope: str) -> tuple[KeySet | None, int]:
        """The key set of a document the store named the scope's current one, if this
        writer may write under it (RECORDS.md 5.5), and the document's key-set id."""
        data = _document(document)
        parsed = _parsed(data, scope)
        try:
            check_suite(parsed.suite, "key set")
        except FormatError:
            return None, parsed.key_set_id  # a suite this Python cannot compute: replace it
        if not self._may_vouch(parsed):
            return None, parsed.key_set_id  # no need to unwrap it to know
        key_set = self._key_set(parsed.key_set_id, scope, data)
        return (key_set if self._may_write(key_set) else None), parsed.key_set_id

    def _may_vouch(self, parsed: KeySetDocument) -> bool:
        """False when some layer of ``parsed`` holds no wrapped key that this envelope's
        KEKs for the layer accept and whose wraps need a secret: then no unwrap can vouch
        for it (RECORDS.md 5.5), and none is made (with RSA KEKs on a layer, another
        writer's key set costs no vault call). A document whose layers do not match the
        envelope's is left to the load, which reports it."""
        layers = self._envelope.layers
        return len(parsed.layers) != len(layers) or all(
            any(
                kek.can_unwrap(record.key_id) and wrap_needs_secret(kek, to_wrapped_key(record))
                for kek in keks
                for record in layer.wrapped_keys
            )
            for layer, keks in zip(parsed.layers, layers, strict=True)
        )

    def _may_write(self, key_set: KeySet) -> bool:
        """Whether every data key of ``key_set`` is known to be secret: it came from wraps
        that need a secret, or this Records made it (RECORDS.md 5.5)."""
        if key_set.vouched:
            return True
        with self._lock:
            own = self._own.get(key_set.scope)
        return own == (key_set.key_set_id, key_set.digest)

    def _own_key_set(self, scope: str) -> KeySet | None:
        """The newest key set this Records made for ``scope``, if the store still holds it
        (not shredded, not replaced by another document)."""
        with self._lock:
            own = self._own.get(scope)
        if own is None:
            return None
        key_set_id, digest = own
        with _store_call("read a key set"):
            stored = self._store.get(key_set_id)
        if stored is None:
            return None  # shredded, or lost: a new key set is made
        try:
            key_set = self._key_set(key_set_id, scope, _document(stored))
        except DecryptionError:
            return None  # another document under its id: a new key set is made
        return key_set if key_set.digest == digest else None

    def _new_writer(self, key_set: KeySet, mark: int) -> Writer:
        now = time.monotonic()
        valid_until = now + self._cache.max_age
        if self._rotation.max_age is not None:
            due = key_set.created + self._rotation.max_age - time.time()
            valid_until = min(valid_until, now + due)
        with self._lock:
            writer = Writer(
                key_set,
                valid_until=valid_until,
                load_mark=mark,
                max_records=self._rotation.max_records,
                written=self._tallies.get(key_set.key_set_id, 0),
            )
            self._tallies[key_set.key_set_id] = writer.written
            while len(self._tallies) > self._cache.max_entries:
                del self._tallies[next(iter(self._tallies))]
        return writer

    def _due(self, key_set: KeySet, stale: Writer | None) -> bool:
        """Whether the scope's current key set must be replaced before writing under it."""
        with self._lock:
            if stale is not None and stale.key_set.key_set_id == key_set.key_set_id:
                self._tallies[key_set.key_set_id] = stale.written
            written = self._tallies.get(key_set.key_set_id, 0)
        max_age, max_records = self._rotation.max_age, self._rotation.max_records
        if max_age is not None and key_set.created + max_age <= time.time():
            return True
        return max_records is not None and written >= max_records

    def _add_key_set(self, scope: str, raw: bytes, replaces: int | None) -> KeySet:
        """A new key set stored as the scope's current one, replacing ``replaces``; or, if
        another writer's won the race and this one may adopt it, that one (RECORDS.md 5.3).
        :class:`Discarded` if the scope was shredded once the store took it."""
        suite = _message.SUITE if suite_available(_message.SUITE) else Suite.HKDF_SHA256
        for _ in range(_ADD_ATTEMPTS):
            made = new_key_set(
                suite,
                raw,
                self._algorithms,
                self._data_keys.fresh(),
                load_mark=self._cache.mark(),
                valid_until=time.monotonic() + self._cache.max_age,
            )
            with _store_call("store a new key set"):
                current = self._store.add(scope, made.key_set_id, made.document, replaces=replaces)
            if current is None:
                replaces = None  # the scope was shredded meanwhile: start it afresh
                continue
            data = _document(current)
            if data == made.document:
                with self._lock:
                    self._own.pop(scope, None)  # the newest last, the oldest first out
                    self._own[scope] = (made.key_set_id, made.digest)
                    while len(self._own) > _OWN_KEY_SETS:
                        del self._own[next(iter(self._own))]
                return self._remember(made)
            winner, winner_id = self._adoptable(data, scope)
            if winner_id == replaces:
                continue  # the store refused the id (another key set has it): draw another
            if winner is not None:
                return winner  # another writer's key set, stored first
            replaces = winner_id  # one this writer may not adopt: replace it by its own
        raise KeyAccessError(
            f"the key store did not take a new key set for scope {scope!r} in "
            f"{_ADD_ATTEMPTS} attempts"
        )

    def _remember(self, key_set: KeySet) -> KeySet:
        """A key set just made and stored, in the cache; :class:`Discarded` if a discard
        (a shred of its scope) landed since it was made."""
        found = self._cache.get_or_fill(key_set.key_set_id, lambda: key_set, attempts=1)
        assert found is not None
        return found

    def _key_set(self, key_set_id: int, scope: str, document: bytes | None = None) -> KeySet:
        """Steps 3 to 7 of RECORDS.md section 8, through the cache: one load for all the
        concurrent callers that need this key set. With ``document`` (what the store named
        the scope's current key set), that document is loaded, once: if a discard covers
        it meanwhile, :class:`Discarded` tells the caller to read the store again."""
        check_scope(scope)  # step 1 comes first: a caller's mistake is reported as such
        found = self._cache.get_or_fill(
            key_set_id,
            functools.partial(self._load_key_set, key_set_id, scope, document),
            kek_calls=len(self._algorithms),
            attempts=FILL_ATTEMPTS if document is None else 1,
        )
        assert found is not None  # a fill returns a key set or raises
        return found

    def _load_key_set(self, key_set_id: int, scope: str, document: bytes | None) -> KeySet:
        mark = self._cache.mark()
        if document is None:
            with _store_call("read a key set"):
                stored = self._store.get(key_set_id)
            if stored is None:
                raise KeyAccessError(
                    f"key set {key_set_id} is not in the key store: unknown, or shredded"
                )
            document = _document(stored)
        parsed = parse_key_set(document)
        check_suite(parsed.suite, "key set")  # step 4: before the binding check
        if parsed.key_set_id != key_set_id or parsed.scope != scope:
            # Another key set's document, or another scope's: nothing is unwrapped for it.
            raise DecryptionError()
        keys = self._unwrapper.unwrap(Committing.of(parsed))
        return KeySet(
            document,
            parsed,
            keys,
            load_mark=mark,
            valid_until=time.monotonic() + self._cache.max_age,
        )

    def _after_fork(self) -> None:
        # In a forked child (no other thread exists): a lock a parent thread held would
        # stay held. The cache registers itself and starts empty.
        self._lock = threading.Lock()

    def _encrypt_with(
        self,
        plaintext: bytes,
        *,
        scope: str,
        context: Mapping[str, str] | None,
        key_set: KeySet,
        prefix: bytes,
        nonce: bytes,
    ) -> bytes:
        """Deterministic sealing for test vectors: a given key set, prefix and nonce."""
        assert key_set.scope == scope
        sealer = key_set.sealer(prefix)
        return sealer.seal(nonce, plaintext, sealer.aad_head + self._context(context))


def _open_nothing(record: bytes, aad: bytes) -> bytes:
    raise AssertionError("no run of records has begun")


def _too_large() -> NoReturn:
    raise ValueError(
        f"a record holds at most {_MAX_PLAINTEXT} bytes; encrypt larger values as messages "
        "(Envelope.encrypt)"
    )


def _key_set_id(data: bytes, scope: str) -> int:
    """Step 2 of RECORDS.md section 8 for a record's bytes: its key-set id. On the error
    path the scope is checked first (step 1): a caller's mistake is reported as such."""
    if _FIXED_BYTES <= len(data) <= _MAX_RECORD:
        version, key_set_id = _RECORD_START.unpack_from(data)
        if version == RECORD_VERSION and 0 < key_set_id <= _MAX_KEY_SET_ID:
            return int(key_set_id)
    check_scope(scope)
    if not _FIXED_BYTES <= len(data) <= _MAX_RECORD:
        raise FormatError("not a record: wrong length")
    if data[0] != RECORD_VERSION:
        raise FormatError(f"unsupported record version {data[0]}")
    raise FormatError("not a record: key-set id out of range")


def _record_bytes(record: Buffer | str, scope: str) -> bytes:
    """A record given as text, a bytearray or a memoryview, as bytes (its length bounded
    before any copy)."""
    if isinstance(record, str):
        check_scope(scope)
        return from_text(record)
    if isinstance(record, (bytes, bytearray, memoryview)):
        if len(record) > _MAX_RECORD:
            check_scope(scope)
            raise FormatError("not a record: wrong length")
        return bytes(record)
    raise TypeError("a record is bytes, a bytearray, a memoryview or its text (str)")


def _open(key_set: KeySet, data: bytes, scope: str, context: bytes) -> bytes:
    """Steps 5 (again, for a cached key set) and 8 of RECORDS.md section 8."""
    if key_set.scope != scope:
        check_scope(scope)
        raise DecryptionError()
    sealer = key_set.sealers.get(data[HEAD_BYTES - 8 : HEAD_BYTES])
    if sealer is None:
        return key_set.open(data, context)
    return sealer.open(data, sealer.aad_head + context)


def _document(value: object) -> bytes:
    """What a store returned as a document, as bytes: its length bounded before any copy."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise KeyAccessError(
            f"the key store returned a {type(value).__name__} where a document belongs"
        )
    if len(value) > _limits.MAX_KEY_SET_BYTES:
        raise FormatError("not a key-set document: longer than MAX_KEY_SET_BYTES")
    return bytes(value)


def _parsed(document: object, scope: str) -> KeySetDocument:
    """A document the store named ``scope``'s current key set, parsed; a
    :class:`~envelope.KeyAccessError` if it belongs to another scope."""
    parsed = parse_key_set(_document(document))
    if parsed.scope != scope:
        raise KeyAccessError(
            f"the key store's current key set for scope {scope!r} belongs to another scope"
        )
    return parsed


def _scope_of(value: object) -> str | None:
    if isinstance(value, (KeySet, Sealer)):
        return value.scope
    return value.key_set.scope if isinstance(value, Writer) else None


@contextmanager
def _store_call(action: str) -> Iterator[None]:
    """A key store's own failure, as the one error kind a caller handles for it."""
    try:
        yield
    except EnvelopeError:
        raise
    except Exception as exc:
        raise KeyAccessError(f"the key store failed to {action}: {exc}") from exc


def _at(index: int, error: EnvelopeError) -> EnvelopeError:
    """``error`` again, its message saying which record of a batch failed."""
    message = f"record {index}: {error}"
    if isinstance(error, KeyAccessError):
        return KeyAccessError(message, code=error.code, key_id=error.key_id, errors=error.errors)
    return type(error)(message)


def _is(value: object, _: Hashable, cached: object) -> bool:
    return cached is value
