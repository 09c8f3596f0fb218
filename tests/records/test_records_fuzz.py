"""Fuzzing the record and key-set parsers as the message parser is fuzzed: random bytes and
random mutations of valid input, through the parsers themselves and through Records with a
store that returns the mutated documents. Nothing escapes but the library's exceptions
(RECORDS.md section 8), and nothing that was changed opens."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envelope import DecryptionError, Envelope, EnvelopeError, FormatError, KeyAccessError, LocalKey
from envelope._limits import MAX_KEY_SET_BYTES
from envelope.records import MemoryKeyStore, Records, from_text, to_text
from envelope.records._format import parse_key_set
from tests.records.conftest import DictStore

KEYS = [LocalKey(b"\1" * 32), LocalKey(b"\2" * 32), LocalKey(b"\3" * 32)]
ENV = Envelope(KEYS[:2])
WRITER = Records(ENV, MemoryKeyStore())
RECORD = WRITER.encrypt(b"4111111111111111", scope="tenant", context={"column": "pan"})
KEY_SET_ID = int.from_bytes(RECORD[1:9], "big")


def _stored(records: Records, record: bytes) -> bytes:
    document = records.store.get(int.from_bytes(record[1:9], "big"))
    assert isinstance(document, bytes)
    return document


DOCUMENT = _stored(WRITER, RECORD)
THREE = Records(Envelope(KEYS), MemoryKeyStore())
DOCUMENT_3 = _stored(THREE, THREE.encrypt(b"x", scope="t"))
WHERE = {"scope": "tenant", "context": {"column": "pan"}}
ERRORS = (FormatError, DecryptionError, KeyAccessError)


def _mutations() -> st.SearchStrategy[list[tuple[str, int, int]]]:
    return st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete"]),
            st.integers(min_value=0, max_value=10**6),
            st.integers(min_value=0, max_value=255),
        ),
        min_size=1,
        max_size=6,
    )


def _mutated(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, position, value in mutations:
        where = position % (len(out) + 1)
        if kind == "insert":
            out[where:where] = bytes([value])
        elif out and kind == "delete":
            del out[where % len(out)]
        elif out:
            out[where % len(out)] = value
    return bytes(out)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_no_key_set(data: bytes):
    for candidate in (data, b"\x89EKS\x01\x02" + struct.pack(">I", len(data) + 10) + data):
        try:
            parse_key_set(candidate)
        except FormatError:
            continue


@settings(max_examples=400, deadline=None)
@given(_mutations(), st.sampled_from([DOCUMENT, DOCUMENT_3]))
def test_mutated_key_sets_parse_or_fail_cleanly(mutations, document):
    changed = _mutated(document, mutations)
    try:
        parsed = parse_key_set(changed)
    except FormatError:
        return
    assert len(changed) <= MAX_KEY_SET_BYTES
    assert 1 <= len(parsed.layers) <= 4


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_a_store_returning_mutated_documents_opens_nothing(mutations):
    changed = _mutated(DOCUMENT, mutations)
    reader = Records(ENV, DictStore({KEY_SET_ID: changed}))
    try:
        opened = reader.decrypt(RECORD, **WHERE)  # type: ignore[arg-type]
    except ERRORS:
        return
    # Only a change the document's meaning does not depend on may leave it readable:
    # there is none, since every byte is parsed, bound or authenticated.
    assert changed == DOCUMENT, changed.hex()
    assert opened == b"4111111111111111"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_no_record(data: bytes):
    for candidate in (data, b"\x01" + RECORD[1:9] + data, RECORD[:29] + data):
        try:
            WRITER.decrypt(candidate, **WHERE)  # type: ignore[arg-type]
        except ERRORS:
            continue
        raise AssertionError(f"opened {candidate.hex()}")


@settings(max_examples=400, deadline=None)
@given(_mutations())
def test_mutated_records_open_only_unchanged(mutations):
    changed = _mutated(RECORD, mutations)
    for form in (changed, to_text(changed)):
        try:
            WRITER.decrypt(form, **WHERE)  # type: ignore[arg-type]
        except ERRORS:
            continue
        assert changed == RECORD


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_random_text_is_no_record(text: str):
    try:
        from_text(text)
    except FormatError:
        expected: type[EnvelopeError] | tuple[type[EnvelopeError], ...] = FormatError
    else:
        expected = ERRORS
    with pytest.raises(expected):
        WRITER.decrypt(text, **WHERE)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=8))
def test_random_batches_fail_cleanly(batch: list[bytes]):
    try:
        WRITER.decrypt_many([RECORD, *batch], **WHERE)  # type: ignore[arg-type]
    except ERRORS:
        return
    assert batch == [] or all(b == RECORD for b in batch)
