"""The asyncio half of the ``devtools_testutils`` stand-in."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .. import _accepted

__all__ = ["recorded_by_proxy_async"]

F = TypeVar("F", bound=Callable[..., Any])


def recorded_by_proxy_async(test: F) -> F:
    """Live without recording: await the test itself."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await test(*args, **_accepted(test, kwargs))

    return run  # type: ignore[return-value]
