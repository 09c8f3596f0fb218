"""``envelope vault``: the local Key Vault in the foreground, and the environment lines that
point a shell or an app at it."""

from __future__ import annotations

import re
import shlex
import signal
import threading
from collections.abc import Sequence
from types import FrameType

import click

from ._errors import CliError, ExitCode

__all__ = ["serve"]


def serve(port: int, keys: Sequence[str], quiet: bool) -> int:
    try:
        from ..testing import LocalKeyVault  # noqa: PLC0415
    except ImportError as exc:
        raise CliError(
            f"envelope vault needs the 'testing' extra ({exc.name} is missing): "
            "pip install 'layered-envelope[testing]'"
        ) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with LocalKeyVault(port=port) as local:
        lines = environment(local.url, local.ca_file, local.tenant_id, local.identity())
        for spec in keys:
            name, _, rest = spec.partition(":")
            kty, _, size = rest.partition(":")
            if not size.isdigit() and size:
                raise CliError(f"--key {spec!r}: the size must be a number of bits")
            try:
                local.create_key(name, kty or "RSA", int(size) if size else None)
            except (ValueError, KeyError) as exc:
                raise CliError(f"--key {spec!r}: {exc}") from None
            lines.append(_line(f"ENVELOPE_KEY_{_variable(name)}", f"{local.url}/keys/{name}"))
        click.echo("\n".join(lines))
        if not quiet:
            click.echo(
                f"envelope: a local Key Vault is listening on {local.url}; keys live in "
                "memory only. Ctrl-C stops it.",
                err=True,
            )
        while not stop.wait(0.5):
            pass
    return ExitCode.OK


def environment(url: str, ca_file: str, tenant: str, identity: object) -> list[str]:
    """The lines: the variables this command reads (ENVELOPE_*) and those azure-identity's
    client-secret credential reads (AZURE_*)."""
    return [
        _line("ENVELOPE_VAULT_URL", url),
        _line("ENVELOPE_CA_FILE", ca_file),
        _line("AZURE_AUTHORITY_HOST", url),
        _line("AZURE_TENANT_ID", tenant),
        _line("AZURE_CLIENT_ID", getattr(identity, "client_id")),  # noqa: B009
        _line("AZURE_CLIENT_SECRET", getattr(identity, "client_secret")),  # noqa: B009
    ]


def _line(name: str, value: str) -> str:
    return f"{name}={shlex.quote(value)}"


def _variable(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())
