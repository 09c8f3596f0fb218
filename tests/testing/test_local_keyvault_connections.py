# mypy: allow-untyped-defs, allow-incomplete-defs
"""LocalKeyVault keeps up with a burst of connections: 1,000 TLS connections from one client,
all open at once, each served, none refused or reset."""

from __future__ import annotations

import asyncio
import ssl

import envelope.testing._server
from envelope.testing import LocalKeyVault

CONNECTIONS = 1000


async def hold_and_ask(vault: LocalKeyVault, token: str, path: str) -> list[bytes | BaseException]:
    """Open every connection first (each waits until all are open), then send one request
    on each; the status line each one got back, or what went wrong."""
    context = ssl.create_default_context(cafile=vault.ca_file)
    port = int(vault.url.rsplit(":", 1)[1])
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ).encode()
    opened = 0
    all_open = asyncio.Event()

    async def one() -> bytes:
        nonlocal opened
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
        try:
            opened += 1
            if opened == CONNECTIONS:
                all_open.set()
            await asyncio.wait_for(all_open.wait(), 120)
            writer.write(request)
            await writer.drain()
            status = await reader.readline()
            await reader.read()  # the rest, up to the close the request asked for
            return status
        finally:
            writer.close()

    return await asyncio.gather(*(one() for _ in range(CONNECTIONS)), return_exceptions=True)


def test_a_thousand_connections_at_once_are_all_served(vault, monkeypatch):
    # The first connections wait, idle, until the last is open; on a loaded machine that
    # may take longer than the server's idle timeout, which is not what this test is about.
    monkeypatch.setattr(envelope.testing._server, "IDLE_TIMEOUT", 300.0)
    vault.create_key("connections")
    results = asyncio.run(
        hold_and_ask(vault, vault.issue_token(), "/keys/connections/?api-version=7.6")
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert results == [b"HTTP/1.1 200 OK\r\n"] * CONNECTIONS
    assert vault.operation_counts()["getKey"] == CONNECTIONS
