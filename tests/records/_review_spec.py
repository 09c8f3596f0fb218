"""A second, independent implementation of docs/RECORDS.md, written by a reviewer from the
two documents alone (RECORDS.md and the parts of FORMAT.md it cites), importing nothing of
``envelope``: a reader that reports the kind of failure section 8 names, and a writer of
key-set documents and records over local keys (FORMAT.md section 9).

Where the library and this module agree on the vectors and on each other's output, the
documents are exact enough for an implementation that never saw the library's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV, AESOCB3
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

# RECORDS.md section 7 and FORMAT.md section 6, copied from the tables.
SCOPE_MAX = 256
DOC_MIN = 102
DOC_MAX = 131072
ID_MAX = 2**63 - 1
VALUE_MAX = 16777216
LAYERS_MAX = 4
WRAPS_MAX = 8
KID_MAX = 1024
WRAPPED_MAX = 1024
CTX_ENTRIES, CTX_KEY, CTX_VALUE, CTX_TOTAL = 64, 256, 4096, 8192

FORMAT, DECRYPT, ACCESS = "format error", "decryption failure", "key access error"
AEADS: dict[int, type[AESGCM] | type[AESOCB3] | type[AESGCMSIV]] = {
    1: AESGCM,
    2: AESOCB3,
    3: AESGCMSIV,
}
WRAP_IDS = {1, 2, 3, 4, 5}
#: A key store's documents by id; a reader's (key id, local key) pairs per layer position.
Store = Mapping[int, bytes]
Reader = Sequence[Sequence[tuple[str, bytes]]]
Ctx = Mapping[str, str]
#: A wrapped key as a document holds it: wrap id, key id, wrapped bytes.
Wrap = tuple[int, str, bytes]
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class Refused(Exception):
    """What a reader reports: ``kind`` is one of the three of section 8."""

    def __init__(self, kind: str, why: str = "") -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind


class CallerMistake(Exception):
    """Section 8 step 1: the expected scope or context cannot be encoded."""


def kdf(suite: int, key: bytes, data: bytes, n: int) -> bytes:
    """RECORDS.md section 4's table."""
    if suite == 1:
        return HKDFExpand(hashes.SHA256(), n, data).derive(key)
    return hashlib.blake2b(data, key=key, digest_size=n).digest()


def encode_ctx(context: Mapping[str, str]) -> bytes:
    """FORMAT.md section 2.1, for an expected context (a mistake is the caller's)."""
    try:
        entries = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in context.items())
    except UnicodeEncodeError as exc:
        raise CallerMistake(str(exc)) from None
    if len(entries) > CTX_ENTRIES or sum(len(k) + len(v) for k, v in entries) > CTX_TOTAL:
        raise CallerMistake("context too large")
    out = struct.pack(">H", len(entries))
    for k, v in entries:
        if not 1 <= len(k) <= CTX_KEY or len(v) > CTX_VALUE:
            raise CallerMistake("context entry out of range")
        out += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    return out


def utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(FORMAT, "not UTF-8") from None


# -- section 2.1 -------------------------------------------------------------------------------


def text_to_bytes(text: str) -> bytes:
    if any(c not in B64URL for c in text) or len(text) % 4 == 1:
        raise Refused(FORMAT, "not base64url")
    bits = "".join(format(B64URL.index(c), "06b") for c in text)
    whole, rest = divmod(len(bits), 8)
    if rest and int(bits[-rest:], 2) != 0:
        raise Refused(FORMAT, "unused bits set")
    return bytes(int(bits[i * 8 : i * 8 + 8], 2) for i in range(whole))


def bytes_to_text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


# -- section 3 ---------------------------------------------------------------------------------


class Doc:
    """A parsed key-set document: every field by its section 3 name."""

    def __init__(self, data: bytes) -> None:
        if not DOC_MIN <= len(data) <= DOC_MAX:
            raise Refused(FORMAT, "document length")
        if data[0:4] != b"\x89EKS":
            raise Refused(FORMAT, "magic")
        if data[4] != 1:
            raise Refused(FORMAT, "version")
        self.suite = data[5]
        if self.suite not in (1, 2):
            raise Refused(FORMAT, "suite")
        (length,) = struct.unpack(">I", data[6:10])
        if length != len(data):
            raise Refused(FORMAT, "document_length")
        self.key_set_id, self.created = struct.unpack(">QQ", data[10:26])
        if not 1 <= self.key_set_id <= ID_MAX:
            raise Refused(FORMAT, "key_set_id")
        self.salt = data[26:58]
        (scope_length,) = struct.unpack(">H", data[58:60])
        if scope_length > SCOPE_MAX or 60 + scope_length + 1 > length:
            raise Refused(FORMAT, "scope_length")
        self.scope = data[60 : 60 + scope_length]
        utf8(self.scope)
        self.fields = data[10 : 60 + scope_length]
        at = 60 + scope_length
        self.layer_count = data[at]
        at += 1
        if not 1 <= self.layer_count <= LAYERS_MAX:
            raise Refused(FORMAT, "layer_count")
        self.layers: list[tuple[int, bytes, list[tuple[int, bytes, bytes]]]] = []
        seen: set[bytes] = set()

        def take(n: int) -> bytes:
            nonlocal at
            if at + n > length:
                raise Refused(FORMAT, "ends early")
            at += n
            return data[at - n : at]

        for _ in range(self.layer_count):
            algorithm = take(1)[0]
            commitment = take(32)
            count = take(1)[0]
            if algorithm not in AEADS:
                raise Refused(FORMAT, "algorithm")
            if not 1 <= count <= WRAPS_MAX:
                raise Refused(FORMAT, "wrapped_key_count")
            wraps = []
            for _ in range(count):
                wrap_id = take(1)[0]
                if wrap_id not in WRAP_IDS:
                    raise Refused(FORMAT, "wrap id")
                (kid_length,) = struct.unpack(">H", take(2))
                if not 1 <= kid_length <= KID_MAX:
                    raise Refused(FORMAT, "key id length")
                kid = take(kid_length)
                utf8(kid)
                if kid in seen:
                    raise Refused(FORMAT, "key id twice")
                seen.add(kid)
                (wrapped_length,) = struct.unpack(">H", take(2))
                if not 1 <= wrapped_length <= WRAPPED_MAX:
                    raise Refused(FORMAT, "wrapped length")
                wraps.append((wrap_id, kid, take(wrapped_length)))
            self.layers.append((algorithm, commitment, wraps))
        if at != length:
            raise Refused(FORMAT, "trailing fields")

    def info(self, j: int) -> bytes:
        algorithm = self.layers[j][0]
        return b"envelope/records/v1 key set\x00" + bytes((self.suite, j, algorithm))

    def digest(self) -> bytes:
        parts = [b"envelope/records/v1 key set digest\x00", bytes((1, self.suite)), self.fields]
        parts.append(bytes((self.layer_count,)))
        parts += [bytes((algorithm,)) + commitment for algorithm, commitment, _ in self.layers]
        return hashlib.sha256(b"".join(parts)).digest()


def local_unwrap(key: bytes, kid: bytes, wrap_id: int, wrapped: bytes) -> bytes | None:
    """FORMAT.md section 9; None is case (a) of FORMAT.md section 7 step 4."""
    if wrap_id != 1 or len(wrapped) != 60:
        return None
    try:
        return AESGCM(key).decrypt(wrapped[:12], wrapped[12:], b"envelope/local-key/v1\x00" + kid)
    except InvalidTag:
        return None


def layer_keys(doc: Doc, reader: Sequence[Sequence[tuple[str, bytes]]]) -> list[bytes]:
    """Steps 6 and 7: each layer's ``layer_key``; ``reader`` is (key id, key) per position."""
    if len(reader) != doc.layer_count:
        raise Refused(ACCESS, "layer count")
    plans = []
    for j, (_, _, wraps) in enumerate(doc.layers):
        candidates = []
        for name, key in reader[j]:
            found = next((w for w in wraps if w[1] == name.encode("utf-8")), None)
            if found is not None:
                candidates.append((key, found))
        if not candidates:
            raise Refused(ACCESS, f"layer {j}: no key accepted")
        plans.append(candidates)
    out = []
    for j, candidates in enumerate(plans):
        commitment = doc.layers[j][1]
        for key, (wrap_id, kid, wrapped) in candidates:
            dek = local_unwrap(key, kid, wrap_id, wrapped)
            if dek is None or len(dek) != 32:
                continue
            okm = kdf(doc.suite, dek, doc.info(j) + doc.fields, 64)
            if hmac.compare_digest(okm[32:], commitment):
                out.append(okm[:32])
                break
        else:
            raise Refused(DECRYPT, f"layer {j}: no candidate matched")
    return out


def subkey(suite: int, layer_key: bytes, j: int, prefix: bytes) -> bytes:
    return kdf(suite, layer_key, b"envelope/records/v1 subkey\x00" + bytes((j,)) + prefix, 32)


def read(record: bytes | str, *, store: Store, reader: Reader, scope: str, context: Ctx) -> bytes:
    """Section 8, steps 1 to 8, in order."""
    try:
        expected_scope = scope.encode("utf-8")
    except UnicodeEncodeError:
        raise CallerMistake("scope") from None
    if len(expected_scope) > SCOPE_MAX:
        raise CallerMistake("scope")
    ctx = encode_ctx(context)
    raw = text_to_bytes(record) if isinstance(record, str) else record
    if not 29 <= len(raw) <= 29 + VALUE_MAX + 16 * LAYERS_MAX:
        raise Refused(FORMAT, "record length")
    if raw[0] != 1:
        raise Refused(FORMAT, "record version")
    (key_set_id,) = struct.unpack(">Q", raw[1:9])
    if not 1 <= key_set_id <= ID_MAX:
        raise Refused(FORMAT, "record key_set_id")
    document = store.get(key_set_id)
    if document is None:
        raise Refused(ACCESS, "no document")
    doc = Doc(document)
    if doc.key_set_id != key_set_id or doc.scope != expected_scope:
        raise Refused(DECRYPT, "binding")
    return open_sealed(raw, doc, layer_keys(doc, reader), ctx)


def open_sealed(raw: bytes, doc: Doc, keys: Sequence[bytes], ctx: bytes) -> bytes:
    """Step 8 with each layer's ``layer_key`` (section 4.5)."""
    head, prefix, nonce, sealed = raw[:17], raw[9:17], raw[17:29], raw[29:]
    if len(sealed) < 16 * doc.layer_count:
        raise Refused(DECRYPT, "sealed too short")
    aad = head + doc.digest() + ctx
    for j in reversed(range(doc.layer_count)):
        aead = AEADS[doc.layers[j][0]](subkey(doc.suite, keys[j], j, prefix))
        try:
            sealed = aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise Refused(DECRYPT, f"layer {j} tag") from None
    return sealed


def layer_key(doc: Doc, j: int, dek: bytes) -> bytes:
    """``layer_key_j`` of section 4.1, from a data key one knows."""
    return kdf(doc.suite, dek, doc.info(j) + doc.fields, 64)[:32]


# -- a writer (sections 3, 4 and 5) ------------------------------------------------------------


def local_wrap(key: bytes, kid: str, dek: bytes, nonce: bytes = bytes(12)) -> Wrap:
    """An ``A256GCM`` wrapped key of FORMAT.md section 9."""
    aad = b"envelope/local-key/v1\x00" + kid.encode("utf-8")
    return 1, kid, nonce + AESGCM(key).encrypt(nonce, dek, aad)


def make_document(
    *,
    suite: int,
    key_set_id: int,
    created: int,
    salt: bytes,
    scope: str,
    layers: Sequence[tuple[int, bytes, Sequence[Wrap]]],
) -> bytes:
    """A document whose layer ``j`` is ``(algorithm, DEK, its wrapped keys)``."""
    raw_scope = scope.encode("utf-8")
    fields = struct.pack(">QQ32sH", key_set_id, created, salt, len(raw_scope)) + raw_scope
    body = fields + bytes((len(layers),))
    for j, (algorithm, dek, wraps) in enumerate(layers):
        info = b"envelope/records/v1 key set\x00" + bytes((suite, j, algorithm))
        commitment = kdf(suite, dek, info + fields, 64)[32:]
        body += bytes((algorithm,)) + commitment + bytes((len(wraps),))
        for wrap_id, kid, wrapped in wraps:
            raw_kid = kid.encode("utf-8")
            body += bytes((wrap_id,)) + struct.pack(">H", len(raw_kid)) + raw_kid
            body += struct.pack(">H", len(wrapped)) + wrapped
    return b"\x89EKS\x01" + bytes((suite,)) + struct.pack(">I", 10 + len(body)) + body


def make_record(
    document: bytes,
    deks: Sequence[bytes],
    *,
    prefix: bytes,
    nonce: bytes,
    plaintext: bytes,
    context: Mapping[str, str],
) -> bytes:
    doc = Doc(document)
    head = b"\x01" + struct.pack(">Q", doc.key_set_id) + prefix
    aad = head + doc.digest() + encode_ctx(context)
    sealed = plaintext
    for j, dek in enumerate(deks):
        aead = AEADS[doc.layers[j][0]](subkey(doc.suite, layer_key(doc, j, dek), j, prefix))
        sealed = aead.encrypt(nonce, sealed, aad)
    return head + nonce + sealed
