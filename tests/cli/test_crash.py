"""``kill -9`` of encrypt, decrypt and rewrap at random moments over a directory.

After each kill (of the command; its worker processes must die with it) the output
directory holds only complete, verified outputs (a file is there whole or not at all), no
temporary file anywhere, and the originals are intact: for rewrap, which works in place,
every file still decrypts, under its old header or its new one.

The trees live on tmpfs when there is one: on this machine's disk each ``fsync`` costs tens
of milliseconds, and the kills would mostly land in those waits instead of spreading over
the work.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from envelope import Envelope, LocalKey, inspect

from .conftest import Keys, clean_environment, envelope_command, files_under, make_tree

pytestmark = pytest.mark.slow

KILLS_PER_COMMAND = 18  # 54 in all
# A few large files and many small ones: per-file costs (open, sync, link) dominate on tmpfs,
# so that a run's work lasts about as long as the interpreter's start.
SIZES = tuple([0, 1, 4095, 65536, 65537, 300_000, 1_500_000, 3_000_000] * 3 + [2_000] * 300)
SUFFIX = ".envelope"


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="envelope-crash-", dir=shm))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def _live_in_group(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (an orphan's zombie may wait a while for
    its reaper; it holds no file open)."""
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in {"Z", "X"}:
            live.append(int(entry))
    return live


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*envelope_command(), *args, "-q"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_environment(),
        start_new_session=True,
    )


def _full_run(args: list[str]) -> float:
    """Run once to the end; returns how long it took."""
    started = time.monotonic()
    process = _start(args)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    return time.monotonic() - started


def _start_up() -> float:
    """How long the interpreter takes to start and import the command: nothing is written
    before that, so kills are spread over the rest of a run."""
    started = time.monotonic()
    subprocess.run([*envelope_command(), "--version"], capture_output=True, check=True)
    return time.monotonic() - started


def _kill_at_random(args: list[str], start: float, end: float, rng: random.Random) -> None:
    process = _start(args)
    time.sleep(rng.uniform(start, end))
    process.kill()
    process.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while _live_in_group(process.pid):
        assert time.monotonic() < deadline, "a worker outlived the killed command"
        time.sleep(0.01)


def _kills(
    args: Callable[[int], list[str]],
    reset: Callable[[], None],
    check: Callable[[], int],
    rng: random.Random,
) -> None:
    """A full run, then the kills. ``check`` asserts the state and returns how many files
    are done; the spread of the kills over the work is printed (``pytest -s``)."""
    reset()
    duration = _full_run(args(0))
    total = check()
    start = min(0.8 * _start_up(), duration / 2)
    spread = {"none done": 0, "some done": 0, "all done": 0}
    for n in range(KILLS_PER_COMMAND):
        reset()
        _kill_at_random(args(n + 1), start, duration, rng)
        done = check()
        spread["none done" if done == 0 else "all done" if done == total else "some done"] += 1
    print(
        f"{args(0)[0]}: a full run {duration:.2f} s, kills from {start:.2f} s; "
        f"{KILLS_PER_COMMAND} kills: {spread}"
    )


def _jobs(n: int) -> list[str]:
    # Half the runs in worker processes, half in the command's own process.
    return ["-j", "2" if n % 2 else "1"]


@pytest.fixture
def rng() -> random.Random:
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"random seed {seed}")
    return random.Random(seed)


@pytest.fixture
def originals(scratch: Path) -> tuple[Path, dict[str, bytes]]:
    root = scratch / "plain"
    root.mkdir()
    return root, make_tree(root, SIZES)


def _assert_same(root: Path, contents: dict[str, bytes]) -> None:
    found = files_under(root)
    assert sorted(found) == sorted(contents)
    for name, data in contents.items():
        assert found[name].read_bytes() == data, name


def _kills_over_a_tree(
    command: str,
    source: Path,
    originals: dict[str, bytes],
    expected: dict[str, bytes],
    opened: Callable[[Path], bytes | bytearray],
    keys: Keys,
    rng: random.Random,
) -> None:
    """Kill ``command -r source -o out``: every output there is ``expected`` (by name, as
    ``opened`` reads it), nothing else is, and the sources are still ``originals``."""
    out = source.parent / "out"

    def check() -> int:
        _assert_same(source, originals)
        outputs = files_under(out)
        for name, path in outputs.items():
            assert name in expected, f"not an output: {name}"
            assert opened(path) == expected[name], name
        return len(outputs)

    _kills(
        lambda n: [command, "-r", str(source), "-o", str(out), *_jobs(n), *keys.args],
        lambda: shutil.rmtree(out, ignore_errors=True),
        check,
        rng,
    )


def test_kill_9_during_encrypt(keys: Keys, originals, rng: random.Random):
    source, contents = originals
    env = keys.envelope()
    expected = {name + SUFFIX: data for name, data in contents.items()}
    _kills_over_a_tree(
        "encrypt", source, contents, expected, lambda p: env.decrypt(p.read_bytes()), keys, rng
    )


def test_kill_9_during_decrypt(scratch: Path, keys: Keys, originals, rng: random.Random):
    _, contents = originals
    env = keys.envelope()
    sealed = scratch / "sealed"
    sealed_contents = {}
    for name, data in contents.items():
        sealed_contents[name + SUFFIX] = bytes(env.encrypt(data))
        path = sealed / (name + SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(sealed_contents[name + SUFFIX])
    _kills_over_a_tree("decrypt", sealed, sealed_contents, contents, Path.read_bytes, keys, rng)


def test_kill_9_during_rewrap(scratch: Path, keys: Keys, originals, rng: random.Random):
    root, contents = originals
    env = keys.envelope()
    for name, data in contents.items():
        (root / name).write_bytes(env.encrypt(data))
    old = LocalKey.load(keys.outer)
    new_path = keys.outer.with_name("new-outer.key")
    LocalKey.generate().save(new_path)
    new = LocalKey.load(new_path)
    inner = LocalKey.load(keys.inner)
    # Each run swaps the order of the outer layer's KEKs, so every run has headers to rewrite.
    orders = [f"local:{new_path},local:{keys.outer}", f"local:{keys.outer},local:{new_path}"]
    allowed = {(old.key_id,), (new.key_id, old.key_id), (old.key_id, new.key_id)}
    readers = {old.key_id: Envelope([inner, old]), new.key_id: Envelope([inner, new])}

    target: list[tuple[str, ...]] = []

    def check() -> int:
        found = files_under(root)
        assert sorted(found) == sorted(contents), sorted(set(found) - set(contents))
        done = 0
        for name, path in found.items():
            ids = inspect(path).layers[1].key_ids
            assert ids in allowed, name
            for key_id in ids:
                assert readers[key_id].decrypt(path.read_bytes()) == contents[name], name
            done += ids == (target[-1] if target else ids)
        return done

    def reset() -> None:
        # The run about to start puts the outer layer's KEKs in the other order.
        target.append((old.key_id, new.key_id) if len(target) % 2 else (new.key_id, old.key_id))

    _kills(
        lambda n: [
            "rewrap",
            str(root),
            *_jobs(n),
            "-k",
            f"local:{keys.inner}",
            "-k",
            orders[n % 2],
        ],
        reset,
        check,
        rng,
    )
