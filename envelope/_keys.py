"""Key-encryption keys: the protocol every KEK implements, and the local AES-256 KEK.

A key-encryption key (KEK) wraps a layer's data key (DEK). The envelope receives KEKs by
composition; anything with ``key_id``, ``can_unwrap``, ``wrap_key`` and ``unwrap_key``
is one. This module knows nothing of the message format.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._errors import DecryptionError, KeyAccessError
from ._files import atomic_output
from ._limits import MAX_KEY_ID_BYTES

__all__ = ["KeyEncryptionKey", "LocalKey", "WrappedKey", "wrap_needs_secret"]

#: Data keys are AES-256 keys.
DATA_KEY_BYTES = 32


class WrappedKey(NamedTuple):
    """A data key wrapped by one KEK.

    ``key_id`` is the exact id of the key that produced ``ciphertext`` (for Key Vault, the
    versioned key id the service used); ``algorithm`` is the wrap algorithm's JOSE name.
    A NamedTuple rather than a dataclass: one is made per layer per message.
    """

    key_id: str
    algorithm: str
    ciphertext: bytes

    def __repr__(self) -> str:
        return (
            f"WrappedKey(key_id={self.key_id!r}, algorithm={self.algorithm!r}, "
            f"ciphertext=<{len(self.ciphertext)} bytes>)"
        )


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """What an envelope needs of a key-encryption key.

    Error contract: ``unwrap_key`` raises :class:`~envelope.DecryptionError` when the
    wrapped key does not authenticate under this KEK, and
    :class:`~envelope.KeyAccessError` when the key cannot be used at all (unknown id,
    disabled, deleted, access denied, service unreachable). ``can_unwrap`` is pure: it does
    no I/O, so an envelope can check every key id in an attacker-written header against its
    configuration before it contacts any key service.

    Optional async twins: a KEK may also define ``async def wrap_key_async(data_key)`` and
    ``async def unwrap_key_async(wrapped)`` with the same contract; ``Envelope.encrypt_async``
    and ``decrypt_async`` await them and call the sync methods of KEKs that lack them.

    Optional ``wrap_needs_secret(wrapped) -> bool``: whether ``wrapped`` (a wrapped key this
    KEK made or unwrapped) can only have been made by a holder of this KEK's secret: true for
    a symmetric key (a :class:`LocalKey`, a Key Vault ``oct``/``oct-HSM`` key), false for a
    public-key wrap, which anyone holding the public key can make. A KEK that lacks it counts
    as public. Compact records trust a stored key set for writing only when each of its data
    keys came from such a wrap (``docs/RECORDS.md`` section 5.5), so a KEK that answers true
    promises that nobody without its secret can make a wrapped key that it unwraps to a data
    key of their choosing.
    """

    @property
    def key_id(self) -> str:
        """A stable identifier of this key."""
        ...

    def can_unwrap(self, key_id: str) -> bool:
        """Whether a data key wrapped under ``key_id`` belongs to this KEK (no I/O)."""
        ...

    def wrap_key(self, data_key: bytes) -> WrappedKey:
        """Wrap a 32-byte data key."""
        ...

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        """Recover the data key from ``wrapped``."""
        ...


def wrap_needs_secret(kek: KeyEncryptionKey, wrapped: WrappedKey) -> bool:
    """Whether only a holder of ``kek``'s secret can have made ``wrapped`` (see
    :class:`KeyEncryptionKey`); False for a KEK that does not say."""
    says = getattr(kek, "wrap_needs_secret", None)
    return says is not None and says(wrapped) is True


_LOCAL_ALGORITHM = "A256GCM"
_LOCAL_AAD_PREFIX = b"envelope/local-key/v1\x00"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_FILE_TYPE = "envelope-local-key"
_FILE_VERSION = 1
_MAX_KEY_FILE_BYTES = 64 * 1024
# O_NONBLOCK: opening a FIFO someone put at a key file's path must not wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class LocalKey:
    """An AES-256 key-encryption key held in this process, the embedded default.

    Data keys are wrapped with AES-256-GCM under a fresh random nonce, with the key id as
    associated data, so a wrapped key moved under another key id does not unwrap.
    """

    __slots__ = ("_aad", "_aead", "_key", "_key_id")

    def __init__(self, key: bytes, key_id: str | None = None) -> None:
        if not isinstance(key, (bytes, bytearray)):
            raise TypeError("key must be bytes")
        if len(key) != 32:
            raise ValueError(f"a LocalKey is an AES-256 key of 32 bytes, got {len(key)}")
        key = bytes(key)
        if key_id is None:
            key_id = _derived_key_id(key)
        _check_key_id(key_id)
        self._key = key
        self._key_id = key_id
        self._aead = AESGCM(key)
        self._aad = _LOCAL_AAD_PREFIX + key_id.encode("utf-8")

    @classmethod
    def generate(cls, key_id: str | None = None) -> LocalKey:
        """A new random key. Its id is derived from the key unless ``key_id`` is given."""
        return cls(secrets.token_bytes(32), key_id)

    @property
    def key_id(self) -> str:
        return self._key_id

    def can_unwrap(self, key_id: str) -> bool:
        return key_id == self._key_id

    def wrap_key(self, data_key: bytes) -> WrappedKey:
        return self._wrap_with_nonce(data_key, os.urandom(_NONCE_BYTES))

    def _wrap_with_nonce(self, data_key: bytes, nonce: bytes) -> WrappedKey:
        """Deterministic wrap for test vectors; production code never picks the nonce."""
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes, got {len(data_key)}")
        return WrappedKey(
            self._key_id, _LOCAL_ALGORITHM, nonce + self._aead.encrypt(nonce, data_key, self._aad)
        )

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        if wrapped.key_id != self._key_id:
            raise KeyAccessError(
                f"data key was wrapped by {wrapped.key_id!r}, not by this key {self._key_id!r}",
                key_id=wrapped.key_id,
            )
        blob = wrapped.ciphertext
        if (
            wrapped.algorithm != _LOCAL_ALGORITHM
            or len(blob) != _NONCE_BYTES + DATA_KEY_BYTES + _TAG_BYTES
        ):
            raise DecryptionError()
        try:
            return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], self._aad)
        except InvalidTag:
            raise DecryptionError() from None

    def wrap_needs_secret(self, wrapped: WrappedKey) -> bool:
        """Always: a wrapped key this key unwraps authenticated under AES-256-GCM with it,
        so only a holder of the key can have made it."""
        return True

    # The async twins let a LocalKey share an envelope with remote KEKs under asyncio; the
    # work is microseconds of AES-GCM, so there is nothing to hand off to a thread.
    async def wrap_key_async(self, data_key: bytes) -> WrappedKey:
        """The asyncio twin of :meth:`wrap_key`."""
        return self.wrap_key(data_key)

    async def unwrap_key_async(self, wrapped: WrappedKey) -> bytes:
        """The asyncio twin of :meth:`unwrap_key`."""
        return self.unwrap_key(wrapped)

    # -- files -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key to ``path`` with mode 0600, atomically.

        The file appears complete or not at all. An existing file is kept unless
        ``overwrite`` is true: replacing a key file by accident destroys every message
        wrapped under the old key.
        """
        target = Path(path)
        document = {
            "type": _FILE_TYPE,
            "version": _FILE_VERSION,
            "key_id": self._key_id,
            "key": base64.b64encode(self._key).decode("ascii"),
        }
        try:
            with atomic_output(target, overwrite=overwrite) as handle:
                handle.write((json.dumps(document, indent=2) + "\n").encode("utf-8"))
        except FileExistsError:
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LocalKey:
        """Read a key written by :meth:`save` (the rules are FORMAT.md section 9.2).

        Raises :class:`~envelope.KeyAccessError` saying what is wrong: a missing file, a
        file others can read, a file that is not a key file, a key of the wrong size.

        On POSIX a key file must grant nothing to group or others: 0600 (as :meth:`save`
        writes it) and the owner's read-only 0400 are accepted; 0440, 0640 or 0644 are
        refused, because whoever can read the file can unwrap every data key it wrapped,
        and a group's membership is not the owner's to decide.
        """
        source = Path(path)
        try:
            with open(os.open(source, _OPEN_FLAGS), "rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                if not stat.S_ISREG(mode):
                    raise KeyAccessError(f"cannot read key file {source}: not a regular file")
                raw = handle.read(_MAX_KEY_FILE_BYTES + 1)
        except FileNotFoundError:
            raise KeyAccessError(f"key file {source} does not exist") from None
        except OSError as exc:
            raise KeyAccessError(f"cannot read key file {source}: {exc.strerror}") from exc
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyAccessError(
                f"key file {source} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {source} "
                "(or chmod 400 for read-only)"
            )
        if len(raw) > _MAX_KEY_FILE_BYTES:
            raise KeyAccessError(f"{source} is not an envelope key file (too large)")
        try:
            # Decoded here, strictly: json.loads of bytes would also take UTF-16 and UTF-32.
            document = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members)
        except _DuplicateMember as exc:
            raise KeyAccessError(f"{source}: key file names {exc} twice") from None
        except (UnicodeDecodeError, ValueError):
            raise KeyAccessError(f"{source} is not an envelope key file (not JSON)") from None
        if not isinstance(document, dict) or document.get("type") != _FILE_TYPE:
            raise KeyAccessError(f"{source} is not an envelope key file")
        version = document.get("version")
        # Exactly the integer: in Python, true == 1 and 1.0 == 1.
        if type(version) is not int or version != _FILE_VERSION:
            raise KeyAccessError(f"{source}: unsupported key file version {version!r}")
        key_id, encoded = document.get("key_id"), document.get("key")
        if not isinstance(key_id, str) or not isinstance(encoded, str):
            raise KeyAccessError(f"{source}: key file lacks 'key_id' or 'key'")
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise KeyAccessError(f"{source}: 'key' is not valid base64") from None
        if len(key) != 32:
            raise KeyAccessError(f"{source}: key is {len(key)} bytes, an AES-256 key is 32")
        if base64.b64encode(key).decode("ascii") != encoded:
            # One key, one spelling: unused bits set in the last character are refused.
            raise KeyAccessError(f"{source}: 'key' is not canonical base64")
        try:
            return cls(key, key_id)
        except ValueError as exc:
            raise KeyAccessError(f"{source}: {exc}") from None

    def __repr__(self) -> str:
        return f"LocalKey(key_id={self._key_id!r})"


def _derived_key_id(key: bytes) -> str:
    """The default id of a local key (FORMAT.md section 9.1)."""
    fingerprint = hashlib.sha256(b"envelope/local-key-id/v1\x00" + key).hexdigest()
    return f"local:{fingerprint[:32]}"


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str):
        raise TypeError("key_id must be a str")
    try:
        encoded = key_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "a key id must be text that UTF-8 can encode (no lone surrogates)"
        ) from None
    if not 0 < len(encoded) <= MAX_KEY_ID_BYTES:
        raise ValueError(f"a key id is 1 to {MAX_KEY_ID_BYTES} UTF-8 bytes")


class _DuplicateMember(ValueError):
    """A key file's JSON object names a member twice (its text is the member's name)."""


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json keeps the last of duplicate members silently, another parser may keep the first:
    # a key file that two readers would read as two different keys is refused.
    document: dict[str, object] = {}
    for name, value in pairs:
        if name in document:
            raise _DuplicateMember(repr(name))
        document[name] = value
    return document
