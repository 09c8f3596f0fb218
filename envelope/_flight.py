"""Single flight across threads and event loops: while one caller does a piece of work (a
cache fill, a key-bundle fetch), the others that need it wait for it instead of doing it too.

A :class:`Flight` is the one piece of work in progress. Sync callers wait on it in their
thread; asyncio tasks await it on their own event loop, whichever loop or thread started it,
so a thread and a task that miss the same entry at once share one fill. When the work ends
(:meth:`Flight.land`, always, in a ``finally``) every waiter wakes up; what the work produced
is for the owner of the flight to hand over (a cache looks again, a key reads
:attr:`Flight.outcome`).

A caller never waits where waiting could not end: a sync caller whose own thread runs the
work (a task of the event loop that this sync call is blocking, or a caller up its own stack)
and an asyncio task whose flight belongs to another loop of the same thread get ``False``
from the wait at once and do the work themselves, unshared.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

__all__ = ["Flight", "running_loop", "wake"]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """Resolve ``future``, awaited on ``loop``, from any thread."""
    # A loop closed since its task began to wait has nobody left to wake.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # a waiter that was cancelled has stopped listening
        future.set_result(None)


class Flight:
    """One piece of work in progress, and the callers waiting for it to end."""

    __slots__ = ("_done", "_lock", "_loop", "_thread", "_waiters", "outcome")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._thread = threading.get_ident()
        self._loop = running_loop()
        #: What the work produced, set by its owner before :meth:`land` when the waiters
        #: take the result from the flight rather than from a cache.
        self.outcome: Any = None

    def land(self) -> None:
        """End the flight and wake every waiter, in any thread or event loop."""
        with self._lock:
            self._done.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            wake(loop, future)

    def wait(self) -> bool:
        """Block until the flight lands: True. False at once when this thread runs the work
        itself, so that waiting would never end."""
        if self._thread == threading.get_ident() and not self._done.is_set():
            return False
        self._done.wait()
        return True

    async def wait_async(self) -> bool:
        """Await the flight's end: True. False at once when the work runs in this thread
        outside this event loop (another loop of the thread, or a sync caller), where it
        cannot progress while this task waits. A cancelled waiter leaves the others be."""
        loop = asyncio.get_running_loop()
        if self._thread == threading.get_ident() and self._loop is not loop:
            return self._done.is_set()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._done.is_set():
                return True
            self._waiters.append((loop, future))
        await future
        return True
