"""TLS-only transports: a frozen TLS policy, the one SSL context built from it, httpx clients
and azure-core transports that cannot be downgraded, and an opt-in process-wide guard.

Every refusal raises :class:`envelope.InsecureTransportError` with a ``reason``:

=========================  ===============================================================
``plaintext``              an ``http://`` (or other non-https) URL, before any socket opens
``redirect``               a redirect off https, before any socket opens
``verification-disabled``  ``verify=False``, ``connection_verify=False`` or a client/context
                           that does not verify certificates and host names (a context is
                           checked again on every new connection, so weakening it after
                           the client was built refuses the next handshake)
``protocol``               a server (or a context passed in) below the policy's version
``cipher``                 a TLS 1.2 server (or a context) without ECDHE + AEAD suites
``certificate``            an untrusted, self-signed, expired or wrong-host certificate
``pin``                    a certificate whose SPKI matches no pin, before any request byte
=========================  ===============================================================
"""

from ._azure import AsyncSecureTransport, SecureTransport
from ._guard import PlaintextGuard, forbid_plaintext
from ._httpx import InsecureRequestError, is_secure_client, secure_async_client, secure_client
from ._policy import TLSPolicy, check_ssl_context, create_ssl_context, spki_pin

__all__ = [
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
