"""Streams: a message's body sealed or opened one frame at a time, in constant memory.

The loops know the frame layout (FORMAT.md section 4) and nothing of keys: they are handed
a :class:`~envelope._engine.FrameCipher` ready for the message. A decrypting loop releases
only frames whose every tag verified, and raises at the end if the final frame never came
or anything follows it.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import threading
from collections.abc import Iterator
from typing import Protocol

from . import _limits
from ._buffers import wipe
from ._engine import FrameCipher
from ._errors import DecryptionError, FormatError
from ._files import leave_signals_to_other_threads
from ._format import PREFIX_BYTES, header_length_from_prefix
from ._parallel import FrameBatches

__all__ = ["Readable", "Writable", "decrypt_frames", "encrypt_frames", "read_header_bytes"]


class Readable(Protocol):
    """A binary source: files, sockets' files, pipes, ``io.BytesIO``, raw streams. Short
    reads are fine; ``readinto`` is used when the object has it."""

    def read(self, size: int, /) -> bytes | None: ...


class Writable(Protocol):
    """A binary sink."""

    def write(self, data: bytes | memoryview, /) -> object: ...


def encrypt_frames(cipher: FrameCipher, src: Readable, dst: Writable, workers: int = 1) -> int:
    """Seal everything ``src`` yields into ``dst`` as frames; returns the bytes written.

    With ``workers`` above 1, ``dst`` is written on a thread of its own while the next
    frames are read and sealed, and frames of at least ``PARALLEL_FRAME_SIZE`` are sealed a
    batch at a time, one frame per worker.
    """
    size = cipher.frame_size
    batches = FrameBatches(cipher, workers)
    inbuf = memoryview(bytearray(size * batches.frames))
    written = 0
    index = 0
    with _sink(dst, (size + cipher.overhead) * batches.frames, workers) as sink:
        while True:
            got = read_into(src, inbuf)
            # A batch that is not full holds the final frame (empty when the input ended on
            # a frame boundary); a full one holds full frames only.
            final = got < len(inbuf)
            frames = got // size + 1 if final else got // size
            # The final frame may be frame MAX_FRAMES - 1; a frame before it may not.
            if index + frames > _limits.MAX_FRAMES - (0 if final else 1):
                raise ValueError(
                    f"the input needs more than {_limits.MAX_FRAMES} frames of {size} bytes; "
                    "use a larger frame_size"
                )
            sealed = sink.buffer()[: got + frames * cipher.overhead]
            batches.seal(inbuf[:got], sealed, index, final)
            sink.emit(sealed)
            written += len(sealed)
            if final:
                return written
            index += frames


def decrypt_frames(cipher: FrameCipher, src: Readable, dst: Writable, workers: int = 1) -> int:
    """Open the frames ``src`` yields into ``dst``; returns the plaintext bytes written.

    ``dst.write`` receives a view of a buffer that is reused for later frames (and wiped if
    a frame fails), as ``io`` allows: a sink copies what it keeps. Only verified frames
    reach it, in order, and all of them before an error is raised. With ``workers`` above 1,
    ``dst`` is written on a thread of its own, and large frames are opened a batch at a
    time, one frame per worker.
    """
    size = cipher.frame_size
    sealed_size = size + cipher.overhead
    batches = FrameBatches(cipher, workers)
    whole = sealed_size * batches.frames
    # Read one byte past a batch of full frames: a full frame is never the final one, and
    # full frames followed by nothing mean the final frame was cut off.
    inbuf = memoryview(bytearray(whole + 1))
    written = 0
    index = 0
    with _sink(dst, size * batches.frames, workers) as sink:
        got = read_into(src, inbuf)
        while True:
            final = got <= whole
            full, rest = divmod(min(got, whole), sealed_size)
            ends_well = final and rest >= cipher.overhead
            frames = full + 1 if ends_well else full
            body = inbuf[: full * sealed_size + (rest if ends_well else 0)]
            too_many = index + frames > _limits.MAX_FRAMES - (0 if ends_well else 1)
            if too_many or (final and not ends_well and full == 0):
                raise DecryptionError()
            plain = sink.buffer()[: len(body) - frames * cipher.overhead]
            verified = batches.open(body, plain, index, ends_well)
            if verified:
                sink.emit(plain[: min(verified * size, len(plain))])
                written += min(verified * size, len(plain))
            if verified < frames or (final and not ends_well):
                raise DecryptionError()
            if final:
                return written
            inbuf[0] = inbuf[whole]
            got = 1 + read_into(src, inbuf[1:])
            index += frames


class _DirectSink:
    """Writes each frame on the caller's thread, from one reused buffer."""

    def __init__(self, dst: Writable, size: int) -> None:
        self._dst = dst
        self._buffer = memoryview(bytearray(size))

    def buffer(self) -> memoryview:
        return self._buffer

    def emit(self, frame: memoryview) -> None:
        self._dst.write(frame)

    def close(self, failed: bool) -> None:
        """Nothing to wait for; a failed frame was wiped where it failed."""


class _ThreadedSink:
    """Writes frames on a thread of its own, in order, while the caller prepares the next
    ones in other buffers: at most ``_DEPTH`` frames wait, so memory stays bounded."""

    _DEPTH = 4

    def __init__(self, dst: Writable, size: int) -> None:
        self._dst = dst
        self._buffers = [memoryview(bytearray(size)) for _ in range(self._DEPTH)]
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for buffer in self._buffers:
            self._free.put(buffer)
        self._pending: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name="envelope-writer", daemon=True)
        self._thread.start()

    def buffer(self) -> memoryview:
        """A buffer for the next frame, once the writer has finished with it."""
        buffer = self._free.get()
        if self._failure is not None:
            raise self._failure
        return buffer

    def emit(self, frame: memoryview) -> None:
        self._pending.put(frame)

    def close(self, failed: bool) -> None:
        """Wait until every emitted frame is written (or the writer failed). After a failure
        the buffers are wiped: a sink may still hold views of them."""
        self._pending.put(None)
        self._thread.join()
        if failed:
            for buffer in self._buffers:
                wipe(buffer)
        elif self._failure is not None:
            raise self._failure

    def _write(self) -> None:
        leave_signals_to_other_threads()
        while (frame := self._pending.get()) is not None:
            if self._failure is None:
                try:
                    self._dst.write(frame)
                except BaseException as exc:  # handed to the caller's thread
                    self._failure = exc
            self._free.put(self._owner(frame))

    def _owner(self, frame: memoryview) -> memoryview:
        """The buffer ``frame`` was cut from."""
        for buffer in self._buffers:
            if frame.obj is buffer.obj:
                return buffer
        raise AssertionError("a frame not cut from this sink's buffers")


@contextlib.contextmanager
def _sink(dst: Writable, size: int, workers: int) -> Iterator[_DirectSink | _ThreadedSink]:
    sink = _DirectSink(dst, size) if workers == 1 else _ThreadedSink(dst, size)
    try:
        yield sink
    except BaseException:
        sink.close(failed=True)
        raise
    sink.close(failed=False)


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
