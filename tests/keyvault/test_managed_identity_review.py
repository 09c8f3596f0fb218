"""Security review of the managed-identity allowance (issue 13): the attacks that found a flaw,
kept as the proof of its fix. The test process's tripwire refuses every connection beyond
loopback, so nothing here leaves the host."""

from __future__ import annotations

from typing import Any

import pytest

from envelope import InsecureTransportError
from envelope.keyvault import KeyVaultKey
from envelope.testing import LocalKeyVault
from envelope.transport._identity import is_host_local

from ..conftest import FAST, NetworkLog
from .test_managed_identity import SECRET


@pytest.fixture(scope="module", autouse=True)
def key_in_vault(vault: LocalKeyVault) -> None:
    vault.create_key("mi-review", "RSA")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://169.254.10.20/msi/token", "169.254.10.20"),
        ("http://[fe80::1]/msi/token", "fe80::1"),
    ],
    ids=["another IPv4 link-local host", "an IPv6 link-local host"],
)
def test_a_link_local_host_other_than_imds_is_refused_before_connecting(
    vault: LocalKeyVault,
    no_identity: pytest.MonkeyPatch,
    network_log: NetworkLog,
    url: str,
    host: str,
) -> None:
    """The issue allows plain http to loopback or to link-local IMDS (169.254.169.254). The
    transport allowed every link-local address (169.254.0.0/16, fe80::/10): other hosts on
    the same link (a neighbour, a container runtime's metadata service), reached without
    TLS, with the request's secret header (IDENTITY_HEADER / MSI_SECRET) and the token in
    clear. An ``IDENTITY_ENDPOINT`` naming one is refused before connecting, as a routable
    address is (the tripwire would have stopped the connection, and records the attempt)."""
    no_identity.setenv("IDENTITY_ENDPOINT", url)
    no_identity.setenv("IDENTITY_HEADER", SECRET)
    mark = network_log.mark()
    options: dict[str, Any] = dict(FAST)
    key = KeyVaultKey(f"{vault.url}/keys/mi-review", tls_policy=vault.tls_policy, **options)
    with key, pytest.raises(InsecureTransportError) as caught:
        key.wrap_key(bytes(32))
    assert caught.value.reason == "plaintext"
    assert "IDENTITY_ENDPOINT" in str(caught.value)
    assert ("connect", host) not in network_log.since(mark)
    assert ("getaddrinfo", host) not in network_log.since(mark)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("169.254.169.254", True),
        ("169.254.169.253", False),
        ("169.254.169.255", False),
        ("169.254.0.1", False),
        ("[fe80::1]", False),
        ("[fe80::a9fe:a9fe]", False),
        ("[::ffff:169.254.169.254]", False),
        ("[::ffff:127.0.0.1]", False),
        ("169.254.169.254.nip.io", False),
        ("2852039166", False),  # 169.254.169.254 as one number
        ("0xa9.0xfe.0xa9.0xfe", False),
        ("10.0.0.4", False),
    ],
)
def test_plain_http_may_reach_loopback_and_exactly_imds(host: str, allowed: bool) -> None:
    assert is_host_local(host) is allowed
