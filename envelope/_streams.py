"""Streams: a message's body sealed or opened one frame at a time, in constant memory.

The loops know the frame layout (FORMAT.md section 4) and nothing of keys: they are handed
a :class:`~envelope._engine.FrameCipher` ready for the message. A decrypting loop releases
only frames whose every tag verified, and raises at the end if the final frame never came
or anything follows it.
"""

from __future__ import annotations

import errno
from typing import Protocol

from . import _limits
from ._engine import FrameCipher
from ._errors import DecryptionError, FormatError
from ._format import PREFIX_BYTES, header_length_from_prefix

__all__ = ["Readable", "Writable", "decrypt_frames", "encrypt_frames", "read_header_bytes"]


class Readable(Protocol):
    """A binary source: files, sockets' files, pipes, ``io.BytesIO``, raw streams. Short
    reads are fine; ``readinto`` is used when the object has it."""

    def read(self, size: int, /) -> bytes | None: ...


class Writable(Protocol):
    """A binary sink."""

    def write(self, data: bytes | memoryview, /) -> object: ...


def encrypt_frames(cipher: FrameCipher, src: Readable, dst: Writable) -> int:
    """Seal everything ``src`` yields into ``dst`` as frames; returns the bytes written."""
    size = cipher.frame_size
    inbuf = memoryview(bytearray(size))
    outbuf = memoryview(bytearray(size + cipher.overhead))
    written = 0
    index = 0
    while True:
        got = read_into(src, inbuf)
        final = got < size
        if not final and index >= _limits.MAX_FRAMES - 1:
            raise ValueError(
                f"the input needs more than {_limits.MAX_FRAMES} frames of {size} bytes; "
                "use a larger frame_size"
            )
        sealed = outbuf[: got + cipher.overhead]
        cipher.seal_frame(index, final, inbuf[:got], sealed)
        dst.write(sealed)
        written += len(sealed)
        if final:
            return written
        index += 1


def decrypt_frames(cipher: FrameCipher, src: Readable, dst: Writable) -> int:
    """Open the frames ``src`` yields into ``dst``; returns the plaintext bytes written.

    ``dst.write`` receives a view of a buffer that is reused for the next frame (and wiped
    if that frame fails), as ``io`` allows: a sink copies what it keeps.
    """
    size = cipher.frame_size
    sealed_size = size + cipher.overhead
    inbuf = memoryview(bytearray(sealed_size + 1))
    outbuf = memoryview(bytearray(size))
    written = 0
    index = 0
    # Read one byte past a full frame: a full frame is never the final one, and a full
    # frame followed by nothing means the final frame was cut off.
    got = read_into(src, inbuf)
    while got >= sealed_size:
        if index >= _limits.MAX_FRAMES - 1:
            raise DecryptionError()
        cipher.open_frame(index, False, inbuf[:sealed_size], outbuf)
        dst.write(outbuf)
        written += size
        if got == sealed_size:
            raise DecryptionError()
        inbuf[0] = inbuf[sealed_size]
        got = 1 + read_into(src, inbuf[1:])
        index += 1
    if got < cipher.overhead:
        raise DecryptionError()
    plain = outbuf[: got - cipher.overhead]
    cipher.open_frame(index, True, inbuf[:got], plain)
    dst.write(plain)
    return written + len(plain)


def read_header_bytes(src: Readable) -> memoryview:
    """Read exactly one header from a stream, its length checked before it is read."""
    raw = bytearray(PREFIX_BYTES)
    if read_into(src, memoryview(raw)) < PREFIX_BYTES:
        raise FormatError("input is shorter than an envelope header")
    header_length = header_length_from_prefix(raw)
    raw.extend(bytes(header_length - PREFIX_BYTES))
    view = memoryview(raw)
    if read_into(src, view[PREFIX_BYTES:]) < header_length - PREFIX_BYTES:
        raise FormatError("input is shorter than its header")
    return view


def read_into(src: Readable, buf: memoryview) -> int:
    """Fill ``buf`` from ``src``; returns how much was read (less only at end of input)."""
    filled = 0
    total = len(buf)
    readinto = getattr(src, "readinto", None)
    while filled < total:
        if readinto is not None:
            got = readinto(buf[filled:])
        else:
            chunk = src.read(total - filled)
            got = None if chunk is None else len(chunk)
            if chunk:
                buf[filled : filled + len(chunk)] = chunk
        if got is None:
            # A non-blocking source with nothing ready: that is not the end of the input,
            # and taking it for one would seal a truncated plaintext as a complete message.
            raise BlockingIOError(
                errno.EAGAIN,
                "the source has no data ready; envelope streams need a blocking source",
            )
        if not got:
            break
        filled += got
    return filled
