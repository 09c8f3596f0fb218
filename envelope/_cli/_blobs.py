"""``envelope rewrap-blobs``: rewrap every blob under a container prefix, the header block of
each only (``EncryptedBlobClient.rewrap``), several blobs at once.

Resumable: a blob whose header already names exactly the key ids a rewrap would write is
skipped after one small read, so a run interrupted for any reason is simply run again. Those
ids are not authenticated (a storage writer may edit them); a blob skipped on an edited
header is reported as skipped, and could not be opened with the keys it names anyway.
Vault calls go through an :class:`~envelope.UnwrapCache` shared by the whole run (a data
key seen twice, in a blob read again or in copies of a message, is unwrapped once), and at
most ``jobs`` blobs are in flight, so at most that many calls reach a vault at a time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from .. import Envelope, UnwrapCache
from ._config import Built
from ._errors import CliError, ExitCode
from ._progress import Reporter
from ._work import Outcome, already_rewrapped, attempt, first_failure, report

__all__ = ["DEFAULT_JOBS", "rewrap_blobs", "storage_credential"]

#: Blobs rewrapped at once when ``-j`` is not given: each is a few small requests, so the
#: run waits on the network, not on the CPU.
DEFAULT_JOBS = 8


def storage_credential(container_url: str, fallback: Any, account_name: str | None = None) -> Any:
    """The credential for the storage account: a SAS in the URL needs none; else the account
    key in ``AZURE_STORAGE_KEY``, for ``account_name`` or the account the URL names; else
    ``fallback`` (the Key Vault credential, or None for the library's default one)."""
    from ..blob._names import check_account_name, url_account  # noqa: PLC0415
    from ..blob._secure import has_sas  # noqa: PLC0415

    if account_name is not None:
        try:
            account_name = check_account_name(account_name)
        except ValueError:
            raise CliError(
                f"--account-name {account_name!r} is not a storage account's name (3 to 24 "
                "letters and digits)"
            ) from None
    if has_sas(container_url):
        return None
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        account = account_name or url_account(container_url)[0]
        if account is None:
            raise CliError(
                f"cannot tell the storage account of {container_url} from its host: pass "
                "--account-name (or set AZURE_STORAGE_ACCOUNT)"
            )
        return {"account_name": account, "account_key": key}
    return fallback


def rewrap_blobs(
    container: Any,
    prefix: str,
    built: Built,
    target_ids: tuple[tuple[str, ...], ...],
    reporter: Reporter,
    jobs: int,
    account_name: str | None = None,
) -> ExitCode:
    """Rewrap the blobs of ``container`` (a ``ContainerClient``) whose names start with
    ``prefix``, reporting a line per blob; returns 0, or the exit code of the first blob (in
    name order) that failed. ``jobs`` (1 or more) blobs are rewrapped at once.
    ``account_name`` is the account the blob binding names, for a URL whose host does not
    name it."""
    from ..blob import EncryptedBlobClient  # noqa: PLC0415 - the Storage SDK loads on use

    source = built.envelope
    envelope = Envelope(
        source.layers,
        algorithms=source.algorithms,
        frame_size=source.frame_size,
        unwrap_cache=UnwrapCache(),
    )
    try:
        # The binding's account is checked once, before anything is listed (no request).
        EncryptedBlobClient(container.get_blob_client("-"), envelope, account_name=account_name)
    except ValueError as exc:
        raise CliError(f"{exc} (here: --account-name, or AZURE_STORAGE_ACCOUNT)") from None
    with _storage_errors():
        listed = sorted(container.list_blobs(name_starts_with=prefix or None), key=lambda b: b.name)
    blobs = [(b.name, int(b.size or 0)) for b in listed]
    outcomes: list[Outcome | None] = [None] * len(blobs)
    lock = threading.Lock()
    reporter.start("rewrapping", sum(size for _, size in blobs), len(blobs))

    def one(index: int) -> None:
        name, size = blobs[index]
        blob = container.get_blob_client(name)
        encrypted = EncryptedBlobClient(blob, envelope, account_name=account_name)
        outcome = attempt(name, size, lambda: _rewrap(encrypted, name, target_ids))
        with lock:
            outcomes[index] = outcome
            reporter.advance(size)
            report(reporter, outcome, many=True)

    try:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for future in [pool.submit(one, index) for index in range(len(blobs))]:
                future.result()
    finally:
        reporter.close()
    return first_failure(outcomes)


def _rewrap(encrypted: Any, name: str, target_ids: tuple[tuple[str, ...], ...]) -> str:
    with _storage_errors():
        if already_rewrapped(encrypted.inspect(), target_ids):
            return f"already rewrapped {name}"
        encrypted.rewrap()
    return f"rewrapped {name}"


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """An Azure storage error as an ``OSError`` of the blob (usage, exit 2), with the
    service's short message; every envelope error as it is."""
    from azure.core.exceptions import AzureError  # noqa: PLC0415

    try:
        yield
    except AzureError as exc:
        reason = str(exc.message or exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OSError(f"storage: {reason}") from exc
