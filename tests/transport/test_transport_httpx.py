"""The secure httpx clients against real TLS servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.server
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

import envelope
from envelope.transport import (
    InsecureRequestError,
    TLSPolicy,
    create_ssl_context,
    is_secure_client,
    secure_async_client,
    secure_client,
)
from envelope.transport._httpx import _HandshakeCheck
from tests.conftest import run_threads
from tests.transport.servers import (
    Certificates,
    Responder,
    RunningServer,
    connect_proxy,
    pem_server_context,
    self_signed_pem,
    serve,
    server_context,
    silent_listener,
    weak_rsa_leaf,
)

TIMEOUT = httpx.Timeout(5.0)


@pytest.fixture
def tls13_server(certs: Certificates) -> Iterator[RunningServer]:
    with serve(server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)) as server:
        yield server


def get(policy: TLSPolicy, url: str, mode: str, **request_kwargs: Any) -> httpx.Response:
    """One GET through a fresh secure client, sync or async; the body is read."""
    if mode == "sync":
        with secure_client(policy, timeout=TIMEOUT) as client:
            return client.get(url, **request_kwargs)

    async def run() -> httpx.Response:
        async with secure_async_client(policy, timeout=TIMEOUT) as client:
            return await client.get(url, **request_kwargs)

    return asyncio.run(run())


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


# --- what passes ---------------------------------------------------------------------------


@MODES
def test_good_tls13_server_passes(
    tls13_server: RunningServer, policy: TLSPolicy, mode: str
) -> None:
    response = get(policy, tls13_server.url("/hello"), mode)
    assert response.status_code == 200
    assert response.text == "hello over tls"
    assert tls13_server.recorded.requests[0][:2] == ("GET", "/hello")


def test_tls12_server_with_ecdhe_aead_passes_the_default_policy(
    certs: Certificates, policy: TLSPolicy
) -> None:
    context = server_context(certs.good, maximum=ssl.TLSVersion.TLSv1_2)
    with serve(context) as server, secure_client(policy, timeout=TIMEOUT) as client:
        response = client.get(server.url())
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.2"
        assert ssl_object.cipher()[0].startswith("ECDHE-")
    assert response.status_code == 200


@MODES
def test_right_pin_passes_and_a_backup_pin_may_sit_beside_it(
    certs: Certificates, tls13_server: RunningServer, mode: str
) -> None:
    pins = (certs.pin(certs.other_ca), certs.pin(certs.good))
    response = get(TLSPolicy(ca_data=certs.ca_pem, pins=pins), tls13_server.url(), mode)
    assert response.status_code == 200


def test_localhost_name_verifies_too(tls13_server: RunningServer, policy: TLSPolicy) -> None:
    response = get(policy, tls13_server.url(host="localhost"), "sync")
    assert response.status_code == 200


# --- what is refused during or after the handshake -----------------------------------------


def _assert_refused(
    excinfo: pytest.ExceptionInfo[BaseException], reason: str, server: RunningServer
) -> None:
    error = excinfo.value
    assert isinstance(error, envelope.InsecureTransportError)
    assert isinstance(error, httpx.TransportError)
    assert error.reason == reason
    # Not a request line, not a header: the server received nothing at all. Callers assert
    # this after the server has stopped and joined its workers.
    assert server.recorded.requests == []
    assert server.recorded.all_bytes == b""


@MODES
@pytest.mark.parametrize(
    "leaf_name",
    ["other_ca", "expired", "wrong_host"],
)
def test_bad_certificates_are_refused(
    certs: Certificates, policy: TLSPolicy, mode: str, leaf_name: str
) -> None:
    leaf = getattr(certs, leaf_name)
    with serve(server_context(leaf)) as server, pytest.raises(InsecureRequestError) as excinfo:
        get(policy, server.url(), mode)
    _assert_refused(excinfo, "certificate", server)


@MODES
def test_self_signed_certificate_is_refused(tmp_path: Path, policy: TLSPolicy, mode: str) -> None:
    cert_pem, key_pem = self_signed_pem(host="127.0.0.1")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    with serve(context) as server, pytest.raises(InsecureRequestError) as excinfo:
        get(policy, server.url(), mode)
    _assert_refused(excinfo, "certificate", server)
    assert "self-signed" in str(excinfo.value)


def test_default_policy_trusts_certifi_not_a_private_ca(certs: Certificates) -> None:
    with (
        serve(server_context(certs.good)) as server,
        pytest.raises(InsecureRequestError) as excinfo,
    ):
        get(TLSPolicy(), server.url(), "sync")
    _assert_refused(excinfo, "certificate", server)


@MODES
def test_tls12_only_server_is_refused_by_a_tls13_policy(certs: Certificates, mode: str) -> None:
    policy = TLSPolicy(ca_data=certs.ca_pem, minimum_version=ssl.TLSVersion.TLSv1_3)
    with (
        serve(server_context(certs.good, maximum=ssl.TLSVersion.TLSv1_2)) as server,
        pytest.raises(InsecureRequestError) as excinfo,
    ):
        get(policy, server.url(), mode)
    _assert_refused(excinfo, "protocol", server)


@MODES
@pytest.mark.parametrize(
    "ciphers",
    [
        pytest.param("ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384", id="ecdhe-cbc"),
        pytest.param("AES128-GCM-SHA256:AES256-GCM-SHA384", id="rsa-kx-aead"),
        pytest.param("AES128-SHA:AES256-SHA256", id="rsa-kx-cbc"),
    ],
)
def test_tls12_server_with_only_weak_suites_is_refused(
    certs: Certificates, policy: TLSPolicy, mode: str, ciphers: str
) -> None:
    context = server_context(certs.good_rsa, maximum=ssl.TLSVersion.TLSv1_2, ciphers=ciphers)
    with serve(context) as server, pytest.raises(InsecureRequestError) as excinfo:
        get(policy, server.url(), mode)
    _assert_refused(excinfo, "cipher", server)


@MODES
def test_pin_mismatch_is_refused_before_a_single_request_byte(
    certs: Certificates, mode: str
) -> None:
    # A certificate the CA really issued for the right name: only the pin tells it apart.
    policy = TLSPolicy(ca_data=certs.ca_pem, pins=(certs.pin(certs.other_ca),))
    with (
        serve(server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)) as server,
        pytest.raises(InsecureRequestError) as excinfo,
    ):
        get(policy, server.url(), mode, headers={"Authorization": "Bearer secret-token"})
    # Asserted after the server joined its threads, so nothing can still be in flight.
    _assert_refused(excinfo, "pin", server)
    assert server.recorded.raw == [b""]  # the handshake completed; then nothing came


# --- what is refused before any socket opens -----------------------------------------------


@MODES
def test_plain_http_is_refused_before_connecting(policy: TLSPolicy, mode: str) -> None:
    with silent_listener() as (port, connected):
        with pytest.raises(InsecureRequestError) as excinfo:
            get(policy, f"http://127.0.0.1:{port}/", mode)
        assert not connected()
    assert excinfo.value.reason == "plaintext"


def _redirect_to(location: str) -> Responder:
    def responder(
        handler: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        return 302, {"Location": location}, b""

    return responder


@MODES
def test_redirect_off_https_is_refused(certs: Certificates, policy: TLSPolicy, mode: str) -> None:
    with silent_listener() as (port, connected):
        responder = _redirect_to(f"http://127.0.0.1:{port}/landing")
        with (
            serve(server_context(certs.good), responder) as server,
            pytest.raises(InsecureRequestError) as excinfo,
        ):
            get(policy, server.url("/start"), mode, follow_redirects=True)
        assert not connected()
    assert excinfo.value.reason == "redirect"
    assert [request[1] for request in server.recorded.requests] == ["/start"]


def test_redirect_not_followed_is_returned_as_httpx_returns_it(
    certs: Certificates, policy: TLSPolicy
) -> None:
    responder = _redirect_to("http://127.0.0.1:9/landing")
    with serve(server_context(certs.good), responder) as server:
        response = get(policy, server.url("/start"), "sync")
    assert response.status_code == 302
    assert response.next_request is not None


def test_redirect_within_https_is_followed(certs: Certificates, policy: TLSPolicy) -> None:
    def responder(
        handler: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if handler.path == "/start":
            return 302, {"Location": "/landing"}, b""
        return 200, {}, b"landed"

    with serve(server_context(certs.good), responder) as server:
        response = get(policy, server.url("/start"), "sync", follow_redirects=True)
    assert response.text == "landed"
    assert len(response.history) == 1


# --- what is refused at construction -------------------------------------------------------


def test_verify_false_is_refused(policy: TLSPolicy) -> None:
    with pytest.raises(envelope.InsecureTransportError) as excinfo:
        secure_client(policy, verify=False)
    assert excinfo.value.reason == "verification-disabled"
    with pytest.raises(envelope.InsecureTransportError):
        secure_async_client(policy, verify=False)


def _unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _tls12_floor() -> ssl.SSLContext:
    return create_ssl_context(TLSPolicy(minimum_version=ssl.TLSVersion.TLSv1_2))


@pytest.mark.parametrize(
    ("make_context", "minimum", "reason"),
    [
        (_unverified, ssl.TLSVersion.TLSv1_2, "verification-disabled"),
        (ssl.create_default_context, ssl.TLSVersion.TLSv1_2, "cipher"),
        (_tls12_floor, ssl.TLSVersion.TLSv1_3, "protocol"),
    ],
)
def test_weaker_ssl_context_is_refused(
    make_context: Callable[[], ssl.SSLContext], minimum: ssl.TLSVersion, reason: str
) -> None:
    with pytest.raises(envelope.InsecureTransportError) as excinfo:
        secure_client(TLSPolicy(minimum_version=minimum), verify=make_context())
    assert excinfo.value.reason == reason


def test_a_context_as_strict_as_the_policy_is_accepted(
    tls13_server: RunningServer, policy: TLSPolicy
) -> None:
    with secure_client(policy, verify=create_ssl_context(policy), timeout=TIMEOUT) as client:
        assert client.get(tls13_server.url()).status_code == 200


# --- a caller's context changed after construction ----------------------------------------


def _switch_verification_off(context: ssl.SSLContext) -> None:
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE


def _weaken_then_get(
    policy: TLSPolicy,
    context: ssl.SSLContext,
    weaken: Callable[[ssl.SSLContext], None],
    server: RunningServer,
    mode: str,
) -> pytest.ExceptionInfo[InsecureRequestError]:
    """Build a client on ``context``, weaken the context, then send a token to ``server``:
    the refusal, which must come."""
    headers = {"Authorization": "Bearer secret-token"}
    if mode == "sync":
        with secure_client(policy, verify=context, timeout=TIMEOUT) as client:
            assert is_secure_client(client)
            weaken(context)
            assert not is_secure_client(client)
            with pytest.raises(InsecureRequestError) as excinfo:
                client.get(server.url("/secret"), headers=headers)
        return excinfo

    async def run() -> pytest.ExceptionInfo[InsecureRequestError]:
        async with secure_async_client(policy, verify=context, timeout=TIMEOUT) as c:
            assert is_secure_client(c)
            weaken(context)
            assert not is_secure_client(c)
            with pytest.raises(InsecureRequestError) as info:
                await c.get(server.url("/secret"), headers=headers)
            return info

    return asyncio.run(run())


@MODES
def test_a_context_weakened_after_construction_is_refused_before_a_request_byte(
    certs: Certificates, policy: TLSPolicy, mode: str
) -> None:
    # The context passes at construction; then the caller (or a library "fixing" a
    # certificate error) switches verification off. A server with a certificate from a
    # CA nobody trusts must still not see the request, let alone the token.
    context = create_ssl_context(policy)
    with serve(server_context(certs.other_ca)) as server:
        excinfo = _weaken_then_get(policy, context, _switch_verification_off, server, mode)
    _assert_refused(excinfo, "verification-disabled", server)
    assert server.recorded.raw == [b""]  # one connection, refused before its handshake


@MODES
def test_a_context_weakened_after_a_verified_request_refuses_the_next_connection(
    certs: Certificates, policy: TLSPolicy, mode: str
) -> None:
    context = create_ssl_context(policy)
    good = server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)
    with serve(good) as trusted, serve(server_context(certs.other_ca)) as impostor:
        if mode == "sync":
            with secure_client(policy, verify=context, timeout=TIMEOUT) as client:
                assert client.get(trusted.url("/first")).status_code == 200
                _switch_verification_off(context)
                with pytest.raises(InsecureRequestError) as excinfo:
                    client.get(impostor.url("/second"))
        else:

            async def run() -> pytest.ExceptionInfo[InsecureRequestError]:
                async with secure_async_client(policy, verify=context, timeout=TIMEOUT) as c:
                    assert (await c.get(trusted.url("/first"))).status_code == 200
                    _switch_verification_off(context)
                    with pytest.raises(InsecureRequestError) as info:
                        await c.get(impostor.url("/second"))
                    return info

            excinfo = asyncio.run(run())
    _assert_refused(excinfo, "verification-disabled", impostor)
    assert [request[1] for request in trusted.recorded.requests] == ["/first"]


# --- a context weakened in a property other than verify_mode ------------------------------

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: certificates are not checked for expiry.
NO_CHECK_TIME = 0x200000


def _skip_expiry_check(context: ssl.SSLContext) -> None:
    context.verify_flags = ssl.VerifyFlags(int(context.verify_flags) | NO_CHECK_TIME)


def _security_level_zero(context: ssl.SSLContext) -> None:
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:@SECLEVEL=0")


def _not_strict(context: ssl.SSLContext) -> None:
    context.verify_flags = ssl.VerifyFlags(int(context.verify_flags) & ~ssl.VERIFY_X509_STRICT)


def _common_name_fallback(context: ssl.SSLContext) -> None:
    context.hostname_checks_common_name = True


def _renegotiation(context: ssl.SSLContext) -> None:
    context.options = ssl.Options(int(context.options) & ~ssl.OP_NO_RENEGOTIATION)


@pytest.fixture
def weak_key_server(certs: Certificates, tmp_path: Path) -> Iterator[RunningServer]:
    """A server whose certificate the CA really issued for 127.0.0.1, on a 1024-bit RSA key."""
    cert_pem, key_pem = weak_rsa_leaf(certs.ca)
    with serve(pem_server_context(tmp_path, cert_pem, key_pem, security_level=0)) as server:
        yield server


@pytest.fixture
def expired_server(certs: Certificates) -> Iterator[RunningServer]:
    with serve(server_context(certs.expired)) as server:
        yield server


SECRET = {"Authorization": "Bearer secret-token"}

WEAKENED = [
    pytest.param(_skip_expiry_check, "expired_server", "verification-disabled", id="no-check-time"),
    pytest.param(_security_level_zero, "weak_key_server", "cipher", id="seclevel-0"),
    pytest.param(_not_strict, "tls13_server", "verification-disabled", id="not-strict"),
    pytest.param(_common_name_fallback, "tls13_server", "verification-disabled", id="cn-fallback"),
    pytest.param(_renegotiation, "tls13_server", "protocol", id="renegotiation"),
]


@pytest.mark.parametrize(("weaken", "server_name", "reason"), WEAKENED)
def test_a_weakened_context_is_refused_at_construction(
    policy: TLSPolicy, weaken: Callable[[ssl.SSLContext], None], server_name: str, reason: str
) -> None:
    context = create_ssl_context(policy)
    weaken(context)
    with pytest.raises(envelope.InsecureTransportError) as excinfo:
        secure_client(policy, verify=context)
    assert excinfo.value.reason == reason
    with pytest.raises(envelope.InsecureTransportError):
        secure_async_client(policy, verify=context)


@MODES
@pytest.mark.parametrize(("weaken", "server_name", "reason"), WEAKENED)
def test_a_context_weakened_after_construction_sends_no_byte_to_the_server_it_would_admit(
    request: pytest.FixtureRequest,
    policy: TLSPolicy,
    mode: str,
    weaken: Callable[[ssl.SSLContext], None],
    server_name: str,
    reason: str,
) -> None:
    # The expired server and the 1024-bit key are admitted by a context so weakened and by
    # nothing else; the other weakenings are refused before any server is judged. The token
    # must reach none of them.
    server: RunningServer = request.getfixturevalue(server_name)
    excinfo = _weaken_then_get(policy, create_ssl_context(policy), weaken, server, mode)
    assert excinfo.value.reason == reason
    assert server.recorded.requests == []
    assert b"secret-token" not in server.recorded.all_bytes


def test_the_policy_refuses_a_server_key_of_1024_bits(
    policy: TLSPolicy, weak_key_server: RunningServer
) -> None:
    with pytest.raises(InsecureRequestError) as excinfo:
        get(policy, weak_key_server.url("/secret"), "sync", headers=SECRET)
    assert excinfo.value.reason == "certificate"
    assert weak_key_server.recorded.requests == []


# --- a context toggled while handshakes run -----------------------------------------------

RACE_HANDSHAKES = 1000


class _Toggler:
    """Switches verification of ``context`` off and on again, about every millisecond, in a
    thread of its own: the weakening is undone before most handshakes finish."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._stop = threading.Event()
        self.toggles = 0
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        context = self._context
        while not self._stop.is_set():
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            time.sleep(0.001)
            context.verify_mode = ssl.CERT_REQUIRED
            context.check_hostname = True
            time.sleep(0.001)
            self.toggles += 1

    def __enter__(self) -> _Toggler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _refusals(outcomes: list[object]) -> tuple[int, list[object]]:
    refused = [o for o in outcomes if isinstance(o, InsecureRequestError)]
    return len(refused), [o for o in outcomes if not isinstance(o, InsecureRequestError)]


@contextmanager
def _impostor(tmp_path: Path) -> Iterator[RunningServer]:
    """A self-signed certificate for 127.0.0.1: nothing trusts it."""
    cert_pem, key_pem = self_signed_pem(host="127.0.0.1")
    context = pem_server_context(tmp_path, cert_pem, key_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with serve(context) as server:
        yield server


@pytest.mark.slow
@MODES
def test_a_context_toggled_by_another_thread_admits_no_impostor_in_1000_handshakes(
    policy: TLSPolicy, tmp_path: Path, mode: str
) -> None:
    context = create_ssl_context(policy)
    # A connection admitted by mistake is never reused: each attempt is a new handshake.
    headers = {**SECRET, "Connection": "close"}
    outcomes: list[object] = []
    with _impostor(tmp_path) as impostor:
        url = impostor.url("/secret")
        if mode == "sync":
            client = secure_client(policy, verify=context, timeout=TIMEOUT)
            with client, _Toggler(context):
                for _ in range(RACE_HANDSHAKES):
                    try:
                        outcomes.append(client.get(url, headers=headers))
                    except InsecureRequestError as exc:
                        outcomes.append(exc)
        else:

            async def run() -> None:
                async with secure_async_client(policy, verify=context, timeout=TIMEOUT) as client:
                    with _Toggler(context):
                        for _ in range(RACE_HANDSHAKES):
                            try:
                                outcomes.append(await client.get(url, headers=headers))
                            except InsecureRequestError as exc:
                                outcomes.append(exc)

            asyncio.run(run())
    refused, admitted = _refusals(outcomes)
    assert (refused, admitted) == (RACE_HANDSHAKES, [])
    # Counted after the server joined its workers: the client may drop a refused handshake
    # before the server's side of it has finished and been recorded.
    assert impostor.recorded.requests == []
    assert b"secret-token" not in impostor.recorded.all_bytes
    # Every attempt reached the impostor: each one was a handshake that had to be refused.
    assert len(impostor.recorded.raw) == RACE_HANDSHAKES


# --- what the private copy of a caller's context keeps ------------------------------------


def test_a_callers_stricter_version_floor_is_kept_by_the_private_copy(
    certs: Certificates, policy: TLSPolicy
) -> None:
    # The policy allows TLS 1.2; the caller's context asks for 1.3 and must get it.
    context = create_ssl_context(policy)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    tls12_only = server_context(certs.good, maximum=ssl.TLSVersion.TLSv1_2)
    with (
        serve(tls12_only) as server,
        secure_client(policy, verify=context, timeout=TIMEOUT) as client,
        pytest.raises(InsecureRequestError) as excinfo,
    ):
        client.get(server.url())
    _assert_refused(excinfo, "protocol", server)


def test_the_callers_trust_anchors_are_the_ones_the_private_copy_trusts(
    certs: Certificates, policy: TLSPolicy, tls13_server: RunningServer
) -> None:
    # The caller's context trusts another CA only: the policy's CA does not sneak back in.
    other = TLSPolicy(ca_data=trustme.CA().cert_pem.bytes())
    with (
        secure_client(policy, verify=create_ssl_context(other), timeout=TIMEOUT) as client,
        pytest.raises(InsecureRequestError) as excinfo,
    ):
        client.get(tls13_server.url())
    assert excinfo.value.reason == "certificate"


def test_a_context_whose_anchors_cannot_be_read_is_refused_with_a_way_out(
    policy: TLSPolicy,
) -> None:
    context = create_ssl_context(policy)
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.verify_flags = context.verify_flags
    bare.hostname_checks_common_name = False
    bare.options = context.options
    bare.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL")
    with pytest.raises(ValueError, match="ca_file"):
        secure_client(policy, verify=bare)


@MODES
def test_a_client_certificate_is_presented_when_given_as_cert(
    certs: Certificates, policy: TLSPolicy, tmp_path: Path, mode: str
) -> None:
    client_leaf = certs.ca.issue_cert("client.example")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    client_leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    client_leaf.private_key_pem.write_to_path(str(key_file))
    mutual = server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)
    mutual.verify_mode = ssl.CERT_REQUIRED
    certs.ca.configure_trust(mutual)
    seen: list[object] = []

    def responder(
        handler: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        seen.append(handler.connection.getpeercert())
        return 200, {}, b"mutual"

    cert = (str(cert_file), str(key_file))
    with serve(mutual, responder) as server:
        if mode == "sync":
            with secure_client(policy, cert=cert, timeout=TIMEOUT) as client:
                assert client.get(server.url()).text == "mutual"
        else:

            async def run() -> None:
                async with secure_async_client(policy, cert=cert, timeout=TIMEOUT) as c:
                    assert (await c.get(server.url())).text == "mutual"

            asyncio.run(run())
        # Without it, the server refuses the handshake.
        with secure_client(policy, timeout=TIMEOUT) as client, pytest.raises(httpx.HTTPError):
            client.get(server.url())
    assert len(seen) == 1  # the request without a client certificate never got this far
    assert seen[0]["subjectAltName"] == (("DNS", "client.example"),)  # type: ignore[index]


class _Stream:
    def __init__(self, ssl_object: object) -> None:
        self._ssl_object = ssl_object

    def get_extra_info(self, info: str) -> object:
        return self._ssl_object if info == "ssl_object" else None


class _UnverifiedSSLObject:
    """What an ``ssl.SSLObject`` reports when the peer certificate was not verified."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.server_hostname = "127.0.0.1"

    def getpeercert(self, binary_form: bool = False) -> dict[str, object]:
        return {}


def test_the_handshake_check_fails_closed(policy: TLSPolicy) -> None:
    context = create_ssl_context(policy)
    check = _HandshakeCheck(policy, context)
    # A stream that cannot show its TLS state is refused, not waved through.
    refused = check.problem(_Stream(None))
    assert refused is not None
    assert refused[0] == "verification-disabled"
    # A peer certificate that was not verified (getpeercert() == {}) is refused.
    refused = check.problem(_Stream(_UnverifiedSSLObject(context)))
    assert refused is not None
    assert refused[0] == "certificate"


@pytest.mark.parametrize("name", ["transport", "mounts"])
def test_transports_that_would_bypass_the_policy_are_refused(policy: TLSPolicy, name: str) -> None:
    with httpx.HTTPTransport() as transport:
        value = transport if name == "transport" else {"all://": transport}
        with pytest.raises(TypeError, match="bypass"):
            secure_client(policy, **{name: value})


def test_a_ca_path_as_verify_is_pointed_to_the_policy(policy: TLSPolicy) -> None:
    with pytest.raises(TypeError, match="ca_file"):
        secure_client(policy, verify="/etc/ssl/certs/ca-certificates.crt")


# --- everything else about httpx keeps working ---------------------------------------------


def test_event_hooks_and_trace_extension_still_run(
    tls13_server: RunningServer, policy: TLSPolicy
) -> None:
    seen: list[str] = []
    events: list[str] = []
    hooks = {
        "request": [lambda request: seen.append(f"request {request.url.path}")],
        "response": [lambda response: seen.append(f"response {response.status_code}")],
    }
    with secure_client(policy, event_hooks=hooks, timeout=TIMEOUT) as client:
        client.get(tls13_server.url("/x"), extensions={"trace": lambda e, i: events.append(e)})
    assert seen == ["request /x", "response 200"]
    assert "connection.start_tls.complete" in events


def test_connect_timeout_is_an_httpx_timeout_not_a_refusal(policy: TLSPolicy) -> None:
    # A listener that never answers the ClientHello.
    with (
        silent_listener() as (port, _),
        secure_client(policy, timeout=0.2) as client,
        pytest.raises(httpx.ConnectTimeout) as excinfo,
    ):
        client.get(f"https://127.0.0.1:{port}/")
    assert not isinstance(excinfo.value, envelope.InsecureTransportError)


def test_connection_refused_stays_a_connect_error(policy: TLSPolicy) -> None:
    with silent_listener() as (port, _):
        pass  # closed: nothing listens on the port any more
    with (
        secure_client(policy, timeout=TIMEOUT) as client,
        pytest.raises(httpx.ConnectError) as excinfo,
    ):
        client.get(f"https://127.0.0.1:{port}/")
    assert not isinstance(excinfo.value, envelope.InsecureTransportError)


@MODES
def test_https_through_a_connect_proxy_keeps_tls_and_pins_end_to_end(
    certs: Certificates, tls13_server: RunningServer, mode: str
) -> None:
    with connect_proxy() as (proxy_url, connects):
        pinned = TLSPolicy(ca_data=certs.ca_pem, pins=(certs.pin(certs.good),))
        if mode == "sync":
            with secure_client(pinned, proxy=proxy_url, timeout=TIMEOUT) as client:
                assert client.get(tls13_server.url("/via-proxy")).status_code == 200
        else:

            async def run() -> None:
                async with secure_async_client(pinned, proxy=proxy_url, timeout=TIMEOUT) as c:
                    assert (await c.get(tls13_server.url("/via-proxy"))).status_code == 200

            asyncio.run(run())
        wrong = TLSPolicy(ca_data=certs.ca_pem, pins=(certs.pin(certs.other_ca),))
        with (
            secure_client(wrong, proxy=proxy_url, timeout=TIMEOUT) as client,
            pytest.raises(InsecureRequestError) as excinfo,
        ):
            client.get(tls13_server.url("/never"))
    assert excinfo.value.reason == "pin"
    assert connects == [f"CONNECT 127.0.0.1:{tls13_server.port} HTTP/1.1"] * 2
    assert [request[1] for request in tls13_server.recorded.requests] == ["/via-proxy"]


def test_http2_is_negotiated_when_h2_is_installed(
    tls13_server: RunningServer, policy: TLSPolicy
) -> None:
    pytest.importorskip("h2")
    with secure_client(policy, http2=True, timeout=TIMEOUT) as client:
        response = client.get(tls13_server.url())
    # The loopback server speaks HTTP/1.1 only: ALPN falls back and the request succeeds.
    assert response.http_version == "HTTP/1.1"


@pytest.mark.asyncio
async def test_async_client_reuses_its_checked_connection(
    certs: Certificates, policy: TLSPolicy
) -> None:
    with serve(server_context(certs.good, minimum=ssl.TLSVersion.TLSv1_3)) as server:
        async with secure_async_client(policy, timeout=TIMEOUT) as client:
            first = await client.get(server.url("/1"))
            second = await client.get(server.url("/2"))
    assert (first.status_code, second.status_code) == (200, 200)
    # Counted after the server joined its workers: one connection, one handshake check.
    assert len(server.recorded.raw) == 1


def test_concurrent_connections_of_one_client_leave_its_alpn_list_alone(
    tls13_server: RunningServer, policy: TLSPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpcore sets the ALPN list of a client's context before every connection; OpenSSL
    copies that list, without the GIL, into each new connection, so a rewrite racing another
    thread's connect could garble a ClientHello. A secure client's context is given the list
    once, when the client is made; the repeats of every later connection change nothing."""
    rewrites: list[list[str]] = []
    original = ssl.SSLContext.set_alpn_protocols

    def counting(self: ssl.SSLContext, protocols: Any) -> None:
        rewrites.append(list(protocols))
        original(self, protocols)

    monkeypatch.setattr(ssl.SSLContext, "set_alpn_protocols", counting)
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    with secure_client(policy, timeout=TIMEOUT, limits=no_reuse) as client:
        assert rewrites == [["http/1.1"]]  # when the client was made

        def work(n: int) -> list[int]:
            return [client.get(tls13_server.url()).status_code for _ in range(6)]

        results, errors = run_threads(16, work)
    assert errors == []
    assert results == [[200] * 6] * 16
    assert rewrites == [["http/1.1"]]  # 96 new connections, no rewrite
