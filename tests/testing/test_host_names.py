# mypy: allow-untyped-defs, allow-incomplete-defs
"""LocalKeyVault(host=...): served under an Azure-style name with a certificate for it, so
that clients keep the SDK's challenge-resource check on; a Managed HSM name gets the HSM's
resource; vaults can share one tenant. The name resolves in this process only, to loopback."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.aio import KeyClient as AsyncKeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from envelope.testing import LocalKeyVault
from tests.conftest import TIMEOUTS, StaticToken
from tests.testing.kv import transport


@pytest.fixture
def named():
    with LocalKeyVault(host="MyVault.vault.azure.net") as vault:
        yield vault


def test_url_certificate_and_resolution(named):
    assert named.url == "https://myvault.vault.azure.net"
    # The name resolves to the vault, port 443 to the port it listens on ...
    [(family, _, _, _, address)] = socket.getaddrinfo("myvault.vault.azure.net", 443)
    assert (family, address) == (socket.AF_INET, ("127.0.0.1", named.port))
    # ... and the certificate is issued for the name.
    context = ssl.create_default_context(cafile=named.ca_file)
    with (
        socket.create_connection(("myvault.vault.azure.net", 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="myvault.vault.azure.net") as tls,
    ):
        certificate = tls.getpeercert()
    assert certificate is not None
    alternative: Any = certificate["subjectAltName"]
    names = [value for _, value in alternative]
    assert "myvault.vault.azure.net" in names
    # Other names are untouched.
    assert socket.getaddrinfo("localhost", 80)[0][4][0] in ("127.0.0.1", "::1")


def test_challenge_resource_check_stays_on(named):
    dek = b"k" * 32
    # No verify_challenge_resource=False: the SDK checks that the challenge's resource
    # (https://vault.azure.net) matches the vault's host, as against Azure.
    with KeyClient(
        named.url, named.credential, connection_verify=named.ca_file, **TIMEOUTS
    ) as client:
        key = client.create_rsa_key("named-kek")
        assert key.id.startswith("https://myvault.vault.azure.net/keys/named-kek/")
    with CryptographyClient(
        key.id, named.credential, connection_verify=named.ca_file, **TIMEOUTS
    ) as crypto:
        wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek


@pytest.mark.asyncio
async def test_challenge_resource_check_stays_on_aio(named):
    async with (
        named.get_async_credential(transport=transport(named)) as credential,
        AsyncKeyClient(named.url, credential, transport=transport(named), **TIMEOUTS) as client,
    ):
        key = await client.create_ec_key("named-aio")
        assert key.id.startswith("https://myvault.vault.azure.net/keys/named-aio/")


def test_managed_hsm_name_and_a_shared_tenant():
    with (
        LocalKeyVault(host="kv1.vault.azure.net") as vault,
        LocalKeyVault(host="hsm1.managedhsm.azure.net", identity_from=vault) as hsm,
    ):
        assert hsm.tenant_id == vault.tenant_id
        assert hsm.ca_pem == vault.ca_pem
        # One credential, two resources: https://vault.azure.net and
        # https://managedhsm.azure.net, each checked by the SDK and by the vault.
        credential = vault.credential
        with (
            KeyClient(vault.url, credential, connection_verify=vault.ca_file, **TIMEOUTS) as kv,
            KeyClient(hsm.url, credential, connection_verify=hsm.ca_file, **TIMEOUTS) as mhsm,
        ):
            assert kv.create_ec_key("in-vault").name == "in-vault"
            assert mhsm.create_oct_key("in-hsm", hardware_protected=True).name == "in-hsm"
            assert len(mhsm.get_random_bytes(16)) == 16
        # A token for the vault is refused by the HSM: audiences differ.
        token = vault.issue_token()
        with (
            KeyClient(
                hsm.url,
                StaticToken(token),
                connection_verify=hsm.ca_file,
                retry_total=0,
                **TIMEOUTS,
            ) as client,
            pytest.raises(ClientAuthenticationError, match="audience"),
        ):
            client.get_key("in-hsm")


def test_names_are_checked_and_not_shared():
    for bad in ("localhost", "127.0.0.1", "-bad.vault.azure.net", "a..b", "a_b.example.test", ""):
        with pytest.raises(ValueError, match="host"):
            LocalKeyVault(host=bad)
    with LocalKeyVault(host="twice.vault.azure.net"), pytest.raises(ValueError, match="already"):
        LocalKeyVault(host="twice.vault.azure.net")
    # Closed: the name is free again, and no longer resolves to loopback.
    with LocalKeyVault(host="twice.vault.azure.net"):
        pass


def test_an_explicit_port_stays_in_the_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with LocalKeyVault(host="ported.vault.example", port=port) as vault:
        assert vault.url == f"https://ported.vault.example:{port}"
        assert vault.port == port
        with KeyClient(
            vault.url,
            vault.credential,
            connection_verify=vault.ca_file,
            verify_challenge_resource=False,
            **TIMEOUTS,
        ) as client:
            assert client.create_ec_key("ported").id.startswith(vault.url)
