"""An independent security review of compact records (docs/RECORDS.md), by a reader who did not
write them: a second implementation of the documents (``_review_spec``) checked against the
vectors and against the library in both directions, differential fuzzing of the two readers,
the text form and key-set parsers at every length extreme, the writer's prefixes and nonces
from many threads, and tampering with a SQLite key store's rows directly.

The last section holds the flaws the review found, each attacked as it was when found: a
test that failed until the flaw was fixed, renamed for what now holds (each docstring says
what the flaw was, and what holds now).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from envelope import (
    DecryptionError,
    Envelope,
    EnvelopeError,
    FormatError,
    KeyAccessError,
    LocalKey,
    _limits,
    _message,
    _unwrap,
)
from envelope._format import Suite
from envelope.records import MemoryKeyStore, Records, SQLiteKeyStore, from_text
from envelope.records._format import parse_key_set
from envelope.testing import LocalKeyVault
from tests.conftest import kek, key_client
from tests.records import _review_spec as spec
from tests.records.conftest import DictStore
from tests.records.conftest import key_set_id as _id
from tests.records.conftest import script as _script
from tests.records.conftest import sql as _sql

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "records_v1.json").read_text("utf-8"))
NAMES = {1: "AES-256-GCM", 2: "AES-256-OCB3", 3: "AES-256-GCM-SIV"}


def _kind(call: Callable[..., bytes], *args: Any, **kwargs: Any) -> str | bytes:
    """What ``call(*args, **kwargs)`` returned, or the kind of section 8 it raised; anything
    but the library's three exceptions escapes (and fails the test)."""
    try:
        return call(*args, **kwargs)
    except FormatError:
        return spec.FORMAT
    except KeyAccessError:
        return spec.ACCESS
    except DecryptionError:
        return spec.DECRYPT


def _spec_kind(call: Callable[..., bytes], *args: Any, **kwargs: Any) -> str | bytes:
    try:
        return call(*args, **kwargs)
    except spec.Refused as refused:
        return refused.kind


class _Keys:
    """Local keys whose bytes the independent reader is given too."""

    def __init__(self, count: int) -> None:
        self.raw = [
            (f"review-{n}-{secrets.token_hex(4)}", secrets.token_bytes(32)) for n in range(count)
        ]
        self.keks = [LocalKey(key, kid) for kid, key in self.raw]

    def reader(self) -> list[list[tuple[str, bytes]]]:
        return [[pair] for pair in self.raw]


# -- the documents are exact: a second implementation agrees -----------------------------------


def test_an_independent_reader_reads_every_vector() -> None:
    keys = {kid: bytes.fromhex(key) for kid, key in VECTORS["keys"].items()}
    names = VECTORS["key_names"]
    for vector in VECTORS["vectors"]:
        store = {}
        for name in vector["store"]:
            key_set = VECTORS["key_sets"][name]
            store[key_set["key_set_id"]] = bytes.fromhex(key_set["document"])
        reader = [[(names[n], keys[names[n]]) for n in position] for position in vector["layers"]]
        record = vector.get("record_text") or bytes.fromhex(vector["record"])
        got = _spec_kind(
            spec.read,
            record,
            store=store,
            reader=reader,
            scope=vector["scope"],
            context=vector["context"],
        )
        if vector["expect"] == "success":
            assert got == bytes.fromhex(vector["plaintext"]), vector["name"]
        else:
            assert got == vector["expect"], vector["name"]


@pytest.mark.parametrize("suite", [Suite.HKDF_SHA256, Suite.BLAKE2B])
@pytest.mark.parametrize(
    "algorithms",
    [
        ["AES-256-GCM"],
        ["AES-256-OCB3", "AES-256-GCM-SIV"],
        ["AES-256-GCM-SIV", "AES-256-GCM", "AES-256-OCB3"],
        ["AES-256-GCM", "AES-256-OCB3", "AES-256-GCM-SIV", "AES-256-GCM"],
    ],
)
def test_the_independent_reader_opens_what_the_library_writes(
    monkeypatch: pytest.MonkeyPatch, suite: Suite, algorithms: list[str]
) -> None:
    monkeypatch.setattr(_message, "SUITE", suite)
    keys = _Keys(len(algorithms))
    store = MemoryKeyStore()
    records = Records(Envelope(keys.keks, algorithms=algorithms), store)
    cases = [
        ("", {}, b""),
        ("tenant-\u00e9\u0000\U0001f600", {"column": "pan", "row": "\u00e9"}, b"4111"),
        ("s" * 256, {"k" * 256: "v" * 4096}, os.urandom(1000)),
    ]
    for scope, context, plaintext in cases:
        record = records.encrypt(plaintext, scope=scope, context=context)
        text = records.encrypt_text(plaintext, scope=scope, context=context)
        document = store.get(_id(record))
        assert document is not None
        assert spec.Doc(document).suite == suite
        for given in (record, text):
            assert (
                spec.read(
                    given,
                    store={_id(record): document, _id(spec.text_to_bytes(text)): document},
                    reader=keys.reader(),
                    scope=scope,
                    context=context,
                )
                == plaintext
            )
        assert len(record) == 29 + len(plaintext) + 16 * len(algorithms)
        assert from_text(spec.bytes_to_text(record)) == record


@pytest.mark.parametrize("suite", [1, 2])
@pytest.mark.parametrize("layers", [[1], [2, 3], [3, 1, 2, 1]])
def test_the_library_opens_what_the_independent_writer_writes(
    suite: int, layers: list[int]
) -> None:
    keys = _Keys(len(layers))
    deks = [secrets.token_bytes(32) for _ in layers]
    key_set_id = secrets.randbelow(2**63 - 1) + 1
    document = spec.make_document(
        suite=suite,
        key_set_id=key_set_id,
        created=int(time.time()),
        salt=secrets.token_bytes(32),
        scope="tenant-\u00e9",
        layers=[
            (algorithm, dek, [spec.local_wrap(key, kid, dek, secrets.token_bytes(12))])
            for algorithm, dek, (kid, key) in zip(layers, deks, keys.raw, strict=True)
        ],
    )
    store = MemoryKeyStore()
    assert store.add("tenant-\u00e9", key_set_id, document, replaces=None) == document
    records = Records(Envelope(keys.keks, algorithms=[NAMES[a] for a in layers]), store)
    context = {"column": "note", "b": ""}
    for size in (0, 1, 16, 1000):
        plaintext = os.urandom(size)
        record = spec.make_record(
            document,
            deks,
            prefix=os.urandom(8),
            nonce=os.urandom(12),
            plaintext=plaintext,
            context=context,
        )
        assert records.decrypt(record, scope="tenant-\u00e9", context=context) == plaintext
        assert records.decrypt(
            spec.bytes_to_text(record), scope="tenant-\u00e9", context=context
        ) == (plaintext)
        with pytest.raises(DecryptionError):
            records.decrypt(record, scope="tenant-e\u0301", context=context)
        with pytest.raises(DecryptionError):
            records.decrypt(record, scope="tenant-\u00e9", context={"column": "note"})
    # And the library writes under the independent writer's key set (the scope's current).
    record = records.encrypt(b"both ways", scope="tenant-\u00e9", context=context)
    assert _id(record) == key_set_id
    opened = spec.read(
        record,
        store={key_set_id: document},
        reader=keys.reader(),
        scope="tenant-\u00e9",
        context=context,
    )
    assert opened == b"both ways"


# -- differential fuzzing: the two readers give every input the same answer --------------------


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    choice = rng.randrange(5)
    if choice == 0 and out:
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif choice == 1 and out:
        out[rng.randrange(len(out))] = rng.randrange(256)
    elif choice == 2:
        del out[rng.randrange(len(out) + 1) :]
    elif choice == 3:
        out += os.urandom(rng.randrange(1, 4))
    elif out:
        # A length-like field: a byte set to 0 or 255 (u16/u32 fields cross their limits).
        out[rng.randrange(len(out))] = rng.choice([0, 1, 0xFF, 0x7F, 0x80])
    return bytes(out)


def test_differential_fuzzing_of_records_documents_scopes_and_contexts() -> None:
    """Two readers, one written from the documents alone, report the same kind of failure
    (or the same plaintext) for 2,000 mutated inputs: the order of section 8's checks is
    exact, and nothing escapes the library's three exceptions."""
    rng = random.Random(11)
    keys = _Keys(2)
    writer_store = MemoryKeyStore()
    writer = Records(Envelope(keys.keks, algorithms=["AES-256-OCB3", "AES-256-GCM"]), writer_store)
    scopes = ["tenant-1", "tenant-2"]
    contexts: list[Mapping[str, str]] = [{}, {"column": "pan"}]
    made = []
    for scope in scopes:
        for context in contexts:
            record = writer.encrypt(os.urandom(rng.randrange(40)), scope=scope, context=context)
            made.append((record, scope, context))
        writer.rotate(scope)
    documents: dict[int, bytes] = {}
    for key_set_id, document in writer_store.scan(after=None, limit=100):
        documents[key_set_id] = document
    ids = sorted(documents)
    agreed = {spec.FORMAT: 0, spec.DECRYPT: 0, spec.ACCESS: 0, "success": 0}
    for _ in range(2000):
        record, scope, context = rng.choice(made)
        store = dict(documents)
        for _ in range(rng.randrange(1, 3)):
            what = rng.randrange(6)
            if what == 0:
                record = _mutate(record, rng)
            elif what == 1:
                target = _id(record) if _id(record) in store else rng.choice(ids)
                store[target] = _mutate(store[target], rng)
            elif what == 2:
                scope = rng.choice(scopes)
            elif what == 3:
                context = rng.choice(contexts)
            elif what == 4:
                record = record[:1] + struct.pack(">Q", rng.choice(ids)) + record[9:]
            else:
                target = _id(record) if _id(record) in store else rng.choice(ids)
                store[target] = store[rng.choice(ids)]
        reader = Records(Envelope(keys.keks), DictStore(store))
        ours = _kind(reader.decrypt, record, scope=scope, context=context)
        theirs = _spec_kind(
            spec.read, record, store=store, reader=keys.reader(), scope=scope, context=context
        )
        assert ours == theirs, (record.hex(), scope, context)
        agreed["success" if isinstance(ours, bytes) else str(ours)] += 1
    assert all(agreed.values()), agreed  # every kind was reached


def test_the_text_form_accepts_exactly_the_canonical_spelling() -> None:
    """Every text of up to 3 characters over an alphabet with the edge cases, and 20,000 random
    longer ones: the library accepts exactly what the independent reader accepts, as the same
    bytes, and refuses the rest with a FormatError."""
    edge = "AQgw-_/+=Z9a \n\u00e9\x00"
    rng = random.Random(7)
    texts = [""] + [a + b + c for a in edge for b in edge for c in edge]
    texts += [a + b for a in edge for b in edge] + list(edge)
    alphabet = spec.B64URL + "=+/ \n\t.\u00e9"
    texts += [
        "".join(rng.choice(alphabet if rng.random() < 0.05 else spec.B64URL) for _ in range(n))
        for n in (rng.randrange(4, 200) for _ in range(20000))
    ]
    for text in texts:
        ours = _kind(from_text, text)
        theirs = _spec_kind(spec.text_to_bytes, text)
        assert ours == theirs, repr(text)


def _length_fields(document: bytes) -> list[tuple[int, str]]:
    """Offsets and struct formats of every length and count field of a document."""
    fields = [(6, ">I"), (10, ">Q"), (58, ">H")]
    scope_length = struct.unpack_from(">H", document, 58)[0]
    at = 60 + scope_length
    fields.append((at, ">B"))
    layer_count = document[at]
    at += 1
    for _ in range(layer_count):
        fields += [(at, ">B"), (at + 33, ">B")]
        count = document[at + 33]
        at += 34
        for _ in range(count):
            fields.append((at, ">B"))
            (kid_length,) = struct.unpack_from(">H", document, at + 1)
            fields.append((at + 1, ">H"))
            at += 3 + kid_length
            fields.append((at, ">H"))
            (wrapped_length,) = struct.unpack_from(">H", document, at)
            at += 2 + wrapped_length
    assert at == len(document)
    return fields


def _fields(document: bytes) -> bytes:
    return parse_key_set(document).fields


def _spec_fields(document: bytes) -> bytes:
    return spec.Doc(document).fields


def test_key_set_parsers_agree_at_every_length_fields_extremes() -> None:
    keys = _Keys(3)
    store = MemoryKeyStore()
    three = Records(Envelope([[keys.keks[0], keys.keks[1]], keys.keks[2]]), store)
    record = three.encrypt(b"x", scope="a scope")
    document = store.get(_id(record))
    assert document is not None
    checked = 0
    for offset, form in _length_fields(document):
        width = struct.calcsize(form)
        top = 2 ** (8 * width) - 1
        (value,) = struct.unpack_from(form, document, offset)
        for new in {0, 1, 2, 4, 5, 255, top, top - 1, value - 1, value + 1, 2**63 - 1, 2**63}:
            if not 0 <= new <= top:
                continue
            changed = document[:offset] + struct.pack(form, new) + document[offset + width :]
            for candidate in (changed, changed + bytes(70000), changed[: len(changed) // 2]):
                started = time.thread_time()  # CPU time: a loaded machine's waits aside
                ours = _kind(_fields, candidate)
                assert time.thread_time() - started < 0.5
                theirs = _spec_kind(_spec_fields, candidate)
                assert ours == theirs, (offset, form, new)
                checked += 1
    assert checked > 200


# -- nonces and prefixes -----------------------------------------------------------------------


def test_prefix_epochs_and_nonces_from_many_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 threads sealing one by one and in batches, with epochs of 64 records so that
    hundreds of them start under contention: no epoch holds more than 64 records, and no
    (prefix, nonce) pair, indeed no nonce, repeats."""
    monkeypatch.setattr(_limits, "RECORDS_PER_PREFIX", 64)
    records = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), MemoryKeyStore())
    made: list[list[bytes]] = [[] for _ in range(16)]
    start = threading.Barrier(16)

    def work(n: int) -> None:
        start.wait()
        for i in range(300):
            made[n].append(records.encrypt(b"%d" % i, scope="s"))
            if i % 20 == 0:
                made[n] += records.encrypt_many([b"batch"] * (i % 97 + 1), scope="s")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    everything = [record for part in made for record in part]
    assert len(everything) == 16 * (300 + sum(i % 97 + 1 for i in range(0, 300, 20)))
    per_prefix: dict[bytes, int] = {}
    for record in everything:
        per_prefix[record[9:17]] = per_prefix.get(record[9:17], 0) + 1
    assert max(per_prefix.values()) <= 64
    assert len({record[17:29] for record in everything}) == len(everything)
    assert records.decrypt_many(everything[::97], scope="s")


# -- the SQLite key store, tampered with directly ----------------------------------------------


def test_sqlite_rows_rewritten_open_nothing_and_raise_only_the_librarys_errors(
    tmp_path: Path,
) -> None:
    keys = _Keys(2)
    path = tmp_path / "keys.db"
    with SQLiteKeyStore(path) as store:
        writer = Records(Envelope(keys.keks), store)
        first = writer.encrypt(b"first", scope="a")
        writer.rotate("a")
        second = writer.encrypt(b"second", scope="a")
        other = writer.encrypt(b"other", scope="b")

    def fresh_kind(record: bytes, scope: str) -> str | bytes:
        with SQLiteKeyStore(path) as reader_store:
            reader = Records(Envelope(keys.keks), reader_store)
            return _kind(reader.decrypt, record, scope=scope)

    # Documents swapped between two rows of one scope: each row now holds the other's id.
    with sqlite3.connect(path) as connection:
        rows = dict(connection.execute("SELECT id, document FROM envelope_key_sets"))
    connection.close()
    for here, there in ((first, second), (second, first)):
        _sql(
            path,
            "UPDATE envelope_key_sets SET document = ? WHERE id = ?",
            rows[_id(there)],
            _id(here),
        )
    assert fresh_kind(first, "a") == spec.DECRYPT
    assert fresh_kind(second, "a") == spec.DECRYPT
    # Another scope's document under a's id, and a's current pointed at b's key set.
    _sql(
        path,
        "UPDATE envelope_key_sets SET document = (SELECT document FROM envelope_key_sets "
        "WHERE id = ?) WHERE id = ?",
        _id(other),
        _id(first),
    )
    assert fresh_kind(first, "a") == spec.DECRYPT
    assert fresh_kind(first, "b") == spec.DECRYPT
    _sql(path, "UPDATE envelope_scopes SET current = ? WHERE scope = 'a'", _id(other))
    with SQLiteKeyStore(path) as store:
        writer = Records(Envelope(keys.keks), store)
        with pytest.raises(KeyAccessError):
            writer.encrypt(b"must not be written under b's key set", scope="a")
        assert writer.decrypt(other, scope="b") == b"other"
    # Documents of other SQLite types, and an id column moved.
    for value in ("text, not bytes", 7, 2**20, 1.5, b""):
        _sql(path, "UPDATE envelope_key_sets SET document = ? WHERE id = ?", value, _id(other))
        assert fresh_kind(other, "b") in (spec.FORMAT, spec.ACCESS)
    _sql(path, "UPDATE envelope_key_sets SET id = id + 1 WHERE id = ?", _id(second))
    assert fresh_kind(second, "a") == spec.ACCESS


def test_sqlite_scopes_differing_by_a_nul_case_or_space_are_shredded_apart(
    tmp_path: Path,
) -> None:
    scopes = ["a", "a\x00b", "a\x00", "A", "a ", "\u00e9", "e\u0301"]
    keys = _Keys(2)
    with SQLiteKeyStore(tmp_path / "keys.db") as store:
        records = Records(Envelope(keys.keks), store)
        made = {scope: records.encrypt(scope.encode(), scope=scope) for scope in scopes}
        assert len({_id(record) for record in made.values()}) == len(scopes)
        assert records.shred("a") == 1
        assert records.shred("\u00e9") == 1
    with SQLiteKeyStore(tmp_path / "keys.db") as store:
        reader = Records(Envelope(keys.keks), store)
        for scope, record in made.items():
            if scope in ("a", "\u00e9"):
                with pytest.raises(KeyAccessError):
                    reader.decrypt(record, scope=scope)
            else:
                assert reader.decrypt(record, scope=scope) == scope.encode()


# -- flaws -------------------------------------------------------------------------------------


_HANG = r"""
import sys, threading, secrets
from envelope import Envelope, LocalKey
from envelope.records import MemoryKeyStore, Records

class CountingKey(LocalKey):
    __slots__ = ("hook", "calls")
    def unwrap_key(self, wrapped):
        self.calls += 1
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return super().unwrap_key(wrapped)

class ShredOnAdd(MemoryKeyStore):
    # The store takes the key set, then a shred of the scope lands (another thread's)
    # before the writer has remembered it.
    records = None
    def add(self, scope, key_set_id, document, *, replaces):
        current = super().add(scope, key_set_id, document, replaces=replaces)
        if self.records is not None:
            records, self.records = self.records, None
            other = threading.Thread(target=records.shred, args=(scope,))
            other.start()
            other.join()
        return current

done = threading.Event()
def in_another_thread(action):
    def run():
        try:
            action()
        finally:  # returning or raising the library's error both end the call
            print("returned", flush=True)
            done.set()
    threading.Thread(target=run, daemon=True).start()

key = CountingKey(secrets.token_bytes(32))
key.hook, key.calls = None, 0
mode = sys.argv[1]
if mode == "shred during first use":
    store = ShredOnAdd()
    records = Records(Envelope([key]), store)
    store.records = records
    in_another_thread(lambda: records.encrypt(b"x", scope="s"))
else:
    store = MemoryKeyStore()
    Records(Envelope([key]), store).encrypt(b"x", scope="s")  # the scope has a key set
    records = Records(Envelope([key]), store)
    count = 1 if mode == "shred during unwrap" else 65
    def discards():
        # Another thread of this Records shreds `count` scopes (one: the same scope; 65:
        # unrelated ones) while this writer's load unwraps.
        names = ["s"] if count == 1 else [f"other-{n}" for n in range(count)]
        other = threading.Thread(target=lambda: [records.shred(n) for n in names])
        other.start()
        other.join()
    key.hook = discards
    key.calls = 0
    in_another_thread(lambda: records.encrypt(b"y", scope="s"))
# Up to 5 seconds for the call to end; then a little longer, so that unwraps a call that
# returned left going on its own would be counted too.
done.wait(5)
threading.Event().wait(0.5)
print("unwraps", key.calls, flush=True)
"""


def _hang(mode: str) -> tuple[bool, int]:
    """Whether ``encrypt`` returned within 5 seconds in that scenario, and how many unwraps
    its KEK made meanwhile (a subprocess: a thread that never returns cannot be stopped)."""
    lines = _script(_HANG, mode).split()
    return "returned" in lines, int(lines[lines.index("unwraps") + 1])


@pytest.mark.parametrize("mode", ["shred during first use", "shred during unwrap", "65 discards"])
def test_a_discard_during_a_writers_load_ends_the_load(mode: str) -> None:
    """Was HIGH: a scope's writer is loaded with the cache's mark taken before the load
    began (``_load_writer``), and that same mark is handed to the key-set fill
    (``_key_set_of``/``_add_key_set`` -> ``_remember``). When a discard that covers the key
    set lands meanwhile (a shred of the scope from another thread), or simply 65 discards of
    anything (shreds of other scopes, writers expiring, rotations), ``KeySetCache._admit``
    refuses the value, and ``get_or_fill`` fills again with the same stale mark: refused
    again, forever. The thread spins, unwrapping through the KEK on every turn (a storm of
    Key Vault calls), and ``encrypt`` never returns. Now every fill takes its own mark; a
    refused key set sends the writer back to the store, and fills are retried a bounded
    number of times."""
    returned, unwraps = _hang(mode)
    assert returned, f"encrypt never returned ({unwraps} KEK unwraps in 5 seconds)"
    assert unwraps <= 3


_CLONE = r"""
import ctypes, os
from envelope import Envelope, LocalKey
from envelope.records import MemoryKeyStore, Records
records = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), MemoryKeyStore())
records.encrypt(b"written before the snapshot", scope="s")
read_end, write_end = os.pipe()
# A copy of the process that Python's at-fork hooks never see: what a VM snapshot restored
# twice, a cloned VM, a CRIU restore or a Firecracker/SnapStart resume are to a process.
pid = ctypes.PyDLL(None).fork()
if pid == 0:
    os.write(write_end, records.encrypt(b"clone A", scope="s")[9:29])
    os._exit(0)
mine = records.encrypt(b"clone B", scope="s")[9:29]
os.waitpid(pid, 0)
print(mine.hex(), os.read(read_end, 20).hex())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libc fork via ctypes")
def test_a_clone_of_a_writer_draws_its_own_nonces() -> None:
    """Was MEDIUM: nonces come from a process-wide pool of 256 drawn ahead (``_writer._NoncePool``,
    as RECORDS.md 5.1 allowed). Python's fork hooks empty it in a forked child, but a copy of
    the process's memory that runs no hook (a VM snapshot resumed twice, a cloned VM, CRIU,
    Firecracker/Lambda SnapStart) resumes both copies with the same prefix and the same pooled
    nonces: their next records share (subkey, nonce), which for AES-GCM and OCB3 leaks the XOR
    of the plaintexts and the GHASH key (forgeries). The kernel reseeds its generator on a VM
    clone (vmgenid), so a nonce drawn from it per record would differ. Now each nonce is drawn
    from ``os.urandom`` when its record is sealed, and RECORDS.md 5.1 forbids a pool (6.1 gives
    the bound for copies)."""
    # Prefix (8 bytes) and nonce (12) of each clone's next record. The prefixes are equal (a
    # clone cannot know it is one); a nonce drawn when sealing is what must tell them apart.
    mine, theirs = _script(_CLONE).split()
    assert mine != theirs, "two clones sealed under one (subkey, nonce)"


_FORK_LOCK = r"""
import os, secrets, signal, threading
from envelope import Envelope, LocalKey, _limits
from envelope.records import MemoryKeyStore, Records
_limits.RECORDS_PER_PREFIX = 1  # every record begins an epoch: Writer._new_epoch, under its lock
records = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), MemoryKeyStore())
records.encrypt(b"the scope's writer exists", scope="s")
inside, release = threading.Event(), threading.Event()
draw = secrets.token_bytes
def slow_draw(n):
    # The batch thread pauses while it draws its next prefix, holding the writer's lock: the
    # moment a fork of a busy process can land on (1 to 2 forks in 40 did, unaided).
    if threading.current_thread().name == "batch":
        inside.set()
        release.wait()
    return draw(n)
secrets.token_bytes = slow_draw
def seal_a_batch():
    records.encrypt_many([b"v"] * 3, scope="s")
batch = threading.Thread(target=seal_a_batch, name="batch")
batch.start()
inside.wait()
pid = os.fork()
if pid == 0:
    signal.alarm(5)
    records.encrypt(b"the child's first record", scope="s")
    os._exit(0)
_, status = os.waitpid(pid, 0)
release.set()
batch.join()
print("hung" if os.WIFSIGNALED(status) else "sealed")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_forked_while_a_thread_starts_an_epoch_seals() -> None:
    """Was LOW: after ``fork()`` the child's first record always goes through
    ``Writer._reserve``, which takes the writer's lock; if another thread of the parent held
    it at the fork (every ``encrypt_many``, and every record that starts an epoch, takes it),
    the child waits forever. ``_NoncePool.forget`` replaces the pool's lock in the child for
    exactly this reason, but the writer's lock (and ``KeySet._lock``, the caches' locks,
    ``Records._tally_lock``) are not. Measured without the pause below: 2 of 40 forks of a
    process sealing batches on a thread hung. Now the at-fork hook (``records._fork``)
    gives the child new locks and an empty key-set cache: it starts every writer afresh."""
    assert _script(_FORK_LOCK).split() == ["sealed"], (
        "the forked child never sealed its first record"
    )


def test_a_key_store_writer_cannot_make_writers_encrypt_under_its_keys(
    vault: LocalKeyVault, tmp_path: Path
) -> None:
    """Was HIGH where every layer's KEK is an RSA key (all that Azure Key Vault's standard and
    premium tiers offer: symmetric oct-HSM keys need Managed HSM). RSA wraps need only the
    public key, so whoever can write the key store (the database next to the records) can
    make a key set of data keys they chose, wrapped under every layer's public key, with
    correct commitments, and make it a scope's current key set. A writer adopts it
    (RECORDS.md 5.3: "MUST use the returned key set") and every record it writes afterwards
    is readable by that attacker, until the next rotation (30 days by default); readers also
    accept any record the attacker forges, and a rewrap would launder the key set under
    symmetric KEKs. RECORDS.md 6.5 says a forged document "is caught by the commitments":
    not with public-key KEKs. A message writer never takes its data keys from storage, so
    this is new to records. Now a writer writes only under a key set it made, or one whose
    every data key it unwrapped from a wrap that needs a secret (RECORDS.md 5.5 and 6.7): it
    does not adopt the planted key set, and writes under one of its own."""
    admin = key_client(vault)
    names = [f"review-rsa-{secrets.token_hex(4)}" for _ in range(2)]
    kids = [vault.create_key(name, "RSA") for name in names]
    public = []
    for name in names:
        jwk: Any = admin.get_key(name).key
        assert jwk.n is not None
        assert jwk.e is not None
        public.append(
            rsa.RSAPublicNumbers(
                int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")
            ).public_key()
        )
    admin.close()
    # The attacker: public keys and the key store's file, nothing else.
    deks = [secrets.token_bytes(32) for _ in kids]
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    planted_id = secrets.randbelow(2**62) + 1
    document = spec.make_document(
        suite=2,
        key_set_id=planted_id,
        created=int(time.time()),
        salt=secrets.token_bytes(32),
        scope="victim",
        layers=[
            (algorithm, dek, [(2, kid, key.encrypt(dek, oaep))])
            for algorithm, dek, kid, key in zip((1, 2), deks, kids, public, strict=True)
        ],
    )
    path = tmp_path / "keys.db"
    SQLiteKeyStore(path).close()
    _sql(path, "INSERT INTO envelope_key_sets VALUES (?, 'victim', ?)", planted_id, document)
    _sql(path, "INSERT INTO envelope_scopes VALUES ('victim', ?)", planted_id)
    # The application writes a record.
    with (
        kek(vault, names[0]) as inner,
        kek(vault, names[1]) as outer,
        SQLiteKeyStore(path) as store,
    ):
        records = Records(
            Envelope([inner, outer], algorithms=["AES-256-GCM", "AES-256-OCB3"]), store
        )
        try:
            record = records.encrypt(b"4111 1111 1111 1111", scope="victim", context={"c": "pan"})
        except EnvelopeError:
            return  # refusing the planted key set is a fix
    assert _id(record) != planted_id, "the writer adopted the planted key set"
    # The attacker reads it.
    doc = spec.Doc(document)
    layer_keys = [spec.layer_key(doc, j, dek) for j, dek in enumerate(deks)]
    stolen = _spec_kind(spec.open_sealed, record, doc, layer_keys, spec.encode_ctx({"c": "pan"}))
    assert stolen != b"4111 1111 1111 1111", "the key store's writer read a new record"


def test_an_uncomputable_suite_is_reported_before_the_binding_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was LOW (conformance): RECORDS.md section 8 step 4: a reader that cannot compute the
    document's suite reports a format error *at parsing*, before step 5 (binding). The
    library checks the suite in ``Unwrapper.plan`` (step 6), after the binding check, so a
    suite 2 record read under another scope by a Python without keyed BLAKE2b (a FIPS
    build) is a decryption failure here and a format error for a reader that follows the
    document. Now the suite is checked right after ``parse_key_set`` in ``_load_key_set``
    (and in rewrap)."""
    keys = _Keys(2)
    store = MemoryKeyStore()
    record = Records(Envelope(keys.keks), store).encrypt(b"x", scope="right")
    monkeypatch.setattr(_unwrap, "suite_available", lambda suite: suite is not Suite.BLAKE2B)
    reader = Records(Envelope(keys.keks), store)
    assert _kind(reader.decrypt, record, scope="right") == spec.FORMAT
    reader = Records(Envelope(keys.keks), store)
    assert _kind(reader.decrypt, record, scope="wrong") == spec.FORMAT


def test_a_scope_of_another_type_never_reaches_the_key_set_cache() -> None:
    """Was LOW: ``encrypt`` looked the scope up in the cache's lock-free front before checking it,
    and the front holds key sets by id (int) and sealers by record head (bytes) beside the
    writers by scope (str): a scope that is a key-set id or a record head finds a key set or a
    sealer, and the caller gets ``AttributeError`` or a ``TypeError`` about ``Sealer.seal``
    instead of the clear ``TypeError`` that any other non-str scope gets. Now ``encrypt`` looks
    up only a ``str`` scope, and every other verb checks the scope first."""
    records = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), MemoryKeyStore())
    record = records.encrypt(b"x", scope="s")
    records.decrypt(record, scope="s")
    for scope in (_id(record), record[:17]):
        with pytest.raises(TypeError, match="scope must be a str"):
            records.encrypt(b"x", scope=scope)  # type: ignore[arg-type]
