"""The rules FORMAT.md gives a reader (sections 2 to 5 and 7), attacked through every
decryption path: the order of the checks, keys tied to layer positions, the next KEK of a
layer, text that is not UTF-8, repeated key ids and bodies too short to hold a final frame.

Every message here is rewritten by the attacker; each case says which kind of failure a
reader must report (``format``, ``decryption`` or ``access``) and whether a key service
may have been asked anything by then."""

from __future__ import annotations

import asyncio
import io
import os
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest

from envelope import (
    DecryptionError,
    Envelope,
    EnvelopeError,
    FormatError,
    InsecureTransportError,
    KeyAccessError,
    LocalKey,
    WrappedKey,
    inspect,
)
from envelope import _limits as limits
from envelope._format import decode_header, encode_header
from tests.core.conftest import SMALL_FRAME, Counting

CONTEXT = {"tenant": "contoso"}
OVERHEAD = 2 * 16
DATA = b"m" * (2 * SMALL_FRAME + 100)  # two full frames and a short final one


class Scripted(Counting):
    """A local KEK whose unwrap does what the test says, and counts its calls (sync and
    asyncio): ``ok``; ``deny``, a key service refusal; ``corrupt``, a wrapped key that does
    not authenticate; ``other``, a 32-byte key that is not the data key; ``short``, 16 bytes;
    ``insecure``, a connection the TLS policy refused.
    """

    def __init__(self, behaviour: str = "ok") -> None:
        super().__init__()
        self.behaviour = behaviour

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        data_key = super().unwrap_key(wrapped)
        if self.behaviour == "deny":
            raise KeyAccessError(f"{self.key_id}: denied", code="Forbidden", key_id=self.key_id)
        if self.behaviour == "corrupt":
            raise DecryptionError()
        if self.behaviour == "insecure":
            raise InsecureTransportError("refused by the TLS policy", reason="certificate")
        if self.behaviour == "other":
            return os.urandom(32)
        return data_key[:16] if self.behaviour == "short" else data_key

    async def unwrap_key_async(self, wrapped: WrappedKey) -> bytes:
        return self.unwrap_key(wrapped)


def kind(error: BaseException) -> str:
    """The kind FORMAT.md section 7 names, from the library's exception."""
    if isinstance(error, FormatError):
        return "format"
    if isinstance(error, DecryptionError):
        return "decryption"
    if isinstance(error, KeyAccessError):
        return "access"
    raise AssertionError(f"not a failure kind of the format: {error!r}")


def _paths(env: Envelope, blob: bytes, context: dict[str, str]) -> list[Callable[[], Any]]:
    """Every way to decrypt ``blob``: one-shot, into a buffer, streamed, asyncio."""
    return [
        lambda: env.decrypt(blob, context=context),
        lambda: env.decrypt_into(blob, bytearray(len(blob)), context=context),
        lambda: env.decrypt_stream(io.BytesIO(blob), io.BytesIO(), context=context),
        lambda: asyncio.run(env.decrypt_async(blob, context=context)),
    ]


def failure(env: Envelope, blob: bytes, context: dict[str, str] = CONTEXT) -> EnvelopeError:
    """Decrypt ``blob`` every way; each must fail with the same kind. Returns the one-shot
    error."""
    errors = []
    for decrypt in _paths(env, blob, context):
        with pytest.raises(EnvelopeError) as caught:
            decrypt()
        errors.append(caught.value)
    assert len({kind(e) for e in errors}) == 1, errors
    return errors[0]


def opens(env: Envelope, blob: bytes, context: dict[str, str] = CONTEXT) -> None:
    for decrypt in _paths(env, blob, context):
        decrypt()
    assert env.decrypt(blob, context=context) == DATA


def rewritten(blob: bytes | bytearray, change: Callable[[Any], Any]) -> bytes:
    """``blob`` with its header replaced by ``change(header)`` and the body kept."""
    header, length = decode_header(blob)
    return encode_header(change(header)) + bytes(blob[length:])


def swap(pair: tuple[Any, Any], field: str) -> tuple[Any, Any]:
    """Two layers with one field exchanged between them."""
    a, b = pair
    return a._replace(**{field: getattr(b, field)}), b._replace(**{field: getattr(a, field)})


def flip_commitment(h: Any) -> Any:
    layer = h.layers[0]
    commitment = bytes([layer.commitment[0] ^ 1]) + layer.commitment[1:]
    return h._replace(layers=(layer._replace(commitment=commitment), h.layers[1]))


def _header_only(blob: bytes) -> bytes:
    return blob[: inspect(blob).header_length]


WRONG = {"tenant": "fabrikam"}

# name: (make the message from the genuine one, which reader, expected context, kind,
#        whether a key service may have been asked by the time it fails)
CASES: dict[str, tuple[Callable[[bytes], bytes], str, dict[str, str], str, bool]] = {
    # Step 1 before everything.
    "version 2 and a wrong context": (
        lambda b: b[:4] + b"\x02" + b[5:],
        "both",
        WRONG,
        "format",
        False,
    ),
    "a repeated key id and a wrong layer count": (
        lambda b: rewritten(
            b,
            lambda h: h._replace(
                layers=(h.layers[0]._replace(wrapped_keys=h.layers[0].wrapped_keys * 2),)
            ),
        ),
        "both",
        CONTEXT,
        "format",
        False,
    ),
    # Step 2 before step 3.
    "a wrong context and one layer fewer": (lambda b: b, "inner only", WRONG, "decryption", False),
    "a wrong context and one layer more": (lambda b: b, "three", WRONG, "decryption", False),
    "a wrong context and layers swapped whole": (
        lambda b: rewritten(b, lambda h: h._replace(layers=h.layers[::-1])),
        "both",
        WRONG,
        "decryption",
        False,
    ),
    "a wrong context and a key id not accepted": (
        lambda b: b,
        "other outer",
        WRONG,
        "decryption",
        False,
    ),
    # Step 3: keys are tied to layer positions; nothing is contacted until every layer passed.
    "layers swapped whole": (
        lambda b: rewritten(b, lambda h: h._replace(layers=h.layers[::-1])),
        "both",
        CONTEXT,
        "access",
        False,
    ),
    "wrapped keys swapped between layers": (
        lambda b: rewritten(b, lambda h: h._replace(layers=swap(h.layers, "wrapped_keys"))),
        "both",
        CONTEXT,
        "access",
        False,
    ),
    "layer 1 names no accepted key (layer 0 does)": (
        lambda b: b,
        "other outer",
        CONTEXT,
        "access",
        False,
    ),
    # Step 3 before step 5.
    "one layer fewer and an empty body": (_header_only, "inner only", CONTEXT, "access", False),
    "a key id not accepted and an empty body": (
        _header_only,
        "other outer",
        CONTEXT,
        "access",
        False,
    ),
    # Step 4: the commitment binds position and algorithm.
    "layer algorithms swapped": (
        lambda b: rewritten(b, lambda h: h._replace(layers=swap(h.layers, "algorithm"))),
        "both",
        CONTEXT,
        "decryption",
        True,
    ),
    "layer commitments swapped": (
        lambda b: rewritten(b, lambda h: h._replace(layers=swap(h.layers, "commitment"))),
        "both",
        CONTEXT,
        "decryption",
        True,
    ),
    # Step 4 before step 5.
    "a commitment flipped and an empty body": (
        lambda b: _header_only(rewritten(b, flip_commitment)),
        "both",
        CONTEXT,
        "decryption",
        True,
    ),
    "a key service refusal and an empty body": (
        _header_only,
        "outer denies",
        CONTEXT,
        "access",
        True,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_checks_are_made_in_the_documented_order(name: str):
    make, reader, context, expected, contacted = CASES[name]
    inner, outer = Scripted(), Scripted()
    blob = bytes(Envelope([inner, outer], frame_size=SMALL_FRAME).encrypt(DATA, context=CONTEXT))
    readers = {
        "both": [inner, outer],
        "inner only": [inner],
        "three": [inner, outer, Scripted()],
        "other outer": [inner, Scripted()],
        "outer denies": [inner, outer],
    }
    if reader == "outer denies":
        outer.behaviour = "deny"
    env = Envelope(readers[reader], frame_size=SMALL_FRAME)
    assert kind(failure(env, make(blob), context)) == expected
    asked = inner.unwraps + outer.unwraps
    assert asked > 0 if contacted else asked == 0


def test_the_genuine_message_of_those_cases_opens():
    inner, outer = Scripted(), Scripted()
    env = Envelope([inner, outer], frame_size=SMALL_FRAME)
    opens(env, bytes(env.encrypt(DATA, context=CONTEXT)))


@pytest.mark.parametrize("first", ["deny", "corrupt", "other", "short"])
def test_a_failed_candidate_moves_on_to_the_layers_next_kek(first: str):
    a, b, outer = Scripted(first), Scripted(), Scripted()
    env = Envelope([[a, b], outer], frame_size=SMALL_FRAME)
    opens(env, bytes(env.encrypt(DATA, context=CONTEXT)))
    assert a.unwraps == b.unwraps == 5  # four paths and the check in opens()


@pytest.mark.parametrize(
    ("behaviours", "expected"),
    [
        (("deny", "deny"), "access"),
        (("deny", "corrupt"), "decryption"),
        (("other", "deny"), "decryption"),
        (("short", "deny"), "decryption"),
        (("corrupt", "other"), "decryption"),
    ],
)
def test_when_every_candidate_of_a_layer_fails(behaviours: tuple[str, str], expected: str):
    """An integrity failure of any candidate wins; access failures alone are combined."""
    a, b = Scripted(), Scripted()
    env = Envelope([[a, b], Scripted()], frame_size=SMALL_FRAME)
    blob = bytes(env.encrypt(DATA, context=CONTEXT))
    a.behaviour, b.behaviour = behaviours
    error = failure(env, blob)
    assert kind(error) == expected
    assert a.unwraps == b.unwraps == 4
    if expected == "access":
        assert isinstance(error, KeyAccessError)
        assert [e.key_id for e in error.errors] == [a.key_id, b.key_id]


@pytest.mark.parametrize(
    ("inner", "outer", "expected"),
    [("deny", "corrupt", "access"), ("corrupt", "deny", "decryption")],
)
def test_the_lowest_numbered_failing_layer_is_reported(inner: str, outer: str, expected: str):
    """Sync unwraps the layers one after the other, asyncio concurrently: the same kind."""
    keks = Scripted(), Scripted()
    env = Envelope(list(keks), frame_size=SMALL_FRAME)
    blob = bytes(env.encrypt(DATA, context=CONTEXT))
    keks[0].behaviour, keks[1].behaviour = inner, outer
    assert kind(failure(env, blob)) == expected


def test_a_connection_the_tls_policy_refused_ends_the_decryption_at_once():
    a, b = Scripted(), Scripted()
    env = Envelope([[a, b]], frame_size=SMALL_FRAME)
    blob = bytes(env.encrypt(DATA, context=CONTEXT))
    a.behaviour = "insecure"
    for decrypt in _paths(env, blob, CONTEXT):
        with pytest.raises(InsecureTransportError):
            decrypt()
    assert (a.unwraps, b.unwraps) == (4, 0)


def test_candidates_follow_the_readers_order_of_keks_not_the_headers():
    """(That each KEK tries only the first wrapped key it accepts, in header order, is
    test_tamper's test_a_forged_header_cannot_multiply_key_service_calls.)"""
    a, b = Scripted(), Scripted()
    blob = bytes(Envelope([[a, b]], frame_size=SMALL_FRAME).encrypt(DATA, context=CONTEXT))
    assert inspect(blob).layers[0].key_ids == (a.key_id, b.key_id)
    assert Envelope([[b, a]], frame_size=SMALL_FRAME).decrypt(blob, context=CONTEXT) == DATA
    assert (a.unwraps, b.unwraps) == (0, 1)
    assert Envelope([[a, b]], frame_size=SMALL_FRAME).decrypt(blob, context=CONTEXT) == DATA
    assert (a.unwraps, b.unwraps) == (1, 1)


# -- text, key ids, short bodies --------------------------------------------------------------

NOT_UTF8 = {
    "overlong": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above U+10FFFF": b"\xf4\x90\x80\x80",
    "cut short": b"\xe2\x82",
    "lone continuation byte": b"\x80",
}
PLACEHOLDER = {"context key": b"ck@@@@", "context value": b"cv@@@@", "key id": b"id@@@@"}


@pytest.mark.parametrize("field", sorted(PLACEHOLDER))
@pytest.mark.parametrize("name", sorted(NOT_UTF8))
def test_text_that_is_not_utf8_is_a_format_error(field: str, name: str):
    kek = LocalKey.generate(key_id="id@@@@")
    env = Envelope([kek], frame_size=SMALL_FRAME)
    blob = bytes(env.encrypt(b"text", context={"ck@@@@": "cv@@@@"}))
    placeholder = PLACEHOLDER[field]
    bad = placeholder[:2] + NOT_UTF8[name].ljust(4, b"Z")
    header_length = inspect(blob).header_length
    assert blob[:header_length].count(placeholder) == 1
    forged = blob.replace(placeholder, bad, 1)
    # Step 1, before the context and the key ids are compared with anything.
    assert kind(failure(env, forged, {"ck@@@@": "cv@@@@"})) == "format"
    with pytest.raises(FormatError, match="UTF-8"):
        inspect(forged)


def test_any_code_point_is_text_and_texts_are_compared_as_bytes():
    kek = LocalKey.generate(key_id="kek\x00\U0001f600\ufeff")
    env = Envelope([kek], frame_size=SMALL_FRAME)
    context = {"\x00": "\ufeff", "k\U0001f600": ""}
    blob = bytes(env.encrypt(DATA, context=context))
    assert env.decrypt(blob, context=context) == DATA
    assert inspect(blob).layers[0].key_ids == (kek.key_id,)
    nfc = {"caf\u00e9": "1"}
    nfd = {unicodedata.normalize("NFD", k): v for k, v in nfc.items()}
    assert nfc != nfd
    sealed = bytes(env.encrypt(DATA, context=nfc))
    assert kind(failure(env, sealed, nfd)) == "decryption"


def test_a_key_id_in_two_layers_is_a_format_error(env: Envelope):
    blob = bytes(env.encrypt(DATA, context=CONTEXT))

    def shared(h: Any) -> Any:
        inner, outer = h.layers
        stolen = outer.wrapped_keys[0]._replace(key_id=inner.wrapped_keys[0].key_id)
        return h._replace(layers=(inner, outer._replace(wrapped_keys=(stolen,))))

    assert kind(failure(env, rewritten(blob, shared))) == "format"


def test_key_ids_are_compared_as_bytes_in_the_header():
    """Two spellings a key service may treat as one key are two ids to the format."""
    kek = LocalKey.generate(key_id="https://vault.example/keys/k/ABC")
    env = Envelope([kek], frame_size=SMALL_FRAME)
    blob = bytes(env.encrypt(DATA))

    def two_spellings(h: Any) -> Any:
        (record,) = h.layers[0].wrapped_keys
        lower = record._replace(key_id=record.key_id.lower())
        return h._replace(layers=(h.layers[0]._replace(wrapped_keys=(lower, record)),))

    assert env.decrypt(rewritten(blob, two_spellings)) == DATA


def test_bodies_too_short_for_a_final_frame_are_decryption_failures(env: Envelope):
    blob = bytes(env.encrypt(b"x" * (3 * SMALL_FRAME), context=CONTEXT))
    header_length = inspect(blob).header_length
    full = SMALL_FRAME + OVERHEAD
    cuts = [*range(OVERHEAD), *(i * full for i in range(1, 4)), *(i * full + 17 for i in (1, 2))]
    for cut in cuts:
        assert kind(failure(env, blob[: header_length + cut])) == "decryption", cut


def test_more_than_max_frames_is_a_decryption_failure(monkeypatch, env: Envelope):
    blob = bytes(env.encrypt(b"y" * (4 * SMALL_FRAME + 5), context=CONTEXT))  # 5 frames
    monkeypatch.setattr(limits, "MAX_FRAMES", 4)
    assert kind(failure(env, blob)) == "decryption"


@pytest.mark.parametrize(
    "expected",
    [
        {"": "v"},
        {"k" * 257: "v"},
        {"\ud800": "v"},
        {"k": "\udc80"},
        {f"k{i}": "" for i in range(65)},
    ],
    ids=["empty key", "long key", "surrogate key", "surrogate value", "65 entries"],
)
def test_an_expected_context_the_format_cannot_encode_is_the_callers_mistake(expected):
    """Refused before the message is read: even garbage gets the caller's error first."""
    env = Envelope([LocalKey.generate()], frame_size=SMALL_FRAME)
    for blob in (bytes(env.encrypt(b"x")), b"not a message"):
        for decrypt in _paths(env, blob, expected):
            with pytest.raises(ValueError, match="context") as caught:
                decrypt()
            assert not isinstance(caught.value, UnicodeError)
