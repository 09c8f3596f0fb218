"""``LocalKeyVault``: the public face of the emulator."""

from __future__ import annotations

import datetime
import os
import re
import ssl
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import trustme

from ._clock import VaultClock
from ._identity import VAULT_AUDIENCE, Identity
from ._jwk import check_key_ops, generate_material
from ._resolver import release_name, serve_name
from ._server import TLSServer
from ._service import Service
from ._store import KeyStore, check_name, new_version
from ._vaultfile import VaultFile

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from azure.identity import ClientSecretCredential
    from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential

    from envelope.transport import TLSPolicy

    from ._faults import Fault

__all__ = ["LocalKeyVault"]

DEFAULT_IDENTITY = "default"
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Vaults of one process share a backup key, as vaults of one subscription share backups.
_PROCESS_BACKUP_KEY = os.urandom(32)


def _check_host(host: str) -> str:
    name = host.lower().rstrip(".")
    labels = name.split(".")
    if (
        len(name) > 253
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError(f"host must be a DNS name such as myvault.vault.azure.net, not {host!r}")
    return name


def _audience(host: str | None) -> str:
    """The challenge resource: the host without its first label, as Azure's vaults
    (myvault.vault.azure.net -> https://vault.azure.net) and Managed HSMs do."""
    if host is None:
        return VAULT_AUDIENCE
    return "https://" + host.split(".", 1)[1]


class LocalKeyVault:
    """A Key Vault (keys API) and its identity provider, over HTTPS on 127.0.0.1.

    The server starts in the constructor and stops in :meth:`close` (or on leaving a ``with``
    block). Every instance has its own port, CA, tenant, identities and keys, so several can run
    side by side in one process.

    ``host`` serves the vault under a DNS name such as ``myvault.vault.azure.net``: the
    certificate is issued for it, the challenge names its parent domain as the resource (so
    clients keep ``verify_challenge_resource`` on), and while the vault runs this process
    resolves the name to 127.0.0.1, port 443 to the vault's port. ``path`` keeps the keys in
    a file that survives a restart. ``backup_key`` (32 bytes) seals key backups; vaults with
    the same one (by default, every vault of this process) restore each other's backups.
    ``identity_from`` joins another vault's tenant: its identities, token endpoint and CA,
    so that one credential works with both (a vault and a Managed HSM, say); close the
    vault that owns the tenant last.
    """

    _ca: trustme.CA
    _service: Service

    def __init__(
        self,
        *,
        port: int = 0,
        host: str | None = None,
        path: str | os.PathLike[str] | None = None,
        backup_key: bytes | None = None,
        identity_from: LocalKeyVault | None = None,
    ) -> None:
        if backup_key is not None and (not isinstance(backup_key, bytes) or len(backup_key) != 32):
            raise ValueError("backup_key must be 32 bytes")
        self._host = None if host is None else _check_host(host)
        self._tenant_owner = identity_from
        self._backup_key = _PROCESS_BACKUP_KEY if backup_key is None else backup_key
        self._clock = VaultClock()
        self._store = KeyStore(self._clock)
        self._file = None if path is None else VaultFile(path)
        try:
            if self._file is not None:
                loaded = self._file.load()
                if loaded is not None:
                    keys, deleted, offset = loaded
                    self._clock.advance(offset)
                    self._store.load(keys, deleted)
            self._start(port)
        except BaseException:
            if self._file is not None:
                self._file.close()
            raise
        if self._file is not None:
            vault_file, store = self._file, self._store
            store.listener = lambda generation: vault_file.saved_through(store, generation)
            try:
                self._service.sweep_rotations()
                vault_file.save(store)
            except BaseException:
                self.close()
                raise

    def _start(self, port: int) -> None:
        owner = self._tenant_owner
        self._ca = trustme.CA() if owner is None else owner._ca
        names = ["127.0.0.1", "localhost"] if self._host is None else [self._host, "127.0.0.1"]
        cert = self._ca.issue_cert(*names)
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
        self._service = Service(
            "",
            self._stop,
            self._store,
            lambda: self._backup_key,
            _audience(self._host),
            None if owner is None else owner._service,
        )
        try:
            self._server = TLSServer(port, context, self._service)
        except BaseException:
            self._tmp.cleanup()
            raise
        self._port = self._server.server_address[1]
        if self._host is None:
            self._url = f"https://127.0.0.1:{self._port}"
        else:
            self._url = f"https://{self._host}" + ("" if port in (0, 443) else f":{port}")
            try:
                serve_name(self._host, self._port)
            except BaseException:
                self._server.server_close()
                self._tmp.cleanup()
                raise
        self._service.url = self._url
        if owner is None:
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
        if self._host is not None:
            release_name(self._host)
        if self._file is not None:
            self._file.close()
        self._tmp.cleanup()

    # where and how to connect

    @property
    def url(self) -> str:
        """The vault URL: ``https://127.0.0.1:PORT``, or ``https://HOST`` for a vault served
        under a name (``https://HOST:PORT`` if an explicit port other than 443 was given)."""
        return self._url

    @property
    def port(self) -> int:
        """The TCP port the vault listens on, on 127.0.0.1."""
        return self._port

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
        credential for it. Permission names are Key Vault's: get, list, create, import,
        update, delete, recover, purge, backup, restore, rotate, getrotationpolicy,
        setrotationpolicy, encrypt, decrypt, wrapKey, unwrapKey, sign, verify, release."""
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
            "authority": self._service.authority_url,
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
        audience: str | None = None,
        issued_at: float | None = None,
    ) -> str:
        """A bearer token as the token endpoint would issue it, with adjustable lifetime,
        audience (default: the vault's own) and issue time, for tests of the vault's token
        checks."""
        token, _ = self._service.identities.issue(
            self.identity(name),
            self._service.issuer,
            audience=self._service.audience if audience is None else audience,
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
        curve: str | None = None,
        key_ops: Iterable[str] | None = None,
        enabled: bool = True,
        not_before: int | None = None,
        expires_on: int | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Create a key (or a new version of it) without going through REST, for fixtures.
        Returns the versioned key id. Sizes default to 2048 (RSA, RSA-HSM) and 256 (oct-HSM);
        EC and EC-HSM keys take ``curve`` (P-256, the default, P-384, P-521 or P-256K)."""
        check_name(name)
        ops = None if key_ops is None else check_key_ops(list(key_ops))
        material = generate_material(kty, size, curve, None)
        version = new_version(
            name,
            material,
            ops,
            self._clock.seconds(),
            enabled=enabled,
            nbf=not_before,
            exp=expires_on,
            tags=dict(tags or {}),
        )
        return self._store.add_version(version).kid(self._url)

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
        changes = {"enabled": enabled, "nbf": not_before, "exp": expires_on}
        self._store.update(
            name, version, **{key: value for key, value in changes.items() if value is not None}
        )

    # the vault's clock

    def now(self) -> datetime.datetime:
        """The vault's clock: key timestamps, ``nbf``/``exp`` checks and rotation policies
        follow it. It runs with the wall clock plus what :meth:`advance_time` added."""
        return datetime.datetime.fromtimestamp(self._clock.now(), tz=datetime.timezone.utc)

    def advance_time(self, delta: float | datetime.timedelta) -> int:
        """Move the vault's clock forward by ``delta`` (seconds or a timedelta) and run the
        rotation policies that fell due meanwhile, each rotation dated when its trigger fired.
        Returns how many key versions the policies made. Tokens keep wall-clock time, so
        clients stay signed in."""
        seconds = delta.total_seconds() if isinstance(delta, datetime.timedelta) else delta
        if not seconds >= 0:
            raise ValueError("the vault's clock only moves forward")
        self._clock.advance(seconds)
        made = self._service.sweep_rotations()
        if self._file is not None:
            self._file.save(self._store)
        return made

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
