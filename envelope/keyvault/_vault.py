"""What this process knows of each Key Vault it talks to: how many requests are in flight to
it, who waits for a turn, and whether it is down.

Every :class:`~envelope.keyvault.KeyVaultKey` of one vault (the same host and port) shares
one :class:`Vault`, held as long as one of them is alive.

**Turns.** A request to the vault is sent only in a turn: at most ``limit`` requests (the
asking key's connection pool size) are in flight to the vault at once, from every key, thread
and event loop of the process together. The others queue, first come first served, for as
long as it takes: waiting for a turn is not the vault's fault, so it never times out and is
never reported as the vault not answering. A key's own pool therefore never makes a request
wait for a connection. One exception: a sync call made inside a running event loop is not
queued, since the turns it would wait for may belong to tasks of the very loop it blocks.

**Down.** A circuit breaker. A turn whose request failed for want of the vault (no
connection, a dropped one, a timeout, throttling or a 5xx reply after the SDK's retries)
marks the vault down for ``down_time`` seconds: from then on, a request for a turn fails at
once with a :class:`~envelope.KeyAccessError` that carries the code of the failure (so an
envelope tries the layer's next KEK at once), and the callers queued for a turn are told so
at once. Once the down time is over, the next caller is let through as a *probe* (a single
attempt, no retries) while the others still fail at once: a probe the vault answers, with
anything but throttling or a 5xx, marks it up again; a probe that fails marks it down for
twice as long, up to ``max_down_time``. Any answer from the vault in the meantime marks it
up as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from .._errors import DecryptionError, KeyAccessError
from .._flight import running_loop, wake
from ._errors import vault_outage

__all__ = ["Caller", "Turn", "Vault", "reset_vaults", "vault_of"]


@dataclass(frozen=True)
class Caller:
    """A key asking for turns: its id (for messages), the most requests it lets be in flight
    to the vault (its pool size), and how long a failure of its marks the vault down (the
    first time, and at most; a ``down_time`` of 0 turns the breaker off for its requests)."""

    key_id: str
    limit: int
    down_time: float
    max_down_time: float


@dataclass
class Turn:
    """A request's place at the vault: whether it is a probe (send one attempt only), and
    whether it holds a slot."""

    probe: bool = False
    holding: bool = False


class _Waiter:
    """A caller queued for a turn: a thread blocked on an event, or a task on a future."""

    __slots__ = ("caller", "event", "future", "loop", "operation", "turn", "verdict")

    def __init__(self, caller: Caller, operation: str, turn: Turn) -> None:
        self.caller = caller
        self.operation = operation
        self.turn = turn
        # "granted" (a slot is held for it), or the error to raise when the vault went down
        # while it waited (made then: the vault may be up again by the time it wakes)
        self.verdict: str | KeyAccessError | None = None
        self.loop = running_loop()
        self.event: threading.Event | None = None
        self.future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
        elif self.future is not None and self.loop is not None:
            wake(self.loop, self.future)


class Vault:
    """The turns and the breaker of one vault (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._in_flight = 0
        self._queue: deque[_Waiter] = deque()
        # The breaker: down until this monotonic time (None when up), for how long, why.
        self._down_until: float | None = None
        self._down_for = 0.0
        self._cause: KeyAccessError | None = None
        self._probing = False

    # -- what a key uses ----------------------------------------------------------------

    @contextlib.contextmanager
    def turn(self, caller: Caller, operation: str) -> Iterator[Turn]:
        """Wait for a turn (or fail at once if the vault is down), hold it for the block,
        and learn from how the block ended whether the vault answered."""
        turn = Turn()
        waiter = self._enter(caller, turn, operation, queue=running_loop() is None)
        if waiter is not None:
            waiter.event = threading.Event()
            if not self._still_queued(waiter):
                waiter.event.set()
            try:
                waiter.event.wait()
            except BaseException:
                self._leave_queue(waiter)
                raise
            self._check_verdict(waiter)
        with self._held(turn, caller):
            yield turn

    @contextlib.asynccontextmanager
    async def turn_async(self, caller: Caller, operation: str) -> AsyncIterator[Turn]:
        """The asyncio twin of :meth:`turn`: a queued task awaits, its loop runs on."""
        turn = Turn()
        waiter = self._enter(caller, turn, operation, queue=True)
        if waiter is not None:
            loop = asyncio.get_running_loop()
            waiter.future = loop.create_future()
            if not self._still_queued(waiter):
                waiter.future.set_result(None)
            try:
                await waiter.future
            except BaseException:  # cancelled while queued, or after its turn came
                self._leave_queue(waiter)
                raise
            self._check_verdict(waiter)
        with self._held(turn, caller):
            yield turn

    def is_down(self) -> bool:
        with self._lock:
            return self._down_until is not None

    def reset(self) -> None:
        """Forget that the vault was down (turns in progress are unaffected)."""
        with self._lock:
            self._mark_up()

    # -- internals ------------------------------------------------------------------------

    def _enter(self, caller: Caller, turn: Turn, operation: str, *, queue: bool) -> _Waiter | None:
        """Take a slot now (None), or join the queue (the waiter); raise if the vault is
        down. ``queue=False``: take a slot even over the limit rather than wait."""
        with self._lock:
            if caller.down_time > 0 and self._down_until is not None:
                if self._probing or time.monotonic() < self._down_until:
                    raise self._down_error(caller, operation)
                self._probing = turn.probe = True
            if not queue or (not self._queue and self._in_flight < caller.limit):
                self._in_flight += 1
                turn.holding = True
                return None
            waiter = _Waiter(caller, operation, turn)
            self._queue.append(waiter)
            return waiter

    def _still_queued(self, waiter: _Waiter) -> bool:
        """Whether ``waiter`` must still wait; its event or future is now set up, so a
        verdict reached after this is delivered to it."""
        with self._lock:
            return waiter.verdict is None

    @staticmethod
    def _check_verdict(waiter: _Waiter) -> None:
        if isinstance(waiter.verdict, KeyAccessError):
            raise waiter.verdict

    def _leave_queue(self, waiter: _Waiter) -> None:
        """A waiter that will not use its turn: out of the queue, or its slot given back."""
        with self._lock:
            if waiter.verdict is None:
                self._queue.remove(waiter)
                if waiter.turn.probe:
                    self._probing = False
            elif waiter.verdict == "granted":
                self._finish(waiter.turn, None, None)

    @contextlib.contextmanager
    def _held(self, turn: Turn, caller: Caller) -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            # A request the vault answered, even with a refusal, shows that it is up.
            outcome: KeyAccessError | bool | None = None
            if isinstance(exc, KeyAccessError):
                outcome = exc if vault_outage(exc) else True
            elif isinstance(exc, DecryptionError):  # the vault could not unwrap the value
                outcome = True
            with self._lock:
                self._finish(turn, outcome, caller)
            raise
        with self._lock:
            self._finish(turn, True, caller)

    def _finish(
        self, turn: Turn, outcome: KeyAccessError | bool | None, caller: Caller | None
    ) -> None:
        """Under the lock: give the slot back and learn from ``outcome``: True, the vault
        answered; an exception, it failed for want of the vault; None, nothing learnt (a
        cancelled call, or an error of ours)."""
        if turn.holding:
            turn.holding = False
            self._in_flight -= 1
        if turn.probe:
            self._probing = turn.probe = False
        if outcome is True:
            self._mark_up()
        elif isinstance(outcome, KeyAccessError) and caller is not None and caller.down_time > 0:
            self._mark_down(outcome, caller)
        self._grant()

    def _mark_up(self) -> None:
        self._down_until = None
        self._down_for = 0.0
        self._cause = None

    def _mark_down(self, cause: KeyAccessError, caller: Caller) -> None:
        now = time.monotonic()
        if self._down_until is None:
            self._down_for = min(caller.down_time, caller.max_down_time)
        elif now >= self._down_until:
            # A failed probe: the vault stays down, for twice as long.
            self._down_for = min(self._down_for * 2, caller.max_down_time)
        self._down_until = max(self._down_until or 0.0, now + self._down_for)
        self._cause = cause
        # Nobody queued may send now: tell them at once rather than when a slot frees
        # (except the callers whose breaker is off, who wait on).
        waiting, self._queue = self._queue, deque()
        for waiter in waiting:
            if waiter.caller.down_time == 0:
                self._queue.append(waiter)
                continue
            if waiter.turn.probe:
                self._probing = waiter.turn.probe = False
            waiter.verdict = self._down_error(waiter.caller, waiter.operation)
            waiter.wake()

    def _grant(self) -> None:
        while self._queue and self._in_flight < self._queue[0].caller.limit:
            waiter = self._queue.popleft()
            waiter.verdict = "granted"
            waiter.turn.holding = True
            self._in_flight += 1
            waiter.wake()

    def _down_error(self, caller: Caller, operation: str) -> KeyAccessError:
        cause = self._cause
        assert cause is not None
        assert self._down_until is not None
        left = self._down_until - time.monotonic()
        when = f"for {left:.1f} s more" if left > 0 else "while a probe finds out if it is back"
        error = KeyAccessError(
            f"Key Vault {self.name} is marked down ({when}): {operation} with "
            f"{caller.key_id} was not sent. It failed: {cause}",
            code=cause.code,
            key_id=caller.key_id,
        )
        error.__cause__ = cause
        return error


_vaults: weakref.WeakValueDictionary[str, Vault] = weakref.WeakValueDictionary()
_vaults_lock = threading.Lock()


def vault_of(vault_url: str) -> Vault:
    """The one :class:`Vault` of ``vault_url`` in this process."""
    with _vaults_lock:
        vault = _vaults.get(vault_url)
        if vault is None:
            vault = _vaults[vault_url] = Vault(vault_url)
        return vault


def reset_vaults(vault_url: str | None = None) -> None:
    """Forget that any vault (or the one of ``vault_url``) was down."""
    with _vaults_lock:
        vaults = list(_vaults.values())
    for vault in vaults:
        if vault_url is None or vault.name == vault_url:
            vault.reset()
