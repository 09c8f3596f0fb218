"""Fixtures and helpers shared by several areas: the LocalKeyVault of a test module (core's
cache and asyncio tests, keyvault, testing), clients and KEKs over it with small backoffs and
short timeouts, so that failure paths stay fast, a credential with a fixed token (testing,
transport), and round trips from many threads at once (core, keyvault).

The whole test process runs behind a tripwire (an audit hook): a connection to any address
beyond loopback fails before it is attempted, and every connection and name lookup is
recorded, so a test can show what its code tried (``network_log``)."""

from __future__ import annotations

import ipaddress
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import pytest
from azure.core.credentials import AccessToken, TokenCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys._shared import http_challenge_cache

from envelope import Envelope
from envelope.keyvault import KeyVaultKey
from envelope.testing import LocalKeyVault
from envelope.transport import TLSPolicy

from .azurite import Azurite, start_azurite

T = TypeVar("T")


class NetworkLog:
    """Every ``socket.connect`` (host) and ``socket.getaddrinfo`` (name) of the process, in
    order; connections beyond loopback are refused before they are attempted."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect":
            address = args[1]
            if not isinstance(address, tuple) or not address:
                return  # a unix socket
            host = str(address[0])
            self._add("connect", host)
            if not _is_loopback(host):
                raise ConnectionRefusedError(
                    f"test tripwire: refused a connection to {host}, which is beyond loopback"
                )
        elif event == "socket.getaddrinfo":
            self._add("getaddrinfo", str(args[0]))

    def _add(self, kind: str, host: str) -> None:
        with self._lock:
            self.events.append((kind, host))

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def since(self, mark: int) -> list[tuple[str, str]]:
        with self._lock:
            return self.events[mark:]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


NETWORK = NetworkLog()
sys.addaudithook(NETWORK.audit)


@pytest.fixture
def network_log() -> NetworkLog:
    """The process's network log (see the module docstring); ``mark()`` then ``since()``."""
    return NETWORK


TIMEOUTS = {"connection_timeout": 5, "read_timeout": 10}

FAST = {
    "retry_backoff_factor": 0.01,
    "retry_backoff_max": 0.05,
    "connect_timeout": 2.0,
    "read_timeout": 5.0,
    "timeout": 10.0,
}


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    """Azurite over HTTPS on 127.0.0.1, one per test module (``tests/azurite.py``)."""
    with start_azurite() as server:
        yield server


@pytest.fixture(scope="module")
def vault() -> Iterator[LocalKeyVault]:
    # One per module: tests of different modules create keys with the same names.
    with LocalKeyVault() as local:
        yield local


@pytest.fixture
def fresh(vault: LocalKeyVault) -> Iterator[None]:
    """The module's vault without faults, counts or challenges left by an earlier test."""
    # The SDK's challenge cache is process-global and keyed by host:port; so is what the
    # KeyVaultKeys learnt of the vault's health from an earlier test's faults.
    http_challenge_cache.clear()
    KeyVaultKey.reset_breakers()
    vault.clear_faults()
    vault.reset_counts()
    yield
    vault.clear_faults()


class StaticToken:
    """A credential that presents one fixed token: for tokens the vault must refuse."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def key_client(vault: LocalKeyVault, credential: Any = None, **kwargs: Any) -> KeyClient:
    """An SDK KeyClient of ``vault`` (its full-permission identity unless ``credential``)."""
    kwargs.setdefault("retry_backoff_factor", 0.01)
    return KeyClient(
        vault.url,
        credential or vault.credential,
        verify_challenge_resource=False,
        connection_verify=vault.ca_file,
        **TIMEOUTS,
        **kwargs,
    )


class VaultEndpoint(Protocol):
    """What :func:`kek` needs of a vault: a LocalKeyVault, or one served by another process."""

    @property
    def url(self) -> str: ...

    @property
    def credential(self) -> TokenCredential: ...

    @property
    def tls_policy(self) -> TLSPolicy: ...


def kek(vault: VaultEndpoint, key_id: str, credential: Any = None, **options: Any) -> KeyVaultKey:
    """A KeyVaultKey for ``key_id`` (a versioned kid, or a name for the versionless id) of
    ``vault``, with small backoffs and short timeouts (``FAST``) unless ``options`` say else."""
    if not key_id.startswith("https://"):
        key_id = f"{vault.url}/keys/{key_id}"
    settings = {**FAST, **options}
    return KeyVaultKey(
        key_id, credential or vault.credential, tls_policy=vault.tls_policy, **settings
    )


class FrozenClock:
    """``time.monotonic`` of the given modules stands still until :meth:`advance`d; every
    other function of their ``time`` is the real one. For the ages of cache entries: a
    test then says when an age runs out instead of hoping the machine is not stalled."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *modules: types.ModuleType) -> None:
        self.now = time.monotonic()
        fake = types.SimpleNamespace(
            **{name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
        )
        fake.monotonic = lambda: self.now
        for module in modules:
            monkeypatch.setattr(module, "time", fake)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run_threads(
    count: int, work: Callable[[int], T], *, timeout: float = 60
) -> tuple[list[T], list[BaseException]]:
    """Run ``work(n)`` for n in range(count), each in its own thread, all released at once;
    returns what they returned and what they raised. Each thread, joined in turn, must end
    within ``timeout`` s of its join, or the test fails (rather than hangs: the threads are
    daemons, so one that never returns does not hold the test process either)."""
    barrier = threading.Barrier(count)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def body(n: int) -> None:
        barrier.wait()
        try:
            value = work(n)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=body, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), f"not ended within {timeout} s"
    return results, errors


def round_trips_in_threads(
    env: Envelope, *, threads: int, messages: int, prefix: bytes = b""
) -> list[BaseException]:
    """Each of ``threads`` threads encrypts and decrypts ``messages`` distinct messages
    (each ``prefix`` then its thread and number) through ``env``, checking each round trip.
    Returns whatever they raised."""

    def work(n: int) -> None:
        for i in range(messages):
            data = prefix + f"{n}:{i}".encode()
            assert env.decrypt(env.encrypt(data)) == data

    return run_threads(threads, work)[1]
