"""``inspect``: what a message's header says, read without any key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ._buffers import Buffer, contiguous
from ._engine import plaintext_size
from ._errors import DecryptionError
from ._format import Header, decode_header
from ._streams import Readable, read_header_bytes

__all__ = ["LayerInfo", "MessageInfo", "header_info", "inspect"]


@dataclass(frozen=True)
class LayerInfo:
    """What a header says about one layer (unauthenticated until decrypted)."""

    algorithm: str
    key_ids: tuple[str, ...]
    wrap_algorithms: tuple[str, ...]


@dataclass(frozen=True)
class MessageInfo:
    """What a header says, read without any key. Nothing here is authenticated until the
    message is decrypted: treat it as the sender's claim."""

    version: int
    suite: int
    frame_size: int
    context: Mapping[str, str]
    layers: tuple[LayerInfo, ...]
    header_length: int
    plaintext_length: int | None


def inspect(message: Buffer | Readable | str | os.PathLike[str]) -> MessageInfo:
    """Read a message's header without keys. ``message`` is the message's bytes, the path
    of a file holding it (``str`` or path-like), or a binary file positioned at its start.
    Only the header is read from a file.

    ``plaintext_length`` is known for bytes and paths whose body length is consistent with
    the header, else None (always None for an open file: its end is not looked for).
    """
    if isinstance(message, (str, os.PathLike)):
        with open(message, "rb") as source:
            header, header_length = decode_header(read_header_bytes(source))
            size = os.fstat(source.fileno()).st_size
        return _info(header, header_length, size - header_length)
    if isinstance(message, (bytes, bytearray, memoryview)):
        view = contiguous(message)
        header, header_length = decode_header(view)
        return _info(header, header_length, len(view) - header_length)
    header, header_length = decode_header(read_header_bytes(message))
    return _info(header, header_length, None)


def header_info(header: Buffer, message_length: int) -> MessageInfo:
    """What a stored message's header says, from its first bytes (at least the header) and
    the whole message's length (for ``plaintext_length``)."""
    parsed, header_length = decode_header(contiguous(header))
    return _info(parsed, header_length, message_length - header_length)


def _info(header: Header, header_length: int, body_length: int | None) -> MessageInfo:
    plaintext_length: int | None = None
    if body_length is not None:
        try:
            plaintext_length = plaintext_size(body_length, header.frame_size, len(header.layers))
        except DecryptionError:
            plaintext_length = None
    return MessageInfo(
        version=header.version,
        suite=int(header.suite),
        frame_size=header.frame_size,
        context=MappingProxyType(dict(header.context)),
        layers=tuple(
            LayerInfo(
                algorithm=layer.algorithm.label,
                key_ids=tuple(r.key_id for r in layer.wrapped_keys),
                wrap_algorithms=tuple(r.algorithm.label for r in layer.wrapped_keys),
            )
            for layer in header.layers
        ),
        header_length=header_length,
        plaintext_length=plaintext_length,
    )
