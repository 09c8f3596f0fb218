"""What is timed: envelope's verbs, the raw AES pipelines under them, and the peers.

Every factory returns an encrypt and a decrypt :class:`Operation` for one plaintext, with the
ciphertext for the decrypt prepared outside the timing. A peer that is not installed raises
:class:`Unavailable` with the reason, and the suite reports it as skipped.
"""

from __future__ import annotations

import inspect as pyinspect
import mmap
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESOCB3

from envelope import Envelope, LocalKey, inspect

__all__ = [
    "CONTEXT",
    "Operation",
    "Pair",
    "RawPipeline",
    "Unavailable",
    "aws_esdk_pair",
    "envelope_into_pair",
    "envelope_mmap_pairs",
    "envelope_pair",
    "make_envelope",
    "raw_pairs",
    "tink_aead_pair",
    "tink_kms_envelope_pair",
    "workers_supported",
]

CONTEXT = {"purpose": "benchmark", "tenant": "contoso"}
TAG_BYTES = 16
#: envelope's per-frame associated data: a SHA-256 header digest, the index and a flag.
_AAD_BYTES = 32 + 8 + 1


class Unavailable(Exception):
    """A contender that cannot run here (a peer not installed, a platform feature missing)."""


Operation = Callable[[], object]


@dataclass(frozen=True)
class Pair:
    """The encrypt and decrypt operations of one contender on one plaintext."""

    encrypt: Operation
    decrypt: Operation


def workers_supported(envelope_class: type = Envelope) -> bool:
    """Whether ``Envelope(..., workers=...)`` exists in the installed envelope: the suite
    measures the targets that need a pool of threads only where it does."""
    try:
        parameters = pyinspect.signature(envelope_class).parameters
    except (TypeError, ValueError):
        return False
    return "workers" in parameters


def make_envelope(layers: int = 2, frame_size: int = 65536, workers: int | None = None) -> Envelope:
    """Two layers (GCM inside, OCB3 outside) of fresh local KEKs and every other option at
    its default, the number of worker threads included unless ``workers`` is given."""
    keys = [LocalKey.generate() for _ in range(layers)]
    return Envelope(keys, frame_size=frame_size, workers=workers)


# -- envelope ---------------------------------------------------------------------------


def envelope_pair(env: Envelope, data: bytes) -> Pair:
    """The plain API: ``encrypt`` and ``decrypt`` return freshly allocated buffers."""
    blob = env.encrypt(data, CONTEXT)
    if env.decrypt(blob, CONTEXT) != data:
        raise AssertionError("envelope round trip failed")
    return Pair(lambda: env.encrypt(data, CONTEXT), lambda: env.decrypt(blob, CONTEXT))


def envelope_into_pair(env: Envelope, data: bytes) -> Pair:
    """``encrypt_into`` / ``decrypt_into`` one buffer reused for every call."""
    blob = env.encrypt(data, CONTEXT)
    sealed = bytearray(env.max_encrypted_size(len(data), CONTEXT))
    length = inspect(blob).plaintext_length
    opened = bytearray(len(data) if length is None else length)

    def encrypt() -> int:
        return env.encrypt_into(data, sealed, CONTEXT)

    def decrypt() -> int:
        return env.decrypt_into(blob, opened, CONTEXT)

    decrypt()
    if opened != data:
        raise AssertionError("envelope decrypt_into round trip failed")
    return Pair(encrypt, decrypt)


def _huge_page_buffer(size: int) -> mmap.mmap:
    """Anonymous memory the kernel may back with 2 MiB pages (THP in ``madvise`` mode)."""
    buffer = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        buffer.madvise(advice)
    return buffer


def envelope_mmap_pairs(env: Envelope, data: bytes) -> dict[str, Pair]:
    """``encrypt_into`` a huge-page ``mmap``: a fresh mapping per call, and one reused."""
    if getattr(mmap, "MADV_HUGEPAGE", None) is None:
        raise Unavailable("mmap.MADV_HUGEPAGE is not available on this platform")
    blob = env.encrypt(data, CONTEXT)
    sealed_size = env.max_encrypted_size(len(data), CONTEXT)

    def encrypt_fresh() -> int:
        buffer = _huge_page_buffer(sealed_size)
        view = memoryview(buffer)
        try:
            return env.encrypt_into(data, view, CONTEXT)
        finally:
            view.release()
            buffer.close()

    def decrypt_fresh() -> int:
        buffer = _huge_page_buffer(len(data))
        view = memoryview(buffer)
        try:
            return env.decrypt_into(blob, view, CONTEXT)
        finally:
            view.release()
            buffer.close()

    sealed = memoryview(_huge_page_buffer(sealed_size))
    opened = memoryview(_huge_page_buffer(len(data)))
    return {
        "fresh": Pair(encrypt_fresh, decrypt_fresh),
        "reused": Pair(
            lambda: env.encrypt_into(data, sealed, CONTEXT),
            lambda: env.decrypt_into(blob, opened, CONTEXT),
        ),
    }


# -- the raw primitives -----------------------------------------------------------------


class _Aead(Protocol):
    def encrypt_into(
        self, nonce: bytes, data: memoryview, associated_data: bytes | None, buf: memoryview
    ) -> int: ...

    def decrypt_into(
        self, nonce: bytes, data: memoryview, associated_data: bytes | None, buf: memoryview
    ) -> int: ...


class RawPipeline:
    """The crypto floor under envelope: the same AEADs over the same frames with
    ``encrypt_into``, a counter nonce and an associated data of envelope's length, and
    nothing else (no header, no key derivation, no key wrapping)."""

    def __init__(self, algorithms: Sequence[Callable[[bytes], _Aead]], frame_size: int) -> None:
        self._aeads = [algorithm(os.urandom(32)) for algorithm in algorithms]
        self._frame_size = frame_size
        self._overhead = TAG_BYTES * len(self._aeads)
        self._aad = bytes(_AAD_BYTES)
        scratch = frame_size + self._overhead
        self._scratch = [memoryview(bytearray(scratch)) for _ in range(2)]

    def sealed_size(self, length: int) -> int:
        return length + (length // self._frame_size + 1) * self._overhead

    def opened_size(self, sealed: int) -> int:
        step = self._frame_size + self._overhead
        return sealed - (sealed // step + 1) * self._overhead

    def seal(self, plaintext: memoryview, out: memoryview) -> None:
        step = self._frame_size
        last = len(self._aeads) - 1
        aad = self._aad
        scratch = self._scratch
        pos = 0
        for index, start in enumerate(range(0, len(plaintext) + 1, step)):
            nonce = index.to_bytes(12, "big")
            src = plaintext[start : start + step]
            length = len(src)
            for j, aead in enumerate(self._aeads):
                length += TAG_BYTES
                dst = out[pos : pos + length] if j == last else scratch[j % 2][:length]
                aead.encrypt_into(nonce, src, aad, dst)
                src = dst
            pos += length

    def open(self, body: memoryview, out: memoryview) -> None:
        step = self._frame_size
        sealed_step = step + self._overhead
        aad = self._aad
        scratch = self._scratch
        start = 0
        for index, pos in enumerate(range(0, len(body), sealed_step)):
            nonce = index.to_bytes(12, "big")
            src = body[pos : pos + sealed_step]
            length = len(src)
            for j in range(len(self._aeads) - 1, -1, -1):
                length -= TAG_BYTES
                dst = out[start : start + length] if j == 0 else scratch[(j - 1) % 2][:length]
                self._aeads[j].decrypt_into(nonce, src, aad, dst)
                src = dst
            start += length

    def pairs(self, data: bytes) -> dict[str, Pair]:
        """Into a fresh output per call (what an API returning new bytes pays), and into
        one reused output (the physical limit)."""
        plaintext = memoryview(data)
        sealed = bytearray(self.sealed_size(len(data)))
        self.seal(plaintext, memoryview(sealed))
        body = memoryview(bytes(sealed))
        opened = bytearray(len(data))
        self.open(body, memoryview(opened))
        if opened != data:
            raise AssertionError("raw pipeline round trip failed")
        sealed_view = memoryview(sealed)
        opened_view = memoryview(opened)

        def encrypt_fresh() -> bytearray:
            out = bytearray(len(sealed))
            self.seal(plaintext, memoryview(out))
            return out

        def decrypt_fresh() -> bytearray:
            out = bytearray(len(data))
            self.open(body, memoryview(out))
            return out

        return {
            "fresh": Pair(encrypt_fresh, decrypt_fresh),
            "reused": Pair(
                lambda: self.seal(plaintext, sealed_view),
                lambda: self.open(body, opened_view),
            ),
        }


def raw_pairs(data: bytes, frame_size: int = 65536) -> dict[str, Pair]:
    """``gcm``: one AES-256-GCM layer into a reused buffer; ``gcm+ocb3 fresh`` and
    ``gcm+ocb3 reused``: the default two-layer suite."""
    two = RawPipeline([AESGCM, AESOCB3], frame_size).pairs(data)
    one = RawPipeline([AESGCM], frame_size).pairs(data)
    return {"gcm": one["reused"], "gcm+ocb3 fresh": two["fresh"], "gcm+ocb3 reused": two["reused"]}


# -- peers ------------------------------------------------------------------------------


def _esdk_client_and_provider() -> tuple[Any, Any, Any]:
    try:
        import aws_encryption_sdk
        from aws_encryption_sdk import CommitmentPolicy
        from aws_encryption_sdk.identifiers import (
            Algorithm,
            EncryptionKeyType,
            WrappingAlgorithm,
        )
        from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
        from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider
    except ImportError as exc:
        raise Unavailable(f"aws-encryption-sdk is not installed ({exc})") from exc

    class LocalAesProvider(RawMasterKeyProvider):  # type: ignore[misc]
        """A raw AES-256-GCM wrapping key held in memory (the SDK's raw AES key)."""

        provider_id = "envelope-benchmark"

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._wrapping_key = WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=os.urandom(32),
                wrapping_key_type=EncryptionKeyType.SYMMETRIC,
            )

        def _get_raw_key(self, key_id: bytes) -> Any:
            return self._wrapping_key

    provider = LocalAesProvider()
    provider.add_master_key(b"kek")
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    return client, provider, Algorithm


def aws_esdk_pair(data: bytes, *, signing: bool) -> Pair:
    """AWS Encryption SDK with a raw AES key: its default suite
    (``AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384``) or the committing suite without
    signatures (``AES_256_GCM_HKDF_SHA512_COMMIT_KEY``); the SDK's default 4 KiB frames."""
    client, provider, algorithm = _esdk_client_and_provider()
    options: dict[str, Any] = {}
    if not signing:
        options["algorithm"] = algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY

    def encrypt() -> bytes:
        ciphertext, _ = client.encrypt(
            source=data, key_provider=provider, encryption_context=CONTEXT, **options
        )
        return bytes(ciphertext)

    ciphertext = encrypt()

    def decrypt() -> bytes:
        plaintext, _ = client.decrypt(source=ciphertext, key_provider=provider)
        return bytes(plaintext)

    if decrypt() != data:
        raise AssertionError("AWS Encryption SDK round trip failed")
    return Pair(encrypt, decrypt)


_ASSOCIATED = b"purpose=benchmark;tenant=contoso"


def _tink() -> tuple[Any, Any]:
    try:
        import tink
        from tink import aead
    except ImportError as exc:
        raise Unavailable(f"tink is not installed ({exc})") from exc
    aead.register()
    return tink, aead


def tink_aead_pair(data: bytes) -> Pair:
    """Tink ``Aead`` with an ``AES256_GCM`` keyset: one key, no envelope."""
    tink, aead = _tink()
    primitive = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
    ciphertext = primitive.encrypt(data, _ASSOCIATED)
    if primitive.decrypt(ciphertext, _ASSOCIATED) != data:
        raise AssertionError("Tink Aead round trip failed")
    return Pair(
        lambda: primitive.encrypt(data, _ASSOCIATED),
        lambda: primitive.decrypt(ciphertext, _ASSOCIATED),
    )


_LOCAL_KMS_PREFIX = "local-kms://"


def _local_kms_client() -> Any:
    _, aead = _tink()
    import tink

    class LocalKmsClient(tink.KmsClient):  # type: ignore[misc]
        """A Tink ``KmsClient`` whose "remote" KEKs are AES-256-GCM keysets in memory:
        ``KmsEnvelopeAead`` needs only an ``Aead`` for the KEK (Tink's docs)."""

        def __init__(self) -> None:
            self._keks: dict[str, Any] = {}

        def does_support(self, key_uri: str) -> bool:
            return key_uri.startswith(_LOCAL_KMS_PREFIX)

        def get_aead(self, key_uri: str) -> Any:
            if not self.does_support(key_uri):
                raise tink.TinkError(f"unsupported key URI {key_uri!r}")
            if key_uri not in self._keks:
                handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
                self._keks[key_uri] = handle.primitive(aead.Aead)
            return self._keks[key_uri]

    return LocalKmsClient()


def tink_kms_envelope_pair(data: bytes) -> Pair:
    """Tink ``KmsEnvelopeAead``: a fresh AES256_GCM data key per message, wrapped by a
    KEK from a local ``KmsClient``."""
    _, aead = _tink()
    remote = _local_kms_client().get_aead(_LOCAL_KMS_PREFIX + "benchmark-kek")
    primitive = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, remote)
    ciphertext = primitive.encrypt(data, _ASSOCIATED)
    if primitive.decrypt(ciphertext, _ASSOCIATED) != data:
        raise AssertionError("Tink KmsEnvelopeAead round trip failed")
    return Pair(
        lambda: primitive.encrypt(data, _ASSOCIATED),
        lambda: primitive.decrypt(ciphertext, _ASSOCIATED),
    )
