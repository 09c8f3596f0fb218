"""Which blob a client addresses, as the binding names it: its storage account, container and
name (FORMAT.md annex A says the same in words).

The binding must give one blob one name however its URL is spelled, and never give two blobs
the same one. So it is derived from the URL the client sends its requests to, not from the
Storage SDK's ``account_name`` (None for hosts without ``.blob.core.``, the first host label
as written otherwise) nor its ``container_name`` / ``blob_name`` (which ``from_blob_url``
splits at the last ``/`` for such hosts, so ``c/dir/b`` would be named container ``dir``,
blob ``b``, the very name of another blob).

* The account: for Azure's own host names, the account label of the host, lower-case, without
  the ``-secondary`` (read-access secondary) and ``-ipv6`` / ``-dualstack`` suffixes and
  without the zone (``zNN``) and ``privatelink`` labels; for a path-style URL (an IP literal or
  ``localhost``, as emulators have) its first path segment, lower-case; otherwise the caller's
  ``account_name``, or the account of a shared-key credential; failing all, the client is
  refused when it is made.
* The container and the name: the path after the account (for path-style URLs) or the whole
  path, split at its first ``/`` and percent-decoded.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

__all__ = ["BlobIdentity", "blob_identity", "check_account_name", "url_account"]

#: A storage account's name, as Azure allows it.
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_LABEL = r"(?P<account>[a-z0-9]{3,24})(?:-secondary)?(?:-ipv6|-dualstack)?"
#: The storage suffixes of Azure's clouds: public, China, US Government, Germany (closed),
#: and the two air-gapped ones.
_CLOUDS = (
    "windows.net",
    "chinacloudapi.cn",
    "usgovcloudapi.net",
    "cloudapi.de",
    "eaglex.ic.gov",
    "microsoft.scloud",
)
#: Azure's blob endpoints: ``ACCOUNT.blob.core.CLOUD`` (standard endpoints) and
#: ``ACCOUNT.zNN.blob.storage.azure.net`` (Azure DNS zone endpoints), each also by its
#: private-link name. Any other host (a custom domain, a proxy) does not say the account.
_AZURE_HOSTS = (
    re.compile(
        _LABEL
        + r"(?:\.privatelink)?\.blob\.core\.(?:"
        + "|".join(re.escape(cloud) for cloud in _CLOUDS)
        + ")"
    ),
    re.compile(_LABEL + r"\.z[0-9]{2}(?:\.privatelink)?\.blob\.storage\.azure\.net"),
)


class BlobIdentity(NamedTuple):
    account: str
    container: str
    name: str


def check_account_name(name: Any) -> str:
    """``name`` as a storage account's name (lower-case), or a ``ValueError``."""
    if not isinstance(name, str) or not _ACCOUNT_NAME.fullmatch(name.lower()):
        raise ValueError(
            f"account_name must be a storage account's name (3 to 24 letters and digits), "
            f"not {name!r}"
        )
    return name.lower()


def _is_path_style(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def url_account(url: str) -> tuple[str | None, str]:
    """The account a storage URL names (None if its host is none of Azure's forms and it is
    not path-style), and the rest of its path, still percent-encoded, without the leading
    ``/`` (for a path-style URL, what follows the account's segment)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().removesuffix(".")
    path = parts.path.lstrip("/")
    if _is_path_style(host):
        segment, _, rest = path.partition("/")
        account = segment.lower()
        return (account if _ACCOUNT_NAME.fullmatch(account) else None), rest
    for form in _AZURE_HOSTS:
        match = form.fullmatch(host)
        if match:
            return match["account"], path
    return None, path


def blob_identity(client: Any, account_name: str | None = None) -> BlobIdentity:
    """The account, container and name the binding names for ``client`` (a ``BlobClient``,
    sync or aio). ``account_name`` is the caller's, for hosts that do not name the account
    (a custom domain, a proxy); given for one that does, it must agree."""
    explicit = None if account_name is None else check_account_name(account_name)
    named, path = url_account(client.url)
    account = named or explicit or _credential_account(client)
    if account is None:
        host = urlsplit(client.url).hostname
        raise ValueError(
            f"cannot tell the storage account of {client.url!r} from its host {host!r} (Azure's "
            "are ACCOUNT.blob.core.windows.net and ACCOUNT.zNN.blob.storage.azure.net): pass "
            "account_name= (the account the blob binding names), or bind_to_blob=False"
        )
    if explicit is not None and explicit != account:
        raise ValueError(
            f"account_name={account_name!r} but {client.url!r} names the account {account!r}"
        )
    container, _, name = path.partition("/")
    if not container or not name:
        raise ValueError(f"{client.url!r} names no container and blob")
    return BlobIdentity(account, unquote(container), unquote(name))


def _credential_account(client: Any) -> str | None:
    """The account of a shared-key credential (the only kind that names one), if valid."""
    name = getattr(getattr(client, "credential", None), "account_name", None)
    if isinstance(name, str) and _ACCOUNT_NAME.fullmatch(name.lower()):
        return name.lower()
    return None
