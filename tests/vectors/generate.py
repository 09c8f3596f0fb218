"""Writes tests/vectors/v1.json: format version 1 vectors with fixed keys, salts and nonces.

Run ``python -m tests.vectors.generate`` after a deliberate format change; the test suite
checks that the file still decrypts as recorded and that regenerating it is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from envelope import Envelope, LocalKey
from envelope._format import decode_header
from envelope._limits import MAX_HEADER_BYTES

PATH = Path(__file__).with_name("v1.json")


def _bytes(label: str, n: int = 32) -> bytes:
    """Deterministic bytes named by ``label`` (a test fixture, not a key derivation)."""
    return hashlib.sha256(label.encode()).digest()[:n]


KEYS = {name: LocalKey(_bytes(f"kek {name}"), key_id=f"vector-{name}") for name in "abcde"}


def _seal(
    layers: list[list[str]],
    plaintext: bytes,
    *,
    context: dict[str, str] | None = None,
    frame_size: int = 1024,
    algorithms: list[str] | None = None,
    tag: str = "",
) -> bytearray:
    env = Envelope(
        [[KEYS[k] for k in layer] for layer in layers],
        frame_size=frame_size,
        algorithms=algorithms,
    )
    data_keys = []
    for index, layer in enumerate(layers):
        dek = _bytes(f"dek {tag} {index}")
        wrapped = [
            KEYS[k]._wrap_with_nonce(dek, _bytes(f"nonce {tag} {index} {k}", 12)) for k in layer
        ]
        data_keys.append((dek, wrapped))
    return env._encrypt_with(plaintext, context, salt=_bytes(f"salt {tag}"), data_keys=data_keys)


def _vector(
    name: str,
    expect: str,
    layers: list[list[str]],
    message: bytes | bytearray,
    *,
    plaintext: bytes | None = None,
    context: dict[str, str] | None = None,
    frame_size: int = 1024,
    comment: str = "",
) -> dict[str, Any]:
    vector: dict[str, Any] = {
        "name": name,
        "expect": expect,
        "layers": layers,
        "frame_size": frame_size,
        "context": context or {},
        "message": bytes(message).hex(),
    }
    if plaintext is not None:
        vector["plaintext"] = plaintext.hex()
    if comment:
        vector["comment"] = comment
    return vector


def build() -> dict[str, Any]:
    two = [["a"], ["b"]]
    ctx = {"tenant": "contoso", "purpose": "vectors"}
    text = b"The quick brown fox jumps over the lazy dog. " * 60  # 2700 bytes, 3 frames
    base = _seal(two, text, context=ctx, tag="base")
    _, length = decode_header(base)
    body = bytes(base[length:])
    full = 1024 + 32

    vectors = [
        _vector("empty plaintext", "success", two, _seal(two, b"", tag="empty"), plaintext=b""),
        _vector("one byte", "success", two, _seal(two, b"x", tag="one"), plaintext=b"x"),
        _vector("three frames with context", "success", two, base, plaintext=text, context=ctx),
        _vector(
            "exact multiple of the frame size ends with an empty final frame",
            "success",
            two,
            _seal(two, b"\x5a" * 2048, tag="multiple"),
            plaintext=b"\x5a" * 2048,
        ),
        _vector(
            "one layer",
            "success",
            [["a"]],
            _seal([["a"]], b"single", tag="single"),
            plaintext=b"single",
        ),
        _vector(
            "three layers GCM, OCB3, GCM-SIV",
            "success",
            [["a"], ["b"], ["c"]],
            _seal([["a"], ["b"], ["c"]], text[:1500], tag="three"),
            plaintext=text[:1500],
        ),
        _vector(
            "two KEKs in the inner layer",
            "success",
            [["a", "d"], ["b"]],
            _seal([["a", "d"], ["b"]], b"redundant", tag="two-keks"),
            plaintext=b"redundant",
        ),
        _vector(
            "four layers, 4 KiB frames",
            "success",
            [["a"], ["b"], ["c"], ["e"]],
            _seal([["a"], ["b"], ["c"], ["e"]], text, frame_size=4096, tag="four"),
            plaintext=text,
            frame_size=4096,
        ),
    ]

    def variant(name: str, expect: str, message: bytes, comment: str, **kw: Any) -> None:
        kw.setdefault("context", ctx)
        vectors.append(_vector(name, expect, two, message, comment=comment, **kw))

    def flipped(offset: int) -> bytes:
        blob = bytearray(base)
        blob[offset] ^= 0x01
        return bytes(blob)

    variant("bad magic", "format error", flipped(0), "byte 0 flipped")
    variant("version 2", "format error", bytes(base[:4]) + b"\x02" + bytes(base[5:]), "")
    variant("unknown suite", "format error", bytes(base[:5]) + b"\x07" + bytes(base[6:]), "")
    variant(
        "header length beyond the maximum",
        "format error",
        bytes(base[:6]) + struct.pack(">I", MAX_HEADER_BYTES + 1) + bytes(base[10:]),
        "",
    )
    variant("truncated header", "format error", bytes(base[: length - 1]), "")
    variant(
        "unknown layer algorithm",
        "format error",
        _patched(base, _commitment_offset(base) - 1, 9),
        "algorithm id 9",
    )
    variant("salt flipped", "decryption failure", flipped(20), "")
    variant("frame size changed", "decryption failure", flipped(12), "1024 -> 1280")
    variant(
        "commitment flipped",
        "decryption failure",
        flipped(_commitment_offset(base)),
        "first byte of layer 0 commitment",
    )
    variant("body byte flipped", "decryption failure", flipped(length + 5), "")
    variant("last tag byte flipped", "decryption failure", flipped(len(base) - 1), "")
    variant(
        "truncated at a frame boundary",
        "decryption failure",
        bytes(base[: length + full]),
        "after the first frame",
    )
    variant("final frame dropped", "decryption failure", bytes(base[: length + 2 * full]), "")
    variant(
        "frames 0 and 1 swapped",
        "decryption failure",
        bytes(base[:length]) + body[full : 2 * full] + body[:full] + body[2 * full :],
        "",
    )
    variant("wrong context", "decryption failure", bytes(base), "", context={"tenant": "x"})
    variant("missing context", "decryption failure", bytes(base), "", context={})
    return {
        "format": "envelope message format version 1 (docs/FORMAT.md)",
        "generator": "python -m tests.vectors.generate",
        "expect values": ["success", "format error", "decryption failure"],
        "keys": {k.key_id: k._key.hex() for k in KEYS.values()},
        "key_names": {name: k.key_id for name, k in KEYS.items()},
        "vectors": vectors,
    }


def _patched(message: bytes | bytearray, offset: int, value: int) -> bytes:
    blob = bytearray(message)
    blob[offset] = value
    return bytes(blob)


def _commitment_offset(message: bytes | bytearray) -> int:
    header, _ = decode_header(message)
    context = sum(4 + len(k.encode()) + len(v.encode()) for k, v in header.context)
    return 46 + 2 + context + 1 + 1  # prefix, entry count, entries, layer count, algorithm


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
    print(f"wrote {PATH}")
