"""Message format version 1: header encoding and decoding, identifiers and limits.

This module is the code of ``docs/FORMAT.md`` and nothing else: no cryptography, no I/O,
no knowledge of keys. Every length read from the input is checked against a named maximum
before it is used, and every failure is a :class:`~envelope.FormatError`.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import NamedTuple, TypeVar, cast

from ._errors import FormatError
from ._limits import (
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_ENTRIES,
    MAX_CONTEXT_KEY_BYTES,
    MAX_CONTEXT_VALUE_BYTES,
    MAX_FRAME_SIZE,
    MAX_HEADER_BYTES,
    MAX_KEY_ID_BYTES,
    MAX_LAYERS,
    MAX_WRAPPED_KEY_BYTES,
    MAX_WRAPPED_KEYS,
    MIN_FRAME_SIZE,
    MIN_HEADER_BYTES,
)

__all__ = [
    "MAGIC",
    "PREFIX_BYTES",
    "SALT_BYTES",
    "TAG_BYTES",
    "VERSION",
    "Aead",
    "Context",
    "Header",
    "LayerHeader",
    "Suite",
    "WrapAlgorithm",
    "WrappedKeyRecord",
    "authenticated_header_bytes",
    "decode_header",
    "read_header",
    "read_layers",
    "encode_context",
    "context_encoding",
    "encode_header",
    "encode_wrapped_keys",
    "HeaderWriter",
    "header_length_from_prefix",
    "max_header_size",
]

MAGIC = b"\x89ENV"
VERSION = 1
SALT_BYTES = 32
COMMITMENT_BYTES = 32
TAG_BYTES = 16

#: magic, version, suite, header_length, frame_size, salt: the fixed part of every header.
_PREFIX = struct.Struct(">4sBBII32s")
PREFIX_BYTES = _PREFIX.size  # 46
_U16 = struct.Struct(">H")
_LAYER_HEAD = struct.Struct(">B32sB")  # algorithm, commitment, wrapped key count
_WRAP_HEAD = struct.Struct(">BH")  # wrap algorithm, key id length
#: What every frame's associated data starts from (section 4): a label, version, suite,
#: frame size, then salt, context, layer count and each layer's algorithm and commitment.
_AUTHENTICATED_LABEL = b"envelope/v1 header\x00"
_AUTHENTICATED_FIXED = struct.Struct(">BBI")


class Suite(IntEnum):
    """Key derivation and commitment suites (FORMAT.md section 5)."""

    HKDF_SHA256 = 1
    BLAKE2B = 2


_L = TypeVar("_L", bound="_Labelled")


class _Labelled(IntEnum):
    """A wire id with a human-readable name (the names are listed in ``_NAMES``)."""

    @property
    def label(self) -> str:
        return _NAMES[type(self)][self]

    @classmethod
    def from_label(cls: type[_L], label: str) -> _L:
        member = _BY_NAME[cls].get(label)
        if member is None:
            known = ", ".join(_NAMES[cls].values())
            raise ValueError(f"unknown algorithm {label!r}; known: {known}")
        return cast("_L", member)


class Aead(_Labelled):
    """Per-layer AEAD algorithms: 32-byte key, 12-byte nonce, 16-byte tag."""

    AES_256_GCM = 1
    AES_256_OCB3 = 2
    AES_256_GCM_SIV = 3


class WrapAlgorithm(_Labelled):
    """How a wrapped data key was produced, named as in JOSE and Key Vault."""

    A256GCM = 1
    RSA_OAEP_256 = 2
    RSA_OAEP = 3
    A256KW = 4
    CKM_AES_KEY_WRAP_PAD = 5


_NAMES: dict[type[_Labelled], dict[_Labelled, str]] = {
    Aead: {
        Aead.AES_256_GCM: "AES-256-GCM",
        Aead.AES_256_OCB3: "AES-256-OCB3",
        Aead.AES_256_GCM_SIV: "AES-256-GCM-SIV",
    },
    WrapAlgorithm: {
        WrapAlgorithm.A256GCM: "A256GCM",
        WrapAlgorithm.RSA_OAEP_256: "RSA-OAEP-256",
        WrapAlgorithm.RSA_OAEP: "RSA-OAEP",
        WrapAlgorithm.A256KW: "A256KW",
        WrapAlgorithm.CKM_AES_KEY_WRAP_PAD: "CKM_AES_KEY_WRAP_PAD",
    },
}
_BY_NAME = {
    kind: {name: member for member, name in names.items()} for kind, names in _NAMES.items()
}

Context = tuple[tuple[str, str], ...]

# Headers are built and parsed once per message, so the records are NamedTuples: immutable
# like frozen dataclasses, at less than half the construction cost.


class WrappedKeyRecord(NamedTuple):
    """One wrapped data key as it stands in a header (FORMAT.md section 2.2).

    The fields are named as in the public ``envelope.WrappedKey``; only ``algorithm`` is the
    wire id here where ``WrappedKey`` has its name.
    """

    key_id: str
    algorithm: WrapAlgorithm
    ciphertext: bytes


class LayerHeader(NamedTuple):
    """One layer's entry in the header."""

    algorithm: Aead
    commitment: bytes
    wrapped_keys: tuple[WrappedKeyRecord, ...]


class Header(NamedTuple):
    """A parsed (or to-be-written) version 1 header."""

    suite: Suite
    frame_size: int
    salt: bytes
    context: Context
    layers: tuple[LayerHeader, ...]
    version: int = VERSION


def encode_context(context: Mapping[str, str] | None) -> Context:
    """Validate a caller's encryption context and put it in canonical order.

    Raises ``TypeError``/``ValueError``: a bad context is the caller's mistake.
    """
    if context is None:
        return ()
    if not isinstance(context, Mapping):
        raise TypeError("context must be a mapping of str to str")
    if len(context) > MAX_CONTEXT_ENTRIES:
        raise ValueError(f"a context has at most {MAX_CONTEXT_ENTRIES} entries")
    encoded: list[tuple[bytes, str, str]] = []
    total = 0
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("context keys and values must be str")
        try:
            raw_key, raw_value = key.encode("utf-8"), value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                "context keys and values must be text UTF-8 can encode (no lone surrogates)"
            ) from None
        if not 0 < len(raw_key) <= MAX_CONTEXT_KEY_BYTES:
            raise ValueError(f"a context key is 1 to {MAX_CONTEXT_KEY_BYTES} UTF-8 bytes")
        if len(raw_value) > MAX_CONTEXT_VALUE_BYTES:
            raise ValueError(f"a context value is at most {MAX_CONTEXT_VALUE_BYTES} UTF-8 bytes")
        total += len(raw_key) + len(raw_value)
        encoded.append((raw_key, key, value))
    if total > MAX_CONTEXT_BYTES:
        raise ValueError(f"a context holds at most {MAX_CONTEXT_BYTES} UTF-8 bytes")
    encoded.sort(key=lambda item: item[0])
    return tuple((key, value) for _, key, value in encoded)


@functools.lru_cache(maxsize=256)
def context_encoding(context: Context) -> bytes:
    """A canonical context (:func:`encode_context`) encoded as section 2.1 says, entry count
    included: as a header holds it, and as records authenticate it (RECORDS.md 4.4)."""
    parts = [_U16.pack(len(context))]
    for key, value in context:
        raw_key, raw_value = key.encode("utf-8"), value.encode("utf-8")
        parts += [_U16.pack(len(raw_key)), raw_key, _U16.pack(len(raw_value)), raw_value]
    return b"".join(parts)


def encode_wrapped_keys(records: Sequence[WrappedKeyRecord]) -> bytes:
    """One layer's ``wrapped_key_count`` and wrapped keys (section 2.2), checked.

    A layer's wrapped keys do not change while its data key is reused, so a writer encodes
    them once per data key, not once per message.
    """
    if not 1 <= len(records) <= MAX_WRAPPED_KEYS:
        raise ValueError(f"a layer has 1 to {MAX_WRAPPED_KEYS} wrapped keys")
    parts = [bytes((len(records),))]
    for record in records:
        key_id = record.key_id.encode("utf-8")
        if not 1 <= len(key_id) <= MAX_KEY_ID_BYTES:
            raise ValueError(f"a key id is 1 to {MAX_KEY_ID_BYTES} UTF-8 bytes")
        if not 1 <= len(record.ciphertext) <= MAX_WRAPPED_KEY_BYTES:
            raise ValueError(f"a wrapped key is 1 to {MAX_WRAPPED_KEY_BYTES} bytes")
        if record.algorithm not in _NAMES[WrapAlgorithm]:
            raise ValueError(f"unknown wrap algorithm {record.algorithm!r}")
        parts += [
            _WRAP_HEAD.pack(record.algorithm, len(key_id)),
            key_id,
            _U16.pack(len(record.ciphertext)),
            record.ciphertext,
        ]
    return b"".join(parts)


class HeaderWriter:
    """Writes the headers of messages that share a suite, a frame size and their layers'
    algorithms: those fields are checked and encoded once, so a new header costs a join.

    :meth:`write` also returns the bytes every frame authenticates (section 4), which the
    writer has at hand anyway.
    """

    __slots__ = ("_algorithms", "_authenticated_prefix", "_frame_size", "_layer_count", "_suite")

    def __init__(self, suite: Suite, frame_size: int, algorithms: Sequence[Aead]) -> None:
        if suite not in _SUITES:
            raise ValueError(f"unknown suite {suite!r}")
        if not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame_size must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE}")
        if not 1 <= len(algorithms) <= MAX_LAYERS:
            raise ValueError(f"a message has 1 to {MAX_LAYERS} layers")
        for algorithm in algorithms:
            if algorithm not in _NAMES[Aead]:
                raise ValueError(f"unknown layer algorithm {algorithm!r}")
        self._suite = suite
        self._frame_size = frame_size
        self._algorithms = [bytes((algorithm,)) for algorithm in algorithms]
        self._layer_count = bytes((len(algorithms),))
        self._authenticated_prefix = _AUTHENTICATED_LABEL + _AUTHENTICATED_FIXED.pack(
            VERSION, suite, frame_size
        )

    def write(
        self,
        salt: bytes,
        context: Context,
        commitments: Sequence[bytes],
        wrapped_keys: Sequence[bytes],
    ) -> tuple[bytes, bytes]:
        """``(header, authenticated bytes)`` of a message. ``wrapped_keys`` holds each
        layer's :func:`encode_wrapped_keys`."""
        if len(salt) != SALT_BYTES:
            raise ValueError(f"salt must be {SALT_BYTES} bytes")
        context_bytes = context_encoding(context)
        rest = [context_bytes, self._layer_count]
        for algorithm, commitment, wrapped in zip(
            self._algorithms, commitments, wrapped_keys, strict=True
        ):
            if len(commitment) != COMMITMENT_BYTES:
                raise ValueError(f"a commitment is {COMMITMENT_BYTES} bytes")
            rest += [algorithm, commitment, wrapped]
        body = b"".join(rest)
        length = PREFIX_BYTES + len(body)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"the header would exceed {MAX_HEADER_BYTES} bytes")
        prefix = _PREFIX.pack(MAGIC, VERSION, self._suite, length, self._frame_size, salt)
        authenticated = _authenticated(
            self._authenticated_prefix, salt, context_bytes, self._algorithms, commitments
        )
        return prefix + body, authenticated


def encode_header(header: Header) -> bytes:
    """Serialize ``header``; raises ``ValueError`` if a field is outside its limits."""
    if header.version != VERSION:
        raise ValueError(f"only version {VERSION} can be written")
    algorithms = [layer.algorithm for layer in header.layers]
    writer = HeaderWriter(header.suite, header.frame_size, algorithms)
    encoded, _ = writer.write(
        header.salt,
        header.context,
        [layer.commitment for layer in header.layers],
        [encode_wrapped_keys(layer.wrapped_keys) for layer in header.layers],
    )
    return encoded


def max_header_size(context: Context, keys_per_layer: Sequence[int]) -> int:
    """The largest header a message with this context and these numbers of wrapped keys per
    layer can have: every key id and wrapped key at its maximum length."""
    size = PREFIX_BYTES + 2 + 1  # fixed prefix, context entry count, layer count
    size += sum(4 + len(k.encode()) + len(v.encode()) for k, v in context)
    per_key = _WRAP_HEAD.size + MAX_KEY_ID_BYTES + 2 + MAX_WRAPPED_KEY_BYTES
    return size + sum(_LAYER_HEAD.size + count * per_key for count in keys_per_layer)


def authenticated_header_bytes(header: Header) -> bytes:
    """The header fields every frame authenticates (FORMAT.md section 4), as bytes.

    The wrapped keys are left out on purpose: a rewrap replaces them without touching the
    body, and the layer commitments bind them.
    """
    return _authenticated(
        _AUTHENTICATED_LABEL
        + _AUTHENTICATED_FIXED.pack(header.version, header.suite, header.frame_size),
        header.salt,
        context_encoding(header.context),
        [bytes((layer.algorithm,)) for layer in header.layers],
        [layer.commitment for layer in header.layers],
    )


def _authenticated(
    fixed: bytes,
    salt: bytes,
    context_bytes: bytes,
    algorithms: Sequence[bytes],
    commitments: Sequence[bytes],
) -> bytes:
    parts = [fixed, salt, context_bytes, bytes((len(algorithms),))]
    for algorithm, commitment in zip(algorithms, commitments, strict=True):
        parts += [algorithm, commitment]
    return b"".join(parts)


def header_length_from_prefix(prefix: bytes | bytearray | memoryview) -> int:
    """Check the fixed prefix and return the total header length it announces.

    Lets a streaming reader learn, from ``PREFIX_BYTES`` bytes, how much more to read, with
    the bound checked before it reads or allocates anything else.
    """
    if len(prefix) < PREFIX_BYTES:
        raise FormatError("input is shorter than an envelope header")
    magic, version, suite, length, frame_size, _salt = _PREFIX.unpack_from(prefix)
    if magic != MAGIC:
        raise FormatError("not an envelope message (bad magic)")
    if version != VERSION:
        raise FormatError(f"unsupported format version {version}")
    if suite not in _SUITES:
        raise FormatError(f"unsupported suite {suite}")
    if not MIN_HEADER_BYTES <= length <= MAX_HEADER_BYTES:
        raise FormatError("header length out of range")
    if not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
        raise FormatError("frame size out of range")
    return int(length)


_SUITES = frozenset(int(s) for s in Suite)
_SUITE_BY_ID = {int(s): s for s in Suite}
_AEADS = {int(a): a for a in Aead}
_WRAPS = {int(w): w for w in WrapAlgorithm}


def _short() -> FormatError:
    return FormatError("header ends early")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("a text field is not valid UTF-8") from None


def decode_header(data: bytes | bytearray | memoryview) -> tuple[Header, int]:
    """Parse the header at the start of ``data``; returns it and its length in bytes."""
    header, length, _ = read_header(data)
    return header, length


def read_header(data: bytes | bytearray | memoryview) -> tuple[Header, int, bytes]:
    """Parse the header at the start of ``data``; returns it, its length in bytes, and the
    bytes every frame authenticates (:func:`authenticated_header_bytes`), cut from the input
    as it is parsed rather than encoded again.

    One linear pass with every length checked against its limit and against the header's
    end before it is used (written flat, without helper calls per field: this runs once per
    decrypted message).
    """
    view = memoryview(data)
    end = header_length_from_prefix(view[:PREFIX_BYTES])
    if len(view) < end:
        raise FormatError("input is shorter than its header")
    raw = view[:end].tobytes()  # one copy of a bounded header; slicing bytes is cheap
    _magic, version, suite, _length, frame_size, salt = _PREFIX.unpack_from(raw)
    pos = PREFIX_BYTES

    if pos + 2 > end:
        raise _short()
    (entries,) = _U16.unpack_from(raw, pos)
    pos += 2
    if entries > MAX_CONTEXT_ENTRIES:
        raise FormatError("too many context entries")
    context: list[tuple[str, str]] = []
    total = 0
    previous = b""
    for _ in range(entries):
        if pos + 2 > end:
            raise _short()
        (key_length,) = _U16.unpack_from(raw, pos)
        if not 1 <= key_length <= MAX_CONTEXT_KEY_BYTES:
            raise FormatError("context key length out of range")
        pos += 2
        if pos + key_length + 2 > end:
            raise _short()
        raw_key = raw[pos : pos + key_length]
        pos += key_length
        (value_length,) = _U16.unpack_from(raw, pos)
        if value_length > MAX_CONTEXT_VALUE_BYTES:
            raise FormatError("context value length out of range")
        pos += 2
        total += key_length + value_length
        if total > MAX_CONTEXT_BYTES:
            raise FormatError("context too large")
        if pos + value_length > end:
            raise _short()
        if context and raw_key <= previous:
            raise FormatError("context keys are not in canonical order")
        previous = raw_key
        context.append((_text(raw_key), _text(raw[pos : pos + value_length])))
        pos += value_length

    if pos >= end:
        raise _short()
    layer_count = raw[pos]
    pos += 1
    if not 1 <= layer_count <= MAX_LAYERS:
        raise FormatError("layer count out of range")
    # Section 4: version, suite, frame size, salt, context, layer count, then each layer's
    # algorithm and commitment; the fixed fields sit at offsets 4-5 and 10-45.
    authenticated = [_AUTHENTICATED_LABEL, raw[4:6], raw[10:pos]]
    layers, pos = read_layers(raw, pos, end, layer_count, authenticated)

    if pos != end:
        raise FormatError("header has trailing bytes")
    header = Header(_SUITE_BY_ID[suite], frame_size, salt, tuple(context), layers, version)
    return header, end, b"".join(authenticated)


def read_layers(
    raw: bytes, pos: int, end: int, layer_count: int, authenticated: list[bytes]
) -> tuple[tuple[LayerHeader, ...], int]:
    """Parse ``layer_count`` layers (section 2.2) from ``raw[pos:end]``; returns them and the
    offset after the last. Each layer's algorithm and commitment bytes are appended to
    ``authenticated`` as they stand. Shared by message headers and key-set documents
    (RECORDS.md section 3), which hold their layers alike."""
    layers: list[LayerHeader] = []
    seen_ids: set[str] = set()
    for _ in range(layer_count):
        if pos + _LAYER_HEAD.size > end:
            raise _short()
        algorithm_id, commitment, count = _LAYER_HEAD.unpack_from(raw, pos)
        authenticated.append(raw[pos : pos + 1 + COMMITMENT_BYTES])
        pos += _LAYER_HEAD.size
        algorithm = _AEADS.get(algorithm_id)
        if algorithm is None:
            raise FormatError("unknown layer algorithm")
        if not 1 <= count <= MAX_WRAPPED_KEYS:
            raise FormatError("wrapped key count out of range")
        records: list[WrappedKeyRecord] = []
        for _ in range(count):
            if pos + _WRAP_HEAD.size > end:
                raise _short()
            wrap_id, id_length = _WRAP_HEAD.unpack_from(raw, pos)
            pos += _WRAP_HEAD.size
            wrap = _WRAPS.get(wrap_id)
            if wrap is None:
                raise FormatError("unknown wrap algorithm")
            if not 1 <= id_length <= MAX_KEY_ID_BYTES:
                raise FormatError("key id length out of range")
            if pos + id_length + 2 > end:
                raise _short()
            key_id = _text(raw[pos : pos + id_length])
            pos += id_length
            if key_id in seen_ids:
                raise FormatError("a key id appears twice in the header")
            seen_ids.add(key_id)
            (wrapped_length,) = _U16.unpack_from(raw, pos)
            pos += 2
            if not 1 <= wrapped_length <= MAX_WRAPPED_KEY_BYTES:
                raise FormatError("wrapped key length out of range")
            if pos + wrapped_length > end:
                raise _short()
            records.append(WrappedKeyRecord(key_id, wrap, raw[pos : pos + wrapped_length]))
            pos += wrapped_length
        layers.append(LayerHeader(algorithm, commitment, tuple(records)))
    return tuple(layers), pos
