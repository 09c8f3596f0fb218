"""The one place where Azure SDK exceptions and Key Vault error replies become envelope
errors (as httpx's ``map_httpcore_exceptions`` does for httpcore).

=================================================  ========================================
what happened                                      raised
=================================================  ========================================
the vault answered an error (403, 404 ...)         ``KeyAccessError(code=<vault error code>)``
the vault throttled the request (429), after the   ``KeyAccessError(code="Throttled")``
SDK's retries or with a Retry-After past the
request's time limit
400 to ``unwrapKey`` (the value does not unwrap)   ``DecryptionError``
the vault answered a redirect (never followed)     ``KeyAccessError(code=None)``
a reply that is not a JSON object, too large,      ``KeyAccessError(code=None)``
nested too deep, or of the wrong shape
the credential could not get a token               ``KeyAccessError(code=<code or None>)``
no connection, no (complete) reply, retries        ``KeyAccessError(code=None)``
exhausted, the request's time limit ran out
the SDK refused the vault's auth challenge         ``KeyAccessError(code=None)``
the TLS policy refused the connection              ``InsecureTransportError`` (unchanged)
=================================================  ========================================

The message of a request that got no answer says where it stopped: ``(pool wait)`` when no
connection of the client's pool came free (nothing was sent: the vault is not to blame),
``(connect)`` when no connection to the vault could be made, ``(read)`` when the request
went out and no complete reply came back. :func:`vault_outage` tells which errors mean the
vault is down (no connection, no reply, throttling, a 5xx) rather than that it answered.

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

import httpx
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from .._errors import DecryptionError, InsecureTransportError, KeyAccessError
from ..transport._deadline import DeadlineExceeded, remaining

__all__ = ["LastReply", "VaultReplyError", "key_vault_errors", "reply_json", "vault_outage"]

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


class LastReply:
    """The status and body of the last reply to a request, attempt by attempt (azure-core's
    ``raw_response_hook``): what a request that ran out of time was last told."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.body = b""

    def __call__(self, response: Any) -> None:
        reply = response.http_response
        self.status = reply.status_code
        try:
            self.body = reply.content[:_MAX_ERROR_TEXT]
        except Exception:  # a body not read (yet): the status is enough
            self.body = b""


@contextlib.contextmanager
def key_vault_errors(
    key_id: str, operation: str, time_limit: float | None = None, last: LastReply | None = None
) -> Iterator[None]:
    """Translate whatever a Key Vault call raises into the KEK error contract.

    ``time_limit`` is the call's limit in seconds, for the message when it ran out;
    ``last``, if given, recorded the replies of the call's attempts.
    """
    try:
        try:
            yield
        except DeadlineExceeded:
            # The vault's last word, if it asked for a retry (a 429 or a 5xx whose
            # Retry-After or backoff does not fit in the time left), says more than the
            # deadline does.
            if last is None or last.status is None or not _retry_status(last.status):
                raise
            reply_json(last.status, last.body)
            raise
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
        verb = "throttled" if exc.status == 429 else "failed" if exc.status >= 500 else "refused"
        late = ""
        if exc.__context__ is not None and isinstance(exc.__context__, DeadlineExceeded):
            late = f" (and {exc.__context__})"
        raise KeyAccessError(
            f"Key Vault {verb} {operation} with {key_id} ({detail}): {exc.message}{late}",
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
        stage = _stage(exc)
        left = remaining()
        if time_limit is not None and (
            isinstance(exc, DeadlineExceeded) or (left is not None and left <= 0)
        ):
            where = "" if isinstance(exc, DeadlineExceeded) else f" ({stage})"
            raise KeyAccessError(
                f"Key Vault did not answer {operation} with {key_id} within the call's "
                f"{time_limit:g} s{where}: {reason}",
                key_id=key_id,
            ) from exc
        if isinstance(exc, HttpResponseError):
            code = exc.error.code if exc.error is not None else None
            raise KeyAccessError(
                f"Key Vault {operation} with {key_id} failed: {reason}", code=code, key_id=key_id
            ) from exc
        raise KeyAccessError(_no_answer(stage, operation, key_id, reason), key_id=key_id) from exc
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


_POOL, _CONNECT, _READ = "pool wait", "connect", "read"


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and what it was raised from, nearest first."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        inner = getattr(error, "inner_exception", None)
        error = error.__cause__ or (inner if isinstance(inner, BaseException) else None)


def _retry_status(status: int) -> bool:
    return status == 429 or status >= 500


def _stage(error: BaseException) -> str:
    """Where a request that got no answer stopped: waiting for a connection of the pool,
    connecting, or after it was sent (reading the reply)."""
    for cause in _causes(error):
        if isinstance(cause, httpx.PoolTimeout):
            return _POOL
        if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout)):
            return _CONNECT
        if isinstance(cause, httpx.TransportError):
            return _READ
    return _CONNECT if isinstance(error, ServiceRequestError) else _READ


def _no_answer(stage: str, operation: str, key_id: str, reason: str) -> str:
    if stage == _POOL:
        return (
            f"no connection of the client's pool came free for {operation} with {key_id} "
            f"({_POOL}); nothing was sent to the vault: {reason}"
        )
    if stage == _CONNECT:
        return f"Key Vault unreachable for {operation} with {key_id} ({_CONNECT}): {reason}"
    return f"Key Vault sent no complete reply to {operation} with {key_id} ({_READ}): {reason}"


def vault_outage(error: KeyAccessError) -> bool:
    """Whether ``error`` (from :func:`key_vault_errors`) means the vault did not serve the
    request: no connection, no complete reply in time, throttling or a 5xx reply. A refusal,
    a malformed reply or a credential that got no token mean it is up (or not to blame)."""
    for cause in _causes(error.__cause__):
        if isinstance(cause, VaultReplyError):
            return _retry_status(cause.status)
        if isinstance(cause, ClientAuthenticationError):
            return False
        if isinstance(cause, httpx.PoolTimeout):
            return False
        if isinstance(cause, (ServiceRequestError, ServiceResponseError, TimeoutError)):
            return _stage(cause) != _POOL
    return False
