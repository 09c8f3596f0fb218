"""The bytes-like arguments of the public verbs: checked once, handed on as flat views."""

from __future__ import annotations

__all__ = ["Buffer", "contiguous", "writable"]

Buffer = bytes | bytearray | memoryview


def contiguous(data: Buffer) -> memoryview:
    """A one-dimensional byte view of ``data``, which must be a contiguous bytes-like object."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected a bytes-like object, got {type(data).__name__}")
    view = memoryview(data)
    if not view.contiguous:
        raise ValueError("the buffer must be contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def writable(out: bytearray | memoryview) -> memoryview:
    """As :func:`contiguous`, for a buffer the caller lends to be written into."""
    view = contiguous(out)
    if view.readonly:
        raise TypeError("out must be a writable buffer")
    return view
