"""A message in one piece, header ‖ body: the header of a new message and the cipher for its
body, a header read back and checked against the expected context, a rewrapped header, and
a whole body sealed or opened in memory.

This is where the format meets the engine; keys reach it only as bytes (data keys in,
message keys out), never as KEKs.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from ._engine import (
    FrameCipher,
    body_size,
    derive_layer_key,
    header_digest,
    hkdf_info,
    new_aead,
    plaintext_size,
)
from ._errors import DecryptionError
from ._format import (
    SALT_BYTES,
    Aead,
    Context,
    Header,
    LayerHeader,
    Suite,
    WrappedKeyRecord,
    decode_header,
    encode_header,
)

__all__ = [
    "SUITE",
    "body_cipher",
    "context_mismatch",
    "new_header",
    "open_body",
    "opened",
    "parse_header",
    "rewrapped_header",
    "sealed",
]

#: The suite new messages use.
SUITE = Suite.HKDF_SHA256


def new_header(
    algorithms: Sequence[Aead],
    frame_size: int,
    context: Context,
    data_keys: Sequence[tuple[bytes, tuple[WrappedKeyRecord, ...]]],
    salt: bytes | None = None,
) -> tuple[Header, list[bytes]]:
    """The header of a new message and each layer's message key. ``data_keys`` holds each
    layer's data key and its wrapped copies; ``salt`` is fresh unless a test vector fixes it."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    layers = []
    message_keys = []
    for index, (algorithm, (data_key, wrapped)) in enumerate(
        zip(algorithms, data_keys, strict=True)
    ):
        message_key, commitment = derive_layer_key(
            data_key, hkdf_info(SUITE, index, algorithm), salt
        )
        message_keys.append(message_key)
        layers.append(LayerHeader(algorithm, commitment, wrapped))
    return Header(SUITE, frame_size, salt, context, tuple(layers)), message_keys


def body_cipher(header: Header, message_keys: Sequence[bytes], largest_frame: int) -> FrameCipher:
    """The cipher for the body under ``header``. ``largest_frame`` sizes its scratch buffers:
    a one-shot message's plaintext or body length, a stream's frame size."""
    aeads = [
        new_aead(layer.algorithm, key)
        for layer, key in zip(header.layers, message_keys, strict=True)
    ]
    return FrameCipher(aeads, header_digest(header), header.frame_size, largest_frame=largest_frame)


def parse_header(view: memoryview, expected: Context) -> tuple[Header, int]:
    """Parse the header at the start of ``view`` and check that it carries the ``expected``
    context; returns the header and its length."""
    header, header_length = decode_header(view)
    if header.context != expected:
        raise DecryptionError(context_mismatch(header.context, expected))
    return header, header_length


def context_mismatch(stored: Context, expected: Context) -> str:
    """Which keys differ between a message's context and the expected one. The stored
    context is in clear (``inspect`` shows it), so naming keys reveals nothing; values are
    not named, as the expected ones are the caller's."""
    have, want = dict(stored), dict(expected)
    parts = [
        f"{', '.join(repr(k) for k in keys)} {label}"
        for label, keys in (
            ("differs", [k for k in want if k in have and have[k] != want[k]]),
            ("expected but absent", [k for k in want if k not in have]),
            ("present but not expected", [k for k in have if k not in want]),
        )
        if keys
    ]
    return f"the encryption context does not match: {'; '.join(parts)}"


def rewrapped_header(header: Header, wrapped: Sequence[tuple[WrappedKeyRecord, ...]]) -> bytes:
    """``header`` with each layer's wrapped keys replaced and everything else kept: the
    commitments still bind the data keys, so the body needs no change."""
    layers = tuple(
        layer._replace(wrapped_keys=records)
        for layer, records in zip(header.layers, wrapped, strict=True)
    )
    return encode_header(header._replace(layers=layers))


def sealed(header_bytes: bytes, cipher: FrameCipher, plaintext: memoryview) -> bytearray:
    """A new message: the header, then the body sealed in place after it."""
    size = body_size(len(plaintext), cipher.frame_size, cipher.layers)
    out = bytearray(len(header_bytes) + size)
    view = memoryview(out)
    view[: len(header_bytes)] = header_bytes
    cipher.seal_all(plaintext, view[len(header_bytes) :])
    return out


def opened(cipher: FrameCipher, body: memoryview) -> bytearray:
    """The whole plaintext of ``body``, or an exception and no plaintext at all."""
    out = bytearray(plaintext_size(len(body), cipher.frame_size, cipher.layers))
    open_body(cipher, body, memoryview(out))
    return out


def open_body(cipher: FrameCipher, body: memoryview, out: memoryview) -> None:
    """Open ``body`` into ``out`` (exactly its plaintext size); if any frame fails, ``out``
    is zeroed, so no unverified plaintext is left behind."""
    try:
        cipher.open_all(body, out)
    except DecryptionError:
        out[:] = bytes(len(out))
        raise
