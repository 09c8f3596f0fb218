"""The one place where Azure SDK exceptions and Key Vault error replies become envelope
errors (as httpx's ``map_httpcore_exceptions`` does for httpcore).

=================================================  ========================================
what happened                                      raised
=================================================  ========================================
the vault answered an error (403, 404, 429 ...)    ``KeyAccessError(code=<vault error code>)``
400 to ``unwrapKey`` (the value does not unwrap)   ``DecryptionError``
the vault answered a redirect (never followed)     ``KeyAccessError(code=None)``
a reply that is not a JSON object, too large,      ``KeyAccessError(code=None)``
nested too deep, or of the wrong shape
the credential could not get a token               ``KeyAccessError(code=<code or None>)``
no connection / timeout / retries exhausted        ``KeyAccessError(code=None)``
the call's time limit ran out                      ``KeyAccessError(code=None)``
the SDK refused the vault's auth challenge         ``KeyAccessError(code=None)``
the TLS policy refused the connection              ``InsecureTransportError`` (unchanged)
=================================================  ========================================

Every reply is written by whoever answers on the vault's address: it is parsed with bounds
(the transport caps its size; nesting beyond the interpreter's recursion limit is a
malformed reply, not a ``RecursionError``), and the text of an error reply reaches an
exception message only shortened and stripped of control characters.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

from .._errors import DecryptionError, InsecureTransportError, KeyAccessError
from ..transport._deadline import DeadlineExceeded, remaining

__all__ = ["VaultReplyError", "key_vault_errors", "reply_json"]

# Error replies are small; anything larger is not a Key Vault error body.
_MAX_ERROR_TEXT = 512
# Key Vault's error codes are identifiers ("Forbidden", "KeyNotFound", "Throttled").
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\ufffd]")


class VaultReplyError(Exception):
    """A non-2xx reply from the vault, raised inside :func:`key_vault_errors` only."""

    def __init__(self, status: int, code: str | None, inner: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.inner = inner
        self.message = message


def reply_json(status: int, body: bytes) -> dict[str, Any]:
    """The JSON object of a reply, or :class:`VaultReplyError` for an error status or a
    body that is not a JSON object (not UTF-8, not JSON, or nested deeper than the
    interpreter can follow)."""
    document = _json(body)
    if 200 <= status < 300:
        if not isinstance(document, dict):
            raise VaultReplyError(
                status, None, None, "the vault sent a reply that is not a JSON object"
            )
        return document
    error = document.get("error") if isinstance(document, dict) else None
    code = inner = None
    message = _printable(body[:_MAX_ERROR_TEXT].decode("utf-8", "replace"))
    if isinstance(error, dict):
        code = _error_code(error.get("code"))
        text = error.get("message")
        message = _printable(text) if isinstance(text, str) else ""
        nested = error.get("innererror")
        if isinstance(nested, dict):
            inner = _error_code(nested.get("code"))
    raise VaultReplyError(status, code, inner, message)


def _json(body: bytes) -> object:
    try:
        return json.loads(body.decode("utf-8-sig")) if body else {}
    except (ValueError, RecursionError):
        # RecursionError: a body of "[[[[..." deeper than the recursion limit.
        return None


def _error_code(value: object) -> str | None:
    return value if isinstance(value, str) and _ERROR_CODE.fullmatch(value) else None


def _printable(text: str) -> str:
    """``text`` fit for an exception message: short, one line, no control characters."""
    return _UNPRINTABLE.sub("?", text[:_MAX_ERROR_TEXT])


@contextlib.contextmanager
def key_vault_errors(
    key_id: str, operation: str, time_limit: float | None = None
) -> Iterator[None]:
    """Translate whatever a Key Vault call raises into the KEK error contract.

    ``time_limit`` is the call's limit in seconds, for the message when it ran out.
    """
    try:
        yield
    except InsecureTransportError:
        raise
    except VaultReplyError as exc:
        if exc.status == 400 and operation == "unwrapKey":
            # The vault could not unwrap the value with this key: an integrity failure.
            raise DecryptionError() from None
        if 300 <= exc.status < 400:
            raise KeyAccessError(
                f"Key Vault answered {operation} with {key_id} by a redirect (HTTP "
                f"{exc.status}), which is never followed: requests go to the configured "
                "vault only",
                key_id=key_id,
            ) from exc
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
    except (AzureError, DeadlineExceeded) as exc:
        reason = exc.message if isinstance(exc, AzureError) else str(exc)
        left = remaining()
        if time_limit is not None and (
            isinstance(exc, DeadlineExceeded) or (left is not None and left <= 0)
        ):
            raise KeyAccessError(
                f"Key Vault did not answer {operation} with {key_id} within the call's "
                f"{time_limit:g} s: {reason}",
                key_id=key_id,
            ) from exc
        if isinstance(exc, HttpResponseError):
            code = exc.error.code if exc.error is not None else None
            raise KeyAccessError(
                f"Key Vault {operation} with {key_id} failed: {reason}", code=code, key_id=key_id
            ) from exc
        raise KeyAccessError(
            f"Key Vault unreachable for {operation} with {key_id}: {reason}", key_id=key_id
        ) from exc
    except (RecursionError, UnicodeDecodeError) as exc:
        # azure-core decodes a JSON reply itself before envelope sees it, and lets these
        # two through: a body nested deeper than the recursion limit, or not UTF-8.
        raise KeyAccessError(
            f"Key Vault sent a malformed reply to {operation} with {key_id} ({type(exc).__name__})",
            key_id=key_id,
        ) from None
    except ValueError as exc:
        # azure-keyvault-keys raises ValueError when a vault's auth challenge names another
        # resource (verify_challenge_resource): a vault we must not send a token to.
        raise KeyAccessError(
            f"Key Vault auth challenge refused for {operation} with {key_id}: {exc}",
            key_id=key_id,
        ) from exc
