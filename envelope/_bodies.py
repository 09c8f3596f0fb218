"""A message's body in pieces: sealed frame by frame into buffers a store uploads as they
fill, and opened by frame index from whatever range of the stored body a store fetched.

Storage that holds a message as a header and a body it can read in ranges
(``envelope.blob``) needs no more than this: which body bytes hold which frames (FORMAT.md
section 4 fixes them from the frame size and the body's length alone), and opening frames
``i..j`` with the index and the final-frame flag each was sealed with. The final flag is what
proves where the message ends, so a range that reaches the end of the plaintext always
includes the final frame (an empty one, if the plaintext ends on a frame boundary), and the
last frame of the stored body is always opened as the final one: a body cut short, at a
frame boundary or not, leaves a frame in that place whose tags were made for another flag.
"""

from __future__ import annotations

from . import _limits
from ._buffers import wipe
from ._engine import FrameCipher, frame_count, plaintext_size
from ._errors import DecryptionError

__all__ = ["BodyWriter", "StoredBody"]


class StoredBody:
    """The body of a stored message whose header was read and whose keys were unwrapped.

    ``body_length`` is what the store says the body holds (everything after the header); a
    length no writer could have produced is a :class:`DecryptionError` here, before any
    frame is fetched.
    """

    __slots__ = ("_cipher", "body_length", "frame_count", "plaintext_length", "sealed_frame")

    def __init__(self, cipher: FrameCipher, body_length: int) -> None:
        self._cipher = cipher
        self.body_length = body_length
        self.plaintext_length = plaintext_size(body_length, cipher.frame_size, cipher.layers)
        self.frame_count = frame_count(self.plaintext_length, cipher.frame_size)
        self.sealed_frame = cipher.frame_size + cipher.overhead

    @property
    def frame_size(self) -> int:
        return self._cipher.frame_size

    def frames(self, offset: int, length: int) -> range:
        """The frames that hold plaintext bytes ``[offset, offset + length)``, which must lie
        within the plaintext. When the range reaches the end of the plaintext, the final
        frame is included, whatever it holds: its flag is the proof that nothing was cut."""
        end = offset + length
        if offset < 0 or length < 0 or end > self.plaintext_length:
            raise ValueError(
                f"the range [{offset}, {end}) is not within the {self.plaintext_length} "
                "plaintext bytes"
            )
        first = offset // self.frame_size
        if end == self.plaintext_length:
            return range(min(first, self.frame_count - 1), self.frame_count)
        return range(first, (end - 1) // self.frame_size + 1 if length else first)

    def body_span(self, frames: range) -> tuple[int, int]:
        """The body bytes ``[start, stop)`` that hold ``frames``."""
        if not frames:
            return 0, 0
        stop = min(frames.stop * self.sealed_frame, self.body_length)
        return frames.start * self.sealed_frame, stop

    def plaintext_span(self, frames: range) -> tuple[int, int]:
        """The plaintext bytes ``[start, stop)`` that ``frames`` hold."""
        if not frames:
            return 0, 0
        stop = min(frames.stop * self.frame_size, self.plaintext_length)
        return frames.start * self.frame_size, stop

    def open(self, frames: range, sealed: memoryview, out: memoryview) -> None:
        """Open ``frames`` from ``sealed`` (exactly their body bytes, in order) into ``out``
        (exactly their plaintext bytes). The message's last frame is opened as the final
        one. If any tag fails, ``out`` is zeroed and :class:`DecryptionError` raised."""
        start, stop = self.body_span(frames)
        plain_start, plain_stop = self.plaintext_span(frames)
        if len(sealed) != stop - start:
            # The store returned another amount than the blob's length promised.
            raise DecryptionError()
        if len(out) != plain_stop - plain_start:
            raise ValueError(
                f"out holds {len(out)} bytes; these frames hold {plain_stop - plain_start}"
            )
        final = frames.stop == self.frame_count
        try:
            self._cipher.open_run(sealed, out, 0, len(frames), base=frames.start, final=final)
        except DecryptionError:
            wipe(out)
            raise


class BodyWriter:
    """Seals the body of a new message frame by frame, in order, into the caller's buffers.

    Every call but the last takes whole frames; the last call (``final=True``) takes what
    is left, possibly nothing, and ends with the final frame.
    """

    __slots__ = ("_cipher", "_finished", "_index")

    def __init__(self, cipher: FrameCipher) -> None:
        self._cipher = cipher
        self._index = 0
        self._finished = False

    @property
    def frame_size(self) -> int:
        return self._cipher.frame_size

    @property
    def sealed_frame(self) -> int:
        return self._cipher.frame_size + self._cipher.overhead

    def sealed_size(self, plaintext_length: int, *, final: bool) -> int:
        """The bytes :meth:`seal` writes for ``plaintext_length`` bytes."""
        frames = -(-plaintext_length // self.frame_size)
        if final:
            frames = plaintext_length // self.frame_size + 1
        return plaintext_length + frames * self._cipher.overhead

    def seal(self, plaintext: memoryview, out: memoryview, *, final: bool) -> int:
        """Seal ``plaintext`` as the next frames into ``out``; returns the bytes written."""
        if self._finished:
            raise ValueError("the final frame was sealed already")
        step = self.frame_size
        full, rest = divmod(len(plaintext), step)
        if rest and not final:
            raise ValueError(f"only the final call may hold a partial frame of {rest} bytes")
        frames = full + 1 if final else full
        if self._index + frames > _limits.MAX_FRAMES:
            raise ValueError(
                f"the input needs more than {_limits.MAX_FRAMES} frames of {step} bytes; "
                "use a larger frame_size"
            )
        written = self.sealed_size(len(plaintext), final=final)
        self._cipher.seal_run(plaintext, out[:written], 0, frames, base=self._index, final=final)
        self._index += frames
        self._finished = final
        return written
