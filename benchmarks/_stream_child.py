"""One streaming run in a fresh process, so that its peak RSS is the stream's alone.

``python -m benchmarks._stream_child MODE KEY_DIR SRC DST`` prints one JSON object: the
seconds the operation took, the peak RSS of this process after it (``VmHWM``), and the
peak RSS before it (the interpreter, ``cryptography`` and ``envelope`` imported, keys
loaded). MODE is ``encrypt_file``, ``decrypt_file`` (through the atomic path helpers, which
fsync), ``encrypt_stream`` or ``decrypt_stream`` (``SRC`` to a sink that discards, so the
disk is out of the picture), or ``copy_file``: the same file copied with what the file
helpers do around the crypto (a new file in the destination's directory, fsync, rename,
fsync of the directory), through the kernel's ``sendfile``. That is the I/O limit of the
machine.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from envelope import Envelope, LocalKey
from envelope._files import atomic_output

from ._contenders import CONTEXT

__all__ = ["main"]

MODES = ("encrypt_file", "decrypt_file", "encrypt_stream", "decrypt_stream", "copy_file")


class _Discard:
    """A binary sink that counts and forgets."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.written += len(data)
        return len(data)


def _peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Linux carries ``ru_maxrss`` over ``execve`` from the parent's memory (the child starts as
    a copy of the parent, or shares its memory under ``vfork``), so a fresh interpreter
    started by a large parent reports the parent's peak. ``VmHWM`` belongs to the new
    address space alone: use it where it exists.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def copy_file(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` through the same atomic output as the file helpers (a new
    file in ``dst``'s directory, fsync, rename, fsync of the directory): every byte read
    and written, then on disk, with nothing else."""
    with open(src, "rb") as source, atomic_output(dst) as sink:
        try:
            size = os.fstat(source.fileno()).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(sink.fileno(), source.fileno(), offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        except OSError:
            # No sendfile between these two files here: the portable copy.
            source.seek(0)
            sink.seek(0)
            sink.truncate()
            shutil.copyfileobj(source, sink, 1024 * 1024)


def main(argv: list[str]) -> int:
    mode, key_dir, src, dst = argv
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {MODES}")
    keys = sorted(Path(key_dir).glob("layer-*.key"))
    env = Envelope([LocalKey.load(path) for path in keys])
    before = _peak_rss_bytes()
    start = time.perf_counter()
    if mode == "copy_file":
        copy_file(src, dst)
    elif mode == "encrypt_file":
        env.encrypt_file(src, dst, CONTEXT)
    elif mode == "decrypt_file":
        env.decrypt_file(src, dst, CONTEXT)
    else:
        sink = _Discard()
        with open(src, "rb") as source:
            if mode == "encrypt_stream":
                env.encrypt_stream(source, sink, CONTEXT)
            else:
                env.decrypt_stream(source, sink, CONTEXT)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss": _peak_rss_bytes(), "rss_before": before}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
