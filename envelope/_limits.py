"""Every limit of the message format, defined once: the table of ``docs/FORMAT.md`` section 6.

The format, the engine, the keys and the envelope all import from here, so a reader and a
writer can never disagree about a bound. Code that a test may run under a lowered limit
reads it at call time, as ``_limits.MAX_FRAMES``, so the test patches this module alone.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "MAX_CONTEXT_BYTES",
    "MAX_CONTEXT_ENTRIES",
    "MAX_CONTEXT_KEY_BYTES",
    "MAX_CONTEXT_VALUE_BYTES",
    "MAX_FRAMES",
    "MAX_FRAME_SIZE",
    "MAX_HEADER_BYTES",
    "MAX_KEY_ID_BYTES",
    "MAX_LAYERS",
    "MAX_WRAPPED_KEYS",
    "MAX_WRAPPED_KEY_BYTES",
    "MIN_FRAME_SIZE",
    "MIN_HEADER_BYTES",
]

#: The smallest possible header: one layer, one wrapped key.
MIN_HEADER_BYTES = 90
#: Bounds what a reader reads before authenticating anything.
MAX_HEADER_BYTES = 128 * 1024
#: Bounds the per-frame overhead an attacker can force.
MIN_FRAME_SIZE = 1024
#: Bounds a streaming reader's buffer.
MAX_FRAME_SIZE = 16 * 1024 * 1024
#: Chosen by measurement (benchmarks: frame sizes).
DEFAULT_FRAME_SIZE = 64 * 1024
MAX_LAYERS = 4
#: Per layer.
MAX_WRAPPED_KEYS = 8
#: UTF-8 bytes of one key id.
MAX_KEY_ID_BYTES = 1024
#: One wrapped data key: an RSA-8192 wrap.
MAX_WRAPPED_KEY_BYTES = 1024
MAX_CONTEXT_ENTRIES = 64
MAX_CONTEXT_KEY_BYTES = 256
MAX_CONTEXT_VALUE_BYTES = 4096
#: Context keys and values together.
MAX_CONTEXT_BYTES = 8192
#: Frames per message (the frame index is the nonce counter).
MAX_FRAMES = 2**32
