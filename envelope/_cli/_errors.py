"""Exit codes, and every failure turned into one line that says what is wrong and what to do.

====  =====================================================================================
code  meaning
====  =====================================================================================
0     success
1     integrity or format failure
2     usage
3     key access (including a missing or unreadable key file, and a key that cannot unwrap)
4     insecure transport
====  =====================================================================================
"""

from __future__ import annotations

import enum

import click

from .. import DecryptionError, FormatError, InsecureTransportError, KeyAccessError

__all__ = ["CliError", "ExitCode", "describe", "exit_code"]


class ExitCode(enum.IntEnum):
    OK = 0
    INTEGRITY = 1
    USAGE = 2
    KEY_ACCESS = 3
    INSECURE_TRANSPORT = 4


class CliError(Exception):
    """A failure the command explains itself, with its exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code for ``exc``. Anything unforeseen counts as a failure to produce a
    verified result: 1."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, (click.UsageError, OSError, ValueError, TypeError)):
        return ExitCode.USAGE
    if isinstance(exc, KeyAccessError):
        return ExitCode.KEY_ACCESS
    if isinstance(exc, InsecureTransportError):
        return ExitCode.INSECURE_TRANSPORT
    return ExitCode.INTEGRITY


def describe(exc: BaseException, subject: str | None = None) -> str:
    """One line: what went wrong with ``subject`` (a file name), and what to do about it."""
    prefix = f"{subject}: " if subject else ""
    if isinstance(exc, click.UsageError):
        return exc.format_message()
    if isinstance(exc, CliError):
        return f"{prefix}{exc}"
    if isinstance(exc, FormatError):
        return f"{prefix}not an envelope message, or a damaged one ({exc})"
    if isinstance(exc, DecryptionError):
        text = str(exc)
        if "context" in text:
            return f"{prefix}{text}; run 'envelope inspect' to see the stored context"
        return f"{prefix}{text}: the file is damaged or was tampered with; nothing was written"
    if isinstance(exc, KeyAccessError):
        return f"{prefix}{_key_access(exc)}"
    if isinstance(exc, InsecureTransportError):
        return f"{prefix}connection refused by the TLS policy: {exc}"
    if isinstance(exc, FileExistsError):
        name = exc.filename or subject
        return f"{name} exists; pass --force to replace it"
    if isinstance(exc, OSError):
        name = exc.filename or subject
        reason = exc.strerror or str(exc)
        return f"{name}: {reason}" if name else reason
    if isinstance(exc, (ValueError, TypeError)):
        return f"{prefix}{exc}"
    return f"{prefix}unexpected error: {type(exc).__name__}: {exc} (--debug shows where)"


def _key_access(exc: KeyAccessError) -> str:
    text = str(exc)
    if exc.errors:
        text += " (" + "; ".join(str(e) for e in exc.errors) + ")"
    if "key file" in text and "does not exist" in text:
        return text + "; create one with 'envelope keygen PATH' or fix the --key path"
    if "layer" in text:
        return text + "; 'envelope inspect' shows the keys the message names"
    return text
