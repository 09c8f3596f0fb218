"""The bytes-like arguments of the public verbs: checked once, handed on as flat views."""

from __future__ import annotations

import functools
from collections.abc import Callable

__all__ = ["Buffer", "contiguous", "fresh_output", "wipe", "writable"]

Buffer = bytes | bytearray | memoryview

# ``bytearray(n)`` zeroes its n bytes on the calling thread before anything is written.
# For a large output that pass costs more than one of the AES passes: the fresh pages fault
# in one by one on that thread, are zeroed by the kernel, then zeroed again. CPython's own
# constructor with no source leaves the bytes as the allocator gives them, so the pages
# fault in where the workers first write them, in parallel. It is CPython's public C API;
# elsewhere the plain constructor is used.
LAZY_OUTPUT_BYTES = 1 << 20


@functools.cache
def _uninitialised() -> Callable[[None, int], bytearray] | None:
    """CPython's constructor, looked up on the first large output (ctypes is not imported
    with the package)."""
    import ctypes  # noqa: PLC0415

    try:
        constructor = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except (AttributeError, OSError):  # an interpreter without CPython's C API
        return None
    constructor.restype = ctypes.py_object
    constructor.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    made: Callable[[None, int], bytearray] = constructor
    return made


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


def fresh_output(size: int) -> bytearray:
    """A new ``bytearray`` of ``size`` bytes that the caller overwrites completely before
    anyone else sees it.

    From :data:`LAZY_OUTPUT_BYTES` up its bytes are left as the allocator hands them over
    (zero for fresh pages, stale heap bytes of this process otherwise), so a caller must
    write every byte, or wipe or drop the buffer, before it returns. Smaller outputs are
    zeroed as usual: there the zeroing costs nothing worth saving.
    """
    constructor = _uninitialised() if size >= LAZY_OUTPUT_BYTES else None
    return bytearray(size) if constructor is None else constructor(None, size)


_WIPE_BYTES = 1 << 20


@functools.cache
def _zeros() -> bytes:
    return bytes(_WIPE_BYTES)


def wipe(buffer: bytearray | memoryview) -> None:
    """Zero ``buffer`` in place, a MiB at a time (``buffer[:] = bytes(n)`` would first
    allocate a second buffer of its size)."""
    view = memoryview(buffer).cast("B")
    if len(view) <= _WIPE_BYTES:
        view[:] = bytes(len(view))
        return
    zeros = _zeros()
    for start in range(0, len(view), _WIPE_BYTES):
        part = view[start : start + _WIPE_BYTES]
        part[:] = zeros[: len(part)]
