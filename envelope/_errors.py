"""The exceptions raised by envelope.

Every exception the library raises on purpose derives from :class:`EnvelopeError`::

    EnvelopeError
     +-- DecryptionError          a message cannot be opened; no hint of which check failed
     |    +-- FormatError         the bytes are not a well-formed message this version reads
     +-- KeyAccessError           a key-encryption key could not be used (denied, disabled,
     |                            deleted, unreachable, or not allowed by the decrypt policy)
     +-- InsecureTransportError   a connection was refused by the TLS policy

Caller mistakes (a wrong type, an empty key list, the same KEK on two layers) stay
``TypeError`` / ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "DecryptionError",
    "EnvelopeError",
    "FormatError",
    "InsecureTransportError",
    "KeyAccessError",
]


class EnvelopeError(Exception):
    """Base class of every error raised by envelope."""


class DecryptionError(EnvelopeError):
    """A message could not be decrypted.

    Raised for every integrity failure: a flipped byte, a truncated or reordered body, a
    wrong encryption context, a wrapped key that unwraps to another data key. The message
    deliberately does not say which check failed, except for a context that differs from
    the expected one: that message names the keys that differ (the context is stored in
    clear, so it reveals nothing).
    """

    def __init__(self, message: str = "message authentication failed") -> None:
        super().__init__(message)


class FormatError(DecryptionError):
    """The input is not a well-formed envelope message (bad magic, unknown version or
    suite, a length over its limit, truncated header)."""

    def __init__(self, message: str = "malformed envelope message") -> None:
        super().__init__(message)


class KeyAccessError(EnvelopeError):
    """A key-encryption key could not be used.

    ``code`` carries the key service's error code when there is one (for example Key
    Vault's ``"Forbidden"`` or ``"KeyNotFound"``); ``key_id`` names the key when known.

    When every KEK of a layer failed, one ``KeyAccessError`` stands for all of them:
    ``errors`` holds each KEK's own error, in the order they were tried, and ``code`` is the
    last one's. For a single failure ``errors`` is empty.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        key_id: str | None = None,
        errors: tuple[KeyAccessError, ...] = (),
    ):
        super().__init__(message)
        self.code = code
        self.key_id = key_id
        self.errors = errors


class InsecureTransportError(EnvelopeError):
    """A network connection was refused because it does not meet the TLS policy.

    ``reason`` is a short machine-readable name of the refusal (``"plaintext"``,
    ``"redirect"``, ``"certificate"``, ``"protocol"``, ``"cipher"``, ``"pin"``,
    ``"verification-disabled"``).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
