"""The vault's clock: wall time plus an offset that only tests move forward."""

from __future__ import annotations

import threading
import time

__all__ = ["VaultClock"]


class VaultClock:
    """Key timestamps, validity periods and rotation policies follow this clock; tokens do
    not, so that a jump of months leaves clients' cached tokens valid."""

    def __init__(self, offset: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._offset = offset

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def seconds(self) -> int:
        return int(self.now())

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds
