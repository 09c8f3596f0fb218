"""LocalKey: wrapping, key files and their failure modes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from envelope import DecryptionError, KeyAccessError, LocalKey


def test_wrap_round_trip_and_fresh_nonces():
    key = LocalKey.generate()
    dek = os.urandom(32)
    first, second = key.wrap_key(dek), key.wrap_key(dek)
    assert first.key_id == key.key_id
    assert first.algorithm == "A256GCM"
    assert len(first.ciphertext) == 12 + 32 + 16
    assert first.ciphertext != second.ciphertext
    assert key.unwrap_key(first) == dek == key.unwrap_key(second)
    assert "ciphertext=<60 bytes>" in repr(first)


def test_wrapped_key_is_bound_to_its_key_id():
    material = os.urandom(32)
    a = LocalKey(material, key_id="a")
    b = LocalKey(material, key_id="b")
    wrapped = a.wrap_key(os.urandom(32))
    # Same key material under another id: the id is associated data, so it fails.
    with pytest.raises(DecryptionError):
        b.unwrap_key(wrapped._replace(key_id="b"))
    with pytest.raises(KeyAccessError, match="not by this key"):
        b.unwrap_key(wrapped)


def test_tampered_wrapped_keys_fail():
    key = LocalKey.generate()
    wrapped = key.wrap_key(os.urandom(32))
    for i in range(len(wrapped.ciphertext)):
        blob = bytearray(wrapped.ciphertext)
        blob[i] ^= 1
        with pytest.raises(DecryptionError):
            key.unwrap_key(wrapped._replace(ciphertext=bytes(blob)))
    for bad in (b"", wrapped.ciphertext[:-1], wrapped.ciphertext + b"\0"):
        with pytest.raises(DecryptionError):
            key.unwrap_key(wrapped._replace(ciphertext=bad))
    with pytest.raises(DecryptionError):
        key.unwrap_key(wrapped._replace(algorithm="A256KW"))


def test_key_ids_are_stable_and_derived_from_the_key():
    material = os.urandom(32)
    assert LocalKey(material).key_id == LocalKey(material).key_id
    assert LocalKey(material).key_id != LocalKey(os.urandom(32)).key_id
    assert LocalKey(material).key_id.startswith("local:")
    assert material.hex() not in repr(LocalKey(material))


def test_bad_key_material_is_refused():
    with pytest.raises(ValueError, match="32"):
        LocalKey(b"short")
    with pytest.raises(TypeError):
        LocalKey("a" * 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LocalKey(os.urandom(32), key_id="")
    with pytest.raises(ValueError):
        LocalKey(os.urandom(32), key_id="x" * 1025)
    with pytest.raises(ValueError):
        LocalKey.generate().wrap_key(b"\0" * 16)


def test_save_and_load(tmp_path):
    key = LocalKey.generate(key_id="backup-key-1")
    path = tmp_path / "kek.json"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = LocalKey.load(path)
    assert loaded.key_id == "backup-key-1"
    dek = os.urandom(32)
    assert loaded.unwrap_key(key.wrap_key(dek)) == dek
    assert [p.name for p in tmp_path.iterdir()] == ["kek.json"]  # no temporary file left


def test_save_refuses_to_overwrite_a_key_by_accident(tmp_path):
    path = tmp_path / "kek.json"
    first = LocalKey.generate()
    first.save(path)
    with pytest.raises(FileExistsError):
        LocalKey.generate().save(path)
    assert LocalKey.load(path).key_id == first.key_id
    second = LocalKey.generate()
    second.save(path, overwrite=True)
    assert LocalKey.load(path).key_id == second.key_id


def _document(**members: object) -> str:
    """A key file's JSON text: the valid members, changed by ``members``."""
    document = {"type": "envelope-local-key", "version": 1, "key_id": "k", "key": KEY_TEXT}
    return json.dumps({**document, **members})


#: The 32 bytes 00 01 02 ... 1f, the key of FORMAT.md section 9.1's example.
EXAMPLE_KEY = bytes(range(32))
KEY_TEXT = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def _write(path: Path, content: str | bytes, mode: int = 0o600) -> None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    os.chmod(path, mode)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "not an envelope key file"),
        (json.dumps({"type": "something-else"}), "not an envelope key file"),
        (json.dumps({"type": "envelope-local-key", "version": 9}), "version 9"),
        (json.dumps({"type": "envelope-local-key", "version": 1}), "lacks"),
        (
            json.dumps({"type": "envelope-local-key", "version": 1, "key_id": "k", "key": "!!"}),
            "base64",
        ),
        (
            json.dumps({"type": "envelope-local-key", "version": 1, "key_id": "k", "key": "AAAA"}),
            "3 bytes",
        ),
        (
            json.dumps(
                {"type": "envelope-local-key", "version": 1, "key_id": "", "key": "A" * 43 + "="}
            ),
            "key id",
        ),
        (b"\xff\xfe binary", "not JSON"),
        ("x" * 70_000, "too large"),
        # FORMAT.md section 9.2: one reading of a key file, whatever the JSON parser.
        (_document(key="A" * 43 + "=").encode("utf-16"), "not JSON"),
        (b"\xef\xbb\xbf" + _document(key="A" * 43 + "=").encode(), "not JSON"),
        (_document(key="A" * 43 + "=")[:-1] + ', "key": "' + "B" * 43 + '="}', "'key' twice"),
        (_document(version=True), "version True"),
        (_document(version=1.0), "version 1.0"),
        (_document(version="1"), "version '1'"),
        (_document(key="A" * 42 + "B="), "canonical"),
        (_document(key="A" * 43), "base64"),
        (_document(key="A" * 42 + "A=\n"), "base64"),
        (_document(key_id="\ud800"), "lone surrogates"),
    ],
)
def test_load_says_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "kek.json"
    _write(path, content)
    with pytest.raises(KeyAccessError, match=message):
        LocalKey.load(path)


def test_load_refuses_missing_and_exposed_files(tmp_path):
    with pytest.raises(KeyAccessError, match="does not exist"):
        LocalKey.load(tmp_path / "missing.json")
    path = tmp_path / "kek.json"
    LocalKey.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyAccessError, match="chmod 600"):
        LocalKey.load(path)
    with pytest.raises(KeyAccessError, match="cannot read"):
        LocalKey.load(tmp_path)


def test_concurrent_saves_never_replace_a_key_file(tmp_path):
    import threading

    path = tmp_path / "kek.json"
    keys = [LocalKey.generate() for _ in range(8)]
    saved: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(len(keys))

    def save(key: LocalKey) -> None:
        start.wait()
        try:
            key.save(path)
        except FileExistsError:
            refused.append(key.key_id)
        else:
            saved.append(key.key_id)

    threads = [threading.Thread(target=save, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(saved) == 1
    assert len(refused) == len(keys) - 1
    assert LocalKey.load(path).key_id == saved[0]
    assert [p.name for p in tmp_path.iterdir()] == ["kek.json"]


def test_a_file_created_while_saving_is_not_replaced(tmp_path):
    from envelope._files import atomic_output

    path = tmp_path / "kek.json"

    def save_while_another_appears() -> None:
        with atomic_output(path, overwrite=False) as handle:
            handle.write(b"mine")
            path.write_bytes(b"someone else's key")  # appears before we publish

    with pytest.raises(FileExistsError):
        save_while_another_appears()
    assert path.read_bytes() == b"someone else's key"
    assert [p.name for p in tmp_path.iterdir()] == ["kek.json"]


def test_a_key_file_written_by_hand_from_the_spec_loads(tmp_path):
    path = tmp_path / "kek.json"
    _write(path, _document(comment="members a loader does not know are ignored"))
    key = LocalKey.load(path)
    assert key.key_id == "k"
    assert key._key == EXAMPLE_KEY


def test_save_writes_the_documented_format(tmp_path):
    path = tmp_path / "kek.json"
    LocalKey(EXAMPLE_KEY, key_id="k").save(path)
    assert path.read_text(encoding="utf-8") == (
        "{\n"
        '  "type": "envelope-local-key",\n'
        '  "version": 1,\n'
        '  "key_id": "k",\n'
        f'  "key": "{KEY_TEXT}"\n'
        "}\n"
    )


def test_derived_key_ids_are_the_documented_ones():
    example = "local:9b3dc037f40a9a9f9be2649b6ab93956"
    assert LocalKey(EXAMPLE_KEY).key_id == example
    assert example in (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    material = os.urandom(32)
    digest = hashlib.sha256(b"envelope/local-key-id/v1\x00" + material).digest()
    assert LocalKey(material).key_id == "local:" + digest[:16].hex()


def test_a_key_id_utf8_cannot_encode_is_refused_clearly():
    with pytest.raises(ValueError, match="lone surrogates"):
        LocalKey(EXAMPLE_KEY, key_id="\udc80")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_load_refuses_what_is_not_a_regular_file_without_blocking(tmp_path):
    import threading

    fifo = tmp_path / "kek.json"
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            LocalKey.load(fifo)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    # Opening a FIFO for reading waits for a writer unless told not to: a thread, so that a
    # loader that blocks fails this test instead of hanging it.
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "LocalKey.load blocked on a FIFO"
    assert len(outcome) == 1
    assert isinstance(outcome[0], KeyAccessError)
    assert "not a regular file" in str(outcome[0])
    with pytest.raises(KeyAccessError, match="not a regular file"):
        LocalKey.load(os.devnull)
