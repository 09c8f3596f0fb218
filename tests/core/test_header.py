"""The header's authenticated bytes (FORMAT.md section 4) are the same whether a reader cuts
them from the message it parses or a writer encodes them from the fields."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from envelope import Envelope, LocalKey
from envelope._format import authenticated_header_bytes, read_header

CONTEXTS = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=5)


@settings(max_examples=60, deadline=None)
@given(context=CONTEXTS, layers=st.integers(1, 4), keks=st.integers(1, 3))
def test_read_and_encoded_authenticated_bytes_agree(context, layers, keks):
    env = Envelope(
        [[LocalKey.generate() for _ in range(keks)] for _ in range(layers)], frame_size=1024
    )
    message = bytes(env.encrypt(os.urandom(100), context=context))
    header, length, authenticated = read_header(message)
    assert authenticated == authenticated_header_bytes(header)
    assert length == len(message) - (100 + 16 * layers)
