"""Crash-safe file output: a file appears complete, synced, with mode 0600 (or the mode asked
for), or not at all; and a file rewritten in place keeps its old content until the new one
is complete.

On Linux the output is an unnamed file (``O_TMPFILE``) in the target's directory: it has no
name until it is linked into place, after the caller's last write and an ``fsync``, so a
crash or ``kill -9`` at any moment before that leaves nothing behind (the kernel frees an
unnamed file with its last descriptor). Linking it needs ``linkat(AT_SYMLINK_FOLLOW)`` on
``/proc/self/fd/N``; ``os.link`` does that only when given a directory descriptor (plain
``os.link`` would link the magic symlink itself and fail with ``EXDEV``).

Replacing an existing file cannot be done by ``linkat``, which never replaces: the unnamed
file is linked under a hidden name (``.NAME.XXXXXXXXXXXXXXXX.envelope-tmp``) and renamed over
the target at once, with the catchable termination signals (SIGTERM, SIGINT, SIGHUP,
SIGQUIT) held back between the two calls in a single-threaded process. Only a SIGKILL or a
power loss in those microseconds leaves the hidden file, complete and verified;
:func:`remove_stale` deletes it.

Elsewhere (another OS, a file system without ``O_TMPFILE``, no ``/proc``) the output is a
named temporary file of that same pattern, renamed into place, and deleted on any error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import sys
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TEMP_SUFFIX",
    "atomic_output",
    "is_temporary",
    "leave_signals_to_other_threads",
    "remove_stale",
    "replace_header",
]

#: Every temporary name this module creates ends with this suffix.
TEMP_SUFFIX = ".envelope-tmp"
_TEMP_NAME = re.compile(r"\A\.(?P<target>.+)\.[0-9a-f]{16}" + re.escape(TEMP_SUFFIX) + r"\Z")
_PRIVATE = 0o600
# A file system that cannot make unnamed files says so with one of these.
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT}


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, overwrite: bool = True, mode: int = _PRIVATE
) -> Iterator[BinaryIO]:
    """Yield a file for the content of ``path``; on a clean exit it is flushed, synced and
    put in place; on an exception it disappears and ``path`` is left untouched.

    With ``overwrite=False`` the file is published with a hard link, which fails with
    ``FileExistsError`` if ``path`` exists at that moment: no check-then-rename window in
    which a file created by someone else could be replaced.

    The file is created with mode 0600, so neither a key nor a decrypted plaintext is ever
    readable by others, even for a moment; ``mode`` is applied just before it is published.
    """
    target = Path(path)
    directory = target.parent
    # Off POSIX a directory cannot be opened: no unnamed file, no directory sync.
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY) if os.name == "posix" else None
    try:
        fd = None if dir_fd is None else _unnamed_file(dir_fd)
        if dir_fd is None or fd is None:
            with _named_output(directory, target.name, overwrite, mode) as handle:
                yield handle
        else:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                _finish(handle, mode)
                _publish(f"/proc/self/fd/{handle.fileno()}", dir_fd, target.name, overwrite)
        if dir_fd is not None:
            # The new name is durable only once the directory entry is on disk.
            os.fsync(dir_fd)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def replace_header(
    path: str | os.PathLike[str],
    read_header: Callable[[BinaryIO], memoryview],
    new_header: Callable[[memoryview], bytes],
) -> None:
    """Rewrite the message at ``path`` with ``new_header(old_header)`` in front of its
    unchanged body, atomically: the old file stays in place until the new one is complete
    and synced. The file keeps its permission bits."""
    with open(path, "rb") as source:
        old = read_header(source)
        header = new_header(old)
        mode = os.fstat(source.fileno()).st_mode & 0o7777
        with atomic_output(path, overwrite=True, mode=mode) as sink:
            sink.write(header)
            sink.flush()
            _copy_rest(source, sink)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary name of this module."""
    return _TEMP_NAME.match(name) is not None


def remove_stale(
    directory: str | os.PathLike[str], names: Collection[str] | None = None
) -> list[Path]:
    """Delete what a crash may have left in ``directory``: hidden temporary files of this
    module (only those for the files ``names``, if given). Returns what was deleted."""
    removed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _TEMP_NAME.match(entry.name)
            if match is None or (names is not None and match.group("target") not in names):
                continue
            if entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


# -- internals -----------------------------------------------------------------------------


def _unnamed_file(dir_fd: int) -> int | None:
    """An unnamed file in the directory, or None where there is no such thing."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(".", flag | os.O_WRONLY | os.O_CLOEXEC, _PRIVATE, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:
            return None
        raise


def _finish(handle: BinaryIO, mode: int) -> None:
    handle.flush()
    if mode != _PRIVATE and hasattr(os, "fchmod"):
        os.fchmod(handle.fileno(), mode)
    os.fsync(handle.fileno())


def _publish(source: str, dir_fd: int, name: str, overwrite: bool) -> None:
    """Give the complete file at ``source`` the name ``name`` in ``dir_fd``."""
    if not overwrite:
        os.link(source, name, dst_dir_fd=dir_fd, follow_symlinks=True)
        return
    # linkat never replaces: link under a hidden name, then rename that over the target.
    held = _hold_signals()
    try:
        while True:
            hidden = _temp_name(name)
            try:
                os.link(source, hidden, dst_dir_fd=dir_fd, follow_symlinks=True)
                break
            except FileExistsError:
                continue
        try:
            os.rename(hidden, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(hidden, dir_fd=dir_fd)
            raise
    finally:
        _restore_signals(held)


_TERMINATING = frozenset(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name)
)


def _hold_signals() -> set[int | signal.Signals] | None:
    """Hold back the termination signals a process can catch, for the instant between the
    hidden link and the rename; returns the previous mask."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _TERMINATING)


def _restore_signals(previous: set[int | signal.Signals] | None) -> None:
    # A signal that came in the meantime is delivered now, with the file in place.
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def leave_signals_to_other_threads() -> None:
    """Called first in every thread the library starts. A signal sent to the process goes
    to a thread that does not block it; if a library thread took it, holding signals in the
    caller's thread around a rename would not hold them back."""
    _hold_signals()


@contextlib.contextmanager
def _named_output(directory: Path, name: str, overwrite: bool, mode: int) -> Iterator[BinaryIO]:
    """The portable way: a named temporary file (mode 0600), renamed into place."""
    while True:
        tmp = directory / _temp_name(name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, _PRIVATE)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            _finish(handle, mode)
        if overwrite:
            os.replace(tmp, directory / name)
        else:
            os.link(tmp, directory / name)
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_O_BINARY = getattr(os, "O_BINARY", 0)


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(8)}{TEMP_SUFFIX}"


def _copy_rest(source: BinaryIO, sink: BinaryIO) -> None:
    """Copy what is left of ``source`` to ``sink``, in the kernel where it can."""
    offset = source.tell()
    size = os.fstat(source.fileno()).st_size
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        try:
            while offset < size:
                copied = copy_range(source.fileno(), sink.fileno(), size - offset, offset)
                if copied == 0:
                    break
                offset += copied
            source.seek(offset)
        except OSError as exc:
            if exc.errno not in {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}:
                raise
            source.seek(offset)
    shutil.copyfileobj(source, sink, 1 << 20)
