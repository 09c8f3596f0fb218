"""The checked-in records vectors: every one decrypts (or fails) as its `expect` says, through
decrypt, decrypt_many, decrypt_async and the text form alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from envelope import DecryptionError, Envelope, EnvelopeError, FormatError, KeyAccessError, LocalKey
from envelope.records import Records, to_text
from tests.records.conftest import DictStore
from tests.vectors import records as generate

DATA = json.loads(Path(generate.PATH).read_text())
KEYS = {
    name: LocalKey(bytes.fromhex(DATA["keys"][key_id]), key_id=key_id)
    for name, key_id in DATA["key_names"].items()
}

#: What each failing `expect` is in the library (RECORDS.md section 8).
KINDS: dict[str, Callable[[EnvelopeError], bool]] = {
    "format error": lambda e: isinstance(e, FormatError),
    "decryption failure": lambda e: (
        isinstance(e, DecryptionError) and not isinstance(e, FormatError)
    ),
    "key access error": lambda e: isinstance(e, KeyAccessError),
}


def _records(vector: dict[str, Any]) -> Records:
    store = DictStore()
    for name in vector["store"]:
        entry = DATA["key_sets"][name]
        store.documents[entry["key_set_id"]] = bytes.fromhex(entry["document"])
    env = Envelope([[KEYS[name] for name in layer] for layer in vector["layers"]])
    return Records(env, store)


def _record(vector: dict[str, Any]) -> bytes | str:
    return vector["record_text"] if "record_text" in vector else bytes.fromhex(vector["record"])


def _paths(vector: dict[str, Any]) -> dict[str, Callable[[], bytes]]:
    record = _record(vector)
    where = {"scope": vector["scope"], "context": vector["context"]}
    paths: dict[str, Callable[[], bytes]] = {
        "decrypt": lambda: _records(vector).decrypt(record, **where),
        "decrypt_many": lambda: _records(vector).decrypt_many([record], **where)[0],
        "async": lambda: asyncio.run(_records(vector).decrypt_async(record, **where)),
    }
    if isinstance(record, bytes):
        paths["text"] = lambda: _records(vector).decrypt(to_text(record), **where)
    return paths


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: v["name"])
def test_vector(vector):
    expect = vector["expect"]
    for path, decrypt in _paths(vector).items():
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
    """The encoders still write exactly the recorded bytes: the format did not drift."""
    assert generate.render() == Path(generate.PATH).read_text()
