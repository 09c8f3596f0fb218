"""TLS-only transports: a frozen TLS policy, the SSL context built from it, and (as they land)
httpx clients and azure-core transports that cannot be downgraded."""

from ._policy import TLSPolicy, check_ssl_context, create_ssl_context, spki_pin

__all__ = [
    "TLSPolicy",
    "check_ssl_context",
    "create_ssl_context",
    "spki_pin",
]
