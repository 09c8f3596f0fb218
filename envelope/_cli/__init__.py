"""The ``envelope`` command (``python -m envelope``): keygen, encrypt, decrypt, inspect,
rewrap and vault.

=========  ===============  ===============================================================
module     owns
=========  ===============  ===============================================================
``_commands``               the commands, their options, naming outputs, planning trees
``_config``                 ``--key`` specs and the TOML config: how to build an envelope
``_work``                   files one by one or in worker processes, a result per file
``_progress``               progress bars on a terminal, result lines
``_errors``                 exit codes; every failure as one line
``_vault``                  the local Key Vault in the foreground
=========  ===============  ===============================================================
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from ._commands import cli
from ._errors import ExitCode, describe, exit_code

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns its exit code. Errors are one line on standard error; the
    traceback too with ``--debug`` (or ``ENVELOPE_DEBUG=1``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="envelope", standalone_mode=False)
    except click.Abort:
        click.echo("envelope: interrupted", err=True)
        return 130
    except BrokenPipeError:
        # The reader of standard output went away: say nothing more on it.
        _silence_stdout()
        return ExitCode.USAGE
    except Exception as exc:
        # Click 8.2+ answers a bare "envelope" (or "envelope COMMAND") with its help.
        no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
        if isinstance(exc, no_args) and exc.ctx is not None:
            click.echo(exc.ctx.get_help())
            return ExitCode.OK
        if os.environ.get("ENVELOPE_DEBUG"):
            traceback.print_exc()
        message = describe(exc)
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            message += f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"envelope: {message}", err=True)
        return exit_code(exc)
    return int(result or 0)


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
