# mypy: allow-untyped-defs, allow-incomplete-defs
"""KeyVaultKey against a vault that attacks it: redirects, hostile replies, trickles and
floods. Every server is on 127.0.0.1; a foreign name resolves to it inside this process."""

from __future__ import annotations

import asyncio
import gc
import gzip
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from envelope import DecryptionError, Envelope, KeyAccessError, LocalKey, WrappedKey
from envelope.keyvault import KeyVaultKey
from tests.keyvault.hostile import (
    OAEP,
    VERSION,
    Reply,
    ScriptedVault,
    attacker_server,
    b64url,
    b64url_int,
    json_reply,
    resolve_foreign_names_to_loopback,
    rsa_bundle,
)
from tests.transport.servers import RAW, Certificates, RunningServer

MODES = pytest.mark.parametrize("mode", ["sync", "async"])


def use(key: KeyVaultKey, mode: str, verb: str, argument: Any) -> Any:
    """``key.<verb>(argument)``, or its async twin on a fresh event loop; then close the key
    (on the loop that used it)."""
    if mode == "sync":
        with key:
            return getattr(key, verb)(argument)

    async def run() -> Any:
        async with key:
            return await getattr(key, f"{verb}_async")(argument)

    return asyncio.run(run())


def wrap(key: KeyVaultKey, mode: str, data_key: bytes) -> WrappedKey:
    wrapped: WrappedKey = use(key, mode, "wrap_key", data_key)
    return wrapped


def unwrap(key: KeyVaultKey, mode: str, wrapped: WrappedKey) -> bytes:
    data_key: bytes = use(key, mode, "unwrap_key", wrapped)
    return data_key


def decrypt(env: Envelope, mode: str, blob: bytes | bytearray) -> bytes | bytearray:
    """Decrypt, then close the envelope's Key Vault KEKs (on the loop that used them)."""
    keys = [kek for layer in env.layers for kek in layer if isinstance(kek, KeyVaultKey)]
    if mode == "sync":
        try:
            return env.decrypt(blob)
        finally:
            for key in keys:
                key.close()

    async def run() -> bytes | bytearray:
        try:
            return await env.decrypt_async(blob)
        finally:
            for key in keys:
                await key.aclose()

    return asyncio.run(run())


def rsa_wrapped(vault: ScriptedVault, data_key: bytes) -> WrappedKey:
    """A data key wrapped, as KeyVaultKey would, under the vault's RSA key ``k``."""
    return WrappedKey(
        vault.kid("k"), "RSA-OAEP-256", vault.rsa_key.public_key().encrypt(data_key, OAEP)
    )


def test_the_scripted_vault_behaves_like_key_vault_until_told_otherwise(hostile: ScriptedVault):
    data_key = os.urandom(32)
    with hostile.kek("k") as rsa_key, hostile.kek("o") as oct_key:
        assert rsa_key.unwrap_key(rsa_key.wrap_key(data_key)) == data_key
        assert oct_key.unwrap_key(oct_key.wrap_key(data_key)) == data_key
    assert hostile.operations == ["getKey", "unwrapKey", "getKey", "wrapKey", "unwrapKey"]


# --- finding: Key Vault requests followed redirects --------------------------------------


@dataclass
class Attacker:
    """Another https host, with a certificate the trusted CA issued for it, that answers
    every Key Vault operation as the configured vault would for key ``kid``, but with its
    own RSA key."""

    server: RunningServer
    kid: str = ""

    def lure(self, vault: ScriptedVault, operation: str, key_name: str, status: int) -> None:
        """Make ``vault`` answer ``operation`` on ``key_name`` by a redirect to this host."""
        self.kid = vault.kid(key_name)

        def redirect(handler: Any, body: bytes) -> Reply:
            return status, {"Location": self.server.url(handler.path)}, b""

        vault.scripts[operation] = redirect

    def assert_never_contacted(self) -> None:
        assert self.server.recorded.raw == []
        assert self.server.recorded.requests == []


@pytest.fixture
def attacker(certs: Certificates, monkeypatch: pytest.MonkeyPatch) -> Iterator[Attacker]:
    resolve_foreign_names_to_loopback(monkeypatch)
    own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def respond(handler: Any, body: bytes) -> Reply:
        if handler.command == "GET":
            return json_reply(rsa_bundle(found.kid, own_key.public_key()))
        return json_reply({"kid": found.kid, "value": b64url(os.urandom(40))})

    with attacker_server(certs, respond) as server:
        found = Attacker(server)
        yield found


@MODES
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_key_bundle_request_is_refused_and_the_other_host_gets_nothing(
    hostile: ScriptedVault, attacker: Attacker, mode: str, status: int
):
    attacker.lure(hostile, "getKey", "k", status)
    with pytest.raises(KeyAccessError) as caught:
        wrap(hostile.kek("k"), mode, os.urandom(32))
    assert str(status) in str(caught.value)
    attacker.assert_never_contacted()


@MODES
@pytest.mark.parametrize("status", [307, 308])
def test_a_redirected_wrap_is_refused_and_the_data_key_goes_nowhere_else(
    hostile: ScriptedVault, attacker: Attacker, mode: str, status: int
):
    attacker.lure(hostile, "wrapKey", "o", status)
    with pytest.raises(KeyAccessError):
        wrap(hostile.kek("o"), mode, os.urandom(32))
    assert hostile.operations == ["getKey", "wrapKey"]
    attacker.assert_never_contacted()


@MODES
@pytest.mark.parametrize("status", [307, 308])
def test_a_redirected_unwrap_is_refused_and_the_layer_falls_through(
    hostile: ScriptedVault, attacker: Attacker, mode: str, status: int
):
    backup, outer = LocalKey.generate(), LocalKey.generate()
    with hostile.kek("k") as key:
        blob = Envelope([[key, backup], outer]).encrypt(b"redirected")
    attacker.lure(hostile, "unwrapKey", "k", status)
    assert decrypt(Envelope([[hostile.kek("k"), backup], outer]), mode, blob) == b"redirected"
    with pytest.raises(KeyAccessError):
        unwrap(hostile.kek("k"), mode, rsa_wrapped(hostile, os.urandom(32)))
    assert hostile.operations.count("unwrapKey") == 2
    attacker.assert_never_contacted()


# --- finding: hostile replies raised non-library exceptions ------------------------------


def bundle_script(change: Callable[[dict[str, Any]], None]) -> Callable[..., Reply]:
    """The vault's own RSA bundle, changed by ``change``."""

    def script(handler: Any, body: bytes) -> Reply:
        vault_url = f"https://{handler.headers['Host']}"
        bundle = rsa_bundle(f"{vault_url}/keys/k/{VERSION}", _PUBLIC)
        change(bundle)
        return json_reply(bundle)

    return script


_PUBLIC = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
_N = _PUBLIC.public_numbers().n


def _set_jwk(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(bundle: dict[str, Any]) -> None:
        bundle["key"].update(fields)

    return change


def _set(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(bundle: dict[str, Any]) -> None:
        bundle.update(fields)

    return change


HOSTILE_BUNDLES = [
    pytest.param(_set_jwk(e=b64url_int(_N + 2)), id="odd-e-above-n"),
    pytest.param(_set_jwk(e=b64url_int(_N)), id="e-equals-n"),
    pytest.param(_set_jwk(n=b64url_int(_N + 1)), id="even-n"),
    pytest.param(_set_jwk(e=b64url_int(2**4000 + 1)), id="e-of-4000-bits"),
    pytest.param(_set_jwk(n=12345), id="n-a-number"),
    pytest.param(_set_jwk(n="not base64 !"), id="n-not-base64"),
    pytest.param(_set_jwk(kid=["list"]), id="kid-a-list"),
    pytest.param(_set_jwk(key_ops="wrapKey"), id="key-ops-a-string"),
    pytest.param(_set_jwk(kty=None), id="kty-null"),
    pytest.param(_set(key=[]), id="key-a-list"),
    pytest.param(_set(attributes="enabled"), id="attributes-a-string"),
    pytest.param(_set(attributes={"enabled": "true"}), id="enabled-a-string"),
    pytest.param(_set(attributes={"enabled": True, "exp": 1.5}), id="exp-a-float"),
    pytest.param(_set(attributes={"enabled": True, "nbf": 10**400}), id="nbf-huge"),
]


@MODES
@pytest.mark.parametrize("change", HOSTILE_BUNDLES)
def test_a_hostile_key_bundle_is_a_key_access_error(
    hostile: ScriptedVault, mode: str, change: Callable[[dict[str, Any]], None]
):
    hostile.scripts["getKey"] = bundle_script(change)
    with pytest.raises(KeyAccessError):
        wrap(hostile.kek("k"), mode, os.urandom(32))


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def body_script(status: int, body: bytes, content_type: str = "application/json"):
    def script(handler: Any, request_body: bytes) -> Reply:
        return status, {"Content-Type": content_type}, body

    return script


def _reply(*reply: Any, id: str) -> Any:
    """A hostile reply: status, body and optionally its content type."""
    return pytest.param(reply, id=id)


JSON_UTF8 = "application/json; charset=utf-8"
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<lolz>&lol9;</lolz>"""

HOSTILE_REPLIES = [
    _reply(200, deep(200_000), id="nested-200000-deep"),
    _reply(200, deep(20_000), id="nested-20000-deep-under-the-size-cap"),
    _reply(403, b'{"error": ' + deep(20_000) + b"}", id="error-nested-deep"),
    _reply(403, deep(200_000), id="error-body-nested-deep"),
    _reply(200, b'{"value": ' + deep(20_000) + b"}", id="value-nested-deep"),
    _reply(200, b"[]", id="a-list"),
    _reply(200, b'"text"', id="a-string"),
    _reply(200, b"1e999999", id="a-huge-number"),
    _reply(200, b"9" * 5000, id="an-integer-of-5000-digits"),
    _reply(200, b'{"value": 12}', id="value-a-number"),
    _reply(200, b'{"value": null}', id="value-null"),
    _reply(200, b'{"value": "%%%"}', id="value-not-base64"),
    _reply(200, b'{"value": "' + b"A" * 5000 + b'"}', id="value-too-long"),
    _reply(200, b'{"value": "\xff\xfe"}', id="not-utf-8"),
    _reply(200, b'{"value": "\xff\xfe"}', JSON_UTF8, id="not-utf-8-said-to-be"),
    _reply(403, b'{"error": "\xff"}', JSON_UTF8, id="error-not-utf-8-said-to-be"),
    _reply(200, deep(20_000), JSON_UTF8, id="nested-deep-with-charset"),
    _reply(200, b"<a>" * 20_000 + b"</a>" * 20_000, "application/xml", id="xml-deep"),
    _reply(200, BILLION_LAUGHS, "application/xml", id="xml-billion-laughs"),
    _reply(200, b"<value>AAAA</value>", "text/xml", id="xml-not-json"),
    _reply(200, b"\x00\x01\x02", id="binary"),
    _reply(403, b'{"error": {"code": ["x"], "message": {"a": 1}}}', id="error-odd-types"),
    _reply(403, b'{"error": {"code": "' + b"C" * 70_000 + b'"}}', id="error-huge-code"),
]


@MODES
@pytest.mark.parametrize("reply", HOSTILE_REPLIES)
def test_a_hostile_unwrap_reply_falls_through_to_the_layers_next_kek(
    hostile: ScriptedVault, mode: str, reply: tuple[Any, ...]
):
    backup, outer = LocalKey.generate(), LocalKey.generate()
    with hostile.kek("k") as key:
        blob = Envelope([[key, backup], outer]).encrypt(b"still readable")
    hostile.scripts["unwrapKey"] = body_script(*reply)
    env = Envelope([[hostile.kek("k"), backup], outer])
    assert decrypt(env, mode, blob) == b"still readable"
    with pytest.raises(KeyAccessError):
        unwrap(hostile.kek("k"), mode, rsa_wrapped(hostile, os.urandom(32)))


@pytest.mark.parametrize("reply", HOSTILE_REPLIES)
def test_a_hostile_bundle_or_wrap_reply_is_a_key_access_error(
    hostile: ScriptedVault, reply: tuple[Any, ...]
):
    hostile.scripts["getKey"] = body_script(*reply)
    with pytest.raises(KeyAccessError), hostile.kek("k") as key:
        key.wrap_key(os.urandom(32))
    del hostile.scripts["getKey"]
    hostile.scripts["wrapKey"] = body_script(*reply)
    with pytest.raises(KeyAccessError), hostile.kek("o") as key:
        key.wrap_key(os.urandom(32))


def test_a_vault_that_cannot_unwrap_is_still_a_decryption_error(hostile: ScriptedVault):
    # A 400 to unwrapKey means "this value does not unwrap under this key": an integrity
    # failure of the message, not of the vault, whatever else the vault got wrong.
    hostile.scripts["unwrapKey"] = body_script(400, b'{"error": {"code": "BadParameter"}}')
    with pytest.raises(DecryptionError), hostile.kek("k") as key:
        key.unwrap_key(rsa_wrapped(hostile, os.urandom(32)))


# --- finding: a trickle held a call, and replies had no size cap --------------------------

# Slack for scheduling on a loaded machine; the bounds themselves are the KEK's settings.
SLACK = 0.75


def trickled(kind: str, interval: float = 0.1, size: int = 40) -> Callable[..., Reply]:
    """A reply that keeps arriving: one byte every ``interval`` seconds, in the body (with a
    Content-Length, or chunked), or in the status line and headers; about 6 s in all."""
    body = b'{"value": "' + b"A" * size + b'"}'

    def drip(data: bytes) -> Iterator[bytes]:
        for index in range(len(data)):
            yield data[index : index + 1]
            time.sleep(interval)

    def script(handler: Any, request_body: bytes) -> Reply:
        if kind == "headers":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"p" * size
            return RAW, {}, drip(head + b"\r\n\r\n")
        headers = {"Content-Type": "application/json"}
        if kind == "body":
            headers["Content-Length"] = str(len(body))
        return 200, headers, drip(body)

    return script


TRICKLES = pytest.mark.parametrize("kind", ["body", "chunked", "headers"])


def time_to_fail(call: Callable[[], object]) -> tuple[float, KeyAccessError]:
    """How long ``call`` took to raise its KeyAccessError, and the error."""
    started = time.monotonic()
    with pytest.raises(KeyAccessError) as caught:
        call()
    return time.monotonic() - started, caught.value


TRICKLE_BOUNDS = [
    # An unwrap is a POST, never retried after a read timeout: one attempt, which must end
    # within its read timeout although every byte comes well within it.
    pytest.param("unwrapKey", 0, 10.0, 1.0, id="one-attempt-within-its-read-timeout"),
    # A key bundle GET is retried: the attempts together must end by the call's timeout.
    pytest.param("getKey", 5, 2.5, 2.5, id="all-attempts-within-the-call-timeout"),
]


@MODES
@TRICKLES
@pytest.mark.parametrize(("operation", "retry_total", "timeout", "bound"), TRICKLE_BOUNDS)
def test_a_trickling_vault_holds_a_call_no_longer_than_its_time_bounds(
    hostile: ScriptedVault,
    mode: str,
    kind: str,
    operation: str,
    retry_total: int,
    timeout: float,
    bound: float,
):
    hostile.scripts[operation] = trickled(kind)
    key = hostile.kek("k", read_timeout=1.0, retry_total=retry_total, timeout=timeout)
    if operation == "getKey":
        elapsed, error = time_to_fail(lambda: wrap(key, mode, os.urandom(32)))
    else:
        wrapped = rsa_wrapped(hostile, os.urandom(32))
        elapsed, error = time_to_fail(lambda: unwrap(key, mode, wrapped))
    assert elapsed < bound + SLACK
    # One look at what the vault saw (an attempt the client gave up on may still land).
    seen = list(hostile.operations)
    attempts = seen.count(operation)
    assert attempts == 1 if retry_total == 0 else 2 <= attempts <= 3
    assert seen == [operation] * attempts
    if bound == timeout:
        assert f"{timeout:g} s" in str(error)


@MODES
def test_a_retry_after_beyond_the_time_left_ends_the_call_at_once(
    hostile: ScriptedVault, mode: str
):
    def throttled(handler: Any, body: bytes) -> Reply:
        status, headers, reply = json_reply({"error": {"code": "Throttled"}}, 429)
        return status, {**headers, "Retry-After": "20"}, reply

    hostile.scripts["unwrapKey"] = throttled
    key = hostile.kek("k", timeout=3.0)
    wrapped = rsa_wrapped(hostile, os.urandom(32))
    elapsed, error = time_to_fail(lambda: unwrap(key, mode, wrapped))
    assert elapsed < SLACK
    assert "Retry-After" in str(error)
    assert hostile.operations == ["unwrapKey"]


def test_a_retry_after_within_the_time_left_is_still_honoured(hostile: ScriptedVault):
    answers = iter([429, 200])

    def throttled_once(handler: Any, body: bytes) -> Reply:
        if next(answers) == 429:
            return 429, {"Retry-After": "1"}, b'{"error": {"code": "Throttled"}}'
        del hostile.scripts["unwrapKey"]
        return hostile.respond(handler, body)

    hostile.scripts["unwrapKey"] = throttled_once
    data_key = os.urandom(32)
    started = time.monotonic()
    with hostile.kek("k", timeout=5.0) as key:
        assert key.unwrap_key(rsa_wrapped(hostile, data_key)) == data_key
    assert time.monotonic() - started >= 1.0


HUGE = 32 * 1024 * 1024


def huge(kind: str) -> Callable[..., Reply]:
    """A reply of 32 MiB that is valid JSON, sent with a Content-Length or chunked."""
    block = b"A" * 65536
    head, tail = b'{"value": "', b'"}'

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range((HUGE - len(head) - len(tail)) // len(block)):
            yield block
        yield tail

    def script(handler: Any, body: bytes) -> Reply:
        headers = {"Content-Type": "application/json"}
        if kind == "content-length":
            headers["Content-Length"] = str(HUGE - (HUGE - len(head) - len(tail)) % len(block))
        return 200, headers, chunks()

    return script


def gzip_bomb() -> Callable[..., Reply]:
    compressed = gzip.compress(b'{"value": "' + b"A" * HUGE + b'"}', compresslevel=9)

    def script(handler: Any, body: bytes) -> Reply:
        return 200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, compressed

    return script


@MODES
@pytest.mark.parametrize("kind", ["content-length", "chunked", "gzip"])
def test_a_huge_reply_is_refused_in_bounded_memory(hostile: ScriptedVault, mode: str, kind: str):
    hostile.scripts["unwrapKey"] = gzip_bomb() if kind == "gzip" else huge(kind)
    wrapped = rsa_wrapped(hostile, os.urandom(32))
    key = hostile.kek("k", retry_total=0)
    gc.collect()
    tracemalloc.start()
    try:
        with pytest.raises(KeyAccessError):
            unwrap(key, mode, wrapped)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A reply is read up to the cap and no further: a few MiB at most, not 32.
    assert peak < 4 * 1024 * 1024
