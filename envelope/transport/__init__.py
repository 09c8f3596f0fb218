"""TLS-only transports: a frozen TLS policy, the one SSL context built from it, httpx clients
and azure-core transports that cannot be downgraded, and an opt-in process-wide guard.

Every refusal raises :class:`envelope.InsecureTransportError` with a ``reason``:

=========================  ===============================================================
``plaintext``              an ``http://`` (or other non-https) URL, before any socket opens
``redirect``               a redirect off https, before any socket opens
``verification-disabled``  ``verify=False``, ``connection_verify=False`` or a client/context
                           that does not verify certificates and host names as strictly
                           as the policy (a common-name fallback, no expiry check, X.509
                           strictness cleared ...); a caller's context is checked again
                           before every handshake, so weakening it after the client was
                           built refuses the next connection
``protocol``               a server (or a context passed in) below the policy's version, or
                           a context that allows compression, renegotiation or another
                           weaker session option
``cipher``                 a TLS 1.2 server (or a context) without ECDHE + AEAD suites, or a
                           context below OpenSSL security level 2 (1024-bit RSA keys)
``certificate``            an untrusted, self-signed, expired, wrong-host or weak-key
                           certificate
``pin``                    a certificate whose SPKI matches no pin, before any request byte
=========================  ===============================================================

Handshakes never use a context the caller holds: the secure clients copy it, once, into a
private context (see ``secure_client``).

The one exception to TLS-only is the transport of the library's own credential
(``envelope.keyvault.DefaultCredential``, module ``_identity``): managed-identity token
requests, plain http by Azure's design, to exactly the endpoint the environment names and
only on loopback or at IMDS's 169.254.169.254 (no other link-local address), without proxy or
redirect. Vault and storage clients never use it.
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
