"""The layered cipher: key derivation, key commitment and frame sealing (FORMAT.md 4-5).

Both suites of section 5 live here: suite 1 derives with HKDF-SHA-256 from ``cryptography``,
suite 2 with keyed BLAKE2b from ``hashlib`` (CPython's BLAKE2 reference code).

Frames are sealed through every layer into preallocated buffers with ``encrypt_into`` /
``decrypt_into``: layer 0 reads the caller's plaintext, intermediate layers go through two
small scratch buffers that stay in cache, and the last layer writes straight into the
output. No per-frame allocation beyond a few dozen bytes of nonce and associated data.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV, AESOCB3
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from . import _limits
from ._buffers import wipe
from ._errors import DecryptionError
from ._format import TAG_BYTES, Aead, Suite

__all__ = [
    "AeadPrimitive",
    "FrameCipher",
    "body_size",
    "commitments_match",
    "derive_layer_key",
    "frame_count",
    "header_digest",
    "kdf_info",
    "new_aead",
    "plaintext_size",
    "suite_available",
]

_SHA256 = hashes.SHA256()
_INFO_PREFIX = b"envelope/v1 layer\x00"
_NONCE = struct.Struct(">IQ")
_AAD_TAIL = struct.Struct(">QB")


_Bytes = bytes | bytearray | memoryview


class _AeadPrimitive(Protocol):
    def encrypt(self, nonce: bytes, data: _Bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: _Bytes, associated_data: bytes | None) -> bytes: ...

    def encrypt_into(
        self, nonce: bytes, data: _Bytes, associated_data: bytes | None, buf: _Bytes
    ) -> int: ...

    def decrypt_into(
        self, nonce: bytes, data: _Bytes, associated_data: bytes | None, buf: _Bytes
    ) -> int: ...


#: What :func:`new_aead` returns: one of ``cryptography``'s AEAD objects.
AeadPrimitive = _AeadPrimitive

_CONSTRUCTORS: dict[Aead, Callable[[bytes], _AeadPrimitive]] = {
    Aead.AES_256_GCM: AESGCM,
    Aead.AES_256_OCB3: AESOCB3,
    Aead.AES_256_GCM_SIV: AESGCMSIV,
}


@functools.lru_cache(maxsize=64)
def kdf_info(suite: Suite, layer: int, algorithm: Aead) -> bytes:
    """The constant part of a layer's ``info_j`` (FORMAT.md section 5); the salt follows."""
    return _INFO_PREFIX + bytes((suite, layer, algorithm))


def derive_layer_key(
    suite: Suite, data_key: bytes, info: bytes, salt: bytes
) -> tuple[bytes, bytes]:
    """Return ``(message_key, commitment)`` for one layer of one message, where ``info``
    comes from :func:`kdf_info`."""
    okm = _KDFS[suite](data_key, info + salt)
    return okm[:32], okm[32:]


def suite_available(suite: Suite) -> bool:
    """Whether this Python can derive keys for ``suite``. Suite 2 needs keyed BLAKE2b, which
    some builds lack (FIPS builds, builds without CPython's own BLAKE2); it is probed once per
    ``hashlib.blake2b`` implementation, against the known answer of FORMAT.md section 5.2."""
    if suite is not Suite.BLAKE2B:
        return True
    global _blake2b_probe  # noqa: PLW0603 - a memo of a fact about this process
    implementation = getattr(hashlib, "blake2b", None)
    if _blake2b_probe is None or _blake2b_probe[0] is not implementation:
        _blake2b_probe = (implementation, _keyed_blake2b_matches_the_spec())
    return _blake2b_probe[1]


def _keyed_blake2b_matches_the_spec() -> bool:
    try:
        okm = _keyed_blake2b(_BLAKE2B_KNOWN_KEY, _BLAKE2B_KNOWN_INFO)
    except (AttributeError, TypeError, ValueError):
        return False
    return okm == _BLAKE2B_KNOWN_OKM


_blake2b_probe: tuple[object, bool] | None = None
#: FORMAT.md section 5.2's known answer: DEK 00..1f, layer 0, AES-256-GCM, salt 40..5f (the
#: bytes libsodium's crypto_generichash and OpenSSL's BLAKE2BMAC give as well).
_BLAKE2B_KNOWN_KEY = bytes(range(32))
_BLAKE2B_KNOWN_INFO = (
    _INFO_PREFIX + bytes((Suite.BLAKE2B, 0, Aead.AES_256_GCM)) + bytes(range(0x40, 0x60))
)
_BLAKE2B_KNOWN_OKM = bytes.fromhex(
    "49c83e3fd7343297158b1d4605729fca19af8953692331aec36d40211fe7a97d"
    "498224a7f85978efb240700b703d20f42d6061215ab1abaaf7f0ba0b4a353e5f"
)


def _hkdf_sha256(data_key: bytes, info: bytes) -> bytes:
    return HKDFExpand(_SHA256, 64, info).derive(data_key)


def _keyed_blake2b(data_key: bytes, info: bytes) -> bytes:
    # RFC 7693 keyed mode: no salt, no personalization (FORMAT.md section 5.2).
    return hashlib.blake2b(info, key=data_key, digest_size=64).digest()


_KDFS: dict[Suite, Callable[[bytes, bytes], bytes]] = {
    Suite.HKDF_SHA256: _hkdf_sha256,
    Suite.BLAKE2B: _keyed_blake2b,
}


def new_aead(algorithm: Aead, key: bytes) -> _AeadPrimitive:
    return _CONSTRUCTORS[algorithm](key)


def header_digest(authenticated: bytes) -> bytes:
    """What every frame's associated data starts with (FORMAT.md section 4): the digest of
    the header's authenticated bytes (``_format.authenticated_header_bytes``)."""
    return hashlib.sha256(authenticated).digest()


def commitments_match(expected: bytes, actual: bytes) -> bool:
    return hmac.compare_digest(expected, actual)


def frame_count(plaintext_length: int, frame_size: int) -> int:
    """Frames in a message of that many plaintext bytes (the final frame is never full)."""
    return plaintext_length // frame_size + 1


def body_size(plaintext_length: int, frame_size: int, layers: int) -> int:
    """Bytes of the body that seals ``plaintext_length`` bytes. A plaintext that needs more
    than ``MAX_FRAMES`` frames is refused here: no reader would accept that message."""
    frames = frame_count(plaintext_length, frame_size)
    if frames > _limits.MAX_FRAMES:
        raise ValueError(
            f"{plaintext_length} bytes need {frames} frames of {frame_size} bytes; a message "
            f"holds at most {_limits.MAX_FRAMES}: use a larger frame_size"
        )
    return plaintext_length + frames * layers * TAG_BYTES


def plaintext_size(body_length: int, frame_size: int, layers: int) -> int:
    """Plaintext bytes in a body of ``body_length`` bytes; a body that cannot be the output
    of the encryptor (no final frame, too many frames) is a :class:`DecryptionError`."""
    overhead = layers * TAG_BYTES
    full, rest = divmod(body_length, frame_size + overhead)
    if rest < overhead or full + 1 > _limits.MAX_FRAMES:
        raise DecryptionError()
    return body_length - (full + 1) * overhead


class FrameCipher:
    """Seals and opens the frames of one message through all of its layers.

    A cipher belongs to one thread at a time (it owns scratch buffers); :meth:`clone` makes
    another for the same message, with AEAD objects of its own, for another thread.
    """

    __slots__ = ("_aad_prefix", "_aeads", "_frame_size", "_keys", "_overhead", "_scratch")

    def __init__(
        self,
        keys: Sequence[tuple[Aead, bytes]],
        digest: bytes,
        frame_size: int,
        *,
        largest_frame: int,
    ) -> None:
        """``keys`` holds each layer's algorithm and message key (innermost first),
        ``digest`` is :func:`header_digest` of the message's header."""
        self._keys = keys
        self._aeads = [_CONSTRUCTORS[algorithm](key) for algorithm, key in keys]
        self._frame_size = frame_size
        self._overhead = len(keys) * TAG_BYTES
        self._aad_prefix = digest
        # Intermediate results of a frame (all layers but the last) alternate between two
        # scratch buffers sized for the largest frame this message will see.
        size = min(largest_frame, frame_size) + self._overhead
        self._scratch = [memoryview(bytearray(size)) for _ in range(min(len(keys) - 1, 2))]

    def clone(self, largest_frame: int) -> FrameCipher:
        """Another cipher of the same message, for another thread."""
        return FrameCipher(
            self._keys, self._aad_prefix, self._frame_size, largest_frame=largest_frame
        )

    @property
    def frame_size(self) -> int:
        return self._frame_size

    @property
    def layers(self) -> int:
        return len(self._aeads)

    @property
    def overhead(self) -> int:
        """Bytes each frame adds: one tag per layer."""
        return self._overhead

    def _aad(self, index: int, final: bool) -> bytes:
        return self._aad_prefix + _AAD_TAIL.pack(index, final)

    def seal_frame(self, index: int, final: bool, src: memoryview, dst: memoryview) -> None:
        """Seal plaintext ``src`` into ``dst`` (exactly ``len(src) + overhead`` bytes)."""
        nonce = _NONCE.pack(0, index)
        aad = self._aad(index, final)
        last = len(self._aeads) - 1
        length = len(src)
        for j, aead in enumerate(self._aeads):
            length += TAG_BYTES
            out = dst if j == last else self._scratch[j % 2][:length]
            aead.encrypt_into(nonce, src, aad, out)
            src = out

    def open_frame(self, index: int, final: bool, src: memoryview, dst: memoryview) -> None:
        """Open sealed ``src`` into ``dst`` (``len(src) - overhead`` bytes), outer layer
        first. ``dst`` may hold unverified bytes when this raises: callers discard it."""
        nonce = _NONCE.pack(0, index)
        aad = self._aad(index, final)
        length = len(src)
        try:
            for j in range(len(self._aeads) - 1, -1, -1):
                length -= TAG_BYTES
                out = dst if j == 0 else self._scratch[(j - 1) % 2][:length]
                self._aeads[j].decrypt_into(nonce, src, aad, out)
                src = out
        except InvalidTag:
            # decrypt_into has already written the unverified plaintext into dst: wipe it, so
            # no caller (or a sink still holding a view of dst) can see it.
            wipe(dst)
            raise DecryptionError() from None

    def seal_all(self, plaintext: memoryview, out: memoryview) -> None:
        """Seal a whole plaintext into ``out`` (exactly ``body_size`` bytes)."""
        self.seal_run(plaintext, out, 0, frame_count(len(plaintext), self._frame_size))

    def open_all(self, body: memoryview, out: memoryview) -> None:
        """Open a whole body into ``out`` (exactly ``plaintext_size`` bytes)."""
        self.open_run(body, out, 0, frame_count(len(out), self._frame_size))

    def seal_run(
        self,
        plaintext: memoryview,
        out: memoryview,
        first: int,
        stop: int,
        *,
        base: int = 0,
        final: bool = True,
    ) -> None:
        """Seal frames ``first`` to ``stop - 1`` of ``plaintext`` into their places in
        ``out``. The buffers hold consecutive frames of a message starting with frame number
        ``base``; with ``final`` their last frame is the message's final frame, otherwise
        they hold full frames only."""
        step = self._frame_size
        sealed = step + self._overhead
        last = len(plaintext) // step  # the full frames come before it
        seal = self.seal_frame
        for index in range(first, min(stop, last)):
            start = index * step
            pos = index * sealed
            seal(base + index, False, plaintext[start : start + step], out[pos : pos + sealed])
        if final and stop > last:
            seal(base + last, True, plaintext[last * step :], out[last * sealed :])

    def open_run(
        self,
        body: memoryview,
        out: memoryview,
        first: int,
        stop: int,
        *,
        base: int = 0,
        final: bool = True,
    ) -> None:
        """Open frames ``first`` to ``stop - 1`` of ``body`` into their places in ``out``;
        ``base`` and ``final`` as for :meth:`seal_run`."""
        step = self._frame_size
        sealed = step + self._overhead
        last = len(out) // step
        open_frame = self.open_frame
        for index in range(first, min(stop, last)):
            start = index * step
            pos = index * sealed
            open_frame(base + index, False, body[pos : pos + sealed], out[start : start + step])
        if final and stop > last:
            open_frame(base + last, True, body[last * sealed :], out[last * step :])
