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
from envelope._format import (
    Header,
    Suite,
    WrapAlgorithm,
    WrappedKeyRecord,
    decode_header,
    encode_header,
)
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
    suite: Suite = Suite.HKDF_SHA256,
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
    return env._encrypt_with(
        plaintext, context, salt=_bytes(f"salt {tag}"), data_keys=data_keys, suite=suite
    )


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
    vectors += _checks_and_their_order(base, ctx, text)
    vectors += _suite_2(base, ctx, text)
    return {
        "format": "envelope message format version 1 (docs/FORMAT.md)",
        "generator": "python -m tests.vectors.generate",
        "expect values": ["success", "format error", "decryption failure", "key access error"],
        "keys": {k.key_id: k._key.hex() for k in KEYS.values()},
        "key_names": {name: k.key_id for name, k in KEYS.items()},
        "vectors": vectors,
    }


def _checks_and_their_order(
    base: bytearray, ctx: dict[str, str], text: bytes
) -> list[dict[str, Any]]:
    """The rules of FORMAT.md sections 2.1 to 4 and 7 that a reader could otherwise only guess:
    text that is not UTF-8, repeated key ids, keys tied to layer positions, wrapped keys that
    do not fit, the next KEK of a layer, short bodies, and which kind a message with two
    defects gets (the order of the checks)."""
    two = [["a"], ["b"]]
    header, length = decode_header(base)
    body = bytes(base[length:])
    inner, outer = header.layers
    record = inner.wrapped_keys[0]
    one_layer = bytes(_seal([["a"]], text[:100], context=ctx, tag="one-layer"))
    swapped = _rewritten(header._replace(layers=(outer, inner)), body)
    redundant = _seal([["a", "d"], ["b"]], b"redundant", tag="two-keks")
    spare, spare_length = decode_header(redundant)
    first, second = spare.layers[0].wrapped_keys
    flipped_wrap = first._replace(
        ciphertext=first.ciphertext[:20] + b"\xff" + first.ciphertext[21:]
    )
    other_key = KEYS["a"]._wrap_with_nonce(_bytes("another dek"), _bytes("nonce another", 12))
    cases: list[tuple[str, str, list[list[str]], bytes, dict[str, str], str]] = [
        (
            "wrong context and one layer missing",
            "decryption failure",
            two,
            one_layer,
            {"tenant": "x"},
            "steps 2 and 3 both fail: the context is checked first",
        ),
        ("one layer missing", "key access error", two, one_layer, ctx, "a one-layer message"),
        (
            "layers swapped whole",
            "key access error",
            two,
            swapped,
            ctx,
            "key ids included: keys are tied to layer positions",
        ),
        (
            "wrong context and layers swapped whole",
            "decryption failure",
            two,
            swapped,
            {},
            "steps 2 and 3 both fail: the context is checked first",
        ),
        (
            "layer algorithms swapped",
            "decryption failure",
            two,
            _rewritten(
                header._replace(
                    layers=(
                        inner._replace(algorithm=outer.algorithm),
                        outer._replace(algorithm=inner.algorithm),
                    )
                ),
                body,
            ),
            ctx,
            "commitments and key ids in place: the commitment fails",
        ),
        (
            "a key id twice in one layer",
            "format error",
            two,
            _rewritten(
                header._replace(layers=(inner._replace(wrapped_keys=(record, record)), outer)), body
            ),
            ctx,
            "",
        ),
        (
            "one key id in two layers",
            "format error",
            two,
            _rewritten(
                header._replace(
                    layers=(
                        inner,
                        outer._replace(
                            wrapped_keys=(outer.wrapped_keys[0]._replace(key_id=record.key_id),)
                        ),
                    )
                ),
                body,
            ),
            ctx,
            "layer 1 names layer 0's key",
        ),
        (
            "context key not UTF-8",
            "format error",
            two,
            _replaced(base, length, b"tenant", b"tena\xc0\xaf"),
            ctx,
            "an overlong form (C0 AF) in the key 'tenant'",
        ),
        (
            "key id not UTF-8",
            "format error",
            two,
            _replaced(base, length, b"vector-b", b"vecto\xed\xa0\x80"),
            ctx,
            "an encoded surrogate (ED A0 80) in layer 1's key id",
        ),
        (
            "A256GCM wrapped key of 59 bytes",
            "decryption failure",
            two,
            _with_inner_records(
                header, (record._replace(ciphertext=record.ciphertext[:59]),), body
            ),
            ctx,
            "",
        ),
        (
            "RSA-OAEP-256 wrap id under a local key",
            "decryption failure",
            two,
            _with_inner_records(
                header, (record._replace(algorithm=WrapAlgorithm.RSA_OAEP_256),), body
            ),
            ctx,
            "",
        ),
        (
            "first KEK's wrapped key damaged, the second KEK opens the layer",
            "success",
            [["a", "d"], ["b"]],
            _with_inner_records(spare, (flipped_wrap, second), bytes(redundant[spare_length:])),
            {},
            "a failed candidate moves on to the layer's next KEK",
        ),
        (
            "first KEK unwraps to another data key, the second KEK opens the layer",
            "success",
            [["a", "d"], ["b"]],
            _with_inner_records(
                spare,
                (first._replace(ciphertext=other_key.ciphertext), second),
                bytes(redundant[spare_length:]),
            ),
            {},
            "a valid wrap of another data key fails the commitment, then the next KEK is tried",
        ),
        ("empty body", "decryption failure", two, bytes(base[:length]), ctx, "the header alone"),
        (
            "body shorter than one frame's tags",
            "decryption failure",
            two,
            bytes(base[: length + 31]),
            ctx,
            "31 bytes, two layers of 16-byte tags",
        ),
        (
            "empty body and a key id not accepted",
            "key access error",
            two,
            _replaced(base[:length], length, b"vector-b", b"vector-c"),
            ctx,
            "steps 3 and 5 both fail: the body is checked last",
        ),
    ]
    vectors = []
    for name, expect, layers, message, context, comment in cases:
        # Both successes open the two-KEK message.
        plaintext = b"redundant" if expect == "success" else None
        vectors.append(
            _vector(
                name,
                expect,
                layers,
                message,
                plaintext=plaintext,
                context=context,
                comment=comment,
            )
        )
    return vectors


def _suite_2(suite_1: bytearray, ctx: dict[str, str], text: bytes) -> list[dict[str, Any]]:
    """Messages of suite 2 (FORMAT.md section 5.2, keyed BLAKE2b), which new messages use:
    successes, and the defects whose detection depends on the key derivation. ``suite_1`` is
    the suite 1 message the other vectors vary."""
    two = [["a"], ["b"]]
    blake = Suite.BLAKE2B
    base = _seal(two, text, context=ctx, tag="suite 2", suite=blake)
    header, length = decode_header(base)
    body = bytes(base[length:])
    inner, outer = header.layers

    def flipped(offset: int) -> bytes:
        blob = bytearray(base)
        blob[offset] ^= 0x01
        return bytes(blob)

    def suite_byte(message: bytes | bytearray, value: int) -> bytes:
        return bytes(message[:5]) + bytes((value,)) + bytes(message[6:])

    three = [["a"], ["b"], ["c"]]
    four = [["a"], ["b"], ["c"], ["e"]]
    spare_layers = [["a", "d"], ["b"]]
    spare_message = _seal(spare_layers, b"redundant", tag="suite 2 two-keks", suite=blake)
    spare, spare_length = decode_header(spare_message)
    first, second = spare.layers[0].wrapped_keys
    other = KEYS["a"]._wrap_with_nonce(_bytes("suite 2 another dek"), _bytes("n s2", 12))
    successes: list[tuple[str, list[list[str]], bytes | bytearray, bytes, dict[str, str], int]] = [
        ("three frames with context", two, base, text, ctx, 1024),
        ("empty plaintext", two, _seal(two, b"", tag="suite 2 empty", suite=blake), b"", {}, 1024),
        (
            "three layers GCM, OCB3, GCM-SIV",
            three,
            _seal(three, text[:1500], tag="suite 2 three", suite=blake),
            text[:1500],
            {},
            1024,
        ),
        (
            "four layers, 4 KiB frames",
            four,
            _seal(four, text, frame_size=4096, tag="suite 2 four", suite=blake),
            text,
            {},
            4096,
        ),
        (
            "first KEK unwraps to another data key, the second KEK opens the layer",
            spare_layers,
            _with_inner_records(
                spare,
                (first._replace(ciphertext=other.ciphertext), second),
                bytes(spare_message[spare_length:]),
            ),
            b"redundant",
            {},
            1024,
        ),
    ]
    vectors = [
        _vector(
            f"suite 2: {name}",
            "success",
            layers,
            message,
            plaintext=plaintext,
            context=context,
            frame_size=frame_size,
        )
        for name, layers, message, plaintext, context, frame_size in successes
    ]
    algorithms_swapped = _rewritten(
        header._replace(
            layers=(
                inner._replace(algorithm=outer.algorithm),
                outer._replace(algorithm=inner.algorithm),
            )
        ),
        body,
    )
    defects = [
        (
            "suite 2: relabelled as suite 1",
            "decryption failure",
            suite_byte(base, 1),
            "the suite byte changed 2 -> 1: every commitment fails",
        ),
        (
            "suite 1 message relabelled as suite 2",
            "decryption failure",
            suite_byte(suite_1, 2),
            "the suite byte changed 1 -> 2: every commitment fails",
        ),
        ("suite 2: unknown suite 3", "format error", suite_byte(base, 3), ""),
        ("suite 2: suite 0", "format error", suite_byte(base, 0), ""),
        ("suite 2: suite 255", "format error", suite_byte(base, 255), ""),
        (
            "suite 2: commitment flipped",
            "decryption failure",
            flipped(_commitment_offset(base)),
            "first byte of layer 0 commitment",
        ),
        ("suite 2: salt flipped", "decryption failure", flipped(20), ""),
        ("suite 2: frame size changed", "decryption failure", flipped(12), "1024 -> 1280"),
        (
            "suite 2: layer algorithms swapped",
            "decryption failure",
            algorithms_swapped,
            "commitments and key ids in place: the commitment fails",
        ),
        ("suite 2: body byte flipped", "decryption failure", flipped(length + 5), ""),
    ]
    vectors += [
        _vector(name, expect, two, message, context=ctx, comment=comment)
        for name, expect, message, comment in defects
    ]
    return vectors


def _rewritten(header: Header, body: bytes) -> bytes:
    return encode_header(header) + body


def _with_inner_records(
    header: Header, records: tuple[WrappedKeyRecord, ...], body: bytes
) -> bytes:
    """``header`` with layer 0's wrapped keys replaced by ``records``."""
    inner = header.layers[0]._replace(wrapped_keys=records)
    return _rewritten(header._replace(layers=(inner, *header.layers[1:])), body)


def _replaced(message: bytes | bytearray, header_length: int, old: bytes, new: bytes) -> bytes:
    """``message`` with the one occurrence of ``old`` in its header replaced by ``new``, a
    byte string of the same length."""
    assert len(old) == len(new)
    assert bytes(message[:header_length]).count(old) == 1
    offset = bytes(message).index(old)
    return bytes(message[:offset]) + new + bytes(message[offset + len(old) :])


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
