"""Large messages on every core.

The frames of one message are cut into contiguous runs, and a pool of threads shared by the
process seals or opens the runs at once, each run with a cipher of its own
(``FrameCipher.clone``). ``cryptography`` releases the GIL inside every AEAD call, so the
runs proceed in parallel as long as each call is long: measured here, two threads sealing
64 MiB give 1.85x one thread with 1 MiB calls but 0.9x with 64 KiB calls, where handing the
GIL back and forth costs more than the call. Hence the two thresholds below: a run is at
least ``RUN_BYTES`` of plaintext, and a message is cut into runs only if its frames are at
least ``PARALLEL_FRAME_SIZE`` bytes (one-shot encryption in parallel writes such frames).

Every run is waited for before a call returns or raises: no thread is still writing into
the caller's buffer afterwards, and a decryption that fails in any run releases nothing.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from ._buffers import wipe
from ._engine import FrameCipher, frame_count
from ._errors import DecryptionError
from ._files import leave_signals_to_other_threads

__all__ = [
    "PARALLEL_FRAME_SIZE",
    "FrameBatches",
    "RUN_BYTES",
    "available_cpus",
    "check_workers",
    "frame_size_for",
    "open_body",
    "seal_body",
]

_T = TypeVar("_T")

#: The smallest frame worth sealing or opening on several threads (see the module docstring).
PARALLEL_FRAME_SIZE = 1024 * 1024
#: The least plaintext one thread is given: below it, a message stays on the caller's thread.
RUN_BYTES = 4 * 1024 * 1024
#: The most threads the shared pool starts, whatever an envelope asks for.
MAX_WORKERS = 64


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_workers(workers: int | None) -> int:
    """``workers`` as a number of threads: None means every CPU this process may use."""
    if workers is None:
        return available_cpus()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError("workers must be None (every CPU) or a positive integer")
    return min(workers, MAX_WORKERS)


def frame_size_for(frame_size: int, nbytes: int, workers: int) -> int:
    """The frame size of a message of ``nbytes`` known up front (one-shot, or a file) from
    an envelope configured with ``frame_size``: at least ``PARALLEL_FRAME_SIZE`` when the
    message will be sealed on several threads, so that each AEAD call is long enough."""
    if workers > 1 and nbytes >= 2 * RUN_BYTES:
        return max(frame_size, PARALLEL_FRAME_SIZE)
    return frame_size


def seal_body(cipher: FrameCipher, plaintext: memoryview, out: memoryview, workers: int) -> None:
    """Seal a whole plaintext into the whole body ``out``, on up to ``workers`` threads."""
    if workers == 1 or len(plaintext) < 2 * RUN_BYTES:  # small messages never pay for it
        cipher.seal_all(plaintext, out)
        return
    spans = _spans(frame_count(len(plaintext), cipher.frame_size), cipher.frame_size, workers)
    if len(spans) == 1:
        cipher.seal_all(plaintext, out)
        return
    _run(
        _ciphers(cipher, len(spans)),
        spans,
        lambda each, first, stop: each.seal_run(plaintext, out, first, stop),
    )


def open_body(cipher: FrameCipher, body: memoryview, out: memoryview, workers: int) -> None:
    """Open a whole body into ``out``, on up to ``workers`` threads. Raises the first
    failure once every run has ended; ``out`` may then hold unverified bytes (the caller
    wipes it)."""
    if workers == 1 or len(out) < 2 * RUN_BYTES:
        cipher.open_all(body, out)
        return
    spans = _spans(frame_count(len(out), cipher.frame_size), cipher.frame_size, workers)
    if len(spans) == 1:
        cipher.open_all(body, out)
        return
    _run(
        _ciphers(cipher, len(spans)),
        spans,
        lambda each, first, stop: each.open_run(body, out, first, stop),
    )


class FrameBatches:
    """Seals or opens a stream's frames a batch at a time: one frame per worker, each on a
    thread of its own, when the frames are large enough to be worth it (else one frame at a
    time on the caller's thread). Its ciphers are made once, for the whole stream."""

    def __init__(self, cipher: FrameCipher, workers: int) -> None:
        parallel = workers > 1 and cipher.frame_size >= PARALLEL_FRAME_SIZE
        self.frames = workers if parallel else 1
        self._ciphers = _ciphers(cipher, self.frames)

    def seal(self, plaintext: memoryview, out: memoryview, base: int, final: bool) -> None:
        """Seal the consecutive frames in ``plaintext`` (frame numbers from ``base``; the
        last one the message's final frame if ``final``) into ``out``."""
        if self.frames == 1:
            self._ciphers[0].seal_run(plaintext, out, 0, 2, base=base, final=final)
            return
        _run(
            self._ciphers,
            self._even(self._count(len(plaintext), final)),
            lambda each, first, stop: each.seal_run(
                plaintext, out, first, stop, base=base, final=final
            ),
        )

    def open(self, body: memoryview, out: memoryview, base: int, final: bool) -> int:
        """Open the consecutive sealed frames in ``body`` into ``out``; returns how many
        leading frames verified (all of them, unless one failed: then the frames from the
        first failure on must not be released)."""
        frame = self._ciphers[0].frame_size
        if self.frames == 1:
            try:
                self._ciphers[0].open_run(body, out, 0, 2, base=base, final=final)
            except DecryptionError:
                return 0
            return self._count(len(out), final)

        def opened(each: FrameCipher, first: int, stop: int) -> int:
            for index in range(first, stop):
                try:
                    each.open_run(body, out, index, index + 1, base=base, final=final)
                except DecryptionError:
                    return index
            return stop

        frames = self._count(len(out), final)
        spans = self._even(frames)
        for (_, stop), verified in zip(spans, _run(self._ciphers, spans, opened), strict=True):
            if verified < stop:
                wipe(out[verified * frame :])
                return verified
        return frames

    def _count(self, plaintext_length: int, final: bool) -> int:
        frame = self._ciphers[0].frame_size
        return plaintext_length // frame + 1 if final else plaintext_length // frame

    def _even(self, frames: int) -> list[tuple[int, int]]:
        return _even(frames, len(self._ciphers))


def _ciphers(cipher: FrameCipher, count: int) -> list[FrameCipher]:
    """``cipher`` and ``count - 1`` clones of it, one for each thread."""
    return [cipher] + [cipher.clone(cipher.frame_size) for _ in range(count - 1)]


def _spans(frames: int, frame_size: int, workers: int) -> list[tuple[int, int]]:
    """Runs of frames for a one-shot message: one per worker, each at least RUN_BYTES."""
    if workers == 1 or frame_size < PARALLEL_FRAME_SIZE:
        return [(0, frames)]
    return _even(frames, max(1, min(workers, frames * frame_size // RUN_BYTES, frames)))


def _even(frames: int, parts: int) -> list[tuple[int, int]]:
    """``frames`` cut into at most ``parts`` contiguous runs, as even as whole frames allow."""
    parts = max(1, min(parts, frames))
    base, extra = divmod(frames, parts)
    spans = []
    first = 0
    for run in range(parts):
        stop = first + base + (1 if run < extra else 0)
        spans.append((first, stop))
        first = stop
    return spans


def _run(
    ciphers: list[FrameCipher],
    spans: list[tuple[int, int]],
    work: Callable[[FrameCipher, int, int], _T],
) -> list[_T]:
    """The first span on this thread, the others on the pool, each with a cipher of its
    own; every one waited for. Returns each span's result, in order."""
    futures = [
        _pool().submit(work, cipher, *span)
        for cipher, span in zip(ciphers[1:], spans[1:], strict=False)
    ]
    results: list[_T] = []
    failure: BaseException | None = None
    try:
        results.append(work(ciphers[0], *spans[0]))
    except BaseException as exc:  # re-raised below, once every run has ended
        failure = exc
    finally:
        concurrent.futures.wait(futures)
    for future in futures:
        error = future.exception()
        if error is None:
            results.append(future.result())
        elif failure is None:
            failure = error
    if failure is not None:
        raise failure
    return results


_pool_lock = threading.Lock()
_shared_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _shared_pool  # noqa: PLW0603 - one pool per process, made on first use
    with _pool_lock:
        if _shared_pool is None:
            _shared_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=MAX_WORKERS,
                thread_name_prefix="envelope-worker",
                initializer=leave_signals_to_other_threads,
            )
        return _shared_pool


def _forget_pool_after_fork() -> None:
    # A forked child has none of its parent's threads (and its lock may have been held by
    # one of them): it makes a pool and a lock of its own.
    global _shared_pool, _pool_lock  # noqa: PLW0603
    _shared_pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)
