"""The credential the library builds when none is given: ``DefaultAzureCredential`` whose
traffic goes through :class:`~envelope.transport._identity.IdentityTransport`.

So it works where most production code gets its tokens, managed identity, whose endpoints
are plain http on the host by Azure's design (IMDS, App Service and Functions, Azure ML,
Cloud Shell, Azure Arc), while everything else stays TLS-only under the policy: Microsoft
Entra ID (a client secret or certificate from the environment, workload identity on AKS),
and every vault. What plain http may reach, and what is refused before connecting, is in
that module's docstring.

A failure names the credential that failed and what to do, on the first line, instead of
leaving it in DefaultAzureCredential's list of every credential it tried. A managed-identity
endpoint the environment names over plain http somewhere other than this host (loopback) or
IMDS's address (169.254.169.254) raises :class:`~envelope.InsecureTransportError` (as every
refusal of the TLS policy does), before any connection.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import httpx
from azure.core.exceptions import ClientAuthenticationError

from .._errors import InsecureTransportError
from ..transport import TLSPolicy
from ..transport._identity import (
    REFUSED,
    AsyncIdentityTransport,
    IdentityTransport,
    identity_endpoints,
)

__all__ = ["AsyncDefaultCredential", "DefaultCredential", "MAX_REPLY_BYTES"]

#: The largest reply read from a vault or an identity endpoint. Real ones are a few KiB (a
#: key bundle of an RSA-8192 key is under 3 KiB, a token reply under 8 KiB).
MAX_REPLY_BYTES = 64 * 1024


def _options(retry: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(retry or {})
    # A local identity provider (tests, a development host) has nothing for MSAL to
    # discover, and discovery would ask Microsoft's servers about it.
    authority = os.environ.get("AZURE_AUTHORITY_HOST", "")
    host = httpx.URL(authority).host if authority.startswith("https://") else ""
    if host in ("localhost", "127.0.0.1", "::1"):
        options["disable_instance_discovery"] = True
    return options


def _transport_options(
    timeout: httpx.Timeout | None = None, max_response_bytes: int | None = MAX_REPLY_BYTES
) -> dict[str, Any]:
    # None leaves the identity transport's default; `or` keeps a falsy one meaning it too.
    return {"timeout": timeout or None, "max_response_bytes": max_response_bytes}


def _which() -> tuple[str, str]:
    """The credential of DefaultAzureCredential's chain that the environment selects (its
    class name and what it uses), and what to check when it fails."""
    env = os.environ
    if env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH"):
        return "EnvironmentCredential", (
            "EnvironmentCredential (AZURE_TENANT_ID, AZURE_CLIENT_ID and a secret or certificate): "
            "check those variables and that the app registration may use the vault"
        )
    if env.get("AZURE_FEDERATED_TOKEN_FILE"):
        return "WorkloadIdentityCredential", (
            "WorkloadIdentityCredential (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, "
            "AZURE_TENANT_ID): check the pod's service account federation and the identity's "
            "access to the vault"
        )
    for endpoint in identity_endpoints():
        if endpoint.source not in ("IMDS", "Azure Arc"):
            return "ManagedIdentityCredential", (
                f"ManagedIdentityCredential ({endpoint.source}={endpoint.url}): check that the "
                "resource has a managed identity (set AZURE_CLIENT_ID for a user-assigned one) "
                "and that it may use the vault"
            )
    return "", (
        "ManagedIdentityCredential (IMDS at 169.254.169.254), then the developer tools' "
        "sign-ins (Azure CLI, azd, PowerShell): on Azure, give the resource a managed identity; "
        "elsewhere, sign in with 'az login' or set AZURE_TENANT_ID, AZURE_CLIENT_ID and "
        "AZURE_CLIENT_SECRET, or pass a credential"
    )


def _reason(message: str, name: str) -> str:
    """What DefaultAzureCredential's report says of the credential ``name`` (its report
    lists every credential it tried, one per line), else the whole report; one line."""
    lines = [line.strip() for line in message.splitlines()]
    if name:
        for line in lines:
            if line.startswith(f"{name}:"):
                return line[len(name) + 1 :].strip()[:600]
    return " ".join(" ".join(lines).split())[:600]


def _refusal(exc: BaseException) -> InsecureTransportError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, InsecureTransportError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def _explained() -> Iterator[None]:
    """A refusal of the TLS policy as itself; any other failure as one
    ``ClientAuthenticationError`` whose first line names the credential and what to do."""
    token = REFUSED.set(None)
    try:
        yield
    except ClientAuthenticationError as exc:
        refused = _refusal(exc) or REFUSED.get()
        if refused is not None:
            raise refused from exc
        name, hint = _which()
        raise ClientAuthenticationError(
            message=f"{hint}. It failed: {_reason(str(exc.message), name)}"
        ) from exc
    finally:
        REFUSED.reset(token)


class DefaultCredential:
    """``DefaultAzureCredential`` with its HTTP traffic TLS-only under ``tls_policy``, except
    managed-identity token requests to the endpoint the environment names on this host or at
    IMDS's 169.254.169.254 (read when the credential is made). ``retry`` holds azure-core retry
    keywords; ``timeout`` the httpx timeouts of each attempt.

    This is what :class:`~envelope.keyvault.KeyVaultKey` and
    :func:`envelope.blob.secure_blob_client` use when given no credential. Close it
    (``close()`` or ``with``) when done.
    """

    def __init__(
        self,
        tls_policy: TLSPolicy | None = None,
        *,
        timeout: httpx.Timeout | None = None,
        retry: dict[str, Any] | None = None,
        max_response_bytes: int | None = MAX_REPLY_BYTES,
    ) -> None:
        from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - heavy import

        self._transport = IdentityTransport(
            tls_policy, **_transport_options(timeout, max_response_bytes)
        )
        self._credential = DefaultAzureCredential(transport=self._transport, **_options(retry))

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        with _explained():
            return self._credential.get_token(*scopes, **kwargs)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        with _explained():
            return self._credential.get_token_info(*scopes, options=options)

    def close(self) -> None:
        self._credential.close()
        self._transport.close()

    def __enter__(self) -> DefaultCredential:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncDefaultCredential:
    """The ``azure.identity.aio`` twin of :class:`DefaultCredential`, with the same keywords
    (``timeout``, ``retry``, ``max_response_bytes``); close it with
    ``await credential.close()`` (or ``async with``)."""

    def __init__(self, tls_policy: TLSPolicy | None = None, **options: Any) -> None:
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

        retry = options.pop("retry", None)
        self._transport = AsyncIdentityTransport(tls_policy, **_transport_options(**options))
        self._credential = DefaultAzureCredential(transport=self._transport, **_options(retry))

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        with _explained():
            return await self._credential.get_token(*scopes, **kwargs)

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        with _explained():
            return await self._credential.get_token_info(*scopes, options=options)

    async def close(self) -> None:
        await self._credential.close()
        await self._transport.close()

    async def __aenter__(self) -> AsyncDefaultCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
