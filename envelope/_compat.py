"""Every private name of another library that envelope relies on, and a check of each.

httpx, httpcore, azure-core, urllib3 and the standard library's ``http.client`` have no
public way to do a few things envelope needs: wrap the transports an httpx client built for
itself, subclass azure-core's response implementation, see the proxy or tunnel target behind
a connection. Those uses live here and nowhere else, so an upgrade that renames or reshapes
one of them breaks in this module only, and :func:`private_use_problems` (run by
``tests/test_compat.py``) says which library, which installed version and which name broke.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import httpx
from azure.core.rest import AsyncHttpResponse, HttpRequest, HttpResponse
from azure.core.utils import CaseInsensitiveDict

try:
    from azure.core.rest._http_response_impl import HttpResponseImpl
    from azure.core.rest._http_response_impl_async import AsyncHttpResponseImpl
except ImportError as exc:
    raise ImportError(
        f"azure-core {importlib.metadata.version('azure-core')}: {exc.name} is gone; envelope's "
        "azure-core transports subclass HttpResponseImpl and AsyncHttpResponseImpl from it"
    ) from exc

__all__ = [
    "PRIVATE_USES",
    "AsyncHttpResponseImpl",
    "HttpResponseImpl",
    "PrivateUse",
    "http_connection_tunnel_host",
    "httpcore_pool_proxy_url",
    "httpx_client_mounted_transports",
    "httpx_client_transport",
    "httpx_transport_network_backend",
    "mark_azure_response_closed",
    "private_use_problems",
    "wrap_httpx_client_transports",
]


# -- httpx: the transports a client routes its requests through ----------------------------


@overload
def httpx_client_transport(client: httpx.Client) -> httpx.BaseTransport: ...
@overload
def httpx_client_transport(client: httpx.AsyncClient) -> httpx.AsyncBaseTransport: ...
def httpx_client_transport(
    client: httpx.Client | httpx.AsyncClient,
) -> httpx.BaseTransport | httpx.AsyncBaseTransport:
    """The transport of every URL no mount matches (``Client._transport``)."""
    return client._transport


@overload
def httpx_client_mounted_transports(
    client: httpx.Client,
) -> Sequence[httpx.BaseTransport | None]: ...
@overload
def httpx_client_mounted_transports(
    client: httpx.AsyncClient,
) -> Sequence[httpx.AsyncBaseTransport | None]: ...
def httpx_client_mounted_transports(
    client: httpx.Client | httpx.AsyncClient,
) -> Sequence[httpx.BaseTransport | httpx.AsyncBaseTransport | None]:
    """The transports mounted on URL patterns, proxies included (``Client._mounts``); None
    means "no proxy here": the default transport serves that pattern."""
    return list(client._mounts.values())


@overload
def wrap_httpx_client_transports(
    client: httpx.Client, wrap: Callable[[httpx.BaseTransport], httpx.BaseTransport]
) -> None: ...
@overload
def wrap_httpx_client_transports(
    client: httpx.AsyncClient, wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]
) -> None: ...
def wrap_httpx_client_transports(
    client: httpx.Client | httpx.AsyncClient, wrap: Callable[[Any], Any]
) -> None:
    """Replace the default transport and every mounted one by ``wrap(transport)``, in place;
    a None mount stays None."""
    client._transport = wrap(client._transport)
    client._mounts = {
        pattern: None if transport is None else wrap(transport)
        for pattern, transport in client._mounts.items()
    }


def httpx_transport_network_backend(
    transport: httpx.HTTPTransport | httpx.AsyncHTTPTransport, backend: Any
) -> None:
    """Make ``transport``'s connection pool open its connections through ``backend`` (an
    httpcore ``NetworkBackend``): ``transport._pool._network_backend``. httpx builds the
    pool itself and takes no backend."""
    transport._pool._network_backend = backend


# -- azure-core: the response an azure-core transport returns ------------------------------


def mark_azure_response_closed(response: HttpResponseImpl | AsyncHttpResponseImpl) -> None:
    """Make ``response.is_closed`` true without calling the base class's ``close()``."""
    response._is_closed = True


# -- httpcore, http.client, urllib3: where a connection really goes -------------------------


def httpcore_pool_proxy_url(pool: object) -> Any | None:
    """The ``httpcore.URL`` of the proxy an httpcore proxy pool (HTTP or SOCKS) sends
    through; None for a pool that connects directly."""
    return getattr(pool, "_proxy_url", None)


def http_connection_tunnel_host(connection: object) -> str | None:
    """The target host of a ``set_tunnel()`` on an ``http.client`` or urllib3 connection;
    None when the connection is not a tunnel."""
    host: str | None = getattr(connection, "_tunnel_host", None)
    return host


# -- the check ------------------------------------------------------------------------------


class _Broken(Exception):
    """A private name that exists but no longer behaves as envelope relies on."""


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise _Broken(problem)


def _installed_version(library: str) -> str:
    if library == "Python":
        return platform.python_version()
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


@dataclass(frozen=True)
class PrivateUse:
    """One private name of ``library`` (its distribution name, or ``"Python"`` for the
    standard library) and a ``check`` that raises unless it still works as relied on."""

    library: str
    name: str
    check: Callable[[], None]

    def problem(self) -> str | None:
        """None while the name works; otherwise what broke, naming library, version and name."""
        try:
            self.check()
        # A renamed or reshaped private name can fail in any way at all.
        except Exception as exc:
            detail = str(exc) if isinstance(exc, _Broken) else f"{type(exc).__name__}: {exc}"
            version = _installed_version(self.library)
            return f"{self.library} {version} broke {self.name}: {detail}"
        return None


def _check_client_attributes(
    client_type: type[httpx.Client] | type[httpx.AsyncClient], transport_type: type
) -> None:
    # A proxy is what makes httpx mount a transport, and the one mount secure clients must wrap.
    # The client opens nothing until a request, so it is left unclosed (aclose needs a loop).
    client = client_type(proxy="http://proxy.invalid:8080")
    default = httpx_client_transport(client)
    _expect(
        isinstance(default, transport_type),
        f"_transport is a {type(default).__name__}, not an {transport_type.__name__}",
    )
    _expect(isinstance(client._mounts, dict), f"_mounts is a {type(client._mounts).__name__}")
    mounted = httpx_client_mounted_transports(client)
    _expect(
        any(isinstance(transport, transport_type) for transport in mounted)
        and all(
            transport is None or isinstance(transport, transport_type) for transport in mounted
        ),
        f"_mounts should hold the proxy= transport (and maybe None): {mounted!r}",
    )


def _check_wrapped_transports_carry_requests() -> None:
    mount = httpx.MockTransport(lambda request: httpx.Response(200, text="unwrapped mount"))
    client = httpx.Client(mounts={"https://mounted.invalid": mount})
    default = httpx_client_transport(client)
    labels = {id(default): "default", id(mount): "mount"}

    def wrap(inner: httpx.BaseTransport) -> httpx.BaseTransport:
        answer = f"wrapped {labels.get(id(inner), type(inner).__name__)}"
        return httpx.MockTransport(lambda request: httpx.Response(200, text=answer))

    try:
        wrap_httpx_client_transports(client, wrap)
        for url, expected in (
            ("https://default.invalid/", "wrapped default"),
            ("https://mounted.invalid/", "wrapped mount"),
        ):
            answered = client.get(url).text
            _expect(
                answered == expected,
                f"after replacing _transport and _mounts, {url} was answered by "
                f"{answered!r}, not by the {expected!r} transport",
            )
    finally:
        client.close()
        default.close()


def _check_network_backend() -> None:
    import httpcore  # noqa: PLC0415

    class Marker(Exception):
        pass

    class Refusing(httpcore.NetworkBackend):
        def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
            raise Marker

    transport = httpx.HTTPTransport()
    httpx_transport_network_backend(transport, Refusing())
    request = httpx.Request("GET", "http://127.0.0.1:9/")
    try:
        transport.handle_request(request)
    except Marker:
        return
    except Exception as exc:
        raise _Broken(f"the connection was not opened by the backend set ({exc!r})") from exc
    finally:
        transport.close()
    raise _Broken("a request was answered without the backend set")


def _response_keywords(request: HttpRequest, internal: object) -> dict[str, Any]:
    """The keywords envelope's azure-core transports pass to the response classes."""
    return {
        "request": request,
        "internal_response": internal,
        "block_size": 4096,
        "status_code": 200,
        "reason": "OK",
        "content_type": "application/json",
        "headers": CaseInsensitiveDict({"content-type": "application/json"}),
        "stream_download_generator": lambda **kwargs: iter(()),
    }


def _check_response_impl(impl: type[Any], public: type[Any]) -> None:
    _expect(
        issubclass(impl, public),
        f"it is not an {public.__module__}.{public.__name__} any more",
    )
    request = HttpRequest("GET", "https://vault.invalid/keys/k")
    internal = object()
    response = impl(**_response_keywords(request, internal))
    seen = (
        response.request is request,
        response.internal_response is internal,
        response.status_code == 200,
        response.reason == "OK",
        response.content_type == "application/json",
        response.headers.get("Content-Type") == "application/json",
        response.is_closed is False,
    )
    _expect(all(seen), f"the constructor keywords do not show in the response: {seen}")


def _check_response_closed_flag() -> None:
    request = HttpRequest("GET", "https://vault.invalid/keys/k")
    response = AsyncHttpResponseImpl(**_response_keywords(request, object()))
    _expect(response._is_closed is False, f"_is_closed starts as {response._is_closed!r}")
    mark_azure_response_closed(response)
    _expect(response.is_closed is True, "setting _is_closed does not make is_closed true")


def _check_proxy_url() -> None:
    import httpcore  # noqa: PLC0415 - as in the plaintext guard, which imports it on use

    proxies: list[tuple[type[Any], str]] = [
        (httpcore.HTTPProxy, "http://proxy.invalid:8080"),
        (httpcore.AsyncHTTPProxy, "http://proxy.invalid:8080"),
    ]
    if importlib.util.find_spec("socksio") is not None:
        proxies += [
            (httpcore.SOCKSProxy, "socks5://proxy.invalid:1080"),
            (httpcore.AsyncSOCKSProxy, "socks5://proxy.invalid:1080"),
        ]
    for pool_type, proxy_url in proxies:
        url = httpcore_pool_proxy_url(pool_type(proxy_url=proxy_url))
        _expect(
            isinstance(url, httpcore.URL)
            and url.scheme == proxy_url.split(":")[0].encode()
            and url.host == b"proxy.invalid",
            f"{pool_type.__name__}(proxy_url={proxy_url!r})._proxy_url is {url!r}",
        )
    for pool in (httpcore.ConnectionPool(), httpcore.AsyncConnectionPool()):
        _expect(
            httpcore_pool_proxy_url(pool) is None,
            f"a direct {type(pool).__name__} has a _proxy_url, so it would pass for a proxy",
        )


def _check_tunnel_host(module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return  # the plaintext guard patches only what is installed
    connection_type = module.HTTPConnection
    connection = connection_type("proxy.invalid", 8080)
    _expect(
        http_connection_tunnel_host(connection) is None,
        "a connection without a tunnel has a _tunnel_host",
    )
    connection.set_tunnel("target.invalid", 443)
    tunnel_host = http_connection_tunnel_host(connection)
    _expect(
        tunnel_host == "target.invalid",
        f"after set_tunnel('target.invalid') _tunnel_host is {tunnel_host!r}",
    )


PRIVATE_USES: tuple[PrivateUse, ...] = (
    PrivateUse(
        "httpx",
        "httpx.Client._transport and ._mounts",
        functools.partial(_check_client_attributes, httpx.Client, httpx.BaseTransport),
    ),
    PrivateUse(
        "httpx",
        "httpx.AsyncClient._transport and ._mounts",
        functools.partial(_check_client_attributes, httpx.AsyncClient, httpx.AsyncBaseTransport),
    ),
    PrivateUse(
        "httpx",
        "httpx.Client._transport and ._mounts, replaced",
        _check_wrapped_transports_carry_requests,
    ),
    PrivateUse(
        "httpx",
        "httpx.HTTPTransport._pool._network_backend (httpcore)",
        _check_network_backend,
    ),
    PrivateUse(
        "azure-core",
        "azure.core.rest._http_response_impl.HttpResponseImpl",
        functools.partial(_check_response_impl, HttpResponseImpl, HttpResponse),
    ),
    PrivateUse(
        "azure-core",
        "azure.core.rest._http_response_impl_async.AsyncHttpResponseImpl",
        functools.partial(_check_response_impl, AsyncHttpResponseImpl, AsyncHttpResponse),
    ),
    PrivateUse("azure-core", "AsyncHttpResponseImpl._is_closed", _check_response_closed_flag),
    PrivateUse(
        "httpcore", "httpcore.(Async)HTTPProxy and (Async)SOCKSProxy ._proxy_url", _check_proxy_url
    ),
    PrivateUse(
        "Python",
        "http.client.HTTPConnection._tunnel_host",
        functools.partial(_check_tunnel_host, "http.client"),
    ),
    PrivateUse(
        "urllib3",
        "urllib3.connection.HTTPConnection._tunnel_host",
        functools.partial(_check_tunnel_host, "urllib3.connection"),
    ),
)


def private_use_problems() -> list[str]:
    """What broke among :data:`PRIVATE_USES` in the installed libraries; empty when nothing."""
    return [problem for use in PRIVATE_USES if (problem := use.problem()) is not None]
