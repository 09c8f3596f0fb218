"""A message in one piece, header ‖ body: the header of a new message and the cipher for its
body, a header read back and checked against the expected context, a rewrapped header, and
a whole body sealed or opened in memory.

This is where the format meets the engine; keys reach it only as bytes (data keys in,
message keys out), never as KEKs.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from ._buffers import fresh_output, wipe
from ._datakeys import DataKey
from ._engine import (
    FrameCipher,
    body_size,
    derive_layer_key,
    header_digest,
    kdf_info,
    plaintext_size,
    suite_available,
)
from ._errors import DecryptionError
from ._format import (
    SALT_BYTES,
    Aead,
    Context,
    Header,
    HeaderWriter,
    Suite,
    WrappedKeyRecord,
    encode_header,
    read_header,
)
from ._parallel import open_body, seal_body

__all__ = [
    "SUITE",
    "MessageWriter",
    "body_cipher",
    "context_mismatch",
    "open_verified",
    "opened",
    "parse_header",
    "rewrapped_header",
    "sealed",
]

#: The suite new messages use (FORMAT.md section 5: suite 2 derives keys at a quarter of
#: suite 1's cost; readers accept both).
SUITE = Suite.BLAKE2B


class MessageWriter:
    """Begins the new messages of one envelope. What they all share is prepared once: each
    layer's HKDF info and AEAD, the frame size and the header's fixed fields."""

    __slots__ = ("_frame_size", "_header", "_layers", "_suite")

    def __init__(
        self, algorithms: Sequence[Aead], frame_size: int, suite: Suite | None = None
    ) -> None:
        # SUITE is read here, not bound as a default, so a test can write either suite. A
        # Python that cannot compute suite 2 (a FIPS build) writes suite 1.
        if suite is None:
            suite = SUITE if suite_available(SUITE) else Suite.HKDF_SHA256
        self._suite = suite
        self._frame_size = frame_size
        self._header = HeaderWriter(suite, frame_size, algorithms)
        self._layers = tuple(
            (kdf_info(suite, index, algorithm), algorithm)
            for index, algorithm in enumerate(algorithms)
        )

    def begin(
        self,
        context: Context,
        data_keys: Sequence[DataKey],
        largest_frame: int,
        salt: bytes | None = None,
    ) -> tuple[bytes, FrameCipher]:
        """The header of a new message and the cipher for its body. ``largest_frame`` is a
        one-shot message's plaintext length, a stream's frame size; ``salt`` is fresh
        unless a test vector fixes it."""
        salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
        keys = []
        commitments = []
        for (info, algorithm), data_key in zip(self._layers, data_keys, strict=True):
            message_key, commitment = derive_layer_key(self._suite, data_key.key, info, salt)
            keys.append((algorithm, message_key))
            commitments.append(commitment)
        header, authenticated = self._header.write(
            salt, context, commitments, [data_key.encoded for data_key in data_keys]
        )
        digest = header_digest(authenticated)
        return header, FrameCipher(keys, digest, self._frame_size, largest_frame=largest_frame)


def body_cipher(
    header: Header, authenticated: bytes, message_keys: Sequence[bytes], largest_frame: int
) -> FrameCipher:
    """The cipher for the body under ``header``, whose authenticated bytes (section 4) are
    ``authenticated``. ``largest_frame`` sizes its scratch buffers: a one-shot message's
    plaintext or body length, a stream's frame size."""
    keys = [(layer.algorithm, key) for layer, key in zip(header.layers, message_keys, strict=True)]
    digest = header_digest(authenticated)
    return FrameCipher(keys, digest, header.frame_size, largest_frame=largest_frame)


def parse_header(view: memoryview, expected: Context) -> tuple[Header, int, bytes]:
    """Parse the header at the start of ``view`` and check that it carries the ``expected``
    context; returns the header, its length and its authenticated bytes."""
    header, header_length, authenticated = read_header(view)
    if header.context != expected:
        raise DecryptionError(context_mismatch(header.context, expected))
    return header, header_length, authenticated


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


def sealed(
    header_bytes: bytes, cipher: FrameCipher, plaintext: memoryview, workers: int = 1
) -> bytearray:
    """A new message: the header, then the body sealed in place after it."""
    size = body_size(len(plaintext), cipher.frame_size, cipher.layers)
    out = fresh_output(len(header_bytes) + size)  # written whole below
    view = memoryview(out)
    view[: len(header_bytes)] = header_bytes
    seal_body(cipher, plaintext, view[len(header_bytes) :], workers)
    return out


def opened(cipher: FrameCipher, body: memoryview, workers: int = 1) -> bytearray:
    """The whole plaintext of ``body``, or an exception and no plaintext at all."""
    out = fresh_output(plaintext_size(len(body), cipher.frame_size, cipher.layers))
    open_verified(cipher, body, memoryview(out), workers)
    return out


def open_verified(cipher: FrameCipher, body: memoryview, out: memoryview, workers: int) -> None:
    """Open ``body`` into ``out`` (exactly its plaintext size); if any frame fails, ``out``
    is zeroed, so no unverified plaintext is left behind."""
    try:
        open_body(cipher, body, out, workers)
    except DecryptionError:
        wipe(out)
        raise
