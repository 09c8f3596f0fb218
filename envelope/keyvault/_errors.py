"""The one place where Azure SDK exceptions and Key Vault error replies become envelope
errors (as httpx's ``map_httpcore_exceptions`` does for httpcore).

=================================================  ========================================
what happened                                      raised
=================================================  ========================================
the vault answered an error (403, 404, 429 ...)    ``KeyAccessError(code=<vault error code>)``
400 to ``unwrapKey`` (the value does not unwrap)   ``DecryptionError``
the credential could not get a token               ``KeyAccessError(code=<code or None>)``
no connection / timeout / retries exhausted        ``KeyAccessError(code=None)``
the SDK refused the vault's auth challenge         ``KeyAccessError(code=None)``
the TLS policy refused the connection              ``InsecureTransportError`` (unchanged)
=================================================  ========================================
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

from .._errors import DecryptionError, InsecureTransportError, KeyAccessError

__all__ = ["VaultReplyError", "key_vault_errors", "reply_json"]

# Error replies are small; anything larger is not a Key Vault error body.
_MAX_ERROR_TEXT = 512


class VaultReplyError(Exception):
    """A non-2xx reply from the vault, raised inside :func:`key_vault_errors` only."""

    def __init__(self, status: int, code: str | None, inner: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.inner = inner
        self.message = message


def reply_json(status: int, text: str) -> dict[str, Any]:
    """The JSON object of a reply, or :class:`VaultReplyError` for an error status or a
    body that is not a JSON object."""
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        body = None
    if 200 <= status < 300:
        if not isinstance(body, dict):
            raise VaultReplyError(status, None, None, "the vault sent a reply that is not JSON")
        return body
    error = body.get("error") if isinstance(body, dict) else None
    code = inner = None
    message = text[:_MAX_ERROR_TEXT]
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = str(error.get("message", ""))[:_MAX_ERROR_TEXT]
        nested = error.get("innererror")
        if isinstance(nested, dict) and isinstance(nested.get("code"), str):
            inner = nested["code"]
    raise VaultReplyError(status, code, inner, message)


@contextlib.contextmanager
def key_vault_errors(key_id: str, operation: str) -> Iterator[None]:
    """Translate whatever a Key Vault call raises into the KEK error contract."""
    try:
        yield
    except InsecureTransportError:
        raise
    except VaultReplyError as exc:
        if exc.status == 400 and operation == "unwrapKey":
            # The vault could not unwrap the value with this key: an integrity failure.
            raise DecryptionError() from None
        detail = exc.code or f"HTTP {exc.status}"
        if exc.inner:
            detail += f"/{exc.inner}"
        raise KeyAccessError(
            f"Key Vault refused {operation} with {key_id} ({detail}): {exc.message}",
            code=exc.code,
            key_id=key_id,
        ) from exc
    except ClientAuthenticationError as exc:
        code = exc.error.code if exc.error is not None else None
        raise KeyAccessError(
            f"cannot authenticate to Key Vault for {operation} with {key_id}: {exc.message}",
            code=code,
            key_id=key_id,
        ) from exc
    except HttpResponseError as exc:
        code = exc.error.code if exc.error is not None else None
        raise KeyAccessError(
            f"Key Vault refused {operation} with {key_id}: {exc.message}", code=code, key_id=key_id
        ) from exc
    except AzureError as exc:
        raise KeyAccessError(
            f"Key Vault unreachable for {operation} with {key_id}: {exc.message}", key_id=key_id
        ) from exc
    except ValueError as exc:
        # azure-keyvault-keys raises ValueError when a vault's auth challenge names another
        # resource (verify_challenge_resource): a vault we must not send a token to.
        raise KeyAccessError(
            f"Key Vault auth challenge refused for {operation} with {key_id}: {exc}",
            key_id=key_id,
        ) from exc
