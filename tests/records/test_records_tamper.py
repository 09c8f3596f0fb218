"""Attacks on records and on stored key sets (RECORDS.md sections 6 and 8): every byte of a
record flipped and every truncation; records moved between scopes, contexts and key sets;
key-set documents rewritten in the store, against a real LocalKeyVault whose operation
counts show which rewrites reach the vault (none may, before the key ids are checked)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from envelope import DecryptionError, Envelope, EnvelopeError, FormatError, KeyAccessError, LocalKey
from envelope._format import encode_wrapped_keys
from envelope.keyvault import KeyVaultKey
from envelope.records import MemoryKeyStore, Records, from_text, to_text
from envelope.records._format import encode_key_set, key_set_fields, parse_key_set
from envelope.testing import LocalKeyVault
from tests.conftest import kek
from tests.records.conftest import DictStore

_names = iter(range(10**6))


def _id(record: bytes) -> int:
    return int.from_bytes(record[1:9], "big")


def _kind(error: BaseException) -> str:
    if isinstance(error, FormatError):
        return "format"
    if isinstance(error, DecryptionError):
        return "decryption"
    assert isinstance(error, KeyAccessError), repr(error)
    return "access"


def _outcome(records: Records, record: bytes | str, **where: object) -> str:
    try:
        records.decrypt(record, **where)  # type: ignore[arg-type]
    except EnvelopeError as exc:
        return _kind(exc)
    return "opened"


# -- the record ---------------------------------------------------------------------------


@pytest.fixture
def sealed(records: Records) -> bytes:
    return records.encrypt(b"4111111111111111", scope="tenant-42", context={"column": "pan"})


WHERE = {"scope": "tenant-42", "context": {"column": "pan"}}


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_byte_flipped(records, sealed, mask):
    for offset in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[offset] ^= mask
        outcome = _outcome(records, bytes(tampered), **WHERE)
        if offset == 0:
            expected = {"format"}  # an unknown version
        elif offset == 1 and mask & 0x80:
            expected = {"format"}  # a key-set id of 2^63 or more
        elif offset <= 8:
            expected = {"access"}  # a key-set id the store does not have
        else:
            expected = {"decryption"}  # prefix, nonce, ciphertext, tags
        assert outcome in expected, (offset, outcome)


def test_every_truncation_and_extension(records, sealed):
    for length in range(len(sealed)):
        outcome = _outcome(records, sealed[:length], **WHERE)
        assert outcome == ("format" if length < 29 else "decryption"), length
    for extra in (b"\x00", b"\x00" * 16, b"\x00" * 32, sealed[29:]):
        assert _outcome(records, sealed + extra, **WHERE) == "decryption"


def test_every_character_of_the_text_form_changed(records, sealed):
    text = to_text(sealed)
    for index in range(len(text)):
        for replacement in ("A", "_", "=", " ", "\u00e9"):
            if text[index] == replacement:
                continue
            changed = text[:index] + replacement + text[index + 1 :]
            assert _outcome(records, changed, **WHERE) != "opened", (index, replacement)
    for length in range(len(text)):
        assert _outcome(records, text[:length], **WHERE) != "opened"


def test_splices_of_two_records(records):
    a = records.encrypt(b"a" * 16, **WHERE)
    other = Records(records.envelope, records.store)  # another writer: another prefix
    b = other.encrypt(b"b" * 16, **WHERE)  # type: ignore[arg-type]
    assert a[:9] == b[:9]
    assert a[9:17] != b[9:17]
    for cut in (10, 17, 20, 29, 45, 60, 70):
        assert _outcome(records, a[:cut] + b[cut:], **WHERE) == "decryption", cut
        assert _outcome(records, b[:cut] + a[cut:], **WHERE) == "decryption", cut


def test_moved_between_scopes_contexts_and_key_sets(records):
    record = records.encrypt(b"v", **WHERE)
    elsewhere = records.encrypt(b"w", scope="tenant-43")
    records.rotate("tenant-42")
    newer = records.encrypt(b"x", **WHERE)
    assert _id(newer) != _id(record)
    # Another scope, whether it has key sets or not.
    for scope in ("tenant-43", "tenant-44", ""):
        assert _outcome(records, record, scope=scope, context=WHERE["context"]) == "decryption"
    # Another context.
    for context in ({}, {"column": "notes"}, {"column": "pan", "row": "7"}, {"Column": "pan"}):
        assert _outcome(records, record, scope="tenant-42", context=context) == "decryption"
    # Another key set of the same scope, and of another scope.
    for target in (newer, elsewhere):
        moved = record[:1] + target[1:9] + record[9:]
        assert _outcome(records, moved, **WHERE) == "decryption"
    assert _outcome(records, record, **WHERE) == "opened"


# -- the key-set document, with local keys ------------------------------------------------


def _document(records: Records, record: bytes) -> bytes:
    document = records.store.get(_id(record))
    assert isinstance(document, bytes)
    return document


def test_every_byte_of_the_document_flipped(env, sealed, records):
    document = _document(records, sealed)
    key_set_id = _id(sealed)
    for offset in range(len(document)):
        tampered = bytearray(document)
        tampered[offset] ^= 0x01
        reader = Records(env, DictStore({key_set_id: bytes(tampered)}))  # a cold reader
        outcome = _outcome(reader, sealed, **WHERE)
        assert outcome != "opened", offset


def test_every_truncation_of_the_document(env, sealed, records):
    document = _document(records, sealed)
    for length in range(len(document)):
        reader = Records(env, DictStore({_id(sealed): document[:length]}))
        assert _outcome(reader, sealed, **WHERE) == "format", length
    reader = Records(env, DictStore({_id(sealed): document + b"\x00"}))
    assert _outcome(reader, sealed, **WHERE) == "format"


def _rebuilt(document: bytes, **change: object) -> bytes:
    parsed = parse_key_set(document)
    fields = key_set_fields(
        int(change.get("key_set_id", parsed.key_set_id)),  # type: ignore[call-overload]
        parsed.created,
        parsed.fields[16:48],
        str(change.get("scope", parsed.scope)).encode(),
    )
    layers = [
        (layer.algorithm, layer.commitment, encode_wrapped_keys(layer.wrapped_keys))
        for layer in parsed.layers
    ]
    return encode_key_set(parsed.suite, fields, change.get("layers", layers))  # type: ignore[arg-type]


def test_documents_moved_between_ids_and_scopes(env, records):
    a = records.encrypt(b"a", scope="s")
    b = records.encrypt(b"b", scope="t")
    doc_a, doc_b = _document(records, a), _document(records, b)
    # Another key set's document under a's id; a's document under another id.
    assert _outcome(Records(env, DictStore({_id(a): doc_b})), a, scope="s") == "decryption"
    assert _outcome(Records(env, DictStore({_id(a): doc_b})), a, scope="t") == "decryption"
    # a's document relabelled for scope t (the commitments bind the scope).
    relabelled = _rebuilt(doc_a, scope="t")
    moved = a[:1] + a[1:9] + a[9:]
    assert _outcome(Records(env, DictStore({_id(a): relabelled})), moved, scope="t") == "decryption"
    # a's document given b's id, and a record pointed at it.
    renumbered = _rebuilt(doc_a, key_set_id=_id(b))
    pointed = a[:1] + b[1:9] + a[9:]
    assert (
        _outcome(Records(env, DictStore({_id(b): renumbered})), pointed, scope="s") == "decryption"
    )


# -- the key-set document, against LocalKeyVault ------------------------------------------


@pytest.fixture
def vault_records(vault: LocalKeyVault, fresh: None) -> Iterator[tuple[Records, KeyVaultKey]]:
    name = f"records-{next(_names)}"
    vault.create_key(name, "RSA")
    with kek(vault, name) as inner:
        yield Records(Envelope([inner, LocalKey.generate()]), MemoryKeyStore()), inner


def _cold(records: Records, documents: dict[int, bytes]) -> Records:
    return Records(records.envelope, DictStore(documents))


def test_a_foreign_key_id_causes_no_vault_contact(vault, vault_records):
    records, inner = vault_records
    record = records.encrypt(b"v", scope="s")
    document = _document(records, record)
    wrapped = parse_key_set(document).layers[0].wrapped_keys[0]
    version = wrapped.key_id.rsplit("/", 1)[1]
    host = vault.url.split("//", 1)[1]
    foreign_ids = [
        f"https://{host.split(':')[0]}:1/keys/{inner.key_id.rsplit('/', 1)[1]}/{version}",
        f"{vault.url}/keys/another-key/{version}",
        f"{vault.url}/keys/{inner.key_id.rsplit('/', 1)[1]}/{version}/extra",
        f"http://{host}/keys/{inner.key_id.rsplit('/', 1)[1]}/{version}",
        "local:00000000000000000000000000000000",
    ]
    vault.reset_counts()
    for foreign in foreign_ids:
        parsed = parse_key_set(document)
        layers = [
            (layer.algorithm, layer.commitment, encode_wrapped_keys(layer.wrapped_keys))
            for layer in parsed.layers
        ]
        layers[0] = (
            layers[0][0],
            layers[0][1],
            encode_wrapped_keys([wrapped._replace(key_id=foreign)]),
        )
        rewritten = encode_key_set(parsed.suite, parsed.fields, layers)
        with pytest.raises(KeyAccessError):
            _cold(records, {_id(record): rewritten}).decrypt(record, scope="s")
    assert vault.operation_counts() == {}


def test_a_swapped_wrapped_key_fails_the_commitment(vault, vault_records):
    records, _ = vault_records
    a = records.encrypt(b"a", scope="a")
    b = records.encrypt(b"b", scope="b")
    doc_a, doc_b = _document(records, a), _document(records, b)
    layers_a = parse_key_set(doc_a).layers
    layers_b = parse_key_set(doc_b).layers
    # The same KEK wrapped b's data key: a's layer 0 given b's wrapped key.
    assert layers_a[0].wrapped_keys[0].key_id == layers_b[0].wrapped_keys[0].key_id
    swapped = encode_key_set(
        parse_key_set(doc_a).suite,
        parse_key_set(doc_a).fields,
        [
            (
                layers_a[0].algorithm,
                layers_a[0].commitment,
                encode_wrapped_keys(layers_b[0].wrapped_keys),
            ),
            (
                layers_a[1].algorithm,
                layers_a[1].commitment,
                encode_wrapped_keys(layers_a[1].wrapped_keys),
            ),
        ],
    )
    vault.reset_counts()
    reader = _cold(records, {_id(a): swapped})
    for _ in range(2):
        with pytest.raises(DecryptionError) as caught:
            reader.decrypt(a, scope="a")
        assert not isinstance(caught.value, FormatError)
    # The vault unwrapped b's data key each time: a data key that fails its commitment is
    # never cached.
    assert vault.operation_counts().get("unwrapKey") == 2
    assert reader.cache.stats().entries == 0


def test_other_rewrites_reach_no_vault(vault, vault_records):
    records, _ = vault_records
    a = records.encrypt(b"a", scope="a")
    b = records.encrypt(b"b", scope="b")
    doc_a = _document(records, a)
    vault.reset_counts()
    cases = [
        ({_id(a): _document(records, b)}, a, "a", "decryption"),  # another key set's document
        ({_id(a): doc_a}, a, "b", "decryption"),  # the wrong scope
        ({_id(a): doc_a[:-1]}, a, "a", "format"),  # truncated
        ({_id(a): b"\x89EKS" + doc_a[4:]}, a[:5], "a", "format"),  # a malformed record
        ({}, a, "a", "access"),  # shredded
    ]
    for documents, record, scope, kind in cases:
        assert _outcome(_cold(records, documents), record, scope=scope) == kind
    assert vault.operation_counts() == {}


def test_rewriting_created_salt_or_algorithm_fails_the_commitment(vault, vault_records):
    records, _ = vault_records
    record = records.encrypt(b"v", scope="s")
    document = _document(records, record)
    parsed = parse_key_set(document)
    layers = [
        (layer.algorithm, layer.commitment, encode_wrapped_keys(layer.wrapped_keys))
        for layer in parsed.layers
    ]
    variants = [
        encode_key_set(
            parsed.suite,
            struct.pack(">Q", _id(record))
            + struct.pack(">Q", parsed.created + 1)
            + parsed.fields[16:],
            layers,
        ),
        encode_key_set(parsed.suite, parsed.fields[:16] + bytes(32) + parsed.fields[48:], layers),
        encode_key_set(
            parsed.suite,
            parsed.fields,
            [(layers[1][0], *layers[0][1:]), (layers[0][0], *layers[1][1:])],
        ),
    ]
    for variant in variants:
        with pytest.raises(DecryptionError) as caught:
            _cold(records, {_id(record): variant}).decrypt(record, scope="s")
        assert not isinstance(caught.value, FormatError)


def test_text_records_round_trip_against_the_vault(vault_records):
    records, _ = vault_records
    text = records.encrypt_text(b"over the vault", scope="s")
    assert from_text(text)
    assert Records(records.envelope, records.store).decrypt(text, scope="s") == b"over the vault"
