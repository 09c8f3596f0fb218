"""``KeyVaultKey``: a key-encryption key in Azure Key Vault or Managed HSM.

REST operations used (through ``KeyClient.send_request``, i.e. the SDK's own challenge-auth
and retry pipeline, over the project's TLS-only transport):

* ``GET /keys/{name}/{version}`` (``/keys/{name}/`` for the latest): the key bundle, before
  a wrap, cached for ``key_info_ttl`` seconds: kty, key_ops, RSA public key, enabled/nbf/exp.
* ``POST /keys/{name}/{version}/wrapkey``: oct / oct-HSM keys only, ``A256KW``.
* ``POST /keys/{name}/{version}/unwrapkey``: every unwrap.

``CryptographyClient`` is deliberately not used: for ``oct`` keys its local provider wraps
with a *random* key the service never sees, silent data loss. The service never returns an
``oct`` key's ``k``, and the SDK's local symmetric key, built from a JWK without ``k``, is
``os.urandom`` bytes; it wraps locally whenever ``key_ops`` lists ``wrapKey``. RSA keys
are wrapped here with the public key from a fresh bundle (RSA-OAEP-256), after checking that
the bundle says the key is enabled and inside its nbf/exp window.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import httpx
from azure.core.rest import HttpRequest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .._errors import DecryptionError, EnvelopeError, InsecureTransportError, KeyAccessError
from .._flight import Flight
from .._keys import DATA_KEY_BYTES, WrappedKey
from .._limits import MAX_WRAPPED_KEY_BYTES
from ..transport import (
    AsyncSecureTransport,
    SecureTransport,
    TLSPolicy,
    secure_async_client,
    secure_client,
)
from ..transport._deadline import deadline
from ._credential import MAX_REPLY_BYTES, AsyncDefaultCredential, DefaultCredential
from ._errors import LastReply, key_vault_errors, reply_json
from ._ids import KeyId, is_loopback, parse_key_id
from ._vault import Caller, Turn, reset_vaults, vault_of

__all__ = ["KeyVaultKey"]

_RSA_TYPES = frozenset({"RSA", "RSA-HSM"})
_OCT_TYPES = frozenset({"oct", "oct-HSM"})
_RSA_WRAP = "RSA-OAEP-256"
_OCT_WRAP = "A256KW"
# What an unwrap will send to the vault: what this class writes, plus the other wraps the
# format knows, each with the lengths a wrapped 32-byte data key can have (FORMAT.md
# section 3): anything else cannot unwrap, so it fails without a vault call. An RSA wrap is
# as long as the modulus, and Key Vault's RSA keys have 2048 bits or more. RSA1_5 is not
# among them (padding-oracle prone), whatever a header says.
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 8192
_RSA_WRAPPED_BYTES = range(_MIN_RSA_BITS // 8, _MAX_RSA_BITS // 8 + 1)
_UNWRAP_LENGTHS = {
    "RSA-OAEP-256": _RSA_WRAPPED_BYTES,
    "RSA-OAEP": _RSA_WRAPPED_BYTES,
    "A256KW": range(DATA_KEY_BYTES + 8, DATA_KEY_BYTES + 9),
    "CKM_AES_KEY_WRAP_PAD": range(DATA_KEY_BYTES + 8, DATA_KEY_BYTES + 9),
}
#: The wraps only the vault can make (symmetric keys); RSA-OAEP wraps need the public key.
_SECRET_WRAPS = frozenset({"A256KW", "CKM_AES_KEY_WRAP_PAD"})
_OAEP_SHA256 = padding.OAEP(
    mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


class _ThreadedCredential:
    """A sync credential presented to the asyncio pipeline: ``get_token`` runs in a worker
    thread so the event loop never blocks on the identity endpoint. Not owned: not closed."""

    def __init__(self, credential: Any) -> None:
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._credential.get_token, *scopes, **kwargs)

    async def close(self) -> None:
        return None


def _is_async_credential(credential: Any) -> bool:
    method = getattr(credential, "get_token_info", None) or getattr(credential, "get_token", None)
    return inspect.iscoroutinefunction(method)


@dataclass(frozen=True)
class _KeyInfo:
    """What a key bundle says, and when it was fetched (monotonic seconds)."""

    kid: KeyId
    kty: str
    key_ops: frozenset[str]
    public_key: rsa.RSAPublicKey | None
    enabled: bool
    not_before: int | None
    expires_on: int | None
    fetched: float


class _Clients:
    """The SDK client of one flavour (sync, or async on one event loop) and what must be
    closed with it."""

    def __init__(self, client: Any, closers: list[Any]) -> None:
        self.client = client
        self.closers = closers
        # Async clients: the generator whose end closes them as their event loop shuts down.
        self.at_loop_end: Any = None

    def close(self) -> None:
        for closer in self.closers:
            closer()

    async def aclose(self) -> None:
        closers, self.closers = self.closers, []
        for closer in closers:
            result = closer()
            if inspect.isawaitable(result):
                await result


async def _close_at_loop_end(clients: _Clients, forget: Any) -> AsyncIterator[None]:
    """Suspended until the event loop shuts its asynchronous generators down
    (``asyncio.run`` does, before closing the loop), then closes ``clients`` on that loop."""
    try:
        yield
    finally:
        forget()
        await clients.aclose()


#: Connections per client to the vault, and the bound on requests in flight to one vault.
#: Eight keep a vault 20-50 ms away near its throttling limit (about 400 RSA operations a
#: second); more cost CPU for nothing: httpcore's pool scans every connection at every
#: request (measured: 14 ms of client CPU per two-layer message at 4, 15 at 8, 20 at 16).
DEFAULT_MAX_CONNECTIONS = 8


class KeyVaultKey:
    """A key-encryption key held in Azure Key Vault (RSA, RSA-HSM) or Managed HSM (oct-HSM).

    ``key_id`` is the key's id, ``https://{vault}/keys/{name}`` or with a version appended:

    * **versionless**: new data keys are wrapped under the key's *current* version (looked up
      at most every ``key_info_ttl`` seconds, so a rotation is picked up within that time),
      and every version of that key in that vault may unwrap. This is what rotation needs.
    * **versioned**: wrapping and unwrapping use exactly that version; a header naming any
      other version (older or newer) is refused before any connection. Pin a version only
      when policy forbids using a rotated key.

    Either way the header records the *versioned* id the vault used, and ``can_unwrap``
    accepts a header id only if its scheme, host, port and key name match exactly (names
    fold case, as Key Vault's do). Requests always go to the configured vault and name; a
    header contributes at most a 32-hex-digit version.

    ``credential`` is any ``azure.core`` token credential, sync or async (a sync one also
    serves the async methods, through a worker thread). The default is
    :class:`~envelope.keyvault.DefaultCredential`: ``DefaultAzureCredential`` with its HTTP
    traffic on the same TLS-only transport, except managed-identity token requests to the
    endpoint the environment names on this host (App Service and Functions, Azure Arc) or at
    IMDS's 169.254.169.254, which are plain http by Azure's design.

    ``tls_policy`` (default ``TLSPolicy()``: certifi roots, TLS 1.2+ with AEAD suites) governs
    every connection to the vault and the identity endpoint.

    Concurrency: at most ``max_connections`` requests are in flight to one vault at a time,
    from every ``KeyVaultKey`` of that vault in the process (threads and event loops alike);
    the others wait for their turn, first come first served, for as long as it takes.
    Waiting for a turn never times out and is never reported as the vault not answering.
    Each client's connection pool holds ``max_connections`` connections, so a request that
    has its turn never waits for a connection. Concurrent callers that need the key bundle
    share one fetch (and its outcome, success or error).

    Time bound: every request ends within ``timeout`` seconds of its turn by the wall clock,
    whatever the vault does, with :class:`~envelope.KeyAccessError` if it has no answer by
    then (``unwrap_key`` sends one request; ``wrap_key`` at most two: the key bundle, at most
    every ``key_info_ttl`` seconds, and the wrap of an oct-HSM key). Within it, at most
    ``1 + retry_total`` attempts, each connecting within ``connect_timeout`` and ending,
    reply included, within ``read_timeout`` of its start, however slowly the reply trickles
    in; a ``Retry-After`` is honoured when the retry would still fit, otherwise the request
    fails at once. A refused connection fails in well under a second per attempt. Replies
    are read up to 64 KiB (``MAX_REPLY_BYTES``); a larger or compressed one is refused. An
    envelope with several KEKs in a layer then tries the next. An error says where the
    request stopped: ``(pool wait)``, ``(connect)``, ``(read)``, a throttling or error reply
    with the vault's code, or an :class:`~envelope.InsecureTransportError` from the TLS
    policy.

    Fast failover: a vault that failed a request for want of service (no connection, no
    reply in time, throttling or a 5xx reply once the retries are spent) is marked down, for
    every key of that vault, for ``down_time`` seconds (default 1), doubled after each failed
    probe up to ``max_down_time`` (default 30). While it is down a request fails at once
    with a ``KeyAccessError`` carrying the failure's code, so an envelope goes straight to
    the layer's next KEK. After the down time one request goes through as a probe (one
    attempt): if the vault answers, it is up again. ``down_time=0`` turns this off for the
    key. :meth:`reset_breakers` forgets what is known (e.g. between tests that break a
    local vault on purpose).

    Requests go to the configured vault only: a redirect is never followed (it is a
    ``KeyAccessError``), and every reply is validated before use (a malformed one, of any
    shape or size, is a ``KeyAccessError`` too).

    Sync methods are thread-safe. The async twins (``wrap_key_async``, ``unwrap_key_async``)
    use an asyncio client per event loop, created on first use there and closed when that
    loop shuts down (``asyncio.run`` ends) or by ``await key.aclose()`` (or ``async with``)
    on it: one key serves several ``asyncio.run()`` calls, and loops in several threads, at
    once. ``close()`` closes the sync side.
    """

    def __init__(
        self,
        key_id: str,
        credential: Any = None,
        *,
        tls_policy: TLSPolicy | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.5,
        retry_backoff_max: float = 4.0,
        timeout: float = 20.0,
        key_info_ttl: float = 30.0,
        api_version: str | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        down_time: float = 1.0,
        max_down_time: float = 30.0,
    ) -> None:
        parsed = parse_key_id(key_id)
        if parsed is None:
            raise ValueError(
                f"{key_id!r} is not a Key Vault key id (https://{{vault}}/keys/{{name}}"
                "[/{32-hex-digit version}])"
            )
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("timeout", timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive")
        if not isinstance(retry_total, int) or retry_total < 0:
            raise ValueError("retry_total must be a non-negative integer")
        if not key_info_ttl >= 0:
            raise ValueError("key_info_ttl must not be negative")
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError("max_connections must be a positive integer")
        if not 0 <= down_time <= max_down_time:
            raise ValueError("down_time must be between 0 and max_down_time")
        self._id = parsed
        self._key_id = str(parsed)
        self._credential = credential
        self._policy = tls_policy if tls_policy is not None else TLSPolicy()
        self._http_timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        )
        # A request has a turn (see _vault) before it reaches the pool: with as many
        # connections as turns, the pool never makes it wait.
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._vault = vault_of(parsed.vault_url)
        self._caller = Caller(str(parsed), max_connections, down_time, max_down_time)
        self._retry: dict[str, Any] = {
            "retry_total": retry_total,
            "retry_backoff_factor": retry_backoff_factor,
            "retry_backoff_max": retry_backoff_max,
            "timeout": timeout,
        }
        self._timeout = timeout
        self._key_info_ttl = key_info_ttl
        self._api_version = api_version
        self._lock = threading.Lock()
        self._info: _KeyInfo | None = None
        self._info_flight: Flight | None = None
        self._sync: _Clients | None = None
        self._async: dict[asyncio.AbstractEventLoop, _Clients] = {}

    # -- the KEK protocol ---------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """The configured id (versionless or versioned), normalised."""
        return self._key_id

    @property
    def vault_url(self) -> str:
        return self._id.vault_url

    def can_unwrap(self, key_id: str) -> bool:
        """Whether ``key_id`` is a versioned id of this key in this vault (of this version,
        if one was configured). Pure: no I/O."""
        other = parse_key_id(key_id)
        if other is None or other.version is None or not self._id.same_key(other):
            return False
        return self._id.version is None or other.version.lower() == self._id.version.lower()

    def wrap_key(self, data_key: bytes) -> WrappedKey:
        """Wrap a 32-byte data key: RSA-OAEP-256 locally with the public key of a bundle
        at most ``key_info_ttl`` old, or A256KW by the vault for oct / oct-HSM keys."""
        _check_data_key(data_key)
        info = self._key_info()
        _check_wrappable(info, self._key_id)
        if info.public_key is not None:
            return _rsa_wrap(info, data_key)
        path, body = _op_path(info.kid, "wrapkey"), _wrap_body(data_key)
        return self._wrapped_from_reply(info, self._call("wrapKey", "POST", path, body))

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        """Unwrap by the vault, under the version named in ``wrapped.key_id``."""
        kid, body = self._unwrap_request(wrapped)
        reply = self._call("unwrapKey", "POST", _op_path(kid, "unwrapkey"), body)
        return self._unwrapped_from_reply(reply)

    async def wrap_key_async(self, data_key: bytes) -> WrappedKey:
        """The asyncio twin of :meth:`wrap_key`."""
        _check_data_key(data_key)
        info = await self._key_info_async()
        _check_wrappable(info, self._key_id)
        if info.public_key is not None:
            return _rsa_wrap(info, data_key)
        path, body = _op_path(info.kid, "wrapkey"), _wrap_body(data_key)
        reply = await self._call_async("wrapKey", "POST", path, body)
        return self._wrapped_from_reply(info, reply)

    async def unwrap_key_async(self, wrapped: WrappedKey) -> bytes:
        """The asyncio twin of :meth:`unwrap_key`."""
        kid, body = self._unwrap_request(wrapped)
        reply = await self._call_async("unwrapKey", "POST", _op_path(kid, "unwrapkey"), body)
        return self._unwrapped_from_reply(reply)

    @staticmethod
    def reset_breakers(vault_url: str | None = None) -> None:
        """Forget that any vault (or the one at ``vault_url``, ``https://host[:port]``) was
        marked down: its next request is sent at once. For tests that break a vault on
        purpose and then mend it; in production the breaker finds out by itself."""
        reset_vaults(vault_url)

    def wrap_needs_secret(self, wrapped: WrappedKey) -> bool:
        """Whether ``wrapped`` is a symmetric key's wrap (``A256KW``, ``CKM_AES_KEY_WRAP_PAD``:
        an ``oct``/``oct-HSM`` key), which only the vault can make; an RSA wrap (RSA-OAEP)
        is made with the public key, by anyone. For a wrapped key this key unwrapped, the
        algorithm is the one the vault applied: it applies key-wrap algorithms only with
        symmetric keys and RSA-OAEP only with RSA keys, so an unwrap under an algorithm
        that does not fit the key fails."""
        return wrapped.algorithm in _SECRET_WRAPS

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync client, and the default credential if this key made it."""
        with self._lock:
            clients, self._sync = self._sync, None
        if clients is not None:
            clients.close()

    async def aclose(self) -> None:
        """Close the asyncio client of the running event loop (and what ``close`` closes).
        The clients of other loops close as their loops shut down."""
        with self._lock:
            clients = self._async.get(asyncio.get_running_loop())
        if clients is not None:
            await clients.at_loop_end.aclose()
        self.close()

    def __enter__(self) -> KeyVaultKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> KeyVaultKey:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"KeyVaultKey({self._key_id!r})"

    # -- internals ----------------------------------------------------------------------

    def _info_path(self) -> str:
        # A trailing slash means "latest version" to the service and the SDK alike.
        return f"/keys/{self._id.name}/{self._id.version or ''}"

    def _key_info(self) -> _KeyInfo:
        """The key bundle, at most ``key_info_ttl`` old: one fetch for every caller that
        needs it meanwhile, threads and tasks alike, which share its outcome."""
        info, flight, leading = self._claim_info()
        while flight is not None and not leading and flight.wait():
            info, flight, leading = self._after_waiting(flight)
        if info is not None:
            return info
        lead = flight if leading else None
        with self._fetching(lead):
            return self._store_info(self._call("getKey", "GET", self._info_path()), lead)

    async def _key_info_async(self) -> _KeyInfo:
        """The asyncio twin of :meth:`_key_info`."""
        info, flight, leading = self._claim_info()
        while flight is not None and not leading and await flight.wait_async():
            info, flight, leading = self._after_waiting(flight)
        if info is not None:
            return info
        lead = flight if leading else None
        with self._fetching(lead):
            bundle = await self._call_async("getKey", "GET", self._info_path())
            return self._store_info(bundle, lead)

    def _claim_info(self) -> tuple[_KeyInfo | None, Flight | None, bool]:
        """``(info, None, False)`` when the bundle is fresh; ``(None, flight, False)`` to
        wait for the fetch in flight; ``(None, flight, True)`` when this caller fetches."""
        with self._lock:
            info = self._info
            if info is not None and time.monotonic() - info.fetched < self._key_info_ttl:
                return info, None, False
            if self._info_flight is not None:
                return None, self._info_flight, False
            flight = self._info_flight = Flight()
            return None, flight, True

    def _after_waiting(self, flight: Flight) -> tuple[_KeyInfo | None, Flight | None, bool]:
        """What the fetch this caller waited for gave: the bundle, or its error raised again
        (a copy: each waiter raises its own); if it ended otherwise (cancelled), look again."""
        outcome = flight.outcome
        if isinstance(outcome, _KeyInfo):
            return outcome, None, False
        shared: EnvelopeError | None = None
        if isinstance(outcome, KeyAccessError):
            shared = KeyAccessError(str(outcome), code=outcome.code, key_id=outcome.key_id)
        elif isinstance(outcome, InsecureTransportError):
            shared = InsecureTransportError(str(outcome), reason=outcome.reason)
        if shared is not None:
            raise shared from outcome
        return self._claim_info()

    @contextlib.contextmanager
    def _fetching(self, lead: Flight | None) -> Iterator[None]:
        """Around a fetch of the bundle by the leader of ``lead``: its error goes to the
        waiters (its bundle goes in :meth:`_store_info`), and its flight ends. ``None``: a
        caller that could not wait (the fetch runs in its own thread) fetches for itself
        alone."""
        if lead is None:
            yield
            return
        try:
            yield
        except BaseException as exc:
            lead.outcome = exc
            raise
        finally:
            with self._lock:
                self._info_flight = None
            lead.land()

    def _store_info(self, bundle: dict[str, Any], lead: Flight | None) -> _KeyInfo:
        """Remember the bundle, and hand it to the waiters of ``lead``."""
        info = _parse_bundle(bundle, self._id, self._key_id)
        with self._lock:
            self._info = info
        if lead is not None:
            lead.outcome = info
        return info

    def _unwrap_request(self, wrapped: WrappedKey) -> tuple[KeyId, dict[str, str]]:
        kid = parse_key_id(wrapped.key_id)
        if kid is None or not self.can_unwrap(wrapped.key_id):
            raise KeyAccessError(
                f"{wrapped.key_id!r} is not a version of {self._key_id}", key_id=wrapped.key_id
            )
        lengths = _UNWRAP_LENGTHS.get(wrapped.algorithm)
        if lengths is None or len(wrapped.ciphertext) not in lengths:
            raise DecryptionError()
        # Only the version comes from the header; vault and name are the configured ones.
        target = KeyId(self._id.host, self._id.port, self._id.name, kid.version)
        return target, {"alg": wrapped.algorithm, "value": _b64url(bytes(wrapped.ciphertext))}

    def _wrapped_from_reply(self, info: _KeyInfo, reply: dict[str, Any]) -> WrappedKey:
        kid, value = reply.get("kid"), _b64url_field(reply, "value", self._key_id)
        # The header must name the exact version that wrapped: the one the vault reports.
        if not isinstance(kid, str) or not self.can_unwrap(kid):
            raise KeyAccessError(
                f"the vault wrapped under {kid!r}, not a version of {self._key_id}",
                key_id=self._key_id,
            )
        if len(value) != DATA_KEY_BYTES + 8:  # RFC 3394 adds one 8-byte block
            raise KeyAccessError(f"{kid}: the vault returned a malformed wrapped key")
        return WrappedKey(kid, _OCT_WRAP, value)

    def _unwrapped_from_reply(self, reply: dict[str, Any]) -> bytes:
        return _b64url_field(reply, "value", self._key_id)

    def _sync_client(self) -> Any:
        with self._lock:
            if self._sync is None:
                self._sync = self._build_sync()
            return self._sync.client

    async def _async_client(self) -> Any:
        """The asyncio client of the running event loop (an asyncio client belongs to the
        loop it first ran on: its connections, locks and futures cannot serve another)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            clients = self._async.get(loop)
            if clients is not None:
                return clients.client
            for gone in [other for other in self._async if other.is_closed()]:
                # Closed without shutting its generators down: nothing left to close with.
                del self._async[gone]
            clients = self._async[loop] = self._build_async()

            def forget() -> None:
                with self._lock:
                    if self._async.get(loop) is clients:
                        del self._async[loop]

            clients.at_loop_end = _close_at_loop_end(clients, forget)
        await clients.at_loop_end.asend(None)
        return clients.client

    def _client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            # The SDK checks that the vault's challenge names a resource the vault host is
            # under; a vault on loopback cannot, so the check is skipped there and only there.
            "verify_challenge_resource": not is_loopback(self._id.host),
            # azure-core's redirect policy runs above the transport and would follow a
            # redirect to any https host, with the data key of a wrap in the body: requests
            # go to the configured vault and nowhere else.
            "permit_redirects": False,
            **self._retry,
        }
        if self._api_version is not None:
            options["api_version"] = self._api_version
        return options

    def _build_sync(self) -> _Clients:
        from azure.keyvault.keys import KeyClient  # noqa: PLC0415 - heavy import, on first use

        closers: list[Any] = []
        credential = self._credential
        if credential is None:
            credential = DefaultCredential(
                self._policy, timeout=self._http_timeout, retry=self._retry
            )
            closers.append(credential.close)
        elif _is_async_credential(credential):
            raise TypeError(
                "this KeyVaultKey has an async credential: use wrap_key_async/unwrap_key_async "
                "(Envelope.encrypt_async/decrypt_async), or pass a sync credential"
            )
        http = secure_client(self._policy, timeout=self._http_timeout, limits=self._limits)
        client = KeyClient(
            self._id.vault_url,
            credential,
            transport=SecureTransport(client=http, max_response_bytes=MAX_REPLY_BYTES),
            **self._client_options(),
        )
        return _Clients(client, [client.close, http.close, *closers])

    def _build_async(self) -> _Clients:
        from azure.keyvault.keys.aio import KeyClient  # noqa: PLC0415

        closers: list[Any] = []
        credential = self._credential
        if credential is None:
            credential = AsyncDefaultCredential(
                self._policy, timeout=self._http_timeout, retry=self._retry
            )
            closers.append(credential.close)
        elif not _is_async_credential(credential):
            credential = _ThreadedCredential(credential)
        http = secure_async_client(self._policy, timeout=self._http_timeout, limits=self._limits)
        client = KeyClient(
            self._id.vault_url,
            credential,
            transport=AsyncSecureTransport(client=http, max_response_bytes=MAX_REPLY_BYTES),
            **self._client_options(),
        )
        return _Clients(client, [client.close, http.aclose, *closers])

    @contextlib.contextmanager
    def _time_limit(self) -> Iterator[None]:
        """Within the block, the vault's traffic ends ``timeout`` seconds from now: the
        secure transport's sockets, attempts and retry waits all keep to it."""
        with deadline(self._timeout):
            yield

    @contextlib.contextmanager
    def _time_limit_async(self) -> Iterator[None]:
        """The asyncio twin of :meth:`_time_limit`; a cancel scope also bounds what the
        transport does not see (a credential with its own transport, a worker thread)."""
        try:
            with deadline(self._timeout), anyio.fail_after(self._timeout):
                yield
        except TimeoutError as exc:
            raise KeyAccessError(
                f"Key Vault did not answer {self._key_id} within the call's {self._timeout:g} s",
                key_id=self._key_id,
            ) from exc

    def _call(
        self, operation: str, method: str, path: str, body: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One request, in its turn at the vault and within the time bound from then."""
        client = self._sync_client()
        with self._vault.turn(self._caller, operation) as turn:
            options, last = _send_options(turn)
            with self._time_limit(), key_vault_errors(self._key_id, operation, self._timeout, last):
                response = client.send_request(HttpRequest(method, path, json=body), **options)
                return reply_json(response.status_code, response.content)

    async def _call_async(
        self, operation: str, method: str, path: str, body: dict[str, str] | None = None
    ) -> dict[str, Any]:
        client = await self._async_client()
        async with self._vault.turn_async(self._caller, operation) as turn:
            options, last = _send_options(turn)
            with (
                self._time_limit_async(),
                key_vault_errors(self._key_id, operation, self._timeout, last),
            ):
                response = await client.send_request(
                    HttpRequest(method, path, json=body), **options
                )
                return reply_json(response.status_code, response.content)


# -- pure helpers ---------------------------------------------------------------------------


def _send_options(turn: Turn) -> tuple[dict[str, Any], LastReply]:
    """The per-request options of the SDK pipeline: a probe of a vault marked down makes one
    attempt only; the replies of the attempts are recorded."""
    last = LastReply()
    options: dict[str, Any] = {"raw_response_hook": last}
    if turn.probe:
        options["retry_total"] = 0
    return options, last


def _check_data_key(data_key: bytes) -> None:
    if not isinstance(data_key, (bytes, bytearray)) or len(data_key) != DATA_KEY_BYTES:
        raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes")


def _op_path(kid: KeyId, operation: str) -> str:
    assert kid.version is not None
    return f"/keys/{kid.name}/{kid.version}/{operation}"


def _wrap_body(data_key: bytes) -> dict[str, str]:
    return {"alg": _OCT_WRAP, "value": _b64url(bytes(data_key))}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_field(reply: dict[str, Any], name: str, key_id: str) -> bytes:
    text = reply.get(name)
    if not isinstance(text, str) or not 0 < len(text) <= 4 * MAX_WRAPPED_KEY_BYTES:
        raise KeyAccessError(f"{key_id}: the vault's reply lacks a valid {name!r}", key_id=key_id)
    try:
        # The service sends base64url without padding; accept standard base64 as the SDK
        # does, but nothing else: a lenient decoder would drop stray characters silently.
        normalised = text.replace("+", "-").replace("/", "_").rstrip("=")
        padded = normalised + "=" * (-len(normalised) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise KeyAccessError(
            f"{key_id}: the vault's {name!r} is not base64", key_id=key_id
        ) from None


def _int_field(jwk: dict[str, Any], name: str, key_id: str) -> int:
    return int.from_bytes(_b64url_field(jwk, name, key_id), "big")


def _rsa_public_key(jwk: dict[str, Any], key_id: str) -> rsa.RSAPublicKey | None:
    """The RSA public key of a JWK, or None if it is not a sound one: a modulus of
    2048 to 8192 bits, odd, and an odd public exponent from 3 up to 2**256 (and below the
    modulus)."""
    n = _int_field(jwk, "n", key_id)
    e = _int_field(jwk, "e", key_id)
    if not _MIN_RSA_BITS <= n.bit_length() <= _MAX_RSA_BITS or n % 2 == 0:
        return None
    if not 3 <= e < min(n, 2**256) or e % 2 == 0:
        return None
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        return None


def _parse_bundle(bundle: dict[str, Any], configured: KeyId, key_id: str) -> _KeyInfo:
    def malformed(why: str) -> KeyAccessError:
        return KeyAccessError(f"{key_id}: malformed key bundle ({why})", key_id=key_id)

    jwk = bundle.get("key")
    attributes = bundle.get("attributes", {})
    if not isinstance(jwk, dict) or not isinstance(attributes, dict):
        raise malformed("no key or attributes")
    kid = parse_key_id(jwk.get("kid", ""))
    if (
        kid is None
        or kid.version is None
        or not configured.same_key(kid)
        or (configured.version is not None and kid.version.lower() != configured.version.lower())
    ):
        raise malformed(f"kid {jwk.get('kid')!r} is not a version of this key")
    kty = jwk.get("kty")
    ops = jwk.get("key_ops") or []
    if not isinstance(kty, str) or not isinstance(ops, list):
        raise malformed("kty or key_ops")
    public_key = None
    if kty in _RSA_TYPES:
        public_key = _rsa_public_key(jwk, key_id)
        if public_key is None:
            raise malformed("RSA key size, modulus or exponent")
    enabled = attributes.get("enabled", True)
    nbf, exp = attributes.get("nbf"), attributes.get("exp")
    if not isinstance(enabled, bool) or not all(
        v is None or isinstance(v, int) for v in (nbf, exp)
    ):
        raise malformed("attributes")
    return _KeyInfo(
        kid,
        kty,
        frozenset(op for op in ops if isinstance(op, str)),
        public_key,
        enabled,
        nbf,
        exp,
        time.monotonic(),
    )


def _check_wrappable(info: _KeyInfo, key_id: str) -> None:
    """Refuse, as the service would, to wrap under a disabled, not-yet-valid or expired key:
    an RSA wrap is local, so nobody else checks."""
    now = time.time()
    kid = str(info.kid)
    # Same code and inner code as the service's refusal, whichever side refused.
    refusal = None
    if not info.enabled:
        refusal = "KeyDisabled"
    elif info.not_before is not None and now < info.not_before:
        refusal = "KeyNotYetValid"
    elif info.expires_on is not None and now >= info.expires_on:
        refusal = "KeyExpired"
    if refusal is not None:
        raise KeyAccessError(
            f"{kid} may not wrap now (Forbidden/{refusal})", code="Forbidden", key_id=kid
        )
    if info.kty not in _RSA_TYPES and info.kty not in _OCT_TYPES:
        raise KeyAccessError(f"{key_id} is a {info.kty} key; it cannot wrap", key_id=kid)
    if "wrapKey" not in info.key_ops:
        raise KeyAccessError(f"{kid} does not allow wrapKey (key_ops)", key_id=kid)


def _rsa_wrap(info: _KeyInfo, data_key: bytes) -> WrappedKey:
    assert info.public_key is not None
    return WrappedKey(
        str(info.kid), _RSA_WRAP, info.public_key.encrypt(bytes(data_key), _OAEP_SHA256)
    )
