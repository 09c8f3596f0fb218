"""``LocalKeyVault``: the public face of the emulator."""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import trustme

from ._identity import VAULT_AUDIENCE, Identity
from ._server import TLSServer
from ._service import Service
from ._store import check_name, generate_version

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from azure.identity import ClientSecretCredential
    from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential

    from envelope.transport import TLSPolicy

    from ._faults import Fault

__all__ = ["LocalKeyVault"]

DEFAULT_IDENTITY = "default"


class LocalKeyVault:
    """A Key Vault (keys API) and its identity provider, over HTTPS on 127.0.0.1.

    The server starts in the constructor and stops in :meth:`close` (or on leaving a ``with``
    block). Every instance has its own port, CA, tenant, identities and keys, so several can run
    side by side in one process.
    """

    def __init__(self, *, port: int = 0) -> None:
        self._ca = trustme.CA()
        cert = self._ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        cert.configure_cert(context)
        self._ca_pem = self._ca.cert_pem.bytes()
        self._tmp = tempfile.TemporaryDirectory(prefix="envelope-keyvault-")
        self._ca_file = os.path.join(self._tmp.name, "ca.pem")
        with open(self._ca_file, "wb") as handle:
            handle.write(self._ca_pem)
        self._stop = threading.Event()
        self._credentials: list[Any] = []
        self._credentials_lock = threading.Lock()
        self._closed = False
        # The URL is known only once the socket is bound; the service learns it right after.
        self._service = Service("", self._stop)
        try:
            self._server = TLSServer(port, context, self._service)
        except BaseException:
            self._tmp.cleanup()
            raise
        self._url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._service.url = self._url
        self._service.identities.add(DEFAULT_IDENTITY)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"LocalKeyVault {self._url}",
            daemon=True,
        )
        self._thread.start()
        self._default_credential: ClientSecretCredential | None = None
        self._default_lock = threading.Lock()

    # lifecycle

    def __enter__(self) -> LocalKeyVault:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the credentials it made, stop the server, join its threads, delete the CA."""
        if self._closed:
            return
        self._closed = True
        with self._credentials_lock:
            credentials, self._credentials = self._credentials, []
        for credential in credentials:
            credential.close()
        self._stop.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()
        self._tmp.cleanup()

    # where and how to connect

    @property
    def url(self) -> str:
        """The vault URL, ``https://127.0.0.1:PORT``."""
        return self._url

    @property
    def ca_file(self) -> str:
        """Path of the PEM file of this vault's CA (pass it as ``connection_verify``)."""
        return self._ca_file

    @property
    def ca_pem(self) -> bytes:
        return self._ca_pem

    @property
    def tenant_id(self) -> str:
        return self._service.identities.tenant_id

    @property
    def tls_policy(self) -> TLSPolicy:
        """A ``TLSPolicy`` that trusts this vault's CA."""
        from envelope.transport import TLSPolicy  # noqa: PLC0415 - keeps envelope.testing importable on its own

        return TLSPolicy(ca_data=self._ca_pem.decode("ascii"))

    # identities

    @property
    def credential(self) -> ClientSecretCredential:
        """A credential of the identity that holds every key permission (shared, closed by
        :meth:`close`)."""
        with self._default_lock:
            if self._default_credential is None:
                self._default_credential = self.get_credential(DEFAULT_IDENTITY)
            return self._default_credential

    def add_identity(
        self, name: str, permissions: Iterable[str] | None = None, **credential_kwargs: Any
    ) -> ClientSecretCredential:
        """Register an identity with the given key permissions (all when None) and return a
        credential for it. Permission names are Key Vault's: get, list, create, update, delete,
        recover, purge, rotate, encrypt, decrypt, wrapKey, unwrapKey."""
        self._service.identities.add(name, permissions)
        return self.get_credential(name, **credential_kwargs)

    def identity(self, name: str = DEFAULT_IDENTITY) -> Identity:
        """Tenant-scoped client id, secret and permissions of an identity."""
        return self._service.identities.get(name)

    def get_credential(
        self, name: str = DEFAULT_IDENTITY, **credential_kwargs: Any
    ) -> ClientSecretCredential:
        """A new ``azure.identity.ClientSecretCredential`` for an identity; keyword arguments
        (``transport=``, ``retry_total=`` ...) are passed through. Closed by :meth:`close`."""
        from azure.identity import ClientSecretCredential  # noqa: PLC0415 - azure-identity is imported only when a credential is used

        credential = ClientSecretCredential(**self._credential_args(name, credential_kwargs))
        with self._credentials_lock:
            if self._closed:
                credential.close()
                raise RuntimeError("the local Key Vault is closed")
            self._credentials.append(credential)
        return credential

    def get_async_credential(
        self, name: str = DEFAULT_IDENTITY, **credential_kwargs: Any
    ) -> AsyncClientSecretCredential:
        """A new ``azure.identity.aio.ClientSecretCredential``; the caller closes it (``async
        with``). Without aiohttp installed, pass ``transport=AsyncioRequestsTransport()``."""
        from azure.identity.aio import (  # noqa: PLC0415 - as above
            ClientSecretCredential as AsyncCredential,
        )

        return AsyncCredential(**self._credential_args(name, credential_kwargs))

    def _credential_args(self, name: str, extra: dict[str, Any]) -> dict[str, Any]:
        identity = self.identity(name)
        args: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "client_id": identity.client_id,
            "client_secret": identity.client_secret,
            "authority": self._url,
            "disable_instance_discovery": True,
            "connection_verify": self._ca_file,
        }
        args.update(extra)
        return args

    def federated_token(self, name: str = DEFAULT_IDENTITY) -> str:
        """The workload-identity token of an identity: what a cluster projects into a pod
        (the file of ``AZURE_FEDERATED_TOKEN_FILE``), which the identity provider takes as
        a client assertion for that identity's ``AZURE_CLIENT_ID``."""
        return self._service.identities.federate(name)

    def issue_token(
        self,
        name: str = DEFAULT_IDENTITY,
        *,
        lifetime: int = 3600,
        audience: str = VAULT_AUDIENCE,
        issued_at: float | None = None,
    ) -> str:
        """A bearer token as the token endpoint would issue it, with adjustable lifetime,
        audience and issue time, for tests of the vault's token checks."""
        token, _ = self._service.identities.issue(
            self.identity(name),
            self._service.issuer,
            audience=audience,
            lifetime=lifetime,
            now=time.time() if issued_at is None else issued_at,
        )
        return token

    # keys, server side

    def create_key(
        self,
        name: str,
        kty: str = "RSA",
        size: int | None = None,
        *,
        key_ops: Iterable[str] | None = None,
        enabled: bool = True,
        not_before: int | None = None,
        expires_on: int | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Create a key (or a new version of it) without going through REST, for fixtures.
        Returns the versioned key id. Sizes default to 2048 (RSA, RSA-HSM) and 256 (oct-HSM)."""
        check_name(name)
        version = generate_version(
            name, kty, size, None if key_ops is None else list(key_ops), None
        )
        version.enabled = enabled
        version.nbf, version.exp = not_before, expires_on
        version.tags = dict(tags or {})
        self._service.store.add_version(version)
        return version.kid(self._url)

    def update_key(
        self,
        name: str,
        version: str = "",
        *,
        enabled: bool | None = None,
        not_before: int | None = None,
        expires_on: int | None = None,
    ) -> None:
        """Change a key version's attributes without going through REST (latest when
        ``version`` is empty)."""
        self._service.store.update(name, version, enabled=enabled, nbf=not_before, exp=expires_on)

    # counters and faults

    def operation_counts(self) -> dict[str, int]:
        """Authenticated requests per REST operation (``"wrapKey"``, ``"getKey"`` ...) and
        token requests (``"token"``) since the start or the last :meth:`reset_counts`.
        Challenge probes and requests refused with 401 are not counted."""
        return self._service.counts()

    def reset_counts(self) -> None:
        self._service.reset_counts()

    def inject_fault(
        self,
        operation: str | Iterable[str] | None = None,
        *,
        latency: float = 0.0,
        status: int | None = None,
        retry_after: float | None = None,
        drop: bool = False,
        count: int | None = None,
        probability: float = 1.0,
        seed: int | None = None,
    ) -> Fault:
        """Make matching requests slow, fail or lose their connection.

        ``operation`` names REST operations (``None``: every Key Vault operation, not
        ``"token"``). ``latency`` delays the response by seconds; ``status`` answers 429, 500,
        502, 503 or 504 with a Key Vault error body (``retry_after`` only with 429); ``drop``
        resets the connection without a response. ``count`` limits how many requests suffer
        (``None``: until removed); ``probability`` picks requests at random (``seed`` for
        repeatable runs). The first matching fault wins. Remove with ``fault.remove()`` or
        :meth:`clear_faults`.
        """
        return self._service.faults.add(
            operation,
            latency=latency,
            status=status,
            retry_after=retry_after,
            drop=drop,
            count=count,
            probability=probability,
            seed=seed,
        )

    def clear_faults(self) -> None:
        self._service.faults.clear()

    def __repr__(self) -> str:
        return f"LocalKeyVault(url={self._url!r}, ca_file={self._ca_file!r})"
