"""Round trips and the behaviour of every public verb, on local keys."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envelope import (
    DecryptionError,
    Envelope,
    FormatError,
    KeyAccessError,
    LocalKey,
    inspect,
)
from tests.core.conftest import SMALL_FRAME

SIZES = [0, 1, SMALL_FRAME - 1, SMALL_FRAME, SMALL_FRAME + 1, 3 * SMALL_FRAME, 5000]
CONTEXT = {"tenant": "contoso", "purpose": "backup"}


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_one_shot_and_streams(env: Envelope, size: int):
    data = os.urandom(size)
    blob = env.encrypt(data, context=CONTEXT)
    assert env.decrypt(blob, context=CONTEXT) == data

    sealed = io.BytesIO()
    written = env.encrypt_stream(io.BytesIO(data), sealed, context=CONTEXT)
    assert written == len(sealed.getvalue())
    # A stream and a one-shot call produce the same format: each reads the other's output.
    assert env.decrypt(sealed.getvalue(), context=CONTEXT) == data
    opened = io.BytesIO()
    assert env.decrypt_stream(io.BytesIO(bytes(blob)), opened, context=CONTEXT) == size
    assert opened.getvalue() == data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=6 * 1024),
    frame_size=st.sampled_from([1024, 1500, 4096]),
    context=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=5),
    layers=st.integers(min_value=1, max_value=4),
)
def test_round_trip_property(data, frame_size, context, layers):
    keys = [LocalKey.generate() for _ in range(layers)]
    env = Envelope(keys, frame_size=frame_size)
    blob = env.encrypt(data, context=context)
    assert len(blob) == len(data) + inspect(blob).header_length + (
        (len(data) // frame_size + 1) * 16 * layers
    )
    assert env.decrypt(blob, context=context) == data
    out = io.BytesIO()
    env.decrypt_stream(io.BytesIO(bytes(blob)), out, context=context)
    assert out.getvalue() == data


def test_every_layer_algorithm_round_trips():
    keys = [LocalKey.generate() for _ in range(3)]
    for names in [
        ("AES-256-GCM", "AES-256-OCB3", "AES-256-GCM-SIV"),
        ("AES-256-GCM-SIV", "AES-256-GCM", "AES-256-OCB3"),
    ]:
        env = Envelope(keys, algorithms=names, frame_size=SMALL_FRAME)
        blob = env.encrypt(b"x" * 3000)
        assert [layer.algorithm for layer in inspect(blob).layers] == list(names)
        assert env.decrypt(blob) == b"x" * 3000


def test_defaults_give_each_layer_its_own_mode():
    env = Envelope([LocalKey.generate(), LocalKey.generate()])
    assert env.algorithms == ("AES-256-GCM", "AES-256-OCB3")
    assert env.frame_size == 65536
    three = Envelope([LocalKey.generate() for _ in range(3)])
    assert len(set(three.algorithms)) == 3
    four = Envelope([LocalKey.generate() for _ in range(4)])  # as the README says
    assert four.algorithms == ("AES-256-GCM", "AES-256-OCB3", "AES-256-GCM-SIV", "AES-256-GCM")


def test_each_layer_has_its_own_data_key_and_commitment(env: Envelope):
    blob = env.encrypt(b"hello")
    info = inspect(blob)
    assert [layer.key_ids for layer in info.layers] == [
        (env.layers[0][0].key_id,),
        (env.layers[1][0].key_id,),
    ]
    # Two messages never share salt, commitments or wrapped keys.
    other = env.encrypt(b"hello")
    assert blob[14:46] != other[14:46]
    assert blob != other


def test_context_must_match_exactly(env: Envelope):
    blob = env.encrypt(b"data", context={"a": "1", "b": "2"})
    for wrong in [None, {}, {"a": "1"}, {"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "3"}]:
        with pytest.raises(DecryptionError):
            env.decrypt(blob, context=wrong)
    # Order of entries does not matter: the context is a mapping.
    assert env.decrypt(blob, context={"b": "2", "a": "1"}) == b"data"


def test_context_is_validated():
    env = Envelope([LocalKey.generate()])
    with pytest.raises(TypeError):
        env.encrypt(b"x", context={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        env.encrypt(b"x", context={"": "empty key"})
    with pytest.raises(ValueError):
        env.encrypt(b"x", context={f"k{i}": "v" for i in range(65)})
    with pytest.raises(ValueError):
        env.encrypt(b"x", context={"k": "v" * 5000})


def test_configuration_mistakes_are_caller_errors():
    key = LocalKey.generate()
    with pytest.raises(ValueError, match="layers 0 and"):
        Envelope([key, key])
    with pytest.raises(ValueError, match="twice"):
        Envelope([[key, LocalKey(key._key)]])
    with pytest.raises(ValueError):
        Envelope([])
    with pytest.raises(ValueError):
        Envelope([LocalKey.generate() for _ in range(5)])
    with pytest.raises(ValueError):
        Envelope([[]])
    with pytest.raises(TypeError):
        Envelope(["not a key"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Envelope([LocalKey.generate()], algorithms=["AES-128-CBC"])
    with pytest.raises(ValueError):
        Envelope([LocalKey.generate()], algorithms=["AES-256-GCM", "AES-256-OCB3"])
    for size in (0, 1023, 16 * 1024 * 1024 + 1):
        with pytest.raises(ValueError):
            Envelope([LocalKey.generate()], frame_size=size)
    with pytest.raises(TypeError):
        Envelope([LocalKey.generate()]).encrypt("text")  # type: ignore[arg-type]


def test_several_keks_per_layer_any_one_decrypts():
    primary, secondary, outer = LocalKey.generate(), LocalKey.generate(), LocalKey.generate()
    env = Envelope([[primary, secondary], outer], frame_size=SMALL_FRAME)
    blob = env.encrypt(b"available")
    assert inspect(blob).layers[0].key_ids == (primary.key_id, secondary.key_id)
    assert Envelope([secondary, outer]).decrypt(blob) == b"available"
    assert Envelope([primary, outer]).decrypt(blob) == b"available"


def test_wrong_keys_are_refused(env: Envelope, inner_key: LocalKey, outer_key: LocalKey):
    blob = env.encrypt(b"secret")
    with pytest.raises(KeyAccessError, match="layer 1"):
        Envelope([inner_key, LocalKey.generate()]).decrypt(blob)
    with pytest.raises(KeyAccessError, match="layer"):
        Envelope([outer_key, inner_key]).decrypt(blob)
    with pytest.raises(KeyAccessError, match="configured for 3"):
        Envelope([inner_key, outer_key, LocalKey.generate()]).decrypt(blob)
    # Same key id, other key material: the wrapped key does not authenticate.
    impostor = LocalKey.generate(key_id=outer_key.key_id)
    with pytest.raises(DecryptionError):
        Envelope([inner_key, impostor]).decrypt(blob)


def test_encrypt_into_and_decrypt_into(env: Envelope):
    data = os.urandom(5000)
    out = bytearray(env.max_encrypted_size(len(data), CONTEXT))
    n = env.encrypt_into(data, out, context=CONTEXT)
    assert n < len(out)
    plain = bytearray(len(data) + 100)
    assert env.decrypt_into(out[:n], plain, context=CONTEXT) == len(data)
    assert plain[: len(data)] == data
    with pytest.raises(ValueError, match="needs"):
        env.encrypt_into(data, bytearray(100))
    with pytest.raises(ValueError, match="needs"):
        env.decrypt_into(out[:n], bytearray(10), context=CONTEXT)
    with pytest.raises(TypeError):
        env.encrypt_into(data, memoryview(bytes(len(out))))


def test_failed_decrypt_into_leaves_no_unverified_plaintext(env: Envelope):
    data = b"A" * 4000
    blob = env.encrypt(data)
    blob[-1] ^= 1  # only the final frame is bad: earlier frames verify and are written
    out = bytearray(len(data))
    with pytest.raises(DecryptionError):
        env.decrypt_into(blob, out)
    assert out == bytearray(len(data))


def test_inspect_reads_the_header_without_keys(env: Envelope):
    blob = env.encrypt(b"z" * 3000, context=CONTEXT)
    info = inspect(blob)
    assert info.version == 1
    assert info.frame_size == SMALL_FRAME
    assert dict(info.context) == CONTEXT
    assert [layer.algorithm for layer in info.layers] == ["AES-256-GCM", "AES-256-OCB3"]
    assert info.layers[0].wrap_algorithms == ("A256GCM",)
    assert info.plaintext_length == 3000
    from_file = inspect(io.BytesIO(bytes(blob)))
    assert from_file.layers == info.layers
    assert from_file.plaintext_length is None
    # A body one byte short still claims a (shorter) plaintext; a body cut at a frame
    # boundary has no final frame, so no length can be claimed.
    assert inspect(blob[:-1]).plaintext_length == 2999
    cut = info.header_length + 2 * (SMALL_FRAME + 32)
    assert inspect(blob[:cut]).plaintext_length is None
    with pytest.raises(FormatError):
        inspect(b"\x89ENV")


def test_rewrap_changes_only_the_header(env: Envelope, inner_key: LocalKey):
    data = os.urandom(4000)
    blob = env.encrypt(data, context=CONTEXT)
    new_outer = LocalKey.generate()
    rotated = Envelope([inner_key, [new_outer]], frame_size=SMALL_FRAME)
    # The new envelope cannot read the old message until it is rewrapped by one that can.
    with pytest.raises(KeyAccessError):
        rotated.decrypt(blob, context=CONTEXT)
    bridge = Envelope([inner_key, [env.layers[1][0], new_outer]], frame_size=SMALL_FRAME)
    rewrapped = bridge.rewrap(blob)
    old_header = inspect(blob).header_length
    new_header = inspect(rewrapped).header_length
    assert rewrapped[new_header:] == blob[old_header:]
    assert inspect(rewrapped).layers[1].key_ids == (env.layers[1][0].key_id, new_outer.key_id)
    assert rotated.decrypt(rewrapped, context=CONTEXT) == data
    assert env.decrypt(rewrapped, context=CONTEXT) == data


def test_files_are_written_atomically(tmp_path, env: Envelope):
    source = tmp_path / "plain.bin"
    data = os.urandom(10_000)
    source.write_bytes(data)
    sealed = tmp_path / "sealed.env"
    env.encrypt_file(source, sealed, context=CONTEXT)
    assert sealed.stat().st_mode & 0o777 == 0o600
    restored = tmp_path / "restored.bin"
    env.decrypt_file(sealed, restored, context=CONTEXT)
    assert restored.read_bytes() == data
    assert restored.stat().st_mode & 0o777 == 0o600

    # A truncated file: the first frames verify, the end never comes. Nothing is left at
    # the destination, not even a partial file, and no temporary file remains.
    truncated = tmp_path / "truncated.env"
    truncated.write_bytes(sealed.read_bytes()[:-500])
    target = tmp_path / "never.bin"
    with pytest.raises(DecryptionError):
        env.decrypt_file(truncated, target, context=CONTEXT)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "plain.bin",
        "restored.bin",
        "sealed.env",
        "truncated.env",
    ]
    # An existing destination survives a failed decrypt untouched.
    restored_before = restored.read_bytes()
    with pytest.raises(DecryptionError):
        env.decrypt_file(truncated, restored, context=CONTEXT)
    assert restored.read_bytes() == restored_before


def test_stream_writes_only_verified_frames_then_raises(env: Envelope):
    data = os.urandom(5 * SMALL_FRAME + 10)
    blob = bytes(env.encrypt(data))
    cut = blob[: -(10 + 32)]  # drop the final frame exactly: every remaining frame verifies
    out = io.BytesIO()
    with pytest.raises(DecryptionError):
        env.decrypt_stream(io.BytesIO(cut), out)
    assert data.startswith(out.getvalue())
    assert len(out.getvalue()) == 5 * SMALL_FRAME


class _Trickle(io.RawIOBase):
    """A source that returns at most 7 bytes a read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(min(7, len(buffer)))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_streams_survive_short_reads(env: Envelope):
    data = os.urandom(3 * SMALL_FRAME + 5)
    sealed = io.BytesIO()
    env.encrypt_stream(_Trickle(data), sealed)
    out = io.BytesIO()
    env.decrypt_stream(_Trickle(sealed.getvalue()), out)
    assert out.getvalue() == data


def test_decrypt_in_a_fresh_process(tmp_path):
    inner, outer = LocalKey.generate(), LocalKey.generate()
    inner.save(tmp_path / "inner.key")
    outer.save(tmp_path / "outer.key")
    blob = Envelope([inner, outer]).encrypt(b"across processes", context={"k": "v"})
    (tmp_path / "msg.env").write_bytes(blob)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from envelope import Envelope, LocalKey
        d = Path(sys.argv[1])
        env = Envelope([LocalKey.load(d / "inner.key"), LocalKey.load(d / "outer.key")])
        sys.stdout.buffer.write(env.decrypt((d / "msg.env").read_bytes(), context={"k": "v"}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == b"across processes"


class _KeepsViews:
    """A sink that (against the io contract) keeps what it was given instead of copying."""

    def __init__(self) -> None:
        self.parts: list[memoryview] = []

    def write(self, data) -> int:
        self.parts.append(data)
        return len(data)


def test_a_failing_frame_leaves_no_unverified_plaintext_in_views_already_written():
    env = Envelope([LocalKey.generate()], frame_size=SMALL_FRAME)
    blob = env.encrypt(b"A" * SMALL_FRAME + b"B" * SMALL_FRAME + b"C" * 10)
    header_length = inspect(blob).header_length
    blob[header_length + SMALL_FRAME + 16 + 1] ^= 1  # frame 1 fails its tag
    sink = _KeepsViews()
    with pytest.raises(DecryptionError):
        env.decrypt_stream(io.BytesIO(bytes(blob)), sink)
    assert len(sink.parts) == 1
    # The buffer was wiped when frame 1 failed: neither its unverified bytes nor anything
    # else but zeros is visible through the view the sink kept.
    assert bytes(sink.parts[0]) == bytes(SMALL_FRAME)


def test_messages_over_max_frames_are_refused_at_encryption(monkeypatch):
    import envelope._limits

    monkeypatch.setattr(envelope._limits, "MAX_FRAMES", 4)
    env = Envelope([LocalKey.generate()], frame_size=SMALL_FRAME)
    fits = os.urandom(3 * SMALL_FRAME + 5)  # three full frames and a final one: 4 frames
    assert env.decrypt(env.encrypt(fits)) == fits
    too_long = os.urandom(4 * SMALL_FRAME)  # four full frames and an empty final one: 5
    with pytest.raises(ValueError, match="frame_size"):
        env.encrypt(too_long)
    with pytest.raises(ValueError, match="frame_size"):
        env.encrypt_into(too_long, bytearray(10 * SMALL_FRAME))
    with pytest.raises(ValueError, match="frame_size"):
        env.encrypt_stream(io.BytesIO(too_long), io.BytesIO())
    sealed = io.BytesIO()
    env.encrypt_stream(io.BytesIO(fits), sealed)
    assert env.decrypt(sealed.getvalue()) == fits


class _NonBlocking(io.RawIOBase):
    """Returns its first chunk, then None: 'no data ready yet', as a non-blocking pipe."""

    def __init__(self, first: bytes, *, use_read: bool = False) -> None:
        self._first = first
        self._use_read = use_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer):
        if not self._first:
            return None
        chunk, self._first = self._first[: len(buffer)], self._first[len(buffer) :]
        buffer[: len(chunk)] = chunk
        return len(chunk)


class _NonBlockingRead:
    def __init__(self, first: bytes) -> None:
        self._first = first

    def read(self, size: int) -> bytes | None:
        if not self._first:
            return None
        chunk, self._first = self._first[:size], self._first[size:]
        return chunk


def test_a_non_blocking_source_with_no_data_ready_is_not_the_end_of_input(env: Envelope):
    for source in (_NonBlocking(b"x" * 3000), _NonBlockingRead(b"x" * 3000)):
        with pytest.raises(BlockingIOError):
            env.encrypt_stream(source, io.BytesIO())
