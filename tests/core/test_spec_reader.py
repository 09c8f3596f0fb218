"""A reader written from docs/FORMAT.md alone, on cryptography's primitives and nothing of
envelope's: it opens what the library writes, for every layer count, algorithm, size and
context, and every `success` vector. It pins what a reader would otherwise have to guess: what
the header digest hashes (the context with its entry count), that a tag follows its
ciphertext, how a local key wraps (section 9), the key derivation of each suite."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV, AESOCB3
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from envelope import Envelope, LocalKey
from envelope._format import Suite
from tests.vectors import generate

TAG = 16


class _Bytes:
    """Reads the fields of section 2 in order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "the header ends early"
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")


def _gcm_open(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with the tag taken, as section 3 says, from after the ciphertext."""
    decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce, sealed[-TAG:])).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor.update(sealed[:-TAG]) + decryptor.finalize()


def _open(algorithm: int, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    if algorithm == 1:
        return _gcm_open(key, nonce, sealed, aad)
    if algorithm == 2:
        return AESOCB3(key).decrypt(nonce, sealed, aad)
    assert algorithm == 3
    return AESGCMSIV(key).decrypt(nonce, sealed, aad)


def _context_encoding(context: dict[str, str]) -> bytes:
    entries = sorted((k.encode(), v.encode()) for k, v in context.items())
    out = struct.pack(">H", len(entries))
    for key, value in entries:
        out += struct.pack(">H", len(key)) + key + struct.pack(">H", len(value)) + value
    return out


def spec_decrypt(message: bytes, local_keys: dict[bytes, bytes], context: dict[str, str]) -> bytes:
    """Open ``message`` with the local keys ``local_keys`` (key id bytes: key bytes)."""
    r = _Bytes(message)
    assert r.take(4) == b"\x89ENV"
    version, suite = r.u8(), r.u8()
    assert version == 1
    assert suite in (1, 2), "section 2: an unknown suite"
    header_length, frame_size, salt = r.u32(), r.u32(), r.take(32)
    context_start = r.pos
    for _ in range(r.u16()):
        r.take(r.u16())  # key
        r.take(r.u16())  # value
    stored_context = message[context_start : r.pos]  # entry_count included
    assert stored_context == _context_encoding(context), "step 2: another context"
    layer_count = r.u8()
    layers = []
    for _ in range(layer_count):
        algorithm, commitment = r.u8(), r.take(32)
        wrapped = []
        for _ in range(r.u8()):
            wrap_id = r.u8()
            key_id = r.take(r.u16())
            wrapped.append((wrap_id, key_id, r.take(r.u16())))
        layers.append((algorithm, commitment, wrapped))
    assert r.pos == header_length

    digest = hashlib.sha256(
        b"envelope/v1 header\x00"
        + bytes([version, suite])
        + struct.pack(">I", frame_size)
        + salt
        + stored_context
        + bytes([layer_count])
        + b"".join(bytes([algorithm]) + commitment for algorithm, commitment, _ in layers)
    ).digest()

    message_keys = []
    for j, (algorithm, commitment, wrapped) in enumerate(layers):
        info = b"envelope/v1 layer\x00" + bytes([suite, j, algorithm]) + salt
        message_keys.append((algorithm, _layer_key(wrapped, local_keys, suite, info, commitment)))

    body = message[header_length:]
    overhead = TAG * layer_count
    full, rest = divmod(len(body), frame_size + overhead)
    assert rest >= overhead, "step 5: no final frame"
    plaintext = b""
    for i in range(full + 1):
        sealed = body[i * (frame_size + overhead) : (i + 1) * (frame_size + overhead)]
        nonce = bytes(4) + struct.pack(">Q", i)
        aad = digest + struct.pack(">QB", i, i == full)
        for algorithm, key in reversed(message_keys):
            sealed = _open(algorithm, key, nonce, sealed, aad)
        plaintext += sealed
    return plaintext


def _layer_key(
    wrapped: list[tuple[int, bytes, bytes]],
    local_keys: dict[bytes, bytes],
    suite: int,
    info: bytes,
    commitment: bytes,
) -> bytes:
    """Step 4 for one layer: each candidate in turn, in the reader's order of its keys,
    until one matches the commitment."""
    for key_id, key in local_keys.items():
        candidate = next((w for w in wrapped if w[1] == key_id), None)
        if candidate is None:
            continue
        wrap_id, _, blob = candidate
        if wrap_id != 1 or len(blob) != 60:
            continue  # case (a): does not fit a local key
        # Section 9: nonce(12) ‖ ciphertext(32) ‖ tag(16), the key id as associated data.
        try:
            data_key = _gcm_open(key, blob[:12], blob[12:], b"envelope/local-key/v1\x00" + key_id)
        except InvalidTag:
            continue  # case (a): the next candidate
        okm = _derive(suite, data_key, info)
        if hmac.compare_digest(okm[32:], commitment):
            return okm[:32]
    raise AssertionError("step 4: no candidate of the layer matches its commitment")


def _derive(suite: int, data_key: bytes, info: bytes) -> bytes:
    """Section 5.1 or 5.2: 64 bytes, the message key then the commitment."""
    if suite == 1:
        return HKDFExpand(hashes.SHA256(), 64, info).derive(data_key)
    # RFC 7693 keyed BLAKE2b: key length 32, digest length 64, nothing else.
    return hashlib.blake2b(info, key=data_key, digest_size=64).digest()


@pytest.fixture(params=[1, 2], ids=["suite 1", "suite 2"])
def suite(request, monkeypatch) -> int:
    """New messages of each suite (the library writes suite 2 unless told otherwise)."""
    import envelope._message

    monkeypatch.setattr(envelope._message, "SUITE", Suite(request.param))
    return int(request.param)


def _keys_of(*keys: LocalKey) -> dict[bytes, bytes]:
    return {k.key_id.encode(): k._key for k in keys}


CONTEXTS = [{}, {"b": "2", "a": "1", "\u00e9": "", "\U0001f600": "\x00"}]
F = 1024
SIZES = [0, 1, F - 1, F, F + 1, 2 * F + 17]


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
@pytest.mark.parametrize("context", CONTEXTS, ids=["no context", "context"])
def test_the_spec_reader_opens_every_layer_count_size_and_context(layers: int, context, suite: int):
    keys = [LocalKey.generate() for _ in range(layers)]
    env = Envelope(keys, frame_size=F)
    for size in SIZES:
        data = os.urandom(size)
        blob = bytes(env.encrypt(data, context=context))
        assert blob[5] == suite
        assert spec_decrypt(blob, _keys_of(*keys), context) == data


@pytest.mark.parametrize(
    "algorithms",
    [("AES-256-GCM-SIV", "AES-256-OCB3"), ("AES-256-OCB3", "AES-256-GCM"), ("AES-256-GCM-SIV",)],
)
def test_the_spec_reader_opens_every_algorithm_in_every_position(algorithms, suite: int):
    keys = [LocalKey.generate() for _ in algorithms]
    env = Envelope(keys, algorithms=algorithms, frame_size=F)
    data = os.urandom(3 * F + 5)
    assert spec_decrypt(bytes(env.encrypt(data)), _keys_of(*keys), {}) == data


def test_the_spec_reader_opens_a_layer_with_the_second_of_its_keks(suite: int):
    primary, backup, outer = LocalKey.generate(), LocalKey.generate(), LocalKey.generate()
    blob = bytes(Envelope([[primary, backup], outer], frame_size=F).encrypt(b"spare"))
    assert spec_decrypt(blob, _keys_of(backup, outer), {}) == b"spare"


def test_the_spec_reader_opens_every_success_vector():
    data = json.loads(Path(generate.PATH).read_text())
    keys = {k.encode(): bytes.fromhex(v) for k, v in data["keys"].items()}
    successes = [v for v in data["vectors"] if v["expect"] == "success"]
    assert len(successes) >= 10
    for vector in successes:
        reader_keys = {
            data["key_names"][name].encode() for layer in vector["layers"] for name in layer
        }
        known = {k: v for k, v in keys.items() if k in reader_keys}
        opened = spec_decrypt(bytes.fromhex(vector["message"]), known, vector["context"])
        assert opened == bytes.fromhex(vector["plaintext"]), vector["name"]
