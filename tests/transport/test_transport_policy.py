"""TLSPolicy validation, the SSL context it builds, and the public surface of the package."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ssl

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import envelope
import envelope.transport
from envelope.transport import TLSPolicy, check_ssl_context, create_ssl_context, spki_pin

GOOD_PIN = base64.b64encode(b"\x01" * 32).decode()


def test_public_surface() -> None:
    assert sorted(envelope.transport.__all__) == [
        "AsyncSecureTransport",
        "InsecureRequestError",
        "PlaintextGuard",
        "SecureTransport",
        "TLSPolicy",
        "check_ssl_context",
        "create_ssl_context",
        "forbid_plaintext",
        "is_secure_client",
        "secure_async_client",
        "secure_client",
        "spki_pin",
    ]
    assert issubclass(envelope.transport.InsecureRequestError, envelope.InsecureTransportError)


def test_defaults_and_immutability() -> None:
    policy = TLSPolicy()
    assert policy.minimum_version is ssl.TLSVersion.TLSv1_2
    assert (policy.ca_file, policy.ca_data, policy.pins) == (None, None, ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.pins = (GOOD_PIN,)  # type: ignore[misc]
    assert TLSPolicy(pins=[GOOD_PIN]).pins == (GOOD_PIN,)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"minimum_version": ssl.TLSVersion.TLSv1_1}, ValueError),
        ({"minimum_version": ssl.TLSVersion.MINIMUM_SUPPORTED}, ValueError),
        ({"minimum_version": 771}, TypeError),
        ({"ca_file": "a.pem", "ca_data": "pem"}, ValueError),
        ({"ca_file": ""}, TypeError),
        ({"ca_data": b""}, TypeError),
        ({"pins": GOOD_PIN}, TypeError),
        ({"pins": ("not base64!",)}, ValueError),
        ({"pins": (base64.b64encode(b"short").decode(),)}, ValueError),
        ({"pins": (b"\x01" * 32,)}, TypeError),
    ],
)
def test_malformed_policies_are_rejected(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        TLSPolicy(**kwargs)  # type: ignore[arg-type]


def test_context_always_verifies_and_limits_tls12_to_ecdhe_aead() -> None:
    context = create_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_flags & ssl.VERIFY_X509_STRICT
    assert context.options & ssl.OP_NO_COMPRESSION
    for cipher in context.get_ciphers():
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["kea"] == "kx-ecdhe"
            assert cipher["aead"]
    assert context.cert_store_stats()["x509_ca"] > 50  # certifi, not an empty store
    tls13 = create_ssl_context(TLSPolicy(minimum_version=ssl.TLSVersion.TLSv1_3))
    assert tls13.minimum_version is ssl.TLSVersion.TLSv1_3


def test_ca_data_and_ca_file_replace_the_default_store(tmp_path: object) -> None:
    ca = trustme.CA()
    for policy in (
        TLSPolicy(ca_data=ca.cert_pem.bytes()),
        TLSPolicy(ca_data=ca.cert_pem.bytes().decode()),
        TLSPolicy(
            ca_data=x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(Encoding.DER)
        ),
    ):
        assert create_ssl_context(policy).cert_store_stats()["x509_ca"] == 1
    with ca.cert_pem.tempfile() as path:
        assert create_ssl_context(TLSPolicy(ca_file=path)).cert_store_stats()["x509_ca"] == 1


def test_the_factory_context_passes_its_own_check() -> None:
    policy = TLSPolicy(minimum_version=ssl.TLSVersion.TLSv1_3)
    check_ssl_context(create_ssl_context(policy), policy)
    with pytest.raises(envelope.InsecureTransportError) as excinfo:
        check_ssl_context(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    assert excinfo.value.reason in {"protocol", "cipher"}


def test_spki_pin_is_sha256_of_the_subject_public_key_info() -> None:
    leaf = trustme.CA().issue_cert("127.0.0.1")
    pem = leaf.cert_chain_pems[0].bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    expected = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    der = certificate.public_bytes(Encoding.DER)
    assert spki_pin(pem) == spki_pin(pem.decode()) == spki_pin(der) == expected
    assert spki_pin(certificate) == expected
    TLSPolicy(pins=(expected,))
