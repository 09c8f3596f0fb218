"""``envelope rewrap-blobs``: rewrap every blob under a container prefix, the header block of
each only (``EncryptedBlobClient.rewrap``), several blobs at once.

Resumable: a blob whose header already names exactly the key ids a rewrap would write is
skipped after one small read, so a run interrupted for any reason is simply run again.
Vault calls go through an :class:`~envelope.UnwrapCache` shared by the whole run (a data
key seen twice, in a blob read again or in copies of a message, is unwrapped once), and at
most ``jobs`` blobs are in flight, so at most that many calls reach a vault at a time.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import threading
from typing import Any

from .. import Envelope, UnwrapCache
from ._config import Built
from ._errors import ExitCode, describe, exit_code
from ._progress import Reporter

__all__ = ["DEFAULT_JOBS", "rewrap_blobs", "storage_credential"]

#: Blobs rewrapped at once when ``-j`` is not given: each is a few small requests, so the
#: run waits on the network, not on the CPU.
DEFAULT_JOBS = 8
#: The account name of a service URL: its first DNS label, or (Azurite, and other emulators
#: with path-style URLs) the first path segment after an IP address or localhost.
_IP_HOST = re.compile(r"\A(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-fA-F:]+\])\Z")


def storage_credential(container_url: str, fallback: Any) -> Any:
    """The credential for the storage account: a SAS in the URL needs none; else the account
    key in ``AZURE_STORAGE_KEY``; else ``fallback`` (the Key Vault credential, or None for
    the library's default one)."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from ..blob._secure import has_sas  # noqa: PLC0415

    parts = urlsplit(container_url)
    if has_sas(container_url):
        return None
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        host = parts.hostname or ""
        if _IP_HOST.match(host):
            account = parts.path.lstrip("/").split("/", 1)[0]
        else:
            account = host.split(".", 1)[0]
        return {
            "account_name": os.environ.get("AZURE_STORAGE_ACCOUNT", account),
            "account_key": key,
        }
    return fallback


def rewrap_blobs(
    container: Any,
    prefix: str,
    built: Built,
    target_ids: tuple[tuple[str, ...], ...],
    reporter: Reporter,
    jobs: int,
) -> ExitCode:
    """Rewrap the blobs of ``container`` (a ``ContainerClient``) whose names start with
    ``prefix``, reporting a line per blob; returns 0, or the exit code of the first blob (in
    name order) that failed."""
    from ..blob import EncryptedBlobClient  # noqa: PLC0415 - the Storage SDK loads on use

    source = built.envelope
    envelope = Envelope(
        source.layers,
        algorithms=source.algorithms,
        frame_size=source.frame_size,
        unwrap_cache=UnwrapCache(),
    )
    listed = sorted(container.list_blobs(name_starts_with=prefix or None), key=lambda b: b.name)
    blobs = [(b.name, int(b.size or 0)) for b in listed]
    outcomes: list[tuple[ExitCode, str] | None] = [None] * len(blobs)
    lock = threading.Lock()
    reporter.start("rewrapping", sum(size for _, size in blobs), len(blobs))

    def one(index: int) -> None:
        name, size = blobs[index]
        encrypted = EncryptedBlobClient(container.get_blob_client(name), envelope)
        outcome = _attempt(encrypted, name, target_ids)
        code, message = outcome
        with lock:
            outcomes[index] = outcome
            reporter.advance(size)
            reporter.file_done()
            if code == ExitCode.OK:
                reporter.line(message, success=True)
            else:
                reporter.line(f"envelope: {message}", success=False)

    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            for future in [pool.submit(one, index) for index in range(len(blobs))]:
                future.result()
    finally:
        reporter.close()
    codes = [o[0] for o in outcomes if o is not None and o[0] != ExitCode.OK]
    return codes[0] if codes else ExitCode.OK


def _attempt(
    encrypted: Any, name: str, target_ids: tuple[tuple[str, ...], ...]
) -> tuple[ExitCode, str]:
    try:
        if _already_done(encrypted, target_ids):
            return ExitCode.OK, f"already rewrapped {name}"
        encrypted.rewrap()
    except Exception as exc:
        return exit_code(_storage_error(exc)), describe(_storage_error(exc), name)
    return ExitCode.OK, f"rewrapped {name}"


def _already_done(encrypted: Any, target_ids: tuple[tuple[str, ...], ...]) -> bool:
    info = encrypted.inspect()
    return tuple(layer.key_ids for layer in info.layers) == target_ids


def _storage_error(exc: Exception) -> Exception:
    """An Azure storage error as an ``OSError`` of the blob (usage, exit 2), with the
    service's short message; every envelope error as it is."""
    from azure.core.exceptions import AzureError  # noqa: PLC0415

    if isinstance(exc, AzureError):
        reason = str(exc.message or exc).splitlines()[0] if str(exc) else type(exc).__name__
        return OSError(f"storage: {reason}")
    return exc
