# mypy: allow-untyped-defs, allow-incomplete-defs
"""Every operation of the vault against hostile bodies: wrong types, bad base64url, huge
numbers, deep nesting, random JSON. Each gets a Key Vault error reply (never a 500, never a
dropped connection or a hang), nothing is logged as an unexpected error, and the vault keeps
serving."""

from __future__ import annotations

import json
import logging
import ssl

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run_threads
from tests.testing.kv import API, b64url, raw_exchange

FIELDS = [
    "kty", "key_size", "crv", "public_exponent", "key_ops", "attributes", "tags", "key", "Hsm",
    "alg", "value", "iv", "tag", "aad", "digest", "count", "lifetimeActions", "release_policy",
    "enabled", "nbf", "exp", "exportable", "trigger", "action", "expiryTime", "k", "n", "e",
    "d", "x", "y", "p", "q",
]  # fmt: skip
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["RSA", "EC", "oct-HSM", "P-256", "A256GCM", "RS256", "P30D", "!!", "AA"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=12,
)
BODIES = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6)
FIXED = [
    b"",
    b"null",
    b"[]",
    b'"text"',
    b"{not json",
    b"\xff\xfe\x00",
    b"[" * 50_000 + b"]" * 50_000,
    json.dumps({"value": "A" * 200_000, "alg": "RSA-OAEP"}).encode(),
    json.dumps({"count": 10**400}).encode(),
    json.dumps({"kty": "RSA", "key_size": 10**30}).encode(),
    json.dumps({"attributes": {"nbf": 2**64}}).encode(),
    json.dumps({"alg": "A256GCM", "value": "AAAA", "iv": "!!!!", "tag": "A"}).encode(),
]


@pytest.fixture(scope="module")
def target(vault):
    """The vault's keys of every type, and paths naming each operation."""
    names = {}
    for name, kty, extra in (
        ("fuzz-rsa", "RSA", {}),
        ("fuzz-ec", "EC", {"curve": "P-256"}),
        ("fuzz-aes", "oct-HSM", {}),
    ):
        names[name] = vault.create_key(name, kty, **extra).rsplit("/", 1)[1]
    paths = [("POST", "/rng"), ("POST", "/keys/restore")]
    for name, version in names.items():
        paths += [
            ("POST", f"/keys/{name}/create"),
            ("PUT", f"/keys/{name}"),
            ("PATCH", f"/keys/{name}/{version}"),
            ("PUT", f"/keys/{name}/rotationpolicy"),
            ("POST", f"/keys/{name}/backup"),
            ("POST", f"/keys/{name}/{version}/release"),
        ]
        for operation in ("encrypt", "decrypt", "wrapkey", "unwrapkey", "sign", "verify"):
            paths += [
                ("POST", f"/keys/{name}/{version}/{operation}"),
                ("POST", f"/keys/{name}//{operation}"),
            ]
    return paths


@pytest.fixture(scope="module")
def http(vault):
    with httpx.Client(
        base_url=vault.url,
        verify=ssl.create_default_context(cafile=vault.ca_file),
        headers={
            "Authorization": f"Bearer {vault.issue_token()}",
            "Content-Type": "application/json",
        },
        timeout=30,
    ) as client:
        yield client


def _check(response: httpx.Response, method: str, path: str, body: bytes) -> None:
    where = f"{method} {path} {body[:120]!r}"
    assert response.status_code in (200, 204, 400, 403, 404, 409, 413), where
    if response.status_code >= 400:
        assert set(response.json()["error"]) >= {"code", "message"}, where


def test_fixed_hostile_bodies(http, target, caplog):
    caplog.set_level(logging.ERROR, logger="envelope.testing")
    for method, path in target:
        for body in FIXED:
            response = http.request(method, f"{path}?{API}", content=body)
            _check(response, method, path, body)
    assert caplog.records == []


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(choice=st.integers(min_value=0), body=BODIES)
def test_random_json_bodies(http, target, caplog, choice, body):
    caplog.set_level(logging.ERROR, logger="envelope.testing")
    method, path = target[choice % len(target)]
    raw = json.dumps(body).encode()
    # Creating big RSA keys is what a valid request costs; keep the random ones small.
    if body.get("kty") in ("RSA", "RSA-HSM") and body.get("key_size") not in (None, 2048):
        raw = json.dumps({**body, "key_size": 1}).encode()
    response = http.request(method, f"{path}?{API}", content=raw)
    _check(response, method, path, raw)
    assert caplog.records == []


def test_base64url_is_strict(vault, http):
    """Characters outside base64url are an error, not silently dropped."""
    # A key of its own: the random bodies above may PATCH the fuzz keys' operations.
    vault.create_key("base64url-aes", "oct-HSM")
    for value in ("AA!A", "A A=", "AAAA====A", "\u00e9\u00e9\u00e9\u00e9", "A"):
        response = http.post(
            f"/keys/base64url-aes//wrapkey?{API}", json={"alg": "A256KW", "value": value}
        )
        assert response.status_code == 400, value
        assert "base64url" in response.json()["error"]["message"]
    good = http.post(
        f"/keys/base64url-aes//wrapkey?{API}",
        json={"alg": "A256KW", "value": b64url(bytes(32))},
    )
    assert good.status_code == 200


def test_bad_content_lengths(vault):
    token = vault.issue_token()
    for length in ("-1", "1e3", "\u0661".encode().decode("latin-1"), "9" * 5000, "1, 1"):
        request = (
            f"POST /rng?{API} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n{{}}"
        )
        reply = raw_exchange(vault, request.encode("latin-1"))
        assert reply.split(b" ", 2)[1] in (b"400", b"413"), length
        assert b'"code"' in reply


def test_three_hundred_concurrent_connections(vault):
    """Each thread its own TLS connection; every one is served (listen backlog, one thread
    per connection, one write per response)."""
    token = vault.issue_token()

    def work(n: int) -> int:
        # A context per thread: httpcore sets the ALPN list of the context it is given at
        # every connect, and one shared by 300 threads can send a ClientHello built while
        # another thread rewrites that list (seen once as the server's decode_error alert).
        context = ssl.create_default_context(cafile=vault.ca_file)
        with httpx.Client(verify=context, timeout=60) as client:
            response = client.post(
                f"{vault.url}/rng?{API}",
                json={"count": 16},
                headers={"Authorization": f"Bearer {token}"},
            )
            return response.status_code

    results, errors = run_threads(300, work)
    assert errors == []
    assert results == [200] * 300
