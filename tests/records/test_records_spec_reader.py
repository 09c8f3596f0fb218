"""A reader written from docs/RECORDS.md (and the parts of docs/FORMAT.md it names) alone, on
cryptography's primitives and the standard library, nothing of envelope's: it opens what the
library writes and reports the `expect` kind of every vector, in the order of section 8.

It pins what a reader would otherwise have to guess: which bytes the key-set fields are, what
the key-set digest and the associated data hold, how subkeys are derived, and which check
comes first."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV, AESOCB3
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from envelope import Envelope, LocalKey
from envelope._format import Suite
from envelope.records import MemoryKeyStore, Records
from tests.core.test_spec_reader import _Bytes, _context_encoding, _gcm_open
from tests.vectors import records as generate

TAG = 16


class Format(Exception):
    """format error"""


class Decryption(Exception):
    """decryption failure"""


class Access(Exception):
    """key access error"""


KIND = {Format: "format error", Decryption: "decryption failure", Access: "key access error"}


def _kdf(suite: int, key: bytes, data: bytes, n: int) -> bytes:
    """Section 4: KDF_n of the key set's suite."""
    if suite == 1:
        return HKDFExpand(hashes.SHA256(), n, data).derive(key)
    return hashlib.blake2b(data, key=key, digest_size=n).digest()


def _aead(algorithm: int, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    try:
        if algorithm == 1:
            return _gcm_open(key, nonce, sealed, aad)
        if algorithm == 2:
            return AESOCB3(key).decrypt(nonce, sealed, aad)
        return AESGCMSIV(key).decrypt(nonce, sealed, aad)
    except (InvalidTag, ValueError):
        raise Decryption("step 8: a tag") from None


def _from_text(text: str) -> bytes:
    """Section 2.1: canonical base64url without padding, or a format error."""
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    if len(text) % 4 == 1 or not set(text) <= alphabet:
        raise Format("section 2.1")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        raise Format("section 2.1: unused bits")
    return data


class _Reader(_Bytes):
    """The message spec reader's field reader, from an offset; a shortfall is a format
    error of the key-set document rather than an assertion."""

    def __init__(self, data: bytes, pos: int) -> None:
        super().__init__(data)
        self.pos = pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Format("section 3: the document ends early")
        return super().take(n)


def _parse_document(document: bytes) -> dict[str, Any]:
    """Section 3, with FORMAT.md 2.2 and 3 for the layers."""
    if not 102 <= len(document) <= 131072:
        raise Format("section 3: document length")
    magic, version, suite, length, key_set_id, _created, _salt, scope_length = struct.unpack_from(
        ">4sBBIQQ32sH", document
    )
    if magic != b"\x89EKS" or version != 1 or suite not in (1, 2) or length != len(document):
        raise Format("section 3: fixed fields")
    if not 1 <= key_set_id < 2**63 or scope_length > 256:
        raise Format("section 3: id or scope length")
    r = _Reader(document, 60)
    try:
        scope = r.take(scope_length).decode("utf-8")
    except UnicodeDecodeError:
        raise Format("section 3: scope not UTF-8") from None
    fields = document[10 : r.pos]
    layer_count = r.u8()
    if not 1 <= layer_count <= 4:
        raise Format("section 3: layer count")
    layers, seen = [], set()
    for _ in range(layer_count):
        algorithm, commitment, count = r.u8(), r.take(32), r.u8()
        if algorithm not in (1, 2, 3) or not 1 <= count <= 8:
            raise Format("FORMAT.md 2.2")
        wrapped = []
        for _ in range(count):
            wrap_id = r.u8()
            id_length = r.u16()
            if wrap_id not in (1, 2, 3, 4, 5) or not 1 <= id_length <= 1024:
                raise Format("FORMAT.md 2.2, 3")
            key_id = r.take(id_length)
            try:
                key_id.decode("utf-8")
            except UnicodeDecodeError:
                raise Format("FORMAT.md 2.2: key id") from None
            if key_id in seen:
                raise Format("FORMAT.md 2.2: a repeated key id")
            seen.add(key_id)
            wrapped_length = r.u16()
            if not 1 <= wrapped_length <= 1024:
                raise Format("FORMAT.md 2.2")
            wrapped.append((wrap_id, key_id, r.take(wrapped_length)))
        layers.append((algorithm, commitment, wrapped))
    if r.pos != len(document):
        raise Format("section 3: trailing bytes")
    return {
        "suite": suite,
        "key_set_id": key_set_id,
        "scope": scope,
        "fields": fields,
        "layers": layers,
    }


def _layer_key(
    suite: int,
    j: int,
    layer: tuple[int, bytes, list[tuple[int, bytes, bytes]]],
    fields: bytes,
    reader_keys: list[tuple[bytes, bytes]],
) -> bytes:
    """Section 4.1 with FORMAT.md section 7, step 4: each of the reader's keys for layer
    j, in order, tries the first wrapped key it accepts, until one matches the commitment."""
    algorithm, commitment, wrapped = layer
    for key_id, kek in reader_keys:
        candidate = next((w for w in wrapped if w[1] == key_id), None)
        if candidate is None or candidate[0] != 1 or len(candidate[2]) != 60:
            continue
        blob = candidate[2]
        try:  # FORMAT.md 9: nonce(12) ‖ ciphertext(32) ‖ tag(16), the key id as associated data
            dek = _gcm_open(kek, blob[:12], blob[12:], b"envelope/local-key/v1\x00" + key_id)
        except InvalidTag:
            continue
        info = b"envelope/records/v1 key set\x00" + bytes([suite, j, algorithm])
        okm = _kdf(suite, dek, info + fields, 64)
        if hmac.compare_digest(okm[32:], commitment):
            return okm[:32]
    raise Decryption("step 7: no candidate matches the commitment")


def spec_decrypt(
    record: bytes | str,
    store: dict[int, bytes],
    reader: list[list[tuple[bytes, bytes]]],
    scope: str,
    context: dict[str, str],
) -> bytes:
    """Open ``record`` with ``reader``'s local keys (per layer: (key id, key) pairs, in
    order), the key store ``store`` (documents by id), ``scope`` and ``context``."""
    # Step 2: the record.
    data = _from_text(record) if isinstance(record, str) else record
    if not 29 <= len(data) <= 29 + 2**24 + 64 or data[0] != 1:
        raise Format("section 2")
    key_set_id = int.from_bytes(data[1:9], "big")
    if not 1 <= key_set_id < 2**63:
        raise Format("section 2: key-set id")
    # Step 3: the key set.
    document = store.get(key_set_id)
    if document is None:
        raise Access("step 3: unknown key set")
    # Step 4: parse it.
    parsed = _parse_document(document)
    # Step 5: binding.
    if parsed["key_set_id"] != key_set_id or parsed["scope"] != scope:
        raise Decryption("step 5")
    # Step 6: configuration, before any key is used.
    layers = parsed["layers"]
    if len(layers) != len(reader):
        raise Access("step 6: layer count")
    for (_, _, wrapped), keks in zip(layers, reader, strict=True):
        if not any(w[1] == key_id for w in wrapped for key_id, _ in keks):
            raise Access("step 6: no accepted key id")
    # Step 7: unwrap and commitments, layer by layer.
    suite, fields = parsed["suite"], parsed["fields"]
    layer_keys = [
        _layer_key(suite, j, layer, fields, keks)
        for j, (layer, keks) in enumerate(zip(layers, reader, strict=True))
    ]
    # Step 8: section 4.2 to 4.5.
    digest = hashlib.sha256(
        b"envelope/records/v1 key set digest\x00"
        + bytes([1, suite])
        + fields
        + bytes([len(layers)])
        + b"".join(bytes([algorithm]) + commitment for algorithm, commitment, _ in layers)
    ).digest()
    prefix, nonce, sealed = data[9:17], data[17:29], data[29:]
    if len(sealed) < TAG * len(layers):
        raise Decryption("step 8: too short")
    aad = data[:17] + digest + _context_encoding(context)
    for j in range(len(layers) - 1, -1, -1):
        subkey = _kdf(
            suite, layer_keys[j], b"envelope/records/v1 subkey\x00" + bytes([j]) + prefix, 32
        )
        sealed = _aead(layers[j][0], subkey, nonce, sealed, aad)
    return sealed


DATA = json.loads(Path(generate.PATH).read_text())


def _vector_reader(vector: dict[str, Any]) -> list[list[tuple[bytes, bytes]]]:
    return [
        [
            (DATA["key_names"][name].encode(), bytes.fromhex(DATA["keys"][DATA["key_names"][name]]))
            for name in layer
        ]
        for layer in vector["layers"]
    ]


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: v["name"])
def test_the_spec_reader_reads_every_vector(vector):
    store = {
        DATA["key_sets"][name]["key_set_id"]: bytes.fromhex(DATA["key_sets"][name]["document"])
        for name in vector["store"]
    }
    record = vector.get("record_text") or bytes.fromhex(vector["record"])
    args = (record, store, _vector_reader(vector), vector["scope"], vector["context"])
    if vector["expect"] == "success":
        assert spec_decrypt(*args) == bytes.fromhex(vector["plaintext"])
        return
    with pytest.raises((Format, Decryption, Access)) as failure:
        spec_decrypt(*args)
    assert KIND[type(failure.value)] == vector["expect"], failure.value


@pytest.fixture(params=[1, 2], ids=["suite 1", "suite 2"])
def suite(request, monkeypatch) -> int:
    import envelope._message

    monkeypatch.setattr(envelope._message, "SUITE", Suite(request.param))
    return int(request.param)


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_the_spec_reader_opens_what_the_library_writes(layers: int, suite: int):
    keys = [LocalKey.generate() for _ in range(layers)]
    store = MemoryKeyStore()
    records = Records(Envelope(keys), store)
    context = {"b": "2", "a": "1", "\u00e9": ""}
    reader = [[(k.key_id.encode(), k._key)] for k in keys]
    for size in (0, 1, 16, 1024, 5000):
        data = os.urandom(size)
        for scope in ("", "tenant-42", "t\u00e9nant"):
            record = records.encrypt(data, scope=scope, context=context)
            documents = dict(store.scan(after=None, limit=100))
            assert documents[int.from_bytes(record[1:9], "big")][5] == suite
            assert spec_decrypt(record, documents, reader, scope, context) == data
            assert (
                spec_decrypt(records.encrypt_text(data, scope=scope), documents, reader, scope, {})
                == data
            )
