"""Attacks on the format: every byte of a message is written by the attacker here."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envelope import (
    DecryptionError,
    Envelope,
    FormatError,
    KeyAccessError,
    LocalKey,
    WrappedKey,
    inspect,
)
from envelope._engine import derive_layer_key, header_digest, kdf_info, new_aead
from envelope._format import (
    PREFIX_BYTES,
    Header,
    LayerHeader,
    authenticated_header_bytes,
    decode_header,
    encode_header,
)
from envelope._limits import MAX_HEADER_BYTES
from tests.core.conftest import SMALL_FRAME

CONTEXT = {"tenant": "contoso"}
OVERHEAD = 2 * 16
FULL = SMALL_FRAME + OVERHEAD


def _decrypt_fails(env: Envelope, blob: bytes | bytearray, context=CONTEXT) -> type:
    """Decrypt one-shot and streaming; both must fail the same way. Returns the error type."""
    with pytest.raises((DecryptionError, KeyAccessError)) as one_shot:
        env.decrypt(blob, context=context)
    with pytest.raises((DecryptionError, KeyAccessError)) as streamed:
        env.decrypt_stream(io.BytesIO(bytes(blob)), io.BytesIO(), context=context)
    assert type(one_shot.value) is type(streamed.value) or (
        isinstance(one_shot.value, DecryptionError) and isinstance(streamed.value, DecryptionError)
    )
    return type(one_shot.value)


def _key_id_ranges(blob: bytes | bytearray) -> list[range]:
    """Byte ranges of every key id in the header (walks the layout of FORMAT.md 2.2)."""
    header, _ = decode_header(blob)
    pos = PREFIX_BYTES + 2 + sum(4 + len(k.encode()) + len(v.encode()) for k, v in header.context)
    pos += 1
    ranges = []
    for layer in header.layers:
        pos += 1 + 32 + 1
        for record in layer.wrapped_keys:
            pos += 1 + 2
            ranges.append(range(pos, pos + len(record.key_id.encode())))
            pos += len(record.key_id.encode()) + 2 + len(record.ciphertext)
    return ranges


def _frames(blob: bytes | bytearray) -> tuple[bytes, list[bytes]]:
    header_length = inspect(blob).header_length
    body = bytes(blob[header_length:])
    return bytes(blob[:header_length]), [body[i : i + FULL] for i in range(0, len(body), FULL)]


def test_every_single_byte_flip_fails(env: Envelope):
    data = os.urandom(2 * SMALL_FRAME + 100)  # three frames, the last one short
    blob = env.encrypt(data, context=CONTEXT)
    key_id_bytes = {i for r in _key_id_ranges(blob) for i in r}
    for position in range(len(blob)):
        for mask in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[position] ^= mask
            error = _decrypt_fails(env, tampered)
            if position in key_id_bytes:
                # A changed key id names a key this envelope was not configured with: it is
                # refused before any KEK is used (or the header no longer parses).
                assert issubclass(error, (KeyAccessError, FormatError)), position
            else:
                assert issubclass(error, DecryptionError), position
    assert env.decrypt(blob, context=CONTEXT) == data


def test_region_specific_errors(env: Envelope):
    blob = env.encrypt(b"x" * 100, context=CONTEXT)
    for offset in (0, 3, 4, 5, 6, 10):  # magic, version, suite, header length, frame size
        tampered = bytearray(blob)
        tampered[offset] ^= 0xFF
        assert issubclass(_decrypt_fails(env, tampered), FormatError), offset


def test_truncation_anywhere_fails(env: Envelope):
    data = os.urandom(3 * SMALL_FRAME)  # three full frames and an empty final frame
    blob = bytes(env.encrypt(data, context=CONTEXT))
    header_length = inspect(blob).header_length
    boundaries = {header_length + i * FULL for i in range(4)}
    for length in range(len(blob)):
        error = _decrypt_fails(env, blob[:length])
        if length < header_length:
            assert issubclass(error, FormatError), length
        else:
            assert issubclass(error, DecryptionError), length
    assert boundaries  # cuts at frame boundaries are among the lengths above


def test_appended_bytes_fail(env: Envelope):
    blob = bytes(env.encrypt(b"y" * 2000, context=CONTEXT))
    for extra in (b"\0", b"\0" * OVERHEAD, os.urandom(FULL), blob[-OVERHEAD:]):
        _decrypt_fails(env, blob + extra)


def test_frames_reordered_duplicated_or_dropped_fail(env: Envelope):
    data = os.urandom(3 * SMALL_FRAME + 10)
    header, frames = _frames(env.encrypt(data, context=CONTEXT))
    assert len(frames) == 4
    attacks = {
        "swap 0,1": [frames[1], frames[0], frames[2], frames[3]],
        "duplicate 0": [frames[0], frames[0], frames[1], frames[2], frames[3]],
        "drop 1": [frames[0], frames[2], frames[3]],
        "drop final": frames[:3],
        "final moved first": [frames[3], frames[0], frames[1], frames[2]],
        "replay full as final": [frames[0], frames[1], frames[2], frames[2][: len(frames[3])]],
    }
    for name, body in attacks.items():
        assert issubclass(_decrypt_fails(env, header + b"".join(body)), DecryptionError), name


def test_splicing_two_messages_fails(env: Envelope):
    a = env.encrypt(os.urandom(2500), context=CONTEXT)
    b = env.encrypt(os.urandom(2500), context=CONTEXT)
    header_a, frames_a = _frames(a)
    header_b, frames_b = _frames(b)
    _decrypt_fails(env, header_a + b"".join(frames_b))
    _decrypt_fails(env, header_b + b"".join(frames_a))
    _decrypt_fails(env, header_a + frames_a[0] + frames_b[1] + frames_a[2])


def test_wrapped_key_from_another_message_fails_the_commitment(env: Envelope, inner_key: LocalKey):
    """A wrapped key that unwraps fine, but to another DEK: only the commitment catches it."""
    a = env.encrypt(b"a" * 50, context=CONTEXT)
    b = env.encrypt(b"b" * 50, context=CONTEXT)
    header_a, length_a = decode_header(a)
    header_b, _ = decode_header(b)
    layers = list(header_a.layers)
    layers[0] = layers[0]._replace(wrapped_keys=header_b.layers[0].wrapped_keys)
    spliced = encode_header(header_a._replace(layers=tuple(layers))) + bytes(a[length_a:])
    assert inspect(spliced).layers[0].key_ids == (inner_key.key_id,)
    assert issubclass(_decrypt_fails(env, spliced), DecryptionError)


def test_stripping_the_outer_layer_fails(inner_key: LocalKey, outer_key: LocalKey):
    """An attacker who broke the outer layer peels it off and presents a one-layer message
    to a reader that holds the inner key: the inner layer's tags bind the original header."""
    env = Envelope([inner_key, outer_key], frame_size=SMALL_FRAME)
    data = os.urandom(1500)
    blob = env.encrypt(data, context=CONTEXT)
    header, header_length = decode_header(blob)

    # Peel the outer layer with its (leaked) data key.
    outer_dek = outer_key.unwrap_key(
        WrappedKey(outer_key.key_id, "A256GCM", header.layers[1].wrapped_keys[0].ciphertext)
    )
    outer_message_key, _ = derive_layer_key(
        header.suite, outer_dek, kdf_info(header.suite, 1, header.layers[1].algorithm), header.salt
    )
    outer = new_aead(header.layers[1].algorithm, outer_message_key)
    digest = header_digest(authenticated_header_bytes(header))
    body = bytes(blob[header_length:])
    peeled = b""
    for index, start in enumerate(range(0, len(body), FULL)):
        frame = body[start : start + FULL]
        final = start + FULL >= len(body)
        aad = digest + struct.pack(">QB", index, final)
        buf = bytearray(len(frame) - 16)
        outer.decrypt_into(struct.pack(">IQ", 0, index), frame, aad, buf)
        peeled += bytes(buf)

    one_layer = Header(
        header.suite, header.frame_size, header.salt, header.context, (header.layers[0],)
    )
    stripped = encode_header(one_layer) + peeled
    single = Envelope([inner_key], frame_size=SMALL_FRAME)
    with pytest.raises(DecryptionError):
        single.decrypt(stripped, context=CONTEXT)
    # And a two-layer reader refuses a one-layer message outright.
    with pytest.raises(KeyAccessError, match="1 layer"):
        env.decrypt(stripped, context=CONTEXT)


def test_changing_a_layer_algorithm_fails(env: Envelope):
    blob = env.encrypt(b"q" * 100, context=CONTEXT)
    header, length = decode_header(blob)
    from envelope._format import Aead

    layers = (header.layers[0]._replace(algorithm=Aead.AES_256_GCM_SIV), header.layers[1])
    altered = encode_header(header._replace(layers=layers)) + bytes(blob[length:])
    assert issubclass(_decrypt_fails(env, altered), DecryptionError)


def test_changing_the_context_in_the_header_fails(env: Envelope):
    blob = env.encrypt(b"q" * 100, context=CONTEXT)
    header, length = decode_header(blob)
    forged = encode_header(header._replace(context=(("tenant", "fabrikam"),)))
    forged += bytes(blob[length:])
    _decrypt_fails(env, forged, context={"tenant": "fabrikam"})


def _prefix(header_length: int, frame_size: int = SMALL_FRAME) -> bytes:
    return struct.pack(">4sBBII32s", b"\x89ENV", 1, 1, header_length, frame_size, b"s" * 32)


ABSURD = {
    "header length 2^32-1": _prefix(2**32 - 1),
    "header length over max": _prefix(MAX_HEADER_BYTES + 1),
    "header length below min": _prefix(10),
    "frame size 2^32-1": _prefix(200, 2**32 - 1),
    "frame size 0": _prefix(200, 0),
    "context entries 65535": _prefix(200) + b"\xff\xff" + b"\0" * 152,
    "context key 65535 bytes": _prefix(200) + b"\x00\x01\xff\xff" + b"\0" * 150,
    "layers 255": _prefix(49 + 151) + b"\x00\x00\xff" + b"\0" * 151,
    "layers 0": _prefix(49 + 151) + b"\x00\x00\x00" + b"\0" * 151,
    "wrapped keys 255": _prefix(200) + b"\x00\x00\x01\x01" + b"c" * 32 + b"\xff" + b"\0" * 117,
    "key id 65535 bytes": _prefix(200)
    + b"\x00\x00\x01\x01"
    + b"c" * 32
    + b"\x01\x01\xff\xff"
    + b"\0" * 115,
    "wrapped 65535 bytes": _prefix(200)
    + b"\x00\x00\x01\x01"
    + b"c" * 32
    + b"\x01\x01\x00\x01k\xff\xff"
    + b"\0" * 112,
    "unknown algorithm": _prefix(200) + b"\x00\x00\x01\x09" + b"\0" * 150,
    "unknown wrap": _prefix(200) + b"\x00\x00\x01\x01" + b"c" * 32 + b"\x01\x63" + b"\0" * 116,
    "version 2": b"\x89ENV\x02" + _prefix(200)[5:] + b"\0" * 154,
    "suite 9": b"\x89ENV\x01\x09" + _prefix(200)[6:] + b"\0" * 154,
}


@pytest.mark.parametrize("name", sorted(ABSURD))
def test_absurd_lengths_fail_fast_without_large_allocations(env: Envelope, name: str):
    blob = ABSURD[name]
    tracemalloc.start()
    try:
        with pytest.raises(FormatError):
            env.decrypt(blob, context=CONTEXT)
        with pytest.raises(FormatError):
            env.decrypt_stream(io.BytesIO(blob), io.BytesIO(), context=CONTEXT)
        with pytest.raises(FormatError):
            inspect(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"{name}: peak allocation {peak} bytes"


def test_stream_with_absurd_frame_size_allocates_only_the_bounded_frame(env: Envelope):
    # A valid-looking header claiming 16 MiB frames, then a tiny body: the reader's buffer is
    # bounded by MAX_FRAME_SIZE, and the body fails as soon as it ends.
    blob = env.encrypt(b"x", context=CONTEXT)
    header, length = decode_header(blob)
    forged = encode_header(header._replace(frame_size=16 * 1024 * 1024)) + bytes(blob[length:])
    _decrypt_fails(env, forged)


def test_duplicate_key_ids_in_a_header_are_a_format_error(env: Envelope):
    blob = env.encrypt(b"d", context=CONTEXT)
    header, length = decode_header(blob)
    record = header.layers[0].wrapped_keys[0]
    layers = (
        LayerHeader(header.layers[0].algorithm, header.layers[0].commitment, (record, record)),
        header.layers[1],
    )
    forged = encode_header(header._replace(layers=layers)) + bytes(blob[length:])
    with pytest.raises(FormatError):
        env.decrypt(forged, context=CONTEXT)


def test_non_canonical_context_is_a_format_error(env: Envelope):
    blob = env.encrypt(b"d", context={"a": "1", "b": "2"})
    header, length = decode_header(blob)
    forged = encode_header(header._replace(context=(("b", "2"), ("a", "1"))))
    with pytest.raises(FormatError, match="canonical"):
        env.decrypt(forged + bytes(blob[length:]), context={"a": "1", "b": "2"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_fail_cleanly(blob: bytes):
    env = Envelope([LocalKey(b"\1" * 32), LocalKey(b"\2" * 32)])
    for data in (blob, b"\x89ENV\x01\x01" + blob):
        with pytest.raises((FormatError, KeyAccessError, DecryptionError)):
            env.decrypt(data)
        with pytest.raises((FormatError, KeyAccessError, DecryptionError)):
            env.decrypt_stream(io.BytesIO(data), io.BytesIO())


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_random_byte_substitution_fails(position: int, value: int):
    env = Envelope([LocalKey(b"\1" * 32), LocalKey(b"\2" * 32)], frame_size=SMALL_FRAME)
    blob = env.encrypt(b"p" * 2100, context=CONTEXT)
    position %= len(blob)
    if blob[position] == value:
        return
    blob[position] = value
    with pytest.raises((DecryptionError, KeyAccessError)):
        env.decrypt(blob, context=CONTEXT)
    assert len(blob) > PREFIX_BYTES


class _CountingKek:
    """A KEK that accepts every version of one key name, like a versionless Key Vault id."""

    def __init__(self, inner: LocalKey, name: str) -> None:
        self._inner = inner
        self._name = name
        self.unwraps = 0

    @property
    def key_id(self) -> str:
        return self._name

    def can_unwrap(self, key_id: str) -> bool:
        return key_id.startswith(self._name + "/")

    def wrap_key(self, data_key: bytes) -> WrappedKey:
        wrapped = self._inner.wrap_key(data_key)
        return WrappedKey(self._name + "/v1", wrapped.algorithm, wrapped.ciphertext)

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        self.unwraps += 1
        return self._inner.unwrap_key(wrapped._replace(key_id=self._inner.key_id))


def test_a_forged_header_cannot_multiply_key_service_calls():
    kek = _CountingKek(LocalKey.generate(), "https://vault.example/keys/k")
    env = Envelope([kek], frame_size=SMALL_FRAME)
    blob = env.encrypt(b"amplify", context=CONTEXT)
    header, length = decode_header(blob)
    genuine = header.layers[0].wrapped_keys[0]
    forged_records = tuple(
        genuine._replace(key_id=f"https://vault.example/keys/k/v{i}", ciphertext=os.urandom(60))
        for i in range(2, 9)
    )
    layer = header.layers[0]._replace(wrapped_keys=(*forged_records, genuine))
    forged = encode_header(header._replace(layers=(layer,))) + bytes(blob[length:])
    with pytest.raises(DecryptionError):
        env.decrypt(forged, context=CONTEXT)
    assert kek.unwraps == 1  # one attempt per configured KEK, however many records match


def test_error_messages_echo_a_bounded_part_of_attacker_key_ids(env: Envelope):
    blob = env.encrypt(b"x", context=CONTEXT)
    header, length = decode_header(blob)
    record = header.layers[1].wrapped_keys[0]
    records = tuple(record._replace(key_id=f"{i}" + "k" * 1000) for i in range(8))
    layers = (header.layers[0], header.layers[1]._replace(wrapped_keys=records))
    forged = encode_header(header._replace(layers=layers)) + bytes(blob[length:])
    with pytest.raises(KeyAccessError) as refused:
        env.decrypt(forged, context=CONTEXT)
    assert len(str(refused.value)) < 600
    assert "and 5 more" in str(refused.value)
