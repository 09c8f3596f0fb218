"""Attacks on the two key-derivation suites (FORMAT.md section 5) and on how the library picks
between them: suite 2 checked against a BLAKE2b written here from RFC 7693 (not hashlib) and
against values from two other implementations; messages relabelled from one suite to the
other for every layer count, by an outsider and by a holder of the data keys; headers and
bodies of the same data keys spliced across suites; both caches serving both suites; rewrap
keeping the suite; a Python whose hashlib has no keyed BLAKE2b."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import envelope._engine
import envelope._message
from envelope import (
    DataKeyCache,
    DecryptionError,
    Envelope,
    EnvelopeError,
    FormatError,
    KeyEncryptionKey,
    LocalKey,
    UnwrapCache,
    inspect,
)
from envelope._engine import _KDFS, derive_layer_key, kdf_info
from envelope._format import (
    Aead,
    Header,
    Suite,
    authenticated_header_bytes,
    decode_header,
    encode_header,
)
from tests.conftest import run_threads
from tests.core.conftest import Counting
from tests.core.test_vectors import DATA as VECTORS

F = 1024
SUITES = [Suite.HKDF_SHA256, Suite.BLAKE2B]

# -- BLAKE2b from RFC 7693 alone -----------------------------------------------------------

_MASK = (1 << 64) - 1
_IV = (
    0x6A09E667F3BCC908,
    0xBB67AE8584CAA73B,
    0x3C6EF372FE94F82B,
    0xA54FF53A5F1D36F1,
    0x510E527FADE682D1,
    0x9B05688C2B3E6C1F,
    0x1F83D9ABFB41BD6B,
    0x5BE0CD19137E2179,
)
_SIGMA = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
    (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4),
    (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
    (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13),
    (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
    (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11),
    (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
    (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5),
    (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0),
)
#: G's word indices: the four columns, then the four diagonals.
_MIX = (
    (0, 4, 8, 12),
    (1, 5, 9, 13),
    (2, 6, 10, 14),
    (3, 7, 11, 15),
    (0, 5, 10, 15),
    (1, 6, 11, 12),
    (2, 7, 8, 13),
    (3, 4, 9, 14),
)


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (64 - n))) & _MASK


def _compress(h: list[int], block: bytes, counter: int, last: bool) -> list[int]:
    m = [int.from_bytes(block[8 * i : 8 * i + 8], "little") for i in range(16)]
    v = h + list(_IV)
    v[12] ^= counter & _MASK
    v[13] ^= counter >> 64
    if last:
        v[14] ^= _MASK
    for r in range(12):
        s = _SIGMA[r % 10]
        for i, (a, b, c, d) in enumerate(_MIX):
            x, y = m[s[2 * i]], m[s[2 * i + 1]]
            v[a] = (v[a] + v[b] + x) & _MASK
            v[d] = _rotr(v[d] ^ v[a], 32)
            v[c] = (v[c] + v[d]) & _MASK
            v[b] = _rotr(v[b] ^ v[c], 24)
            v[a] = (v[a] + v[b] + y) & _MASK
            v[d] = _rotr(v[d] ^ v[a], 16)
            v[c] = (v[c] + v[d]) & _MASK
            v[b] = _rotr(v[b] ^ v[c], 63)
    return [h[i] ^ v[i] ^ v[i + 8] for i in range(8)]


def rfc7693_blake2b(data: bytes, key: bytes = b"", nn: int = 64, p0: int | None = None) -> bytes:
    """BLAKE2b as RFC 7693 section 3.3 writes it. ``p0`` overrides the first parameter word
    (``0x0101kknn`` by RFC 7693 section 2.5), to show what a misread parameter block gives."""
    kk = len(key)
    h = list(_IV)
    h[0] ^= 0x01010000 ^ (kk << 8) ^ nn if p0 is None else p0
    padded = (key + bytes(128 - kk) if kk else b"") + data
    blocks = [padded[i : i + 128] for i in range(0, len(padded), 128)] or [b""]
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        counter = len(padded) if last else (i + 1) * 128
        h = _compress(h, block + bytes(128 - len(block)), counter, last)
    return b"".join(word.to_bytes(8, "little") for word in h)[:nn]


def test_the_rfc7693_reading_passes_the_published_known_answers():
    # RFC 7693 Appendix A: BLAKE2b-512("abc").
    assert rfc7693_blake2b(b"abc") == bytes.fromhex(
        "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
        "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"
    )
    # The BLAKE2 authors' keyed known answers: key 00..3f, input "" and 00.
    key = bytes(range(64))
    assert rfc7693_blake2b(b"", key) == bytes.fromhex(
        "10ebb67700b1868efb4417987acf4690ae9d972fb7a590c2f02871799aaa4786"
        "b5e996e8f0f4eb981fc214b005f42d2ff4233499391653df7aefcbc13fc51568"
    )
    assert rfc7693_blake2b(b"\x00", key) == bytes.fromhex(
        "961f6dd1e4dd30f63901690c512e78e4b45e4742ed197c3c5e45c549fd25f2e4"
        "187b0bc9fe30492b16b0d0bc4ef9b0f34c7003fac09a5ef1532e69430234cebd"
    )


def _info(suite: int, layer: int, algorithm: int, salt: bytes) -> bytes:
    """Section 5's info_j, written out from the spec."""
    return b"envelope/v1 layer" + b"\x00" + bytes((suite, layer, algorithm)) + salt


#: okm_j of suite 2 for DEK 00..1f and salt 40..5f, as libsodium 1.0.18
#: (crypto_generichash, 64 bytes, 32-byte key) and OpenSSL 3.0.19 (BLAKE2BMAC, size 64)
#: both computed it: what a reader in another language must reproduce.
_OTHER_IMPLEMENTATIONS = {
    (0, Aead.AES_256_GCM): "49c83e3fd7343297158b1d4605729fca19af8953692331aec36d40211fe7a97d"
    "498224a7f85978efb240700b703d20f42d6061215ab1abaaf7f0ba0b4a353e5f",
    (3, Aead.AES_256_GCM_SIV): "a61fc64d3b60a35a567ad0f9d931d1f01286d5ed27662e7d6942d20af47ff9dd"
    "d2261b555307901e3274f91f146cdb1b65bde58b986f19e8753c20fabe0a6699",
}


@pytest.mark.parametrize("position", list(_OTHER_IMPLEMENTATIONS), ids=str)
def test_suite_2_gives_the_bytes_of_other_blake2b_implementations(position):
    layer, algorithm = position
    dek, salt = bytes(range(32)), bytes(range(0x40, 0x60))
    info = _info(2, layer, algorithm, salt)
    assert len(info) == 53
    expected = bytes.fromhex(_OTHER_IMPLEMENTATIONS[position])
    assert rfc7693_blake2b(info, dek) == expected
    message_key, commitment = derive_layer_key(
        Suite.BLAKE2B, dek, kdf_info(Suite.BLAKE2B, layer, algorithm), salt
    )
    assert (message_key, commitment) == (expected[:32], expected[32:])


def test_suite_2_is_keyed_blake2b_for_every_layer_algorithm_and_salt():
    for layer in range(4):
        for algorithm in Aead:
            dek, salt = os.urandom(32), os.urandom(32)
            okm = rfc7693_blake2b(_info(2, layer, algorithm, salt), dek)
            assert (
                _KDFS[Suite.BLAKE2B](dek, kdf_info(Suite.BLAKE2B, layer, algorithm) + salt) == okm
            )


def test_the_parameter_block_is_rfc7693s_fanout_and_depth_one():
    """FORMAT.md 5.2 says "all other parameters zero": in RFC 7693's own terms bytes 2 and 3
    of p[0] (fanout and depth) are 01, and a reader who zeroes them gets other bytes."""
    dek, salt = bytes(range(32)), bytes(range(0x40, 0x60))
    info = _info(2, 0, Aead.AES_256_GCM, salt)
    library = _KDFS[Suite.BLAKE2B](dek, info)
    assert rfc7693_blake2b(info, dek, p0=0x01012040) == library
    assert rfc7693_blake2b(info, dek, p0=0x00002040) != library


def _dek(key: LocalKey, record) -> bytes:
    """Section 9: a local key's wrap opened with cryptography's AES-GCM, not the library's."""
    blob = record.ciphertext
    aad = b"envelope/local-key/v1\x00" + record.key_id.encode()
    return AESGCM(key._key).decrypt(blob[:12], blob[12:], aad)


def test_every_suite_2_vector_commits_as_rfc7693_says():
    keys = {k: bytes.fromhex(v) for k, v in VECTORS["keys"].items()}
    checked = 0
    for vector in VECTORS["vectors"]:
        message = bytes.fromhex(vector["message"])
        if vector["expect"] != "success" or message[5] != 2:
            continue
        header, _ = decode_header(message)
        for j, layer in enumerate(header.layers):
            # As a reader does: one of the layer's wrapped keys opens to the committed DEK.
            commitments = [
                rfc7693_blake2b(
                    _info(2, j, layer.algorithm, header.salt),
                    _dek(LocalKey(keys[record.key_id], key_id=record.key_id), record),
                )[32:]
                for record in layer.wrapped_keys
            ]
            assert layer.commitment in commitments, (vector["name"], j)
            checked += 1
    assert checked >= 7


# -- relabelling ----------------------------------------------------------------------------


def _writer(suite: Suite, layers: Sequence[KeyEncryptionKey], **options: object) -> Envelope:
    """An envelope whose new messages use ``suite`` (its writer reads SUITE when built)."""
    default = envelope._message.SUITE
    envelope._message.SUITE = suite
    try:
        return Envelope(layers, frame_size=F, **options)  # type: ignore[arg-type]
    finally:
        envelope._message.SUITE = default


def _relabelled(message: bytes, suite: int) -> bytes:
    return message[:5] + bytes((suite,)) + message[6:]


def _reads(env: Envelope, message: bytes) -> dict[str, Callable[[], object]]:
    """Every way a reader opens a message; the stream and buffer paths must release
    nothing of a message that fails."""
    sink = io.BytesIO()
    out = bytearray(b"\xaa" * (len(message) + 64))

    def stream() -> object:
        try:
            return env.decrypt_stream(io.BytesIO(message), sink)
        finally:
            assert sink.getvalue() == b""

    def into() -> object:
        try:
            return env.decrypt_into(message, out)
        finally:
            assert not any(b not in (0, 0xAA) for b in out)

    return {
        "decrypt": lambda: env.decrypt(message),
        "decrypt_async": lambda: asyncio.run(env.decrypt_async(message)),
        "decrypt_stream": stream,
        "decrypt_into": into,
        "rewrap": lambda: env.rewrap(message),
    }


@pytest.mark.parametrize("cached", [False, True], ids=["no cache", "warm unwrap cache"])
@pytest.mark.parametrize("source", SUITES, ids=["suite 1", "suite 2"])
@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_a_message_relabelled_to_the_other_suite_fails_every_read(
    layers: int, source: Suite, cached: bool
):
    keys = [LocalKey.generate() for _ in range(layers)]
    writer = _writer(source, keys)
    data = os.urandom(3 * F + 7)
    message = bytes(writer.encrypt(data))
    assert message[5] == source
    reader = Envelope(keys, frame_size=F, unwrap_cache=UnwrapCache() if cached else None)
    assert reader.decrypt(message) == data  # warms the cache when there is one
    target = Suite.BLAKE2B if source is Suite.HKDF_SHA256 else Suite.HKDF_SHA256
    forged = _relabelled(message, target)
    for path, read in _reads(reader, forged).items():
        with pytest.raises(DecryptionError) as failure:
            read()
        assert not isinstance(failure.value, FormatError), path
    for suite in (0, 3, 0x7F, 0xFF):
        for read in _reads(reader, _relabelled(message, suite)).values():
            with pytest.raises(FormatError):
                read()
        with pytest.raises(FormatError):
            inspect(_relabelled(message, suite))
    assert reader.decrypt(message) == data  # the forgeries left nothing behind in a cache


def _data_keys(message: bytes, keys: list[LocalKey]) -> list[bytes]:
    header, _ = decode_header(message)
    return [
        _dek(key, layer.wrapped_keys[0]) for key, layer in zip(keys, header.layers, strict=True)
    ]


def _recommitted(header: Header, deks: list[bytes], suite: Suite) -> Header:
    """``header`` moved to ``suite`` by someone who holds every data key: commitments that
    a reader will accept."""
    layers = tuple(
        layer._replace(
            commitment=derive_layer_key(
                suite, dek, kdf_info(suite, j, layer.algorithm), header.salt
            )[1]
        )
        for j, (layer, dek) in enumerate(zip(header.layers, deks, strict=True))
    )
    return header._replace(suite=suite, layers=layers)


@pytest.mark.parametrize("source", SUITES, ids=["suite 1", "suite 2"])
@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_a_holder_of_the_data_keys_cannot_move_a_body_to_the_other_suite(
    layers: int, source: Suite
):
    """With every DEK, the attacker writes commitments valid under the other suite: step 4
    passes, and the body still fails, since its message keys and the header digest its
    tags authenticate both belong to the suite it was sealed under."""
    keys = [LocalKey.generate() for _ in range(layers)]
    message = bytes(_writer(source, keys).encrypt(os.urandom(2 * F + 3)))
    header, length = decode_header(message)
    target = Suite.BLAKE2B if source is Suite.HKDF_SHA256 else Suite.HKDF_SHA256
    moved = encode_header(_recommitted(header, _data_keys(message, keys), target))
    forged = moved + message[length:]
    reader = Envelope(keys, frame_size=F)
    reader.rewrap(forged)  # step 4 passes: the commitments are right for the new suite
    for path, read in _reads(reader, forged).items():
        if path == "rewrap":
            continue
        with pytest.raises(DecryptionError) as failure:
            read()
        assert not isinstance(failure.value, FormatError), path


def _same_keys_both_suites(layers: int, data: bytes) -> tuple[list[LocalKey], dict[Suite, bytes]]:
    """Two messages with the same data keys, wrapped keys and salt, one per suite."""
    keys = [LocalKey.generate() for _ in range(layers)]
    deks = [os.urandom(32) for _ in keys]
    wrapped = [(dek, [key.wrap_key(dek)]) for dek, key in zip(deks, keys, strict=True)]
    salt = os.urandom(32)
    env = Envelope(keys, frame_size=F)
    messages = {
        suite: bytes(env._encrypt_with(data, None, salt=salt, data_keys=wrapped, suite=suite))
        for suite in SUITES
    }
    return keys, messages


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_headers_and_bodies_of_the_same_data_keys_do_not_splice_across_suites(layers: int):
    data = os.urandom(2 * F + 9)
    keys, messages = _same_keys_both_suites(layers, data)
    one, two = messages[Suite.HKDF_SHA256], messages[Suite.BLAKE2B]
    (h1, n1), (h2, n2) = decode_header(one), decode_header(two)
    assert h1._replace(suite=Suite.BLAKE2B, layers=()) == h2._replace(layers=())
    reader = Envelope(keys, frame_size=F)
    assert reader.decrypt(one) == reader.decrypt(two) == data
    deks = _data_keys(one, keys)
    assert deks == _data_keys(two, keys)
    # The same DEK gives unrelated message keys and commitments under the two suites.
    for j, (layer, dek) in enumerate(zip(h1.layers, deks, strict=True)):
        derived = {
            suite: derive_layer_key(suite, dek, kdf_info(suite, j, layer.algorithm), h1.salt)
            for suite in SUITES
        }
        halves = [half for pair in derived.values() for half in pair]
        assert len(set(halves)) == 4
    assert h1.layers != h2.layers
    for forged in (one[:n1] + two[n2:], two[:n2] + one[n1:]):
        with pytest.raises(DecryptionError) as failure:
            reader.decrypt(forged)
        assert not isinstance(failure.value, FormatError)
    # Layer by layer: one layer's entry taken from the other suite's header.
    for j in range(layers):
        mixed = list(h2.layers)
        mixed[j] = h1.layers[j]
        forged = encode_header(h2._replace(layers=tuple(mixed))) + two[n2:]
        with pytest.raises(DecryptionError):
            reader.decrypt(forged)


# -- caches ---------------------------------------------------------------------------------


def test_an_unwrap_cache_serves_both_suites_and_checks_each_commitment():
    data = os.urandom(F + 1)
    keys, messages = _same_keys_both_suites(2, data)
    counting = [Counting() for _ in keys]
    for c, key in zip(counting, keys, strict=True):
        c._key = key
    cache = UnwrapCache()
    reader = Envelope(counting, frame_size=F, unwrap_cache=cache)
    for suite in SUITES:
        assert reader.decrypt(messages[suite]) == data
    assert [c.unwraps for c in counting] == [1, 1]  # the second suite was a hit
    assert cache.stats().hits == 2
    for suite in SUITES:
        other = Suite.BLAKE2B if suite is Suite.HKDF_SHA256 else Suite.HKDF_SHA256
        with pytest.raises(DecryptionError):
            reader.decrypt(_relabelled(messages[suite], other))
    assert [c.unwraps for c in counting] == [1, 1]


def test_a_shared_data_key_cache_never_gives_one_data_key_to_two_suites():
    """Two envelopes of different suites share one DataKeyCache under many threads: each
    message carries its envelope's suite, each envelope reuses its own data keys, and no
    data key is ever used under both suites."""
    keys = [LocalKey.generate(), LocalKey.generate()]
    cache = DataKeyCache()
    writers = {suite: _writer(suite, keys, data_key_cache=cache) for suite in SUITES}
    reader = Envelope(keys, frame_size=F)

    def work(n: int) -> tuple[Suite, bytes, bytes]:
        suite = SUITES[n % 2]
        data = f"{n}".encode()
        message = bytes(writers[suite].encrypt(data))
        assert reader.decrypt(message) == data
        return suite, message[5:6], message

    results, errors = run_threads(200, work)
    assert errors == []
    deks: dict[Suite, set[bytes]] = {suite: set() for suite in SUITES}
    salts = set()
    for suite, label, message in results:
        assert label == bytes((suite,))
        header, _ = decode_header(message)
        salts.add(header.salt)
        deks[suite].update(_data_keys(message, keys))
    assert len(salts) == len(results)
    assert all(len(found) == 2 for found in deks.values())  # one DEK per layer, reused
    assert not deks[Suite.HKDF_SHA256] & deks[Suite.BLAKE2B]


# -- rewrap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=["suite 1", "suite 2"])
@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_rewrap_keeps_the_suite_and_everything_the_body_authenticates(layers: int, suite: Suite):
    old = [LocalKey.generate() for _ in range(layers)]
    new = [LocalKey.generate() for _ in range(layers)]
    data = os.urandom(2 * F)
    message = bytes(_writer(suite, old).encrypt(data))
    both = Envelope([[n, o] for n, o in zip(new, old, strict=True)], frame_size=F)
    rewrapped = bytes(both.rewrap(message))
    assert rewrapped[5] == suite
    (before, n0), (after, n1) = decode_header(message), decode_header(rewrapped)
    assert authenticated_header_bytes(before) == authenticated_header_bytes(after)
    assert rewrapped[n1:] == message[n0:]
    assert Envelope(new, frame_size=F).decrypt(rewrapped) == data
    with pytest.raises(EnvelopeError):
        Envelope(new, frame_size=F).decrypt(_relabelled(rewrapped, 3 - suite))


# -- a Python without keyed BLAKE2b ---------------------------------------------------------

#: How FIPS-mode Python builds fail a keyed hashlib.blake2b: a build that routes it to
#: OpenSSL refuses its keywords or the algorithm, a build without it has no attribute.
_FIPS_FAILURES = {
    "TypeError": TypeError("'digest_size' is an invalid keyword argument for openssl_blake2b()"),
    "ValueError": ValueError("[digital envelope routines: EVP_DigestInit_ex] disabled for FIPS"),
    "AttributeError": None,
}


@pytest.fixture(params=list(_FIPS_FAILURES))
def no_keyed_blake2b(request, monkeypatch) -> None:
    """The engine's hashlib as such a build has it: SHA-256, and no usable keyed BLAKE2b."""
    failure = _FIPS_FAILURES[request.param]
    fips = types.SimpleNamespace(sha256=hashlib.sha256)
    if failure is not None:

        def blake2b(*args: object, **kwargs: object) -> object:
            raise failure

        fips.blake2b = blake2b
    monkeypatch.setattr(envelope._engine, "hashlib", fips)


@pytest.fixture
def messages_of_both_suites() -> tuple[list[LocalKey], bytes, bytes]:
    """Keys, and a message of each suite (written before the fixture above takes effect)."""
    keys = [LocalKey.generate(), LocalKey.generate()]
    suite_1 = bytes(_writer(Suite.HKDF_SHA256, keys).encrypt(b"one"))
    suite_2 = bytes(_writer(Suite.BLAKE2B, keys).encrypt(b"two"))
    return keys, suite_1, suite_2


def test_without_keyed_blake2b_a_suite_2_message_is_refused_with_the_librarys_error(
    messages_of_both_suites, no_keyed_blake2b
):
    """FAILS at review time: decrypt lets hashlib's TypeError, ValueError or AttributeError
    escape, where FORMAT.md section 7 and the README promise an EnvelopeError (a caller that
    treats every refusal alike catches EnvelopeError)."""
    keys, suite_1, suite_2 = messages_of_both_suites
    reader = Envelope(keys, frame_size=F)
    assert reader.decrypt(suite_1) == b"one"  # suite 1 needs no BLAKE2b
    with pytest.raises(EnvelopeError):
        reader.decrypt(suite_2)


def test_without_keyed_blake2b_an_envelope_still_encrypts_or_says_why(no_keyed_blake2b):
    """FAILS at review time: encrypt raises hashlib's bare error from deep inside. A writer
    SHOULD (not MUST) use suite 2, so suite 1 would do; or the envelope refuses with an
    error of the library's that says why."""
    keys = [LocalKey.generate(), LocalKey.generate()]
    try:
        env = Envelope(keys, frame_size=F)
        message = env.encrypt(b"data")
    except EnvelopeError:
        return
    assert env.decrypt(message) == b"data"


@pytest.fixture
def counted_suite_2_message() -> tuple[Counting, Counting, bytes]:
    """Two counting KEKs and a suite 2 message (written before keyed BLAKE2b goes away)."""
    inner, outer = Counting(), Counting()
    return inner, outer, bytes(_writer(Suite.BLAKE2B, [inner, outer]).encrypt(b"two"))


def test_a_suite_2_message_is_refused_before_any_key_service_is_asked(
    counted_suite_2_message, no_keyed_blake2b
):
    """Where keyed BLAKE2b is missing, a suite 2 message is a format error that says why,
    and no KEK is asked to unwrap anything (FORMAT.md section 5)."""
    inner, outer, message = counted_suite_2_message
    assert message[5] == Suite.BLAKE2B
    with pytest.raises(FormatError, match="keyed BLAKE2b"):
        Envelope([inner, outer], frame_size=F).decrypt(message)
    assert (inner.unwraps, outer.unwraps) == (0, 0)
    # ... and new messages are written with suite 1, which still opens.
    env = Envelope([inner, outer], frame_size=F)
    written = env.encrypt(b"one")
    assert written[5] == Suite.HKDF_SHA256
    assert env.decrypt(written) == b"one"


def test_the_spec_known_answer_is_what_the_library_derives():
    """The known answer printed in FORMAT.md section 5.2, read from the document."""
    spec = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text("utf-8")
    section = spec.split("### 5.2 Suite 2", 1)[1].split("### 5.3", 1)[0]
    found = re.search(r"okm_j = ([0-9a-f]{64})\s+([0-9a-f]{64})", section)
    assert found is not None, "FORMAT.md 5.2 has no known answer"
    expected = bytes.fromhex(found.group(1) + found.group(2))
    message_key, commitment = derive_layer_key(
        Suite.BLAKE2B,
        bytes(range(32)),
        kdf_info(Suite.BLAKE2B, 0, Aead.AES_256_GCM),
        bytes(range(0x40, 0x60)),
    )
    assert message_key + commitment == expected
