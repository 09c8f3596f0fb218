"""pytest plugin of ``python -m envelope.testing.azure_sdk_tests``: serves the tests a vault
and a Managed HSM, both LocalKeyVaults, under Azure-style names.

The vault answers at ``https://<random>.vault.azure.net`` and the HSM at
``https://<random>.managedhsm.azure.net``, resolved in-process to 127.0.0.1 with certificates
for those names, so the SDK keeps its challenge-resource check on. They share one tenant, so
one credential serves both, as in Azure. Nothing else resolves: no byte leaves loopback.

Waits the tests make to spare the real service's throttling (``time.sleep``,
``asyncio.sleep``) advance the vaults' clocks instead of the wall clock, unless
``ENVELOPE_SDK_TESTS_REAL_TIME`` is set: timestamps still move, the run takes minutes less.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import Any

import pytest

from ._resolver import loopback_only
from ._vault import LocalKeyVault

__all__: list[str] = []

REAL_TIME = "ENVELOPE_SDK_TESTS_REAL_TIME"
_vaults: list[LocalKeyVault] = []
_originals: dict[str, Any] = {}


def _advance(seconds: Any) -> None:
    if isinstance(seconds, (int, float)) and seconds > 0:
        for vault in _vaults:
            vault.advance_time(seconds)


def _virtual_sleep(seconds: Any) -> None:
    _advance(seconds)


async def _virtual_async_sleep(delay: float, result: Any = None) -> Any:
    _advance(delay)
    return await _originals["asyncio.sleep"](0, result)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    # Before any test module (or aiohttp's default TLS context) exists, so that the vaults'
    # URLs, credentials and CA are in the environment they read at import.
    loopback_only(True)
    vault = LocalKeyVault(host=f"kv{secrets.token_hex(6)}.vault.azure.net")
    hsm = LocalKeyVault(host=f"hsm{secrets.token_hex(6)}.managedhsm.azure.net", identity_from=vault)
    _vaults.extend((vault, hsm))
    identity = vault.identity()
    os.environ.update(
        {
            "AZURE_TEST_RUN_LIVE": "true",
            "AZURE_SKIP_LIVE_RECORDING": "true",
            "AZURE_KEYVAULT_URL": vault.url,
            "AZURE_MANAGEDHSM_URL": hsm.url,
            "KEYVAULT_TENANT_ID": vault.tenant_id,
            "KEYVAULT_CLIENT_ID": identity.client_id,
            "KEYVAULT_CLIENT_SECRET": identity.client_secret,
            "AZURE_TENANT_ID": vault.tenant_id,
            "AZURE_CLIENT_ID": identity.client_id,
            "AZURE_CLIENT_SECRET": identity.client_secret,
            # Both vaults hold HSM-protected keys, as a Premium vault does.
            "KEYVAULT_SKU": "premium",
            # Release policies name an attestation authority; nothing can reach this one.
            "AZURE_KEYVAULT_ATTESTATION_URL": "https://attestation.invalid",
            "LOCAL_KEYVAULT_AUTHORITY": vault.url,
            "LOCAL_KEYVAULT_CA_FILE": vault.ca_file,
            # Clients the tests build themselves trust the vaults through the defaults.
            "REQUESTS_CA_BUNDLE": vault.ca_file,
            "SSL_CERT_FILE": vault.ca_file,
        }
    )
    if not os.environ.get(REAL_TIME):
        _originals["time.sleep"] = time.sleep
        _originals["asyncio.sleep"] = asyncio.sleep
        time.sleep = _virtual_sleep
        asyncio.sleep = _virtual_async_sleep


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "playback_test_only(reason): not run in live mode")
    config.addinivalue_line("markers", "live_test_only(reason): run in live mode only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # As the Azure SDK repository's own configuration does for a live run.
    for item in items:
        marker = item.get_closest_marker("playback_test_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "playback only"
            item.add_marker(pytest.mark.skip(reason=f"playback only: {reason}"))


def pytest_unconfigure(config: pytest.Config) -> None:
    if "time.sleep" in _originals:
        time.sleep = _originals.pop("time.sleep")
        asyncio.sleep = _originals.pop("asyncio.sleep")
    # The HSM joined the vault's tenant: it closes first.
    while _vaults:
        _vaults.pop().close()
    loopback_only(False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    # Which tests talk to the vaults (the live tests) and which only to mocks: the count
    # lands in the JUnit report as the property local_keyvault_requests.
    for vault in _vaults:
        vault.reset_counts()
    try:
        return (yield)
    finally:
        requests = sum(sum(vault.operation_counts().values()) for vault in _vaults)
        item.user_properties.append(("local_keyvault_requests", requests))


@pytest.fixture(scope="session")
def test_proxy() -> None:
    """The recording proxy's fixture; live runs without recording need none."""
