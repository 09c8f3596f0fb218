"""Records and key-set documents, version 1: the code of ``docs/RECORDS.md`` sections 2 and 3.

No cryptography, no I/O, no knowledge of keys. A key-set document's layers are parsed by the
message format's own code (``FORMAT.md`` section 2.2: they are held alike). Every length read
from the input is checked against a named maximum before it is used, and every failure is a
:class:`~envelope.FormatError`.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from typing import NamedTuple

from .. import _limits
from .._errors import FormatError
from .._format import COMMITMENT_BYTES, Aead, LayerHeader, Suite, read_layers
from .._limits import (
    MAX_KEY_SET_BYTES,
    MAX_KEY_SET_ID,
    MAX_LAYERS,
    MAX_SCOPE_BYTES,
    MIN_KEY_SET_BYTES,
)

__all__ = [
    "FIXED_BYTES",
    "HEAD_BYTES",
    "KEY_SET_MAGIC",
    "NONCE_BYTES",
    "PREFIX_BYTES",
    "RECORD_VERSION",
    "SALT_BYTES",
    "KeySetDocument",
    "check_scope",
    "encode_key_set",
    "from_text",
    "key_set_fields",
    "parse_key_set",
    "record_head",
    "rewrapped_key_set",
    "to_text",
]

RECORD_VERSION = 1
#: version, key-set id, prefix: a record's associated data starts with them (section 4.4).
HEAD_BYTES = 17
PREFIX_BYTES = 8
NONCE_BYTES = 12
#: version, key-set id, prefix, nonce.
FIXED_BYTES = HEAD_BYTES + NONCE_BYTES
SALT_BYTES = 32
TAG_BYTES = 16

KEY_SET_MAGIC = b"\x89EKS"
KEY_SET_VERSION = 1
#: magic, version, suite, document length, key-set id, created, salt, scope length.
_KEY_SET_FIXED = struct.Struct(">4sBBIQQ32sH")
_FIELDS_START = 10  # key_set_fields begin at the key-set id
_RECORD_HEAD = struct.Struct(">BQ")
_SUITES = {int(s): s for s in Suite}


class KeySetDocument(NamedTuple):
    """A parsed (or new) key-set document (section 3).

    ``fields`` is ``key_set_fields``: what every layer's derivation binds (section 4.1);
    ``authenticated`` is what the key-set digest hashes after its label (section 4.2).
    """

    suite: Suite
    key_set_id: int
    created: int
    scope: str
    layers: tuple[LayerHeader, ...]
    fields: bytes
    authenticated: bytes


def check_scope(scope: str) -> bytes:
    """A caller's scope as UTF-8; ``TypeError``/``ValueError`` for one no document can hold."""
    if not isinstance(scope, str):
        raise TypeError("scope must be a str")
    try:
        raw = scope.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a scope must be text UTF-8 can encode (no lone surrogates)") from None
    if len(raw) > MAX_SCOPE_BYTES:
        raise ValueError(f"a scope is at most {MAX_SCOPE_BYTES} UTF-8 bytes")
    return raw


def record_head(key_set_id: int, prefix: bytes) -> bytes:
    """A record's first 17 bytes: version, key-set id, prefix."""
    return _RECORD_HEAD.pack(RECORD_VERSION, key_set_id) + prefix


def max_record_bytes() -> int:
    """The longest input that can be a record (section 2)."""
    return FIXED_BYTES + _limits.MAX_RECORD_BYTES + TAG_BYTES * MAX_LAYERS


# -- text form (section 2.1) ----------------------------------------------------------


def to_text(record: bytes | bytearray | memoryview) -> str:
    """A record's text form: base64url without padding."""
    return base64.urlsafe_b64encode(record).rstrip(b"=").decode("ascii")


def from_text(text: str) -> bytes:
    """The bytes of a record's text form; a text that is not the canonical base64url of
    some bytes (padding, another alphabet, white space, unused bits set) is a format error."""
    if len(text) % 4 == 1 or len(text) > (max_record_bytes() * 4 + 2) // 3:
        raise FormatError("not a record: bad text length")
    try:
        raw = text.encode("ascii")
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise FormatError("not a record: not base64url text") from None
    if b"=" in raw or to_text(data) != text:
        # One record, one spelling: padding, or unused low bits set in the last character.
        raise FormatError("not a record: not canonical base64url text")
    return data


# -- key-set documents (section 3) ----------------------------------------------------


def key_set_fields(key_set_id: int, created: int, salt: bytes, scope: bytes) -> bytes:
    """``key_set_id ‖ created ‖ salt ‖ scope_length ‖ scope``, as a document holds them."""
    return struct.pack(">QQ32sH", key_set_id, created, salt, len(scope)) + scope


def encode_key_set(
    suite: Suite,
    fields: bytes,
    layers: Sequence[tuple[Aead, bytes, bytes]],
) -> bytes:
    """A document from its ``fields`` and each layer's algorithm, commitment and encoded
    wrapped keys (``encode_wrapped_keys``). Raises ``ValueError`` beyond a limit."""
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"a key set has 1 to {MAX_LAYERS} layers")
    parts = [fields, bytes((len(layers),))]
    for algorithm, commitment, wrapped in layers:
        if len(commitment) != COMMITMENT_BYTES:
            raise ValueError(f"a commitment is {COMMITMENT_BYTES} bytes")
        parts += [bytes((algorithm,)), commitment, wrapped]
    body = b"".join(parts)
    length = _FIELDS_START + len(body)
    if length > MAX_KEY_SET_BYTES:
        raise ValueError(f"the key-set document would exceed {MAX_KEY_SET_BYTES} bytes")
    return KEY_SET_MAGIC + struct.pack(">BBI", KEY_SET_VERSION, suite, length) + body


def rewrapped_key_set(document: KeySetDocument, wrapped: Sequence[bytes]) -> bytes:
    """``document`` with each layer's wrapped keys replaced by ``wrapped`` (encoded) and
    everything else kept (section 5.4)."""
    return encode_key_set(
        document.suite,
        document.fields,
        [
            (layer.algorithm, layer.commitment, keys)
            for layer, keys in zip(document.layers, wrapped, strict=True)
        ],
    )


def parse_key_set(data: bytes) -> KeySetDocument:
    """Parse a whole key-set document (section 3), bounded: its length is checked before
    anything else, and every length field against its limit and the document's end."""
    end = len(data)
    if not MIN_KEY_SET_BYTES <= end <= MAX_KEY_SET_BYTES:
        raise FormatError(f"not a key-set document: {end} bytes")
    magic, version, suite, length, key_set_id, created, _salt, scope_length = (
        _KEY_SET_FIXED.unpack_from(data)
    )
    pos = _KEY_SET_FIXED.size
    # Each fixed field against its rule, in the order of the document (RECORDS.md 3).
    for broken, rule in (
        (magic != KEY_SET_MAGIC, "its magic"),
        (version != KEY_SET_VERSION, f"version {version}"),
        (suite not in _SUITES, f"suite {suite}"),
        (length != end, "its length field does not match its size"),
        (not 1 <= key_set_id <= MAX_KEY_SET_ID, "key-set id out of range"),
        (scope_length > MAX_SCOPE_BYTES, "scope length out of range"),
        (pos + scope_length + 1 > end, "it ends early"),
    ):
        if broken:
            raise FormatError(f"not a key-set document: {rule}")
    try:
        scope = data[pos : pos + scope_length].decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("key-set document: the scope is not valid UTF-8") from None
    pos += scope_length
    fields = data[_FIELDS_START:pos]
    layer_count = data[pos]
    if not 1 <= layer_count <= MAX_LAYERS:
        raise FormatError("key-set document: layer count out of range")
    pos += 1
    authenticated = [data[4:6], fields, bytes((layer_count,))]
    try:
        layers, pos = read_layers(data, pos, end, layer_count, authenticated)
    except FormatError as exc:
        raise FormatError(f"not a valid key-set document: {exc}") from None
    if pos != end:
        raise FormatError("key-set document has trailing bytes")
    return KeySetDocument(
        _SUITES[suite], key_set_id, created, scope, layers, fields, b"".join(authenticated)
    )
