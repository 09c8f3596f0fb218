"""Writes tests/vectors/records_v1.json: records version 1 vectors (docs/RECORDS.md section 10)
with fixed keys, data keys, salts, key-set ids, prefixes and nonces.

Run ``python -m tests.vectors.records`` after a deliberate format change; the test suite
checks that the file still decrypts as recorded and that regenerating it is byte-identical.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from envelope import Envelope
from envelope._datakeys import DataKey, to_record
from envelope._format import Aead, Suite, encode_wrapped_keys
from envelope.records import MemoryKeyStore, Records, to_text
from envelope.records._format import encode_key_set, key_set_fields, parse_key_set
from envelope.records._keyset import KeySet, new_key_set
from tests.vectors.generate import KEYS, _bytes

PATH = Path(__file__).with_name("records_v1.json")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
CREATED = 1767225600  # 2026-01-01T00:00:00Z
ALGORITHMS = [Aead.AES_256_GCM, Aead.AES_256_OCB3, Aead.AES_256_GCM_SIV, Aead.AES_256_GCM]


def _key_set(
    tag: str,
    layers: list[list[str]],
    *,
    scope: str,
    key_set_id: int,
    suite: Suite = Suite.BLAKE2B,
    algorithms: list[Aead] | None = None,
) -> KeySet:
    data_keys = []
    for index, layer in enumerate(layers):
        dek = _bytes(f"records dek {tag} {index}")
        wrapped = tuple(
            to_record(None, KEYS[k]._wrap_with_nonce(dek, _bytes(f"records nonce {tag} {k}", 12)))
            for k in layer
        )
        data_keys.append(DataKey.of(dek, wrapped))
    return new_key_set(
        suite,
        scope.encode(),
        algorithms or ALGORITHMS[: len(layers)],
        data_keys,
        load_mark=0,
        valid_until=math.inf,
        key_set_id=key_set_id,
        created=CREATED,
        salt=_bytes(f"records salt {tag}"),
    )


def _seal(
    key_set: KeySet,
    plaintext: bytes,
    *,
    context: dict[str, str] | None = None,
    tag: str = "",
) -> bytes:
    records = Records(Envelope([KEYS[k] for k in "abcd"[: key_set.layers]]), MemoryKeyStore())
    return records._encrypt_with(
        plaintext,
        scope=key_set.scope,
        context=context,
        key_set=key_set,
        prefix=_bytes(f"records prefix {tag}", 8),
        nonce=_bytes(f"records nonce {tag}", 12),
    )


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def _flipped(data: bytes, offset: int) -> bytes:
    return _patched(data, offset, bytes([data[offset] ^ 0x01]))


def _layers_offset(document: bytes) -> int:
    """Where ``layer_count`` stands in a document."""
    (scope_length,) = struct.unpack_from(">H", document, 58)
    return 60 + int(scope_length)


def _reencoded(document: bytes, **change: Any) -> bytes:
    """``document`` with its key-set fields or its layers changed, commitments kept."""
    parsed = parse_key_set(document)
    fields = key_set_fields(
        change.get("key_set_id", parsed.key_set_id),
        change.get("created", parsed.created),
        change.get("salt", parsed.fields[16:48]),
        change.get("scope", parsed.scope).encode(),
    )
    layers = [
        (layer.algorithm, layer.commitment, encode_wrapped_keys(layer.wrapped_keys))
        for layer in parsed.layers
    ]
    layers = change.get("layers", lambda old: old)(layers)
    return encode_key_set(change.get("suite", parsed.suite), fields, layers)


def build() -> dict[str, Any]:
    two = [["a"], ["b"]]
    scope = "tenant-42"
    ctx = {"column": "pan"}
    pan = b"4111 1111 1111 1111"
    main = _key_set("main", two, scope=scope, key_set_id=0x0123456789ABCDEF)
    other = _key_set("other", two, scope=scope, key_set_id=0x0FEDCBA987654321)
    elsewhere = _key_set("elsewhere", two, scope="tenant-43", key_set_id=0x1111111111111111)
    key_sets: dict[str, bytes] = {
        "main": main.document,
        "other": other.document,
        "elsewhere": elsewhere.document,
    }
    ids = {"main": main.key_set_id, "other": other.key_set_id, "elsewhere": 0x1111111111111111}
    vectors: list[dict[str, Any]] = []

    def add(name: str, document: bytes, key_set_id: int | None = None) -> str:
        key_sets[name] = document
        ids[name] = main.key_set_id if key_set_id is None else key_set_id
        return name

    def vector(
        name: str,
        expect: str,
        record: bytes | str,
        *,
        store: list[str],
        layers: list[list[str]] = two,
        scope: str = scope,
        context: dict[str, str] | None = ctx,
        plaintext: bytes | None = None,
        comment: str = "",
    ) -> None:
        entry: dict[str, Any] = {"name": name, "expect": expect, "store": store, "layers": layers}
        entry["scope"] = scope
        entry["context"] = context or {}
        if isinstance(record, str):
            entry["record_text"] = record
        else:
            entry["record"] = record.hex()
        if plaintext is not None:
            entry["plaintext"] = plaintext.hex()
        if comment:
            entry["comment"] = comment
        vectors.append(entry)

    base = _seal(main, pan, context=ctx, tag="base")

    # -- success ---------------------------------------------------------------------------
    vector("two layers, a card number", "success", base, store=["main"], plaintext=pan)
    vector(
        "empty plaintext",
        "success",
        _seal(main, b"", context=ctx, tag="empty"),
        store=["main"],
        plaintext=b"",
    )
    text = bytes(range(256)) * 4
    vector(
        "1 KiB, another prefix of the same key set",
        "success",
        _seal(main, text, context=ctx, tag="kib"),
        store=["main", "other"],
        plaintext=text,
    )
    vector(
        "text form",
        "success",
        to_text(_seal(main, pan, context=ctx, tag="text")),
        store=["main"],
        plaintext=pan,
    )

    def own(
        name: str,
        plaintext: bytes,
        layers: list[list[str]],
        key_set_id: int,
        *,
        reader: list[list[str]] | None = None,
        **where: Any,
    ) -> None:
        """A success vector whose record has a key set of its own, stored as ``name``."""
        where.setdefault("scope", scope)
        where.setdefault("context", ctx)
        made = _key_set(name, layers, scope=where["scope"], key_set_id=key_set_id)
        add(name, made.document, key_set_id)
        record = _seal(made, plaintext, context=where["context"], tag=name)
        layers = reader or layers
        vector(name, "success", record, store=[name], layers=layers, plaintext=plaintext, **where)

    own("empty scope, empty context", b"no scope", two, 0x2222222222222222, scope="", context={})
    own(
        "unicode scope and context",
        b"unicode",
        two,
        0x3333333333333333,
        scope="t\u00e9nant-\U0001f600",
        context={"b": "2", "a": "1", "\u00e9": "", "\U0001f600": "\x00"},
    )
    own("one layer", b"single", [["a"]], 0x4444444444444444)
    own("three layers GCM, OCB3, GCM-SIV", text[:300], [["a"], ["b"], ["c"]], 0x5555555555555555)
    own("four layers", b"four", [["a"], ["b"], ["c"], ["e"]], 0x6666666666666666)
    own(
        "a layer with two KEKs, read with the second",
        b"spare",
        [["a", "d"], ["b"]],
        0x7777777777777777,
        reader=[["d"], ["b"]],
    )
    suite1 = _key_set(
        "suite 1", two, scope=scope, key_set_id=0x0888888888888888, suite=Suite.HKDF_SHA256
    )
    add("suite 1", suite1.document, suite1.key_set_id)
    vector(
        "suite 1 key set",
        "success",
        _seal(suite1, pan, context=ctx, tag="suite 1"),
        store=["suite 1"],
        plaintext=pan,
    )
    rewrapped = _key_set("main", [["e"], ["b"]], scope=scope, key_set_id=main.key_set_id)
    add("main rewrapped under e", _rewrapped_like(main.document, rewrapped.document))
    vector(
        "a rewrapped key set opens the records made before",
        "success",
        base,
        store=["main rewrapped under e"],
        layers=[["e"], ["b"]],
        plaintext=pan,
        comment="layer 0 re-wrapped from key a to key e; the record is unchanged",
    )

    # -- format errors: the record -----------------------------------------------------------
    def record_error(name: str, record: bytes | str, comment: str = "") -> None:
        vector(name, "format error", record, store=["main"], comment=comment)

    record_error("record version 2", _patched(base, 0, b"\x02"))
    record_error("record version 0", _patched(base, 0, b"\x00"))
    record_error("empty record", b"")
    record_error("record cut inside its fixed fields", base[:28], "28 bytes")
    record_error("key-set id 0", _patched(base, 1, bytes(8)))
    record_error("key-set id with the high bit set", _patched(base, 1, b"\x80"))
    padded = to_text(base) + "="
    record_error("text form with padding", padded + "=" * (-len(padded) % 4))
    record_error("text form with a character outside base64url", "+" + to_text(base)[1:])
    record_error("text form with white space", to_text(base)[:10] + " " + to_text(base)[10:])
    last = to_text(base[:-1])  # 79 bytes: the last character carries 4 unused bits
    record_error(
        "text form with unused bits set",
        last[:-1] + _ALPHABET[_ALPHABET.index(last[-1]) | 1],
        "the lowest bit of the last character",
    )
    record_error("text form of impossible length", to_text(base) + "AA", "4k + 1 characters")

    # -- format errors: the key-set document -------------------------------------------------
    document = main.document
    layer_count = _layers_offset(document)

    def document_error(name: str, bad: bytes, comment: str = "") -> None:
        vector(name, "format error", base, store=[add(name, bad)], comment=comment)

    document_error("document with a bad magic", _flipped(document, 0))
    document_error("document version 2", _patched(document, 4, b"\x02"))
    document_error("document of an unknown suite", _patched(document, 5, b"\x07"))
    document_error(
        "document length field off by one",
        _patched(document, 6, struct.pack(">I", len(document) + 1)),
    )
    document_error("document cut short", document[:-1], "its last byte missing")
    document_error(
        "document with a trailing byte",
        _patched(document + b"\x00", 6, struct.pack(">I", len(document) + 1)),
    )
    document_error(
        "document whose scope is not UTF-8", _patched(document, 60, b"\xff"), "first scope byte"
    )
    document_error("document with layer count 0", _patched(document, layer_count, b"\x00"))
    document_error(
        "document with an unknown layer algorithm", _patched(document, layer_count + 1, b"\x09")
    )
    document_error(
        "document with an unknown wrap algorithm", _patched(document, layer_count + 35, b"\x09")
    )
    document_error(
        "document naming one key id in two layers",
        _reencoded(document, layers=lambda old: [old[0], (old[1][0], old[1][1], old[0][2])]),
        "layer 1 holds layer 0's wrapped key",
    )
    document_error(
        "document with a scope longer than MAX_SCOPE_BYTES",
        _patched(document, 58, struct.pack(">H", 257)),
    )

    # -- decryption failures -----------------------------------------------------------------
    def failure(name: str, record: bytes, comment: str = "", **kw: Any) -> None:
        kw.setdefault("store", ["main", "other", "elsewhere"])
        vector(name, "decryption failure", record, comment=comment, **kw)

    failure("last tag byte flipped", _flipped(base, len(base) - 1))
    failure("ciphertext byte flipped", _flipped(base, 29))
    failure("nonce flipped", _flipped(base, 17))
    failure("prefix flipped", _flipped(base, 9))
    failure("record cut by one byte", base[:-1])
    failure("record cut into its tags", base[: 29 + 31], "31 bytes of a two-layer record's 32")
    failure("record cut after its fixed fields", base[:29])
    failure("a byte appended", base + b"\x00")
    failure("wrong scope", base, scope="tenant-43", comment="the key set is tenant-42's")
    failure("wrong context", base, context={"column": "notes"})
    failure("missing context", base, context={})
    failure("an extra context entry", base, context={"column": "pan", "row": "1"})
    failure(
        "record moved to another key set of its scope",
        _patched(base, 1, struct.pack(">Q", other.key_set_id)),
        "its key-set id now names 'other'",
    )
    failure(
        "record moved to a key set of another scope",
        _patched(base, 1, struct.pack(">Q", 0x1111111111111111)),
        "the key set named is tenant-43's",
    )
    failure(
        "another key set's document stored under the record's id",
        base,
        store=[add("other under main's id", other.document)],
    )
    failure(
        "document's commitment flipped",
        base,
        store=[add("commitment flipped", _flipped(document, layer_count + 2))],
    )
    failure(
        "document's wrapped key replaced by another key set's",
        base,
        store=[
            add(
                "wrapped key swapped",
                _reencoded(
                    document,
                    layers=lambda old: [
                        (old[0][0], old[0][1], encode_wrapped_keys(_layer(other, 0))),
                        old[1],
                    ],
                ),
            )
        ],
        comment="same key id, another data key: the commitment fails",
    )
    failure(
        "document's creation time changed",
        base,
        store=[add("created changed", _reencoded(document, created=CREATED + 1))],
    )
    failure("document's salt flipped", base, store=[add("salt flipped", _flipped(document, 26))])
    failure(
        "document's scope changed",
        base,
        store=[add("scope changed", _reencoded(document, scope="tenant-43"))],
        scope="tenant-43",
        comment="the document and the reader agree on tenant-43; the commitments do not",
    )
    failure(
        "document's layer algorithms swapped",
        base,
        store=[
            add(
                "algorithms swapped",
                _reencoded(
                    document,
                    layers=lambda old: [
                        (old[1][0], old[0][1], old[0][2]),
                        (old[0][0], old[1][1], old[1][2]),
                    ],
                ),
            )
        ],
    )
    failure(
        "document's suite changed",
        base,
        store=[add("suite changed", _reencoded(document, suite=Suite.HKDF_SHA256))],
    )
    failure(
        "wrong scope, the document naming a foreign key",
        base,
        scope="tenant-43",
        store=[add("foreign key", _foreign(main))],
        comment="step 5 (scope) comes before step 6 (configuration)",
    )

    # -- key access errors -------------------------------------------------------------------
    def access(name: str, record: bytes, comment: str = "", **kw: Any) -> None:
        kw.setdefault("store", ["main"])
        vector(name, "key access error", record, comment=comment, **kw)

    access("unknown key set", base, store=[], comment="an empty store, or a shredded scope")
    access("key-set id flipped", _flipped(base, 8), "names no stored key set")
    access("document naming a key no reader has", base, store=["foreign key"])
    access("reader configured for three layers", base, layers=[["a"], ["b"], ["c"]])
    access(
        "layers swapped whole",
        base,
        store=[
            add(
                "layers swapped",
                _reencoded(document, layers=lambda old: [old[1], old[0]]),
            )
        ],
        comment="key ids are tied to layer positions",
    )
    access("a reader with other keys", base, layers=[["c"], ["d"]], comment="no accepted key id")

    return {
        "format": "envelope records version 1 (docs/RECORDS.md)",
        "generator": "python -m tests.vectors.records",
        "expect values": ["success", "format error", "decryption failure", "key access error"],
        "keys": {k.key_id: k._key.hex() for k in KEYS.values()},
        "key_names": {name: k.key_id for name, k in KEYS.items()},
        "key_sets": {
            name: {"key_set_id": ids[name], "document": document.hex()}
            for name, document in key_sets.items()
        },
        "vectors": vectors,
    }


def _layer(key_set: KeySet, index: int) -> Any:
    return parse_key_set(key_set.document).layers[index].wrapped_keys


def _rewrapped_like(document: bytes, donor: bytes) -> bytes:
    """``document`` with layer 0's wrapped keys taken from ``donor`` (same data key)."""
    wrapped = parse_key_set(donor).layers[0].wrapped_keys
    return _reencoded(
        document,
        layers=lambda old: [(old[0][0], old[0][1], encode_wrapped_keys(wrapped)), *old[1:]],
    )


def _foreign(key_set: KeySet) -> bytes:
    """A document whose layer 0 is wrapped under a key id no vector reader holds."""
    parsed = parse_key_set(key_set.document)
    record = parsed.layers[0].wrapped_keys[0]
    foreign = record._replace(key_id="https://attacker.example/keys/k/0123")
    return _reencoded(
        key_set.document,
        layers=lambda old: [(old[0][0], old[0][1], encode_wrapped_keys([foreign])), *old[1:]],
    )


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=True) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
    print(f"wrote {PATH}")
