"""The checked-in format vectors: every one decrypts (or fails) as its `expect` says, through
the one-shot, streaming and asyncio paths alike."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from envelope import DecryptionError, Envelope, EnvelopeError, FormatError, KeyAccessError, LocalKey
from tests.vectors import generate

DATA = json.loads(Path(generate.PATH).read_text())
KEYS = {
    name: LocalKey(bytes.fromhex(DATA["keys"][key_id]), key_id=key_id)
    for name, key_id in DATA["key_names"].items()
}

#: What each failing `expect` is in the library (FORMAT.md section 7).
KINDS: dict[str, Callable[[EnvelopeError], bool]] = {
    "format error": lambda e: isinstance(e, FormatError),
    "decryption failure": lambda e: (
        isinstance(e, DecryptionError) and not isinstance(e, FormatError)
    ),
    "key access error": lambda e: isinstance(e, KeyAccessError),
}


def _paths(
    env: Envelope, message: bytes, context: dict[str, str]
) -> dict[str, Callable[[], bytes]]:
    def stream() -> bytes:
        out = io.BytesIO()
        env.decrypt_stream(io.BytesIO(message), out, context=context)
        return out.getvalue()

    return {
        "one-shot": lambda: bytes(env.decrypt(message, context=context)),
        "stream": stream,
        "async": lambda: bytes(asyncio.run(env.decrypt_async(message, context=context))),
    }


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: v["name"])
def test_vector(vector):
    env = Envelope(
        [[KEYS[name] for name in layer] for layer in vector["layers"]],
        frame_size=vector["frame_size"],
    )
    message = bytes.fromhex(vector["message"])
    expect = vector["expect"]
    for path, decrypt in _paths(env, message, vector["context"]).items():
        if expect == "success":
            assert decrypt() == bytes.fromhex(vector["plaintext"]), path
            continue
        with pytest.raises(EnvelopeError) as failure:
            decrypt()
        assert KINDS[expect](failure.value), f"{path}: {failure.value!r}"


def test_every_kind_of_expectation_is_covered():
    kinds = {v["expect"] for v in DATA["vectors"]}
    assert kinds == set(DATA["expect values"]) == {"success", *KINDS}


def test_vectors_regenerate_identically():
    """The encoder still writes exactly the recorded bytes: the format did not drift."""
    assert generate.render() == Path(generate.PATH).read_text()
