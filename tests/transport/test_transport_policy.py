"""TLSPolicy validation, the SSL context it builds, and the public surface of the package."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ssl
from collections.abc import Callable

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


# --- every security-relevant property of a caller's context -------------------------------

# OpenSSL's X509_V_FLAG_* and SSL_OP_* values that the ssl module does not name (OpenSSL 3).
NO_CHECK_TIME = 0x200000
IGNORE_CRITICAL = 0x10
LEGACY_SERVER_CONNECT = 0x4
ALLOW_UNSAFE_LEGACY_RENEGOTIATION = 0x40000
NO_EXTENDED_MASTER_SECRET = 0x1


def _flags(attribute: str, *, add: int = 0, clear: int = 0) -> Callable[[ssl.SSLContext], None]:
    """Set ``add`` and clear ``clear`` in the context's ``verify_flags`` or ``options``."""
    kind = ssl.VerifyFlags if attribute == "verify_flags" else ssl.Options

    def change(context: ssl.SSLContext) -> None:
        value = (int(getattr(context, attribute)) | add) & ~clear
        setattr(context, attribute, kind(value))

    return change


def _add_verify_flags(flags: int) -> Callable[[ssl.SSLContext], None]:
    return _flags("verify_flags", add=flags)


def _clear_verify_flags(flags: int) -> Callable[[ssl.SSLContext], None]:
    return _flags("verify_flags", clear=flags)


def _add_options(options: int) -> Callable[[ssl.SSLContext], None]:
    return _flags("options", add=options)


def _clear_options(options: int) -> Callable[[ssl.SSLContext], None]:
    return _flags("options", clear=options)


def _security_level(level: int) -> Callable[[ssl.SSLContext], None]:
    def change(context: ssl.SSLContext) -> None:
        context.set_ciphers(f"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:@SECLEVEL={level}")

    return change


def _common_name_fallback(context: ssl.SSLContext) -> None:
    context.hostname_checks_common_name = True


def _tls13_only(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_3


def _key_log(context: ssl.SSLContext) -> None:
    context.keylog_filename = "/dev/null"


WEAKENINGS = [
    pytest.param(_add_verify_flags(NO_CHECK_TIME), "verification-disabled", id="no-check-time"),
    pytest.param(
        _add_verify_flags(ssl.VERIFY_X509_PARTIAL_CHAIN), "verification-disabled", id="partial"
    ),
    pytest.param(
        _add_verify_flags(ssl.VERIFY_ALLOW_PROXY_CERTS), "verification-disabled", id="proxy-certs"
    ),
    pytest.param(_add_verify_flags(IGNORE_CRITICAL), "verification-disabled", id="ignore-critical"),
    pytest.param(
        _clear_verify_flags(ssl.VERIFY_X509_STRICT), "verification-disabled", id="not-strict"
    ),
    pytest.param(_common_name_fallback, "verification-disabled", id="common-name-fallback"),
    pytest.param(_security_level(0), "cipher", id="seclevel-0"),
    pytest.param(_security_level(1), "cipher", id="seclevel-1"),
    pytest.param(_clear_options(ssl.OP_NO_RENEGOTIATION), "protocol", id="renegotiation"),
    pytest.param(_clear_options(ssl.OP_NO_COMPRESSION), "protocol", id="compression"),
    pytest.param(_add_options(LEGACY_SERVER_CONNECT), "protocol", id="legacy-server-connect"),
    pytest.param(
        _add_options(ALLOW_UNSAFE_LEGACY_RENEGOTIATION), "protocol", id="unsafe-renegotiation"
    ),
    pytest.param(_add_options(ssl.OP_IGNORE_UNEXPECTED_EOF), "protocol", id="truncation"),
    pytest.param(_add_options(NO_EXTENDED_MASTER_SECRET), "protocol", id="no-ems"),
    pytest.param(_key_log, "protocol", id="key-log"),
]


@pytest.mark.parametrize(("weaken", "reason"), WEAKENINGS)
def test_a_context_weaker_than_the_policy_in_any_property_is_refused(
    weaken: Callable[[ssl.SSLContext], None], reason: str
) -> None:
    context = create_ssl_context()
    weaken(context)
    with pytest.raises(envelope.InsecureTransportError) as excinfo:
        check_ssl_context(context)
    assert excinfo.value.reason == reason


STRICTER = [
    pytest.param(_add_options(ssl.OP_NO_TICKET), id="no-tickets"),
    pytest.param(_tls13_only, id="tls13-only"),
    pytest.param(_add_verify_flags(ssl.VERIFY_CRL_CHECK_LEAF), id="crl-leaf"),
    pytest.param(_clear_verify_flags(ssl.VERIFY_X509_TRUSTED_FIRST), id="no-trusted-first"),
    pytest.param(_security_level(3), id="seclevel-3"),
]


@pytest.mark.parametrize("tighten", STRICTER)
def test_a_context_stricter_than_the_policy_is_accepted(
    tighten: Callable[[ssl.SSLContext], None],
) -> None:
    context = create_ssl_context()
    tighten(context)
    check_ssl_context(context)


def test_the_policy_context_is_strict_in_every_property() -> None:
    context = create_ssl_context()
    assert context.security_level >= 2
    assert not context.hostname_checks_common_name
    flags = int(context.verify_flags)
    assert flags & ssl.VERIFY_X509_STRICT
    assert not flags & (NO_CHECK_TIME | IGNORE_CRITICAL | ssl.VERIFY_X509_PARTIAL_CHAIN)
    assert not flags & ssl.VERIFY_ALLOW_PROXY_CERTS
    options = int(context.options)
    assert options & ssl.OP_NO_COMPRESSION
    assert options & ssl.OP_NO_RENEGOTIATION
    weak_options = LEGACY_SERVER_CONNECT | ALLOW_UNSAFE_LEGACY_RENEGOTIATION
    assert not options & (weak_options | ssl.OP_IGNORE_UNEXPECTED_EOF | NO_EXTENDED_MASTER_SECRET)
    assert context.keylog_filename is None
