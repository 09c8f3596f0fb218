"""The TLS policy and the one function that turns it into an ``ssl.SSLContext``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
from dataclasses import dataclass, field

import certifi
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .._errors import InsecureTransportError

__all__ = [
    "TLSPolicy",
    "check_ssl_context",
    "create_ssl_context",
    "spki_pin",
]

# OpenSSL names for TLS 1.2: forward-secret key exchange (ECDHE) and an AEAD cipher only.
# TLS 1.3 suites are all ECDHE/DHE + AEAD, so this string does not touch them.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
_ALLOWED_VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
_PIN_DIGEST_SIZE = hashlib.sha256().digest_size


@dataclass(frozen=True)
class TLSPolicy:
    """What a connection must satisfy before a single request byte is sent.

    ``minimum_version``
        ``ssl.TLSVersion.TLSv1_2`` (the default) or ``ssl.TLSVersion.TLSv1_3``. Under TLS 1.2
        only ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305) is offered.
    ``ca_file`` / ``ca_data``
        The trust anchors, replacing the default store: a PEM file path, or PEM text (``str``
        or PEM ``bytes``) / DER ``bytes``. At most one of them.
        **Default: the certifi bundle.** It is the same store on every platform and in every
        container image (a slim image often has no system store at all), it is what httpx
        itself uses, and Azure's public endpoints chain to roots it contains. An organisation
        with its own CA passes that CA here explicitly, which also means a root added to the
        host's store by someone else is not trusted silently.
    ``pins``
        Base64 SHA-256 digests of the server certificate's SubjectPublicKeyInfo (the HPKP
        format, see :func:`spki_pin`). When non-empty, the leaf certificate must match one
        of them *in addition to* normal chain and hostname verification; list the next key
        too so a rotation does not cut you off.

    There is deliberately no way to switch off verification or hostname checking.
    """

    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    ca_file: str | None = None
    ca_data: str | bytes | None = field(default=None, repr=False)
    pins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.minimum_version, ssl.TLSVersion):
            raise TypeError("minimum_version must be an ssl.TLSVersion")
        if self.minimum_version not in _ALLOWED_VERSIONS:
            raise ValueError(
                f"minimum_version must be TLSv1_2 or TLSv1_3, not {self.minimum_version.name}"
            )
        if self.ca_file is not None and self.ca_data is not None:
            raise ValueError("give ca_file or ca_data, not both")
        if self.ca_file is not None and (not isinstance(self.ca_file, str) or not self.ca_file):
            raise TypeError("ca_file must be a non-empty path string")
        if self.ca_data is not None and (
            not isinstance(self.ca_data, (str, bytes)) or not self.ca_data
        ):
            raise TypeError("ca_data must be non-empty PEM text or DER bytes")
        pins: object = self.pins
        if not isinstance(pins, (tuple, list)):
            raise TypeError("pins must be a tuple of base64 strings")
        # A list is accepted for convenience, but the frozen value must be immutable.
        object.__setattr__(self, "pins", tuple(pins))
        for pin in self.pins:
            _check_pin(pin)


def _check_pin(pin: object) -> None:
    if not isinstance(pin, str):
        raise TypeError("each pin must be a base64 string")
    try:
        digest = base64.b64decode(pin, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"pin {pin!r} is not valid base64") from None
    if len(digest) != _PIN_DIGEST_SIZE:
        raise ValueError(
            f"pin {pin!r} decodes to {len(digest)} bytes; a SHA-256 pin has {_PIN_DIGEST_SIZE}"
        )


def spki_pin(certificate: bytes | str | x509.Certificate) -> str:
    """The pin of a certificate (PEM text or bytes, DER bytes, or a parsed certificate):
    base64 SHA-256 of its SubjectPublicKeyInfo, the form :class:`TLSPolicy` ``pins`` take."""
    if isinstance(certificate, str):
        certificate = certificate.encode("ascii")
    if isinstance(certificate, bytes):
        if certificate.lstrip().startswith(b"-----BEGIN"):
            certificate = x509.load_pem_x509_certificate(certificate)
        else:
            certificate = x509.load_der_x509_certificate(certificate)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def create_ssl_context(policy: TLSPolicy | None = None) -> ssl.SSLContext:
    """Build the client ``ssl.SSLContext`` for ``policy`` (default: ``TLSPolicy()``).

    Certificate verification (``CERT_REQUIRED``) and hostname checking are always on, X.509
    checks are strict, compression and renegotiation are off, TLS 1.2 is limited to
    ECDHE + AEAD suites. Pins are not part of the context: OpenSSL has no hook for them, so
    the clients check them right after the handshake (see ``secure_client``).
    """
    policy = TLSPolicy() if policy is None else policy
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = policy.minimum_version
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    if policy.ca_file is not None:
        context.load_verify_locations(cafile=policy.ca_file)
    elif policy.ca_data is not None:
        ca_data = policy.ca_data
        if isinstance(ca_data, bytes) and ca_data.lstrip().startswith(b"-----BEGIN"):
            # ssl reads bytes as DER; PEM bytes (as trustme and files give) are meant as text.
            ca_data = ca_data.decode("ascii")
        context.load_verify_locations(cadata=ca_data)
    else:
        context.load_verify_locations(cafile=certifi.where())
    return context


def _effective_minimum(context: ssl.SSLContext) -> int:
    version = context.minimum_version
    if version is ssl.TLSVersion.MINIMUM_SUPPORTED:
        # The sentinel means "whatever OpenSSL allows", which is below any policy.
        return -1
    return int(version.value)


def check_ssl_context(context: ssl.SSLContext, policy: TLSPolicy | None = None) -> None:
    """Raise :class:`~envelope.InsecureTransportError` unless ``context`` is at least as strict
    as ``policy``: verification required, hostname checked, the same minimum version or a
    higher one, and no TLS 1.2 suite other than ECDHE + AEAD.

    This is what lets a caller bring their own context (say, with a client certificate
    loaded) without being able to bring a weaker one. Trust anchors are the caller's
    choice and are not compared.
    """
    policy = TLSPolicy() if policy is None else policy
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        raise InsecureTransportError(
            "the SSL context does not verify certificates and host names",
            reason="verification-disabled",
        )
    if _effective_minimum(context) < int(policy.minimum_version.value):
        raise InsecureTransportError(
            f"the SSL context allows protocols below {policy.minimum_version.name}",
            reason="protocol",
        )
    weak = [
        cipher["name"]
        for cipher in context.get_ciphers()
        if cipher["protocol"] != "TLSv1.3"
        and (cipher.get("kea") != "kx-ecdhe" or not cipher.get("aead"))
    ]
    if weak:
        raise InsecureTransportError(
            f"the SSL context offers suites without ECDHE + AEAD: {', '.join(weak)}",
            reason="cipher",
        )
