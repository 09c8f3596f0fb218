"""The checked-in records vectors: every one decrypts (or fails) as its `expect` says, through
decrypt, decrypt_many, decrypt_async and the text form alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from envelope import Envelope, EnvelopeError, LocalKey
from envelope.records import Records, to_text
from tests.core.test_vectors import KINDS
from tests.records.conftest import DictStore
from tests.vectors import records as generate

DATA = json.loads(Path(generate.PATH).read_text())
KEYS = {
    name: LocalKey(bytes.fromhex(DATA["keys"][key_id]), key_id=key_id)
    for name, key_id in DATA["key_names"].items()
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


CASES = [(vector, path) for vector in DATA["vectors"] for path in _paths(vector)]


@pytest.mark.parametrize(
    ("vector", "path"), CASES, ids=[f"{v['name']} ({path})" for v, path in CASES]
)
def test_vector(vector: dict[str, Any], path: str):
    read = _paths(vector)[path]
    if vector["expect"] == "success":
        assert read() == bytes.fromhex(vector["plaintext"])
    else:
        with pytest.raises(EnvelopeError) as failure:
            read()
        assert KINDS[vector["expect"]](failure.value), repr(failure.value)


def test_the_vectors_cover_every_kind_and_regenerate_identically():
    """Every kind of RECORDS.md section 8 has vectors, and the encoders still write exactly
    the recorded bytes: the format did not drift."""
    kinds = {v["expect"] for v in DATA["vectors"]}
    assert kinds == set(DATA["expect values"]) == {"success", *KINDS}
    assert generate.render() == Path(generate.PATH).read_text()
