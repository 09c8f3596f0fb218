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

from ._engine import FrameCipher, frame_count

__all__ = [
    "PARALLEL_FRAME_SIZE",
    "RUN_BYTES",
    "available_cpus",
    "check_workers",
    "one_shot_frame_size",
    "open_body",
    "seal_body",
]

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


def one_shot_frame_size(frame_size: int, nbytes: int, workers: int) -> int:
    """The frame size of a one-shot message of ``nbytes`` from an envelope configured with
    ``frame_size``: at least ``PARALLEL_FRAME_SIZE`` when the message will be sealed on
    several threads, so that each AEAD call is long enough for it."""
    if workers > 1 and nbytes >= 2 * RUN_BYTES:
        return max(frame_size, PARALLEL_FRAME_SIZE)
    return frame_size


def seal_body(cipher: FrameCipher, plaintext: memoryview, out: memoryview, workers: int) -> None:
    """Seal a whole plaintext into the whole body ``out``, on up to ``workers`` threads."""
    spans = _spans(frame_count(len(plaintext), cipher.frame_size), cipher.frame_size, workers)
    if len(spans) == 1:
        cipher.seal_all(plaintext, out)
        return
    _run(cipher, spans, lambda each, first, stop: each.seal_run(plaintext, out, first, stop))


def open_body(cipher: FrameCipher, body: memoryview, out: memoryview, workers: int) -> None:
    """Open a whole body into ``out``, on up to ``workers`` threads. Raises the first
    failure once every run has ended; ``out`` may then hold unverified bytes (the caller
    wipes it)."""
    spans = _spans(frame_count(len(out), cipher.frame_size), cipher.frame_size, workers)
    if len(spans) == 1:
        cipher.open_all(body, out)
        return
    _run(cipher, spans, lambda each, first, stop: each.open_run(body, out, first, stop))


def _spans(frames: int, frame_size: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous runs of frames, as even as whole frames allow."""
    if workers == 1 or frame_size < PARALLEL_FRAME_SIZE:
        return [(0, frames)]
    count = max(1, min(workers, frames * frame_size // RUN_BYTES, frames))
    base, extra = divmod(frames, count)
    spans = []
    first = 0
    for run in range(count):
        stop = first + base + (1 if run < extra else 0)
        spans.append((first, stop))
        first = stop
    return spans


def _run(
    cipher: FrameCipher,
    spans: list[tuple[int, int]],
    work: Callable[[FrameCipher, int, int], None],
) -> None:
    """The first span on this thread, the others on the pool; every one waited for."""
    largest = cipher.frame_size
    futures = [_pool().submit(work, cipher.clone(largest), *span) for span in spans[1:]]
    failure: BaseException | None = None
    try:
        work(cipher, *spans[0])
    except BaseException as exc:  # re-raised below, once every run has ended
        failure = exc
    finally:
        concurrent.futures.wait(futures)
    for future in futures:
        error = future.exception()
        if failure is None and error is not None:
            failure = error
    if failure is not None:
        raise failure


_pool_lock = threading.Lock()
_shared_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _shared_pool  # noqa: PLW0603 - one pool per process, made on first use
    with _pool_lock:
        if _shared_pool is None:
            _shared_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=MAX_WORKERS, thread_name_prefix="envelope-worker"
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
