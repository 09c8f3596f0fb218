"""What a child made by ``fork()`` must not take over from its parent.

The child has one thread, the one that forked; every other thread of the parent is gone, and
with it whatever lock it held and whatever load it had in flight. A lock held at that moment
would stay held in the child forever, and a fill in flight would never land. So, right after
a fork, each registered object of this package replaces its locks and forgets what other
threads were doing (the key-set cache empties: the child loads what it needs afresh), and
every writer starts a new prefix epoch (``docs/RECORDS.md`` section 5.1).

A copy of a process that runs no fork hook (a VM snapshot resumed twice, CRIU) is not seen
here: what keeps such copies apart is that every nonce is drawn from the operating system
when its record is sealed (``_writer``).
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "Lineage", "register"]


class ForkAware(Protocol):
    def _after_fork(self) -> None:
        """Called in the child right after ``fork()``, where no other thread exists."""
        ...


class Lineage:
    """``generation``: how many times this process's lineage has forked into it (0 in the
    first process); read on every record, so a class attribute rather than a call."""

    generation = 0


_OBJECTS: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(item: ForkAware) -> None:
    """Have ``item._after_fork()`` called in every child forked while ``item`` lives."""
    _OBJECTS.add(item)


def _after_fork_in_child() -> None:
    Lineage.generation += 1
    for item in list(_OBJECTS):
        item._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
