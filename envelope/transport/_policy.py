"""The TLS policy and the one function that turns it into an ``ssl.SSLContext``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
from collections.abc import Iterable
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

# OpenSSL's security level bounds key sizes and signature hashes: level 2 refuses RSA and DH
# keys under 2048 bits and SHA-1 signatures. The policy never goes below the platform's own
# default, and never below 2 (OpenSSL's upstream default is 1, which admits 1024-bit RSA).
_SECURITY_LEVEL = max(2, ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).security_level)

# X509_V_FLAG_* values (OpenSSL's x509_vfy.h) the ssl module does not name.
_X509_FLAG_NAMES = {
    0x1: "CB_ISSUER_CHECK",
    0x2: "USE_CHECK_TIME",
    0x10: "IGNORE_CRITICAL",
    int(ssl.VERIFY_ALLOW_PROXY_CERTS): "ALLOW_PROXY_CERTS",
    int(ssl.VERIFY_X509_PARTIAL_CHAIN): "PARTIAL_CHAIN",
    0x200000: "NO_CHECK_TIME",
}
# Flags a caller's context may add: each one makes verification stricter (CRLs, policies,
# Suite B, no alternative chains, self-signature checks) or only orders the chain search.
_STRICTER_VERIFY_FLAGS = (
    int(ssl.VERIFY_CRL_CHECK_LEAF)
    | int(ssl.VERIFY_CRL_CHECK_CHAIN)
    | int(ssl.VERIFY_X509_TRUSTED_FIRST)
    | 0x80  # POLICY_CHECK
    | 0x100  # EXPLICIT_POLICY
    | 0x200  # INHIBIT_ANY
    | 0x400  # INHIBIT_MAP
    | 0x800  # NOTIFY_POLICY
    | 0x1000  # EXTENDED_CRL_SUPPORT
    | 0x2000  # USE_DELTAS
    | 0x4000  # CHECK_SS_SIGNATURE
    | 0x30000  # SUITEB_128_LOS_ONLY, SUITEB_192_LOS
    | 0x100000  # NO_ALT_CHAINS
)
_REQUIRED_VERIFY_FLAGS = int(ssl.VERIFY_X509_STRICT)

# SSL_OP_* values (OpenSSL's ssl.h) the ssl module does not name, each weakening a session.
_OPTION_NAMES = {
    0x1: "NO_EXTENDED_MASTER_SECRET",
    0x4: "LEGACY_SERVER_CONNECT",
    int(ssl.OP_IGNORE_UNEXPECTED_EOF): "IGNORE_UNEXPECTED_EOF",
    0x100: "ALLOW_CLIENT_RENEGOTIATION",
    0x400: "ALLOW_NO_DHE_KEX",
    0x40000: "ALLOW_UNSAFE_LEGACY_RENEGOTIATION",
    0x80000: "NO_ENCRYPT_THEN_MAC",
    0x800000: "TLS_ROLLBACK_BUG",
}
_LEGACY_SERVER_CONNECT = 0x4
_REQUIRED_OPTIONS = int(ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION)
# Options a caller's context may carry beyond those: what Python sets on every client context
# (OpenSSL's bug workarounds, none of which touches TLS 1.2+ with AEAD suites), except legacy
# renegotiation with unpatched servers, and those that only narrow what is offered.
_ALLOWED_OPTIONS = (
    (int(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).options) & ~_LEGACY_SERVER_CONNECT)
    | (int(ssl.OP_ALL) & ~_LEGACY_SERVER_CONNECT)
    | _REQUIRED_OPTIONS
    | int(
        ssl.OP_NO_TICKET
        | ssl.OP_NO_SSLv2
        | ssl.OP_NO_SSLv3
        | ssl.OP_NO_TLSv1
        | ssl.OP_NO_TLSv1_1
        | ssl.OP_NO_TLSv1_2
        | ssl.OP_NO_TLSv1_3
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_DH_USE
        | ssl.OP_SINGLE_ECDH_USE
        | ssl.OP_ENABLE_MIDDLEBOX_COMPAT
    )
)


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

    Certificate verification (``CERT_REQUIRED``) and hostname checking are always on, with no
    fallback to the subject's common name; X.509 checks are strict; OpenSSL's security level
    is at least 2 (no RSA key under 2048 bits, no SHA-1 signature); compression,
    renegotiation and legacy renegotiation with unpatched servers are off; TLS 1.2 is limited
    to ECDHE + AEAD suites. Pins are not part of the context: OpenSSL has no hook for them,
    so the clients check them right after the handshake (see ``secure_client``).
    """
    policy = TLSPolicy() if policy is None else policy
    context = _policy_context(policy)
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


class _ClientContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` on which setting the ALPN list it already has changes nothing.

    httpcore sets the ALPN list of the context it is given before every connection it makes.
    CPython creates each connection's OpenSSL object with the GIL released, copying the
    context's list as it does; a rewrite of that list by another thread at that moment frees
    the memory being copied, and the connection sends a garbled ClientHello that the server
    refuses (seen under load as a ``decode_error`` alert). The secure clients set the list
    once, when they are made, so httpcore's calls repeat it and leave it alone.
    """

    _alpn: list[str] | None = None

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        wanted = list(alpn_protocols)
        if wanted != self._alpn:
            super().set_alpn_protocols(wanted)
            self._alpn = wanted


def _policy_context(policy: TLSPolicy) -> ssl.SSLContext:
    """Every setting of the policy's context except its trust anchors."""
    context = _ClientContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.hostname_checks_common_name = False
    context.minimum_version = policy.minimum_version
    context.set_ciphers(f"{_TLS12_CIPHERS}:@SECLEVEL={_SECURITY_LEVEL}")
    context.options = ssl.Options(
        (int(context.options) | _REQUIRED_OPTIONS) & ~_LEGACY_SERVER_CONNECT
    )
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def private_copy(source: ssl.SSLContext, policy: TLSPolicy) -> ssl.SSLContext:
    """A new context, held by nobody else, for handshakes on behalf of ``source``.

    ``source`` must pass :func:`check_ssl_context`. The copy is the policy's context with the
    trust anchors ``source`` lists and every setting in which ``source`` is stricter: a
    higher minimum or a lower maximum version, narrower TLS 1.2 suites, a higher security
    level, extra verify flags (CRL checks need CRLs, which cannot be copied: they fail
    closed), fewer tickets. A client certificate loaded into ``source`` cannot be read back
    and is not copied. What the caller does to ``source`` afterwards changes nothing here.
    """
    check_ssl_context(source, policy)
    anchors = source.get_ca_certs(binary_form=True)
    if not anchors:
        raise ValueError(
            "the SSL context lists no CA certificates to copy (certificates in a capath "
            "directory are loaded lazily); give the trust anchors as "
            "TLSPolicy(ca_file=...) or TLSPolicy(ca_data=...)"
        )
    copy = _policy_context(policy)
    copy.load_verify_locations(cadata=b"".join(anchors))
    options = int(source.options)
    minimum, maximum = source.minimum_version, source.maximum_version
    # The deprecated OP_NO_TLS* options narrow the versions too; say it the current way.
    if options & ssl.OP_NO_TLSv1_2:
        minimum = ssl.TLSVersion.TLSv1_3
    if options & ssl.OP_NO_TLSv1_3:
        maximum = ssl.TLSVersion.TLSv1_2
    if _effective_minimum(source) > int(copy.minimum_version.value):
        copy.minimum_version = minimum
    copy.maximum_version = maximum
    copy.options = ssl.Options(int(copy.options) | (options & int(ssl.OP_NO_TICKET)))
    copy.verify_flags = source.verify_flags
    level = max(_SECURITY_LEVEL, source.security_level)
    suites = [cipher["name"] for cipher in source.get_ciphers() if cipher["protocol"] != "TLSv1.3"]
    copy.set_ciphers(f"{':'.join(suites) or _TLS12_CIPHERS}:@SECLEVEL={level}")
    copy.post_handshake_auth = source.post_handshake_auth
    check_ssl_context(copy, policy)
    return copy


def _effective_minimum(context: ssl.SSLContext) -> int:
    version = context.minimum_version
    if version is ssl.TLSVersion.MINIMUM_SUPPORTED:
        # The sentinel means "whatever OpenSSL allows", which is below any policy.
        return -1
    return int(version.value)


def check_ssl_context(context: ssl.SSLContext, policy: TLSPolicy | None = None) -> None:
    """Raise :class:`~envelope.InsecureTransportError` unless ``context`` is at least as strict
    as ``policy`` (the context :func:`create_ssl_context` builds) in every property that
    bears on security:

    ``verification-disabled``
        verification not required, host names not checked, a common-name fallback, strict
        X.509 checks cleared, or a verify flag that weakens them (no expiry check, partial
        chains, proxy certificates, ignored critical extensions, or any flag not known to
        be stricter);
    ``protocol``
        a minimum version below the policy's; compression or renegotiation allowed; an
        option that weakens the session (legacy renegotiation, no extended master secret,
        truncation accepted as EOF, or any option not known to be harmless); session keys
        written to a key log file;
    ``cipher``
        a TLS 1.2 suite other than ECDHE + AEAD, or an OpenSSL security level below the
        policy's (level 0 or 1 admit 1024-bit RSA keys and SHA-1 signatures).

    This is what lets a caller bring their own context (say, with stricter settings)
    without being able to bring a weaker one. Trust anchors are the caller's choice and are
    not compared.
    """
    policy = TLSPolicy() if policy is None else policy
    # The checks of the first versions of this function come first, so that a context that
    # fails several of them keeps being refused for the same reason.
    for check in (
        _verification_off,
        _version_below,
        _weak_suites,
        _weak_verification,
        _weak_options,
        _weak_security_level,
    ):
        problem = check(context, policy)
        if problem is not None:
            reason, message = problem
            raise InsecureTransportError(f"the SSL context {message}", reason=reason)


_Problem = tuple[str, str] | None


def _verification_off(context: ssl.SSLContext, policy: TLSPolicy) -> _Problem:
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        return "verification-disabled", "does not verify certificates and host names"
    return None


def _version_below(context: ssl.SSLContext, policy: TLSPolicy) -> _Problem:
    if _effective_minimum(context) < int(policy.minimum_version.value):
        return "protocol", f"allows protocols below {policy.minimum_version.name}"
    return None


def _weak_suites(context: ssl.SSLContext, policy: TLSPolicy) -> _Problem:
    weak = [
        cipher["name"]
        for cipher in context.get_ciphers()
        if cipher["protocol"] != "TLSv1.3"
        and (cipher.get("kea") != "kx-ecdhe" or not cipher.get("aead"))
    ]
    if weak:
        return "cipher", f"offers suites without ECDHE + AEAD: {', '.join(weak)}"
    return None


def _weak_verification(context: ssl.SSLContext, policy: TLSPolicy) -> _Problem:
    reason = "verification-disabled"
    if context.hostname_checks_common_name:
        return reason, "falls back to the subject's common name for host names"
    flags = int(context.verify_flags)
    if flags & _REQUIRED_VERIFY_FLAGS != _REQUIRED_VERIFY_FLAGS:
        return reason, "does not apply strict X.509 checks (VERIFY_X509_STRICT)"
    weakening = flags & ~(_REQUIRED_VERIFY_FLAGS | _STRICTER_VERIFY_FLAGS)
    if weakening:
        return reason, f"weakens verification with flags {_names(weakening, _X509_FLAG_NAMES)}"
    return None


def _weak_options(context: ssl.SSLContext, policy: TLSPolicy) -> _Problem:
    reason = "protocol"
    options = int(context.options)
    if not options & ssl.OP_NO_COMPRESSION:
        return reason, "allows compression (OP_NO_COMPRESSION is not set)"
    if not options & ssl.OP_NO_RENEGOTIATION:
        return reason, "allows renegotiation (OP_NO_RENEGOTIATION is not set)"
    weakening = options & ~_ALLOWED_OPTIONS
    if weakening:
        return reason, f"weakens the session with options {_names(weakening, _OPTION_NAMES)}"
    # typeshed says str; it is None until a key log file is set.
    key_log: str | None = getattr(context, "keylog_filename", None)
    if key_log is not None:
        return reason, f"writes its session keys to {key_log!r}"
    return None


def _weak_security_level(context: ssl.SSLContext, policy: TLSPolicy) -> _Problem:
    if context.security_level < _SECURITY_LEVEL:
        return "cipher", (
            f"has OpenSSL security level {context.security_level}, below {_SECURITY_LEVEL} "
            "(weak keys and SHA-1 signatures would pass)"
        )
    return None


def _names(bits: int, names: dict[int, str]) -> str:
    """``bits`` as OpenSSL's names where known, else hexadecimal."""
    parts = []
    for bit in (1 << n for n in range(bits.bit_length())):
        if bits & bit:
            parts.append(names.get(bit, hex(bit)))
    return ", ".join(parts)
