"""Whose keys a writer writes under (RECORDS.md 5.5 and 6.7), and the other fixes of the
records review: attacked with LocalKeyVault's RSA and oct-HSM keys, a key store rewritten by
someone holding only public keys (or one layer's key), rewraps that would vouch for such keys,
SQLite values of the wrong type or size, forks while other threads hold every lock, and scopes
shredded during every load."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from envelope import Envelope, LocalKey, _limits, _unwrap
from envelope._errors import DecryptionError, EnvelopeError, FormatError, KeyAccessError
from envelope._format import Suite, WrapAlgorithm
from envelope._keys import wrap_needs_secret
from envelope.keyvault import KeyVaultKey
from envelope.records import MemoryKeyStore, Records, SQLiteKeyStore
from envelope.records._cache import FILL_ATTEMPTS
from envelope.testing import LocalKeyVault
from tests.conftest import kek, key_client, run_threads
from tests.core.conftest import Counting
from tests.records import _review_spec as spec
from tests.records.conftest import DictStore, script
from tests.records.conftest import key_set_id as _id
from tests.records.conftest import sql as _sql

_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _name(kind: str) -> str:
    return f"trust-{kind}-{secrets.token_hex(4)}"


def _public_key(vault: LocalKeyVault, name: str) -> rsa.RSAPublicKey:
    """What anyone allowed to read the key's metadata gets: its public key."""
    client = key_client(vault)
    try:
        jwk: Any = client.get_key(name).key
    finally:
        client.close()
    return rsa.RSAPublicNumbers(
        int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")
    ).public_key()


@pytest.fixture
def rsa_pair(vault: LocalKeyVault, fresh: None) -> Iterator[tuple[list[str], list[KeyVaultKey]]]:
    """Two RSA keys in the vault, one per layer (what Key Vault standard/premium offers)."""
    names = [_name("rsa"), _name("rsa")]
    kids = [vault.create_key(name, "RSA") for name in names]
    with kek(vault, names[0]) as inner, kek(vault, names[1]) as outer:
        yield kids, [inner, outer]


def _planted(scope: str, layers: list[tuple[int, bytes, list[spec.Wrap]]]) -> tuple[int, bytes]:
    """A key-set document made by the attacker: data keys they chose, correct commitments."""
    key_set_id = secrets.randbelow(2**62) + 1
    now, salt = int(time.time()), secrets.token_bytes(32)
    document = spec.make_document(
        suite=1, key_set_id=key_set_id, created=now, salt=salt, scope=scope, layers=layers
    )
    return key_set_id, document


def _plant(store: DictStore, scope: str, key_set_id: int, document: bytes) -> None:
    store.documents[key_set_id] = document
    store.currents[scope] = key_set_id


def _opened_by(record: bytes, document: bytes, deks: list[bytes], context: dict[str, str]) -> Any:
    """What the holder of ``deks`` (the planted key set's data keys) gets from ``record``."""
    doc = spec.Doc(document)
    keys = [spec.layer_key(doc, j, dek) for j, dek in enumerate(deks)]
    try:
        return spec.open_sealed(record, doc, keys, spec.encode_ctx(context))
    except spec.Refused:
        return None


# -- public-key KEKs: writers write under their own key sets -----------------------------------


def test_writers_with_rsa_keys_write_under_their_own_key_sets(
    vault: LocalKeyVault, rsa_pair: tuple[list[str], list[KeyVaultKey]], tmp_path: Path
) -> None:
    """Two writers (two Records, as two processes would be) cannot tell each other's key set
    from one a store writer planted, so each writes under its own; a reader opens both."""
    _, keks = rsa_pair
    with SQLiteKeyStore(tmp_path / "keys.db") as store:
        first = Records(Envelope(keks), store)
        second = Records(Envelope(keks), store)
        a = first.encrypt(b"first", scope="s")
        vault.reset_counts()
        b = second.encrypt(b"second", scope="s")
        assert _id(a) != _id(b)
        # Nothing of the first's key set was unwrapped to find that out: RSA wraps only.
        assert "unwrapKey" not in vault.operation_counts()
        assert store.current("s") == store.get(_id(b))  # the last one added is current
        # The first writer, its cache emptied, goes back to its own key set, still stored
        # and not due: no new key set, and the current one is left as it is.
        first.cache.clear()
        again = first.encrypt(b"first again", scope="s")
        assert _id(again) == _id(a)
        assert len(list(store.scan(after=None, limit=10))) == 2
        # A rotation gives the rotating writer a new key set of its own.
        rotated = first.rotate("s")
        assert _id(first.encrypt(b"rotated", scope="s")) == rotated
        second.cache.clear()
        assert _id(second.encrypt(b"second again", scope="s")) == _id(b)
        # A writer that made none (a process started afresh) makes one.
        third = Records(Envelope(keks), store)
        fresh = third.encrypt(b"third", scope="s")
        assert _id(fresh) not in (_id(a), _id(b), rotated)
        reader = Records(Envelope(keks), store)
        for record, value in ((a, b"first"), (b, b"second"), (again, b"first again")):
            assert reader.decrypt(record, scope="s") == value
        assert reader.decrypt(fresh, scope="s") == b"third"


def test_a_key_set_planted_with_public_keys_is_not_written_under(
    vault: LocalKeyVault, rsa_pair: tuple[list[str], list[KeyVaultKey]]
) -> None:
    """The attacker has the public keys and the key store, and plants a key set of data keys
    they chose as the scope's current one, with correct commitments. A reader accepts it (a
    record the attacker seals under it opens: records do not say who wrote them), but no
    writer writes under it: the writer's record names another key set, and the attacker's
    keys do not open it."""
    kids, keks = rsa_pair
    publics = [_public_key(vault, kid.split("/")[-2]) for kid in kids]
    deks = [secrets.token_bytes(32) for _ in kids]
    key_set_id, document = _planted(
        "victim",
        [
            (1, dek, [(int(WrapAlgorithm.RSA_OAEP_256), kid, public.encrypt(dek, _OAEP))])
            for dek, kid, public in zip(deks, kids, publics, strict=True)
        ],
    )
    store = DictStore()
    _plant(store, "victim", key_set_id, document)
    records = Records(Envelope(keks), store)
    forged = spec.make_record(
        document, deks, prefix=os.urandom(8), nonce=os.urandom(12), plaintext=b"x", context={}
    )
    assert records.decrypt(forged, scope="victim") == b"x"
    record = records.encrypt(b"4111 1111 1111 1111", scope="victim", context={"c": "pan"})
    assert _id(record) != key_set_id
    assert _opened_by(record, document, deks, {"c": "pan"}) is None
    assert records.decrypt(record, scope="victim", context={"c": "pan"}) == b"4111 1111 1111 1111"
    # Nor after a rotation or with a batch.
    assert records.rotate("victim") != key_set_id
    assert all(_id(r) != key_set_id for r in records.encrypt_many([b"a", b"b"], scope="victim"))


def test_one_broken_layer_is_not_enough_to_plant_a_key_set(
    vault: LocalKeyVault, fresh: None
) -> None:
    """Layer 0 a local key whose bytes the attacker learnt (section 6 lets them break one
    layer), layer 1 an RSA key: a planted key set with a genuine secret wrap on layer 0 and
    a public one on layer 1 is still not written under. Adopting a key set with one vouched
    layer would hand every later record to whoever broke that one layer."""
    name = _name("rsa")
    kid = vault.create_key(name, "RSA")
    raw = secrets.token_bytes(32)
    local = LocalKey(raw, "trust-local")
    public = _public_key(vault, name)
    deks = [secrets.token_bytes(32), secrets.token_bytes(32)]
    key_set_id, document = _planted(
        "victim",
        [
            (1, deks[0], [spec.local_wrap(raw, "trust-local", deks[0], os.urandom(12))]),
            (
                2,
                deks[1],
                [
                    (
                        int(WrapAlgorithm.RSA_OAEP_256),
                        kid,
                        public.encrypt(deks[1], _OAEP),
                    )
                ],
            ),
        ],
    )
    store = DictStore()
    _plant(store, "victim", key_set_id, document)
    with kek(vault, name) as outer:
        records = Records(
            Envelope([local, outer], algorithms=["AES-256-GCM", "AES-256-OCB3"]), store
        )
        record = records.encrypt(b"secret", scope="victim")
    assert _id(record) != key_set_id
    assert _opened_by(record, document, deks, {}) is None


def test_a_public_wrap_labelled_as_a_symmetric_one_vouches_for_nothing(
    vault: LocalKeyVault, rsa_pair: tuple[list[str], list[KeyVaultKey]]
) -> None:
    """A Key Vault wrap counts as secret by its algorithm (A256KW), which the vault applies
    with symmetric keys only: an RSA wrap relabelled A256KW, or 40 bytes labelled A256KW
    under the RSA key's id, unwraps to nothing, so the planted key set is refused and no
    record is written under it."""
    kids, keks = rsa_pair
    publics = [_public_key(vault, kid.split("/")[-2]) for kid in kids]
    deks = [secrets.token_bytes(32) for _ in kids]
    relabelled = [
        [(int(WrapAlgorithm.A256KW), kid, public.encrypt(dek, _OAEP))]
        for dek, kid, public in zip(deks, kids, publics, strict=True)
    ]
    made_up = [[(int(WrapAlgorithm.A256KW), kid, os.urandom(40))] for kid in kids]
    for wraps in (relabelled, made_up):
        key_set_id, document = _planted(
            "victim", [(1, dek, w) for dek, w in zip(deks, wraps, strict=True)]
        )
        store = DictStore()
        _plant(store, "victim", key_set_id, document)
        records = Records(Envelope(keks), store)
        try:
            record = records.encrypt(b"secret", scope="victim")
        except EnvelopeError:
            continue  # the scope's current key set opens for nobody: refused
        assert _id(record) != key_set_id
        assert _opened_by(record, document, deks, {}) is None


def test_key_vault_keys_say_which_wraps_need_a_secret(vault: LocalKeyVault, fresh: None) -> None:
    rsa_name, oct_name = _name("rsa"), _name("oct")
    vault.create_key(rsa_name, "RSA")
    vault.create_key(oct_name, "oct-HSM")
    with kek(vault, rsa_name) as public, kek(vault, oct_name) as symmetric:
        data_key = secrets.token_bytes(32)
        by_rsa = public.wrap_key(data_key)
        by_oct = symmetric.wrap_key(data_key)
        assert by_rsa.algorithm == "RSA-OAEP-256"
        assert not public.wrap_needs_secret(by_rsa)
        assert not wrap_needs_secret(public, by_rsa)
        assert by_oct.algorithm == "A256KW"
        assert symmetric.wrap_needs_secret(by_oct)
        assert wrap_needs_secret(symmetric, by_oct)
        for algorithm in ("RSA-OAEP", "RSA-OAEP-256", "RSA1_5", "A256GCM", ""):
            assert not symmetric.wrap_needs_secret(by_oct._replace(algorithm=algorithm))
        assert symmetric.wrap_needs_secret(by_oct._replace(algorithm="CKM_AES_KEY_WRAP_PAD"))
    local = LocalKey.generate()
    assert wrap_needs_secret(local, local.wrap_key(data_key))


def test_writers_with_symmetric_keys_agree_on_one_key_set(
    vault: LocalKeyVault, fresh: None, tmp_path: Path
) -> None:
    """Every layer wrapped by a key only its holder can use (a Managed HSM oct-HSM key, a
    local key): a writer vouches for another's key set and adopts it, in this process and in
    another one (section 5.3)."""
    name = _name("oct")
    vault.create_key(name, "oct-HSM")
    outer = LocalKey.generate()
    with kek(vault, name) as inner, SQLiteKeyStore(tmp_path / "keys.db") as store:
        first = Records(Envelope([inner, outer]), store)
        second = Records(Envelope([inner, outer]), store)
        a = first.encrypt(b"a", scope="s")
        assert _id(second.encrypt(b"b", scope="s")) == _id(a)
        assert Records(Envelope([inner, outer]), store).rotate("s") != _id(a)


def test_a_kek_that_does_not_say_counts_as_public() -> None:
    """``Counting`` wraps with a local key but does not say whether its wraps need a secret
    (``wrap_needs_secret``): it counts as public, and writers do not adopt each other's key
    sets; with the local keys themselves they do."""
    quiet, outer = Counting(), LocalKey.generate()
    assert not wrap_needs_secret(quiet, quiet.wrap_key(bytes(32)))
    store = MemoryKeyStore()
    a = Records(Envelope([quiet, outer]), store).encrypt(b"a", scope="s")
    b = Records(Envelope([quiet, outer]), store).encrypt(b"b", scope="s")
    assert _id(a) != _id(b)
    reader = Records(Envelope([quiet, outer]), store)
    assert [reader.decrypt(a, scope="s"), reader.decrypt(b, scope="s")] == [b"a", b"b"]
    inner = LocalKey.generate()
    c = Records(Envelope([inner, outer]), store).encrypt(b"c", scope="t")
    assert _id(Records(Envelope([inner, outer]), store).encrypt(b"d", scope="t")) == _id(c)


# -- rewrap never vouches for a key anyone could have chosen -----------------------------------


def test_a_rewrap_from_public_wraps_to_secret_ones_is_refused(
    vault: LocalKeyVault, fresh: None
) -> None:
    """Moving layer 0 from an RSA key to a local key by rewrap would wrap data keys anyone
    holding the public key could have chosen under a key whose wraps vouch for them (a
    planted key set laundered): every key set is reported failed and left as it was.
    Moving to another RSA key, or between local keys, goes on as before."""
    name = _name("rsa")
    vault.create_key(name, "RSA")
    outer = LocalKey.generate()
    store = MemoryKeyStore()
    with kek(vault, name) as public:
        records = Records(Envelope([public, outer]), store)
        made = [records.encrypt(b"%d" % i, scope=f"s{i}") for i in range(3)]
        before = dict(store.scan(after=None, limit=10))
        bridge = Records(Envelope([[LocalKey.generate(), public], outer]), store)
        report = bridge.rewrap(kek_calls_per_second=None)
        assert (report.rewrapped, report.unchanged) == (0, 0)
        assert len(report.failed) == 3
        assert all("KeyAccessError" in why and "public-key wrap" in why for _, why in report.failed)
        assert dict(store.scan(after=None, limit=10)) == before
        # The outer layer alone moves between local keys: allowed.
        new_outer = LocalKey.generate()
        moved = Records(Envelope([public, [new_outer, outer]]), store).rewrap(
            kek_calls_per_second=None
        )
        assert (moved.rewrapped, moved.failed) == (3, ())
        reader = Records(Envelope([public, new_outer]), store)
        assert [reader.decrypt(r, scope=f"s{i}") for i, r in enumerate(made)] == [
            b"0",
            b"1",
            b"2",
        ]


def test_a_rewrap_reports_an_uncomputable_suite_before_the_binding_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A document under another key set's id, in a suite this Python cannot compute: a
    format error (RECORDS.md section 8, step 4), as a reader reports it, and no KEK call."""
    env = Envelope([LocalKey.generate(), LocalKey.generate()])
    writer = Records(env, MemoryKeyStore())
    writer.encrypt(b"a", scope="a")
    writer.encrypt(b"b", scope="b")
    documents = dict(writer.store.scan(after=None, limit=10))
    first, second = sorted(documents)
    documents[first] = documents[second]
    monkeypatch.setattr(_unwrap, "suite_available", lambda suite: suite is not Suite.BLAKE2B)
    report = Records(env, DictStore(documents)).rewrap(kek_calls_per_second=None)
    assert report.kek_calls == 0
    assert [key_set_id for key_set_id, _ in report.failed] == [first, second]
    assert all(why.startswith("FormatError") for _, why in report.failed)


# -- the SQLite store reads no more than a document may hold -----------------------------------


def test_sqlite_values_are_checked_in_sql_before_they_are_read(tmp_path: Path) -> None:
    """A row rewritten to hold a blob of 64 MiB comes back cut one byte past the longest
    document (a format error), and one of another SQL type is refused before its value is
    used (a key access error): neither is read whole."""
    path = tmp_path / "keys.db"
    env = Envelope([LocalKey.generate(), LocalKey.generate()])
    with SQLiteKeyStore(path) as store:
        record = Records(env, store).encrypt(b"v", scope="s")
    _sql(path, "UPDATE envelope_key_sets SET document = zeroblob(?)", 64 * 2**20)
    with SQLiteKeyStore(path) as store:
        cut = _limits.MAX_KEY_SET_BYTES + 1
        assert len(store.get(_id(record)) or b"") == cut
        assert len(store.current("s") or b"") == cut
        assert [len(document) for _, document in store.scan(after=None, limit=10)] == [cut]
        with pytest.raises(FormatError, match="MAX_KEY_SET_BYTES"):
            Records(env, store).decrypt(record, scope="s")
        with pytest.raises(FormatError):
            Records(env, store).encrypt(b"w", scope="s")
        assert "FormatError" in Records(env, store).rewrap().failed[0][1]
    for value in ("a text", 7, 2**62, 1.5):
        _sql(path, "UPDATE envelope_key_sets SET document = ?", value)
        with SQLiteKeyStore(path) as store:
            with pytest.raises(TypeError, match="not a blob"):
                store.get(_id(record))
            with pytest.raises(KeyAccessError, match="not a blob"):
                Records(env, store).decrypt(record, scope="s")
            with pytest.raises(KeyAccessError, match="not a blob"):
                Records(env, store).encrypt(b"w", scope="s")


# -- forks, loads and scopes -------------------------------------------------------------------

_FORK_HELD = r"""
import os, signal, sys, threading
from envelope import Envelope, LocalKey
from envelope.records import MemoryKeyStore, Records, SQLiteKeyStore
store = SQLiteKeyStore(sys.argv[2]) if sys.argv[1] == "sqlite" else MemoryKeyStore()
records = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), store)
old = records.encrypt(b"before the fork", scope="s")
records.decrypt(old, scope="s")
writer = records.cache.lookup("s")
# Every lock a record, a load, a shred or a store call takes, held by another thread at the
# moment of the fork.
locks = [
    records._lock, records.cache._lock, records.cache._cache._lock, store._lock,
    writer._lock, writer.key_set._lock,
]
held, release = threading.Event(), threading.Event()
def hold():
    for lock in locks:
        lock.acquire()
    held.set()
    release.wait()
    for lock in locks:
        lock.release()
holder = threading.Thread(target=hold)
holder.start()
held.wait()
pid = os.fork()
if pid == 0:
    signal.alarm(10)
    assert records.decrypt(old, scope="s") == b"before the fork"
    new = records.encrypt(b"the child's", scope="s")
    assert new[9:17] != old[9:17]  # a new prefix in the child
    assert len(records.encrypt_many([b"a", b"b"], scope="t")) == 2
    records.rotate("s")
    assert records.decrypt(new, scope="s") == b"the child's"
    assert records.shred("t") == 1
    os._exit(0)
_, status = os.waitpid(pid, 0)
release.set()
holder.join()
print("ok" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else f"failed {status}")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_child_forked_while_another_thread_holds_every_lock_works(
    kind: str, tmp_path: Path
) -> None:
    assert script(_FORK_HELD, kind, str(tmp_path / "keys.db")).split() == ["ok"]


def test_a_scope_shredded_during_every_load_ends_in_a_key_access_error() -> None:
    """Another thread shreds the scope each time the store takes its new key set: the writer
    reads the store again a bounded number of times, then gives up with a KeyAccessError
    instead of looping."""

    class ShredEveryAdd(MemoryKeyStore):
        shredder: Records | None = None
        adds = 0

        def add(self, scope: str, key_set_id: int, document: bytes, *, replaces: int | None) -> Any:
            self.adds += 1
            current = super().add(scope, key_set_id, document, replaces=replaces)
            assert self.shredder is not None
            other = threading.Thread(target=self.shredder.shred, args=(scope,))
            other.start()
            other.join()
            return current

    store = ShredEveryAdd()
    records = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), store)
    store.shredder = records
    # On a thread, so that an encrypt that never returns fails the test instead of hanging it.
    results, errors = run_threads(1, lambda n: records.encrypt(b"x", scope="s"), timeout=30)
    outcome: list[BaseException | bytes] = [*results, *errors]
    assert len(outcome) == 1
    assert isinstance(outcome[0], KeyAccessError), outcome
    assert "shredded" in str(outcome[0])
    assert store.adds <= FILL_ATTEMPTS


@pytest.mark.parametrize("scope", [7, b"s", None, 1.5, ("s",)])
def test_every_verb_refuses_a_scope_that_is_not_a_str(scope: Any) -> None:
    records = Records(Envelope([LocalKey.generate(), LocalKey.generate()]), MemoryKeyStore())
    record = records.encrypt(b"x", scope="s")
    records.decrypt(record, scope="s")
    calls: list[Callable[[], object]] = [
        lambda: records.encrypt(b"x", scope=scope),
        lambda: records.encrypt_text(b"x", scope=scope),
        lambda: records.encrypt_many([b"x"], scope=scope),
        lambda: asyncio.run(records.encrypt_async(b"x", scope=scope)),
        lambda: records.decrypt(record, scope=scope),
        lambda: records.decrypt_many([record], scope=scope),
        lambda: asyncio.run(records.decrypt_async(record, scope=scope)),
        lambda: records.rotate(scope),
        lambda: records.shred(scope),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="scope must be a str"):
            call()


def test_no_other_error_escapes_a_planted_document_of_the_wrong_scope() -> None:
    """A scope's current key set that belongs to another scope: a key access error for the
    writer, whatever it is allowed to adopt."""
    env = Envelope([LocalKey.generate(), LocalKey.generate()])
    writer = Records(env, MemoryKeyStore())
    other = writer.encrypt(b"b", scope="b")
    store = DictStore(dict(writer.store.scan(after=None, limit=10)))
    store.currents["a"] = _id(other)
    with pytest.raises(KeyAccessError, match="another scope"):
        Records(env, store).encrypt(b"a", scope="a")
    with pytest.raises(DecryptionError):
        Records(env, store).decrypt(other, scope="a")
