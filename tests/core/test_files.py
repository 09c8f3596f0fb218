"""Crash-safe files, header-only rewrap of a file, ``inspect`` of a path, the context
mismatch error and the key-file modes."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from envelope import DecryptionError, Envelope, KeyAccessError, LocalKey, _files, inspect
from envelope._files import atomic_output, is_temporary, remove_stale

from .conftest import SMALL_FRAME

CONTEXT = {"tenant": "contoso", "file": "a.bin"}
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="O_TMPFILE")


@linux_only
def test_an_output_has_no_name_until_it_is_complete(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_output(target) as handle:
        handle.write(b"x" * 100_000)
        handle.flush()
        assert list(tmp_path.iterdir()) == []  # an unnamed file: nothing to leave behind
    assert target.read_bytes() == b"x" * 100_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [target]


def test_a_failed_output_leaves_nothing_and_the_old_file_untouched(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def write_then_fail() -> None:
        with atomic_output(target) as handle:
            handle.write(b"new, partial")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_the_named_fallback_is_cleaned_up_too(tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "_unnamed_file", lambda dir_fd: None)
    target = tmp_path / "out.bin"
    with atomic_output(target, mode=0o640) as handle:
        handle.write(b"data")
        (named,) = tmp_path.iterdir()
        assert is_temporary(named.name)
        assert stat.S_IMODE(named.stat().st_mode) == 0o600
    assert target.read_bytes() == b"data"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    with pytest.raises(FileExistsError), atomic_output(target, overwrite=False) as handle:
        handle.write(b"never")
    with pytest.raises(ValueError), atomic_output(tmp_path / "b") as handle:
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_replacing_keeps_the_original_until_the_end(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"original")
    with atomic_output(target, overwrite=True) as handle:
        handle.write(b"replacement")
        handle.flush()
        assert target.read_bytes() == b"original"
    assert target.read_bytes() == b"replacement"
    assert list(tmp_path.iterdir()) == [target]


def test_remove_stale_deletes_only_leftovers_of_the_named_file(tmp_path):
    leftovers = [tmp_path / f".a.bin.{'0' * 15}{n}{_files.TEMP_SUFFIX}" for n in range(2)]
    other = tmp_path / f".b.bin.{'1' * 16}{_files.TEMP_SUFFIX}"
    lookalike = tmp_path / ".a.bin.not-ours.envelope-tmp"
    for path in [*leftovers, other, lookalike]:
        path.write_bytes(b"x")
    assert sorted(remove_stale(tmp_path, {"a.bin", "c.bin"})) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, lookalike.name])
    assert remove_stale(tmp_path) == [other]


def test_rewrap_file_rewrites_the_header_in_place(tmp_path, env: Envelope, inner_key):
    path = tmp_path / "message.env"
    data = os.urandom(10 * SMALL_FRAME + 7)
    path.write_bytes(env.encrypt(data, CONTEXT))
    os.chmod(path, 0o644)
    before = path.read_bytes()
    old_length = inspect(path).header_length
    new_outer = LocalKey.generate()
    bridge = Envelope([inner_key, [new_outer, env.layers[1][0]]], frame_size=SMALL_FRAME)
    bridge.rewrap_file(path)
    after = path.read_bytes()
    info = inspect(str(path))
    assert info.layers[1].key_ids == (new_outer.key_id, env.layers[1][0].key_id)
    assert after[info.header_length :] == before[old_length:]  # the body is untouched
    assert info.plaintext_length == len(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert Envelope([inner_key, new_outer]).decrypt(after, CONTEXT) == data
    assert list(tmp_path.iterdir()) == [path]


def test_a_failed_rewrap_file_changes_nothing(tmp_path, env: Envelope, inner_key):
    path = tmp_path / "message.env"
    path.write_bytes(env.encrypt(b"x" * 5000))
    before = path.read_bytes()
    stranger = Envelope([inner_key, LocalKey.generate()])
    with pytest.raises(KeyAccessError):
        stranger.rewrap_file(path)
    wrapped = bytearray(before)
    wrapped[60] ^= 1  # inside the context / layers: no longer a well-formed or valid header
    path.write_bytes(wrapped)
    with pytest.raises(DecryptionError):
        env.rewrap_file(path)
    assert path.read_bytes() == wrapped
    assert list(tmp_path.iterdir()) == [path]


def test_inspect_takes_a_path(tmp_path, env: Envelope):
    path = tmp_path / "message.env"
    path.write_bytes(env.encrypt(b"y" * 3000, CONTEXT))
    for argument in (path, str(path)):
        info = inspect(argument)
        assert dict(info.context) == CONTEXT
        assert info.plaintext_length == 3000
    with open(path, "rb") as handle:
        assert inspect(handle).plaintext_length is None  # an open file: its end is not sought
    # Cut 5 bytes into the second frame: no body of this header can end there.
    cut = inspect(path).header_length + SMALL_FRAME + 2 * 16 + 5
    path.write_bytes(path.read_bytes()[:cut])
    assert inspect(path).plaintext_length is None
    with pytest.raises(FileNotFoundError):
        inspect(tmp_path / "absent")


def test_a_context_mismatch_names_the_keys_that_differ(env: Envelope):
    blob = env.encrypt(b"z", {"a": "1", "b": "2", "c": "3"})
    with pytest.raises(DecryptionError) as caught:
        env.decrypt(blob, {"a": "1", "b": "x", "d": "4"})
    assert str(caught.value) == (
        "the encryption context does not match: 'b' differs; 'd' expected but absent; "
        "'c' present but not expected"
    )
    assert "2" not in str(caught.value)  # no values, only key names
    with pytest.raises(DecryptionError, match="'a', 'b', 'c' present but not expected"):
        env.decrypt(blob)


def test_tampering_stays_one_undifferentiated_error(env: Envelope):
    blob = bytearray(env.encrypt(b"z" * 3000, CONTEXT))
    blob[-1] ^= 1
    with pytest.raises(DecryptionError) as caught:
        env.decrypt(blob, CONTEXT)
    assert str(caught.value) == "message authentication failed"


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize(
    ("mode", "accepted"),
    [(0o600, True), (0o400, True), (0o440, False), (0o640, False), (0o604, False)],
)
def test_key_file_modes(tmp_path, mode: int, accepted: bool):
    path = tmp_path / "k.key"
    LocalKey.generate().save(path)
    os.chmod(path, mode)
    if accepted:
        LocalKey.load(path)
    else:
        with pytest.raises(KeyAccessError, match="group or others"):
            LocalKey.load(Path(path))


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_termination_signal_waits_for_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    seen: list[list[str]] = []
    real_rename = os.rename

    def rename(*args, **kwargs):
        # SIGTERM arrives after the hidden link and before the rename.
        os.kill(os.getpid(), signal.SIGTERM)
        return real_rename(*args, **kwargs)

    def on_term(signum, frame):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))

    monkeypatch.setattr(os, "rename", rename)
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with atomic_output(target) as handle:
            handle.write(b"new")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [["t.bin"]]  # handled once the file was in place, no hidden name left
    assert target.read_bytes() == b"new"
