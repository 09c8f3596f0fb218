"""The work of encrypt, decrypt and rewrap: one file at a time, or many in parallel, one
process per core, each with its own envelope.

Every output goes through crash-safe file output (``envelope._files``): it appears complete
and verified, or not at all. Worker processes die with the command: on Linux each asks the
kernel to send it SIGTERM when its parent goes (``PR_SET_PDEATHSIG``), which ends it at
once, except in the microseconds in which it puts a replacement in place (the hidden link
and the rename), where the signal waits for the rename. So where files are replaced
(``rewrap``, ``--in-place``, ``--force``), the work runs in a worker process even when one
would do: a ``kill -9`` of the command then leaves neither an output nor a hidden file.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from .. import Envelope, MessageInfo, inspect
from .._files import atomic_output, remove_stale
from ._config import Built, Recipe
from ._errors import CliError, ExitCode, describe, exit_code
from ._progress import Reporter

__all__ = [
    "Job",
    "Outcome",
    "Task",
    "already_rewrapped",
    "attempt",
    "first_failure",
    "remove_leftovers",
    "report",
    "run",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Task:
    """What every file of one command gets done to it."""

    operation: str  # "encrypt", "decrypt" or "rewrap"
    recipe: Recipe
    overwrite: bool = False
    #: rewrap: the key ids each layer of a rewrapped header names; a file whose header
    #: names exactly these is already done (that is what makes a rewrap resumable).
    target_ids: tuple[tuple[str, ...], ...] | None = None


@dataclass(frozen=True)
class Job:
    """One file: its source, its output (``-`` is standard output; the source itself for
    rewrap and in place) and the name its result is reported under."""

    source: str
    target: str
    name: str
    size: int | None


@dataclass(frozen=True)
class Outcome:
    name: str
    code: ExitCode
    message: str
    size: int


def remove_leftovers(jobs: Sequence[Job]) -> None:
    """Before files are replaced: delete the hidden files a crash may have left for them
    (one look at each directory)."""
    names: dict[Path, set[str]] = {}
    for job in jobs:
        if job.target != "-":
            target = Path(job.target)
            names.setdefault(target.parent, set()).add(target.name)
    for directory, targets in names.items():
        remove_stale(directory, targets)


def run(
    task: Task, jobs: Sequence[Job], built: Built, reporter: Reporter, workers: int
) -> ExitCode:
    """Do ``task`` to every job, reporting a result per file when there are several; returns
    the exit code: 0, or that of the first job (in order) that failed. ``built`` is the
    command's own envelope: serial work uses it, worker processes build their own."""
    many = len(jobs) > 1
    outcomes: list[Outcome | None] = [None] * len(jobs)
    sizes = [job.size for job in jobs]
    total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
    verb = {"encrypt": "encrypting", "decrypt": "decrypting", "rewrap": "rewrapping"}

    def start() -> None:
        reporter.start(verb[task.operation], total, len(jobs) if many else None)

    try:
        if (workers > 1 and many) or _shelter(task, jobs):
            _parallel(task, jobs, reporter, max(1, min(workers, len(jobs))), outcomes, start)
        else:
            start()
            _serial(built.envelope, task, jobs, reporter, outcomes)
    finally:
        reporter.close()
    return first_failure(outcomes)


def first_failure(outcomes: Sequence[Outcome | None]) -> ExitCode:
    """The exit code of the first outcome (in order) that failed, else 0."""
    codes = [o.code for o in outcomes if o is not None and o.code != ExitCode.OK]
    return codes[0] if codes else ExitCode.OK


def _shelter(task: Task, jobs: Sequence[Job]) -> bool:
    """Whether to replace files from a worker process rather than from the command itself
    (see the module's docstring): on Linux, when no job reads standard input (a worker's
    standard input is closed) or writes standard output."""
    return (
        task.overwrite
        and sys.platform.startswith("linux")
        and all(job.source != "-" and job.target != "-" for job in jobs)
    )


def _serial(
    envelope: Envelope,
    task: Task,
    jobs: Sequence[Job],
    reporter: Reporter,
    outcomes: list[Outcome | None],
) -> None:
    for index, job in enumerate(jobs):
        outcome = _attempt(envelope, task, job, reporter.advance)
        outcomes[index] = outcome
        report(reporter, outcome, len(jobs) > 1)


def _parallel(
    task: Task,
    jobs: Sequence[Job],
    reporter: Reporter,
    workers: int,
    outcomes: list[Outcome | None],
    start: Callable[[], None],
) -> None:
    context = _mp_context()
    counter = context.Value("q", 0)
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(task, counter, os.getpid()),
    ) as pool:
        pending = {pool.submit(_work, job): index for index, job in enumerate(jobs)}
        # Only now, with every worker started, may the progress display start its thread.
        start()
        done_bytes = 0
        try:
            while pending:
                finished, _ = concurrent.futures.wait(
                    pending, timeout=0.1, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in finished:
                    index = pending.pop(future)
                    try:
                        outcome = future.result()
                    except BaseException as exc:  # a worker that died
                        outcome = Outcome(jobs[index].name, exit_code(exc), describe(exc), 0)
                    outcomes[index] = outcome
                    done_bytes += outcome.size
                    report(reporter, outcome, len(jobs) > 1)
                with counter.get_lock():
                    reporter.set_bytes(max(done_bytes, counter.value))
        except BaseException:
            # Interrupted: stop the workers now rather than after their current files (an
            # unfinished output vanishes with its process); the pool then fails what is left.
            for process in multiprocessing.active_children():
                process.terminate()
            raise


def report(reporter: Reporter, outcome: Outcome, many: bool) -> None:
    """One item done: a failure's line always, a success's when there are ``many``."""
    reporter.file_done()
    if outcome.code != ExitCode.OK:
        reporter.line(f"envelope: {outcome.message}", success=False)
    elif many:
        reporter.line(outcome.message, success=True)


def attempt(name: str, size: int, perform: Callable[[], str]) -> Outcome:
    """The outcome of ``perform`` for the item ``name``: its message, or the error it raised
    as one line and an exit code (and, with ``ENVELOPE_DEBUG``, its traceback)."""
    try:
        message = perform()
    except Exception as exc:
        if os.environ.get("ENVELOPE_DEBUG"):
            import traceback  # noqa: PLC0415

            traceback.print_exc()
        return Outcome(name, exit_code(exc), describe(exc, name), size)
    return Outcome(name, ExitCode.OK, message, size)


def already_rewrapped(info: MessageInfo, target_ids: tuple[tuple[str, ...], ...] | None) -> bool:
    """Whether a header (``info``) names exactly the key ids a rewrap would write."""
    return target_ids is not None and tuple(layer.key_ids for layer in info.layers) == target_ids


def _attempt(envelope: Envelope, task: Task, job: Job, progress: Callable[[int], None]) -> Outcome:
    return attempt(job.name, job.size or 0, lambda: _perform(envelope, task, job, progress))


def _perform(envelope: Envelope, task: Task, job: Job, progress: Callable[[int], None]) -> str:
    context = dict(task.recipe.context)
    if task.operation == "rewrap":
        return _rewrap(envelope, task, job, progress)
    crypt = envelope.encrypt_stream if task.operation == "encrypt" else envelope.decrypt_stream
    past = "encrypted" if task.operation == "encrypt" else "decrypted"
    with _source(job.source) as source:
        counted = _Counted(source, progress)
        if job.target == "-":
            crypt(counted, sys.stdout.buffer, context)
            sys.stdout.buffer.flush()
            return f"{past} {job.name}"
        target = Path(job.target)
        if not task.overwrite and os.path.lexists(target):
            raise FileExistsError(0, "exists", str(target))
        with atomic_output(target, overwrite=task.overwrite, mode=_mode_for(task, job)) as sink:
            crypt(counted, sink, context)
    return f"{past} {job.name} -> {job.target}"


def _rewrap(envelope: Envelope, task: Task, job: Job, progress: Callable[[int], None]) -> str:
    path = Path(job.source)
    info = inspect(path)
    size = job.size or 0
    if already_rewrapped(info, task.target_ids):
        progress(size)
        return f"already rewrapped {job.name}"
    envelope.rewrap_file(path)
    progress(size)
    return f"rewrapped {job.name}"


def _mode_for(task: Task, job: Job) -> int:
    """A file replaced in place keeps its mode, except that a decrypted plaintext is 0600
    (as every other new output is)."""
    if job.source == job.target and task.operation == "encrypt":
        return os.stat(job.source).st_mode & 0o7777
    return 0o600


@contextlib.contextmanager
def _source(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    if os.path.isdir(name):
        raise CliError(f"{name} is a directory; pass -r to process a directory")
    with open(name, "rb") as handle:
        yield handle


class _Counted:
    """A binary source that reports how much was read from it."""

    def __init__(self, source: BinaryIO, progress: Callable[[int], None]) -> None:
        # Every source here (a file, standard input's buffer) is a BufferedReader.
        self._source = cast("io.BufferedReader", source)
        self._progress = progress

    def readinto(self, buffer: memoryview) -> int | None:
        got: int | None = self._source.readinto(buffer)
        if got:
            self._progress(got)
        return got

    def read(self, size: int, /) -> bytes | None:
        data = self._source.read(size)
        if data:
            self._progress(len(data))
        return data


# -- worker processes ----------------------------------------------------------------------

_worker: tuple[Task, Built, Any] | None = None
#: Whether workers are forked from the command itself (else from a fork server).
_FORKED = False


def _mp_context() -> multiprocessing.context.BaseContext:
    """Where workers come from. Forking is the fastest (a worker inherits the loaded
    modules) and is safe while the command has no other thread: from Python 3.11 the pool
    forks all its workers at the first submit, before the progress display starts its
    thread. Otherwise a fork server, which starts clean workers from one small process."""
    methods = multiprocessing.get_all_start_methods()
    global _FORKED  # noqa: PLW0603 - read by the forked workers
    _FORKED = "fork" in methods and sys.version_info >= (3, 11) and threading.active_count() == 1
    if _FORKED:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _init_worker(task: Task, counter: Any, command_pid: int) -> None:
    global _worker  # noqa: PLW0603 - one envelope per worker process, built once
    _die_with_parent(command_pid)
    # Ctrl-C goes to the whole process group; the command itself handles it, and stops the
    # workers with SIGTERM, which ends a worker at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker = (task, task.recipe.build(), counter)


def _work(job: Job) -> Outcome:
    assert _worker is not None
    task, built, counter = _worker

    def progress(count: int) -> None:
        with counter.get_lock():
            counter.value += count

    return _attempt(built.envelope, task, job, progress)


def _die_with_parent(command_pid: int) -> None:
    """Have the kernel end this worker (SIGTERM) when its parent ends, and end now if that
    already happened. A worker's parent is the command itself, or a fork server, which ends
    when the command does."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # noqa: PLC0415

    pr_set_pdeathsig = 1
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    # An orphan has been given another parent already: the signal will never come. (A dead
    # command may linger as a zombie, so its pid alone proves nothing.)
    if os.getppid() != parent or (_FORKED and parent != command_pid):
        os._exit(1)
