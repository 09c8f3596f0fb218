"""Injectable faults: latency, error statuses and dropped connections, per operation."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Fault", "FaultAction", "FaultSet"]

# Error bodies the vault answers for each injected status; the codes are the ones the
# real service documents for throttling and outages.
FAULT_ERRORS: dict[int, tuple[str, str]] = {
    429: ("Throttled", "Request was not processed because too many requests were received."),
    500: ("InternalServerError", "An internal error occurred (injected fault)."),
    502: ("BadGateway", "The gateway received an invalid response (injected fault)."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable (injected fault)."),
    504: ("GatewayTimeout", "The gateway timed out (injected fault)."),
}


@dataclass(frozen=True)
class FaultAction:
    """What one request suffers: a delay, then an error status or a dropped connection."""

    latency: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    drop: bool = False


class Fault:
    """One injected fault. Matching requests trigger it until ``count`` is used up.

    ``operations`` of ``None`` matches every Key Vault operation; identity traffic is matched
    only when ``"token"`` is named, because its error format is the identity provider's.
    """

    def __init__(
        self,
        *,
        owner: FaultSet,
        operations: frozenset[str] | None,
        action: FaultAction,
        count: int | None,
        probability: float,
        rng: random.Random,
    ) -> None:
        self._owner = owner
        self.operations = operations
        self.action = action
        self.count = count
        self.probability = probability
        self._rng = rng
        self.triggered = 0

    def matches(self, operation: str) -> bool:
        if self.operations is None:
            return operation != "token"
        return operation in self.operations

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.triggered >= self.count

    def remove(self) -> None:
        """Stop injecting this fault; a no-op if it is already gone."""
        self._owner.remove(self)

    def _roll(self) -> bool:
        return self.probability >= 1.0 or self._rng.random() < self.probability

    def __repr__(self) -> str:
        ops = "*" if self.operations is None else ",".join(sorted(self.operations))
        return f"Fault({ops}, {self.action}, triggered={self.triggered}, count={self.count})"


class FaultSet:
    """The faults of one vault. Thread-safe: handlers consult it from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        operations: str | Iterable[str] | None,
        *,
        latency: float = 0.0,
        status: int | None = None,
        retry_after: float | None = None,
        drop: bool = False,
        count: int | None = None,
        probability: float = 1.0,
        seed: int | None = None,
    ) -> Fault:
        if latency < 0 or latency > 60:
            raise ValueError("latency must be between 0 and 60 seconds")
        if status is not None and status not in FAULT_ERRORS:
            raise ValueError(f"status must be one of {sorted(FAULT_ERRORS)}")
        # The real service sends Retry-After only with 429; adding it elsewhere would make the
        # SDK retry requests (even POSTs) that it would not retry against Azure.
        if retry_after is not None and status != 429:
            raise ValueError("retry_after is only sent with status 429")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must not be negative")
        if drop and status is not None:
            raise ValueError("a dropped connection has no status")
        if not drop and status is None and latency == 0:
            raise ValueError("a fault needs latency, a status or drop=True")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (None means unlimited)")
        if not 0 < probability <= 1:
            raise ValueError("probability must be in (0, 1]")
        names: frozenset[str] | None
        if operations is None:
            names = None
        elif isinstance(operations, str):
            names = frozenset({operations})
        else:
            names = frozenset(operations)
        fault = Fault(
            owner=self,
            operations=names,
            action=FaultAction(latency=latency, status=status, retry_after=retry_after, drop=drop),
            count=count,
            probability=probability,
            rng=random.Random(seed),  # noqa: S311 - chance of a fault, not a secret
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, operation: str) -> FaultAction | None:
        """The action for one request of ``operation``: the first live matching fault wins."""
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(operation):
                    continue
                if not fault._roll():
                    continue
                fault.triggered += 1
                return fault.action
        return None
