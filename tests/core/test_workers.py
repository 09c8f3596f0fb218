# mypy: allow-untyped-defs
"""Large messages on every core: ``Envelope(workers=...)`` seals and opens the frames of one
message on several threads, and streams write on a thread of their own. The results are the
same messages; a failure anywhere releases nothing unverified."""

from __future__ import annotations

import io
import os
import threading

import pytest

import envelope._engine
import envelope._parallel
from envelope import DecryptionError, Envelope, LocalKey, inspect
from tests.conftest import run_threads
from tests.core.conftest import SMALL_FRAME

FRAMES = 11


def test_workers_are_every_cpu_by_default_and_checked():
    keys = [LocalKey.generate(), LocalKey.generate()]
    assert Envelope(keys).workers == len(os.sched_getaffinity(0))
    assert Envelope(keys, workers=3).workers == 3
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="workers"):
            Envelope(keys, workers=bad)  # type: ignore[arg-type]


def test_large_one_shot_messages_use_large_frames_and_open_anywhere():
    keys = [LocalKey.generate(), LocalKey.generate()]
    parallel, serial = Envelope(keys, workers=2), Envelope(keys, workers=1)
    large = os.urandom(2 * envelope._parallel.RUN_BYTES + 3)
    sealed = parallel.encrypt(large)
    assert inspect(sealed).frame_size == envelope._parallel.PARALLEL_FRAME_SIZE
    assert inspect(serial.encrypt(large)).frame_size == serial.frame_size
    assert serial.decrypt(sealed) == large
    assert parallel.decrypt(serial.encrypt(large)) == large
    small = os.urandom(1000)
    assert inspect(parallel.encrypt(small)).frame_size == parallel.frame_size


def test_the_runs_are_sealed_and_opened_on_several_threads(env: Envelope, workers: int):
    runs: list[tuple[str, int, int, int]] = []
    cipher = envelope._engine.FrameCipher
    original = {"seal_run": cipher.seal_run, "open_run": cipher.open_run}

    def recording(name: str):
        def run(self, body, out, first, stop):
            runs.append((name, threading.get_ident(), first, stop))
            return original[name](self, body, out, first, stop)

        return run

    data = os.urandom(FRAMES * SMALL_FRAME + 7)
    with pytest.MonkeyPatch.context() as patch:
        for name in original:
            patch.setattr(cipher, name, recording(name))
        assert env.decrypt(env.encrypt(data)) == data
    for name in original:
        spans = sorted((first, stop) for kind, _, first, stop in runs if kind == name)
        # Contiguous runs that cover every frame, one per worker.
        assert [first for first, _ in spans] == [0] + [stop for _, stop in spans[:-1]]
        assert spans[-1][1] == FRAMES + 1
        assert len(spans) == workers
        threads = {thread for kind, thread, _, _ in runs if kind == name}
        assert len(threads) >= min(workers, 2)


@pytest.mark.parametrize("frame", range(FRAMES + 1))
def test_a_failure_in_any_run_releases_nothing(env: Envelope, frame: int):
    data = os.urandom(FRAMES * SMALL_FRAME + 7)
    message = bytearray(env.encrypt(data))
    length = inspect(message).header_length
    message[length + frame * (SMALL_FRAME + 32) + 3] ^= 1
    with pytest.raises(DecryptionError):
        env.decrypt(message)
    out = bytearray(b"\xaa" * len(data))
    with pytest.raises(DecryptionError):
        env.decrypt_into(message, out)
    assert out == bytes(len(data))  # every run ended, then the whole output was wiped


@pytest.mark.parametrize("frame", [0, 1, FRAMES // 2, FRAMES])
def test_a_stream_releases_exactly_the_frames_before_the_failure(env: Envelope, frame: int):
    data = os.urandom(FRAMES * SMALL_FRAME + 7)
    message = bytearray(env.encrypt(data))
    length = inspect(message).header_length
    message[length + frame * (SMALL_FRAME + 32) + 3] ^= 1
    sink = io.BytesIO()
    with pytest.raises(DecryptionError):
        env.decrypt_stream(io.BytesIO(bytes(message)), sink)
    assert sink.getvalue() == data[: frame * SMALL_FRAME]


class _FailingSink:
    """Fails as a full disk would, on the first write after ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = bytearray()

    def write(self, data: bytes | memoryview) -> int:
        if len(self.received) >= self.limit:
            raise OSError(28, "No space left on device")
        self.received += data
        return len(data)


@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_a_failing_sink_stops_the_stream_with_its_own_error(env: Envelope, direction: str):
    data = os.urandom(FRAMES * SMALL_FRAME + 7)
    message = bytes(env.encrypt(data))
    source = io.BytesIO(data if direction == "encrypt" else message)
    stream = env.encrypt_stream if direction == "encrypt" else env.decrypt_stream
    sink = _FailingSink(limit=3 * SMALL_FRAME)
    with pytest.raises(OSError, match="No space"):
        stream(source, sink)
    # What it took is the start of the output; nothing after the failure was written.
    assert len(sink.received) >= sink.limit
    if direction == "decrypt":
        assert bytes(sink.received) == data[: len(sink.received)]
    else:
        assert len(sink.received) < len(message)


def test_one_envelope_shared_by_eight_threads(env: Envelope):
    def work(n: int) -> bool:
        for i in range(5):
            data = os.urandom((n + i) * 300 + FRAMES * SMALL_FRAME)
            message = env.encrypt(data)
            assert env.decrypt(message) == data
            out = bytearray(len(data))
            assert env.decrypt_into(message, out) == len(data)
            assert out == data
            streamed = io.BytesIO()
            env.decrypt_stream(io.BytesIO(bytes(message)), streamed)
            assert streamed.getvalue() == data
        return True

    results, errors = run_threads(8, work)
    assert errors == []
    assert results == [True] * 8


def test_a_large_file_is_sealed_in_large_frames_and_opens_anywhere(tmp_path):
    keys = [LocalKey.generate(), LocalKey.generate()]
    parallel, serial = Envelope(keys, workers=2), Envelope(keys, workers=1)
    data = os.urandom(2 * envelope._parallel.RUN_BYTES + 5)
    (tmp_path / "plain").write_bytes(data)
    parallel.encrypt_file(tmp_path / "plain", tmp_path / "sealed")
    with open(tmp_path / "sealed", "rb") as sealed:
        assert inspect(sealed).frame_size == envelope._parallel.PARALLEL_FRAME_SIZE
    serial.decrypt_file(tmp_path / "sealed", tmp_path / "opened")
    assert (tmp_path / "opened").read_bytes() == data
    parallel.decrypt_file(tmp_path / "sealed", tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == data
    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    parallel.encrypt_file(small, tmp_path / "small.sealed")
    with open(tmp_path / "small.sealed", "rb") as sealed:
        assert inspect(sealed).frame_size == parallel.frame_size


@pytest.mark.parametrize("workers", [1, 2])
def test_a_large_output_is_written_whole_over_stale_bytes(monkeypatch, workers):
    """Large outputs are not zeroed before use (the pages fault in on the workers), so every
    byte of a message and of a plaintext must be written: here each fresh output starts
    full of a stale pattern, and only a complete overwrite round-trips."""
    import envelope._buffers

    stale: list[bytearray] = []

    def stale_output(_none, size):
        stale.append(bytearray(b"\xa5") * size)
        return stale[-1]

    monkeypatch.setattr(envelope._buffers, "_uninitialised", lambda: stale_output)
    keys = [LocalKey.generate(), LocalKey.generate()]
    env = Envelope(keys, workers=workers)
    lazy = envelope._buffers.LAZY_OUTPUT_BYTES
    for size in (lazy, lazy + 1, 2 * envelope._parallel.RUN_BYTES + 3):
        plaintext = os.urandom(size)
        sealed = env.encrypt(plaintext)
        opened = env.decrypt(sealed)
        assert opened == plaintext
        assert bytes(env.rewrap(sealed)[-size // 2 :]) == bytes(sealed[-size // 2 :])
    assert len(stale) == 9  # every large output came from the stale allocator
    blob = bytearray(env.encrypt(os.urandom(lazy + 5)))
    blob[-1] ^= 1
    with pytest.raises(DecryptionError):
        env.decrypt(blob)
    assert stale[-1] == bytes(len(stale[-1]))  # a failed open leaves no byte behind
