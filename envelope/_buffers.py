"""The bytes-like arguments of the public verbs: checked once, handed on as flat views."""

from __future__ import annotations

import ctypes
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
_uninitialised: Callable[[None, int], bytearray] | None
try:
    _constructor = ctypes.pythonapi.PyByteArray_FromStringAndSize
    _constructor.restype = ctypes.py_object
    _constructor.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _uninitialised = _constructor
except (AttributeError, OSError):  # an interpreter without CPython's C API
    _uninitialised = None


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
    if size < LAZY_OUTPUT_BYTES or _uninitialised is None:
        return bytearray(size)
    return _uninitialised(None, size)


_ZEROS = bytes(1 << 20)


def wipe(buffer: bytearray | memoryview) -> None:
    """Zero ``buffer`` in place, a MiB at a time (``buffer[:] = bytes(n)`` would first
    allocate a second buffer of its size)."""
    view = memoryview(buffer).cast("B")
    for start in range(0, len(view), len(_ZEROS)):
        part = view[start : start + len(_ZEROS)]
        part[:] = _ZEROS[: len(part)]
