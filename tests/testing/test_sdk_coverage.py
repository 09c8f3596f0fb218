# mypy: allow-untyped-defs, allow-incomplete-defs
"""Every public method of KeyClient and CryptographyClient, sync and asyncio, has a test
against LocalKeyVault (``@pytest.mark.covers``, checked at run time by conftest.py) or an
explicit exclusion that the README documents. A new SDK method fails this test until it has
one or the other."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from azure.keyvault.keys import JsonWebKey, KeyClient
from azure.keyvault.keys.crypto.aio import CryptographyClient as AsyncCryptographyClient

from tests.testing.sdk_surface import claims_checked, public_methods, resolve

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"

#: Methods whose function the local vault does not provide. Each still has a test of the
#: clear error it answers; the README's support table says why.
EXCLUDED = {
    "KeyClient.release_key": "needs Azure Attestation",
    "aio.KeyClient.release_key": "needs Azure Attestation",
    "KeyClient.get_key_attestation": "needs the Managed HSM vendor's certificates",
    "aio.KeyClient.get_key_attestation": "needs the Managed HSM vendor's certificates",
}


def _covered() -> dict[str, list[str]]:
    """Method -> the tests that claim it, from every test module of this folder."""
    covered: dict[str, list[str]] = {}
    for path in sorted(HERE.glob("test_*.py")):
        module = importlib.import_module(f"tests.testing.{path.stem}")
        for name in dir(module):
            function = getattr(module, name)
            if not (name.startswith("test_") and callable(function)):
                continue
            for mark in getattr(function, "pytestmark", []):
                if mark.name == "covers":
                    for method in mark.args:
                        covered.setdefault(method, []).append(f"{path.name}::{name}")
    return covered


def test_every_public_method_is_tested_or_excluded():
    covered = _covered()
    missing = [m for m in public_methods() if m not in covered and m not in EXCLUDED]
    assert missing == []


def test_claims_and_exclusions_name_real_methods():
    for method in [*_covered(), *EXCLUDED]:
        resolve(method)  # raises LookupError for a stale or misspelt name


def test_exclusions_are_documented():
    text = README.read_text()
    for method, reason in EXCLUDED.items():
        assert f"`{method.rsplit('.', 1)[1]}`" in text, method
        assert reason in text, reason


def test_the_surface_is_what_the_sdk_has():
    methods = public_methods()
    # Both flavours of both clients, and nothing private.
    assert {m.split(".")[-2] for m in methods} == {"KeyClient", "CryptographyClient"}
    assert "KeyClient.get_key" in methods
    assert "aio.KeyClient.delete_key" in methods
    assert "CryptographyClient.from_jwk" in methods
    assert not any(m.rsplit(".", 1)[1].startswith("_") for m in methods)


def test_a_false_claim_is_caught(vault, monkeypatch):
    """The run-time check behind ``covers``: a claimed method that is never called fails the
    test; one that is called passes; the SDK's methods are themselves again afterwards."""
    from tests.conftest import key_client

    vault.create_key("claimed", "EC")
    original = KeyClient.get_key
    claims = claims_checked(["KeyClient.get_key", "KeyClient.rotate_key"], monkeypatch)
    claims.__enter__()
    with key_client(vault) as client:
        client.get_key("claimed")
    with pytest.raises(AssertionError, match=r"never called: \['KeyClient.rotate_key'\]"):
        claims.__exit__(None, None, None)
    monkeypatch.undo()
    assert KeyClient.get_key is original
    key = JsonWebKey(kty="EC", crv="P-256", x=bytes(31) + b"\x01", y=bytes(32))
    with (
        claims_checked(["aio.CryptographyClient.from_jwk"], monkeypatch),
        pytest.raises(ValueError),
    ):
        # Not a point on the curve: the SDK refuses it, and the call still counts.
        AsyncCryptographyClient.from_jwk(key)
