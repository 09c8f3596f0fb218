"""Every limit of the formats, defined once: the tables of ``docs/FORMAT.md`` section 6
(messages) and ``docs/RECORDS.md`` section 7 (records and key-set documents).

The format, the engine, the keys, the envelope and the records all import from here, so a
reader and a writer can never disagree about a bound. Code that a test may run under a lowered limit
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
    "MAX_KEY_SET_BYTES",
    "MAX_KEY_SET_ID",
    "MAX_LAYERS",
    "MAX_RECORD_BYTES",
    "MAX_SCOPE_BYTES",
    "MAX_WRAPPED_KEYS",
    "MAX_WRAPPED_KEY_BYTES",
    "MIN_FRAME_SIZE",
    "MIN_HEADER_BYTES",
    "MIN_KEY_SET_BYTES",
    "RECORDS_PER_PREFIX",
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

# -- records (RECORDS.md section 7) -----------------------------------------------------

#: UTF-8 bytes of a scope.
MAX_SCOPE_BYTES = 256
#: The smallest key-set document: an empty scope, one layer, one 1-byte key id and wrap.
MIN_KEY_SET_BYTES = 102
#: Bounds what a reader reads of a key-set document before it authenticates anything.
MAX_KEY_SET_BYTES = 128 * 1024
#: Key-set ids are 1 to 2^63 - 1, so they fit a signed 64-bit database integer.
MAX_KEY_SET_ID = 2**63 - 1
#: Plaintext bytes of one record; larger values belong in messages.
MAX_RECORD_BYTES = 16 * 1024 * 1024
#: Records a writer seals under one prefix before it draws another (RECORDS.md 6.1).
RECORDS_PER_PREFIX = 2**16
