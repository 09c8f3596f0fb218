"""The checked-in format vectors: every one decrypts (or fails) as its `expect` says."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from envelope import DecryptionError, Envelope, FormatError, LocalKey
from tests.vectors import generate

DATA = json.loads(Path(generate.PATH).read_text())
KEYS = {
    name: LocalKey(bytes.fromhex(DATA["keys"][key_id]), key_id=key_id)
    for name, key_id in DATA["key_names"].items()
}


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: v["name"])
def test_vector(vector):
    env = Envelope(
        [[KEYS[name] for name in layer] for layer in vector["layers"]],
        frame_size=vector["frame_size"],
    )
    message = bytes.fromhex(vector["message"])
    context = vector["context"]
    expect = vector["expect"]
    if expect == "success":
        plaintext = bytes.fromhex(vector["plaintext"])
        assert env.decrypt(message, context=context) == plaintext
        out = io.BytesIO()
        env.decrypt_stream(io.BytesIO(message), out, context=context)
        assert out.getvalue() == plaintext
    elif expect == "format error":
        with pytest.raises(FormatError):
            env.decrypt(message, context=context)
    elif expect == "decryption failure":
        with pytest.raises(DecryptionError) as failure:
            env.decrypt(message, context=context)
        assert not isinstance(failure.value, FormatError)
    else:  # pragma: no cover - a malformed vector file
        pytest.fail(f"unknown expect {expect!r}")


def test_every_kind_of_expectation_is_covered():
    kinds = {v["expect"] for v in DATA["vectors"]}
    assert kinds == set(DATA["expect values"])


def test_vectors_regenerate_identically():
    """The encoder still writes exactly the recorded bytes: the format did not drift."""
    assert generate.render() == Path(generate.PATH).read_text()
