"""A Key Vault on 127.0.0.1 that a test scripts: real TLS (trustme), the challenge auth the SDK
expects, one RSA key ``k`` and one oct-HSM key ``o`` that behave like the service, and, per
operation, whatever reply the test substitutes (a redirect, a hostile body, a trickle).

``LocalKeyVault`` is a well-behaved vault; this one is the vault an attacker runs, or a
vault behind a compromised front end."""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from envelope.keyvault import KeyVaultKey
from envelope.transport import TLSPolicy
from tests.conftest import FAST, StaticToken
from tests.transport.servers import (
    LOOPBACK,
    Body,
    Certificates,
    Responder,
    RunningServer,
    serve,
    server_context,
)

TOKEN = "token-of-the-scripted-vault"
VERSION = "0123456789abcdef0123456789abcdef"
#: A foreign host name; the ``foreign_names_resolve_to_loopback`` fixture points it at
#: 127.0.0.1 inside the test process, so that nothing ever leaves this machine.
ATTACKER = "attacker.example"

Reply = tuple[int, dict[str, str], Body]
#: What a test puts in place of an operation's reply: called with the request's handler and
#: body, and the reply the vault would have sent.
Script = Callable[[http.server.BaseHTTPRequestHandler, bytes], Reply]

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_PATH = re.compile(r"/keys/(?P<name>[^/?]+)/(?P<version>[0-9a-f]*)(?P<op>/wrapkey|/unwrapkey)?")
_JSON = {"Content-Type": "application/json; charset=utf-8"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_int(value: int) -> str:
    return b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def json_reply(document: Any, status: int = 200) -> Reply:
    return status, dict(_JSON), json.dumps(document).encode()


def rsa_bundle(kid: str, public_key: rsa.RSAPublicKey, **jwk: Any) -> dict[str, Any]:
    numbers = public_key.public_numbers()
    key = {
        "kid": kid,
        "kty": "RSA",
        "key_ops": ["wrapKey", "unwrapKey"],
        "n": b64url_int(numbers.n),
        "e": b64url_int(numbers.e),
        **jwk,
    }
    return {"key": key, "attributes": {"enabled": True}}


class ScriptedVault:
    """The vault's state and its replies; ``scripts[operation]`` replaces one operation's
    reply (``getKey``, ``wrapKey``, ``unwrapKey``) for every request until removed."""

    def __init__(self, certs: Certificates) -> None:
        self.certs = certs
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.oct_key = os.urandom(32)
        self.scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        self.operations: list[str] = []
        self.server: RunningServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url("").rstrip("/")

    def kid(self, name: str) -> str:
        return f"{self.url}/keys/{name}/{VERSION}"

    def kek(self, name: str = "k", **options: Any) -> KeyVaultKey:
        settings = {**FAST, **options}
        policy = TLSPolicy(ca_data=self.certs.ca_pem)
        return KeyVaultKey(
            f"{self.url}/keys/{name}", StaticToken(TOKEN), tls_policy=policy, **settings
        )

    def respond(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> Reply:
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            challenge = (
                'Bearer authorization="https://login.microsoftonline.com/tenant", '
                'resource="https://vault.azure.net"'
            )
            return 401, {"WWW-Authenticate": challenge}, b""
        match = _PATH.match(handler.path)
        if match is None:
            return json_reply({"error": {"code": "BadParameter", "message": "no such path"}}, 400)
        operation = {"/wrapkey": "wrapKey", "/unwrapkey": "unwrapKey"}.get(
            match["op"] or "", "getKey"
        )
        with self._lock:
            self.operations.append(operation)
            script = self.scripts.get(operation)
        if script is not None:
            return script(handler, body)
        return self._serve(operation, match["name"], body)

    def _serve(self, operation: str, name: str, body: bytes) -> Reply:
        kid = self.kid(name)
        if operation == "getKey":
            if name == "o":
                key = {"kid": kid, "kty": "oct-HSM", "key_ops": ["wrapKey", "unwrapKey"]}
                return json_reply({"key": key, "attributes": {"enabled": True}})
            return json_reply(rsa_bundle(kid, self.rsa_key.public_key()))
        request = json.loads(body)
        value = base64.urlsafe_b64decode(request["value"] + "=" * (-len(request["value"]) % 4))
        if operation == "wrapKey":
            return json_reply({"kid": kid, "value": b64url(aes_key_wrap(self.oct_key, value))})
        if name == "o":
            return json_reply({"kid": kid, "value": b64url(aes_key_unwrap(self.oct_key, value))})
        return json_reply({"kid": kid, "value": b64url(self.rsa_key.decrypt(value, OAEP))})


@contextmanager
def scripted_vault(certs: Certificates) -> Iterator[ScriptedVault]:
    vault = ScriptedVault(certs)
    with serve(server_context(certs.good), vault.respond) as server:
        vault.server = server
        yield vault


@contextmanager
def attacker_server(certs: Certificates, responder: Responder) -> Iterator[RunningServer]:
    """A server with a certificate the trusted CA issued for ``ATTACKER``: it passes TLS
    verification, so only the rule "requests go to the configured vault" keeps it out."""
    leaf = certs.ca.issue_cert(ATTACKER)
    with serve(server_context(leaf), responder) as server:
        server.host = ATTACKER
        yield server


def resolve_foreign_names_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ``ATTACKER`` at 127.0.0.1 for this test process (sync and asyncio resolvers both
    end in ``socket.getaddrinfo``)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in (ATTACKER, ATTACKER.encode()):
            host = LOOPBACK
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
