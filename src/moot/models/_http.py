"""The one place the adapters' HTTP clients are made: TLS, redirects and the private-address guard.

Every client (the lean httpx client, and the httpx2 clients the OpenAI and Anthropic SDKs run on) comes from
here, so every connection of every transport follows one policy:

- redirects are never followed: a 3xx is a `NetworkRefused` saying where it pointed, so a request (and the
  key it carries in `x-api-key`, which httpx keeps across hosts) never goes where base_url does not say;
- for a model whose spec refuses private addresses (the service with MOOT_BLOCK_PRIVATE_URLS on), the
  connection pool's network backend is a `GuardedBackend`: the address is judged when each socket opens,
  and the socket opens to the address judged. Such a client ignores HTTP(S)_PROXY: a proxy would resolve
  the name where Moot cannot check it.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import certifi
import httpx

from moot.models._guard import GuardedBackend, NetworkRefused, refused_in
from moot.models._net import AsyncioBackend
from moot.spec import ModelSpec

__all__ = ["httpx_client", "raise_refusal", "redirect_refusal", "sdk_http_client", "ssl_context"]

Client = TypeVar("Client")
KEEPALIVE = 3.0  # seconds an idle connection is kept for reuse


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle costs 20-60 ms of CPU, too much to pay per room."""
    return ssl.create_default_context(cafile=certifi.where())


def httpx_client(spec: ModelSpec, **options: Any) -> httpx.AsyncClient:
    """The lean adapter's client for `spec`; `options` (base_url, headers, timeout) go to httpx as they are."""
    import httpcore

    return _with_asyncio_reads(httpx.AsyncClient(**_policy(spec, httpx, httpcore), **options), httpcore)


def sdk_http_client(spec: ModelSpec, client_class: Callable[..., Client]) -> Client:
    """An SDK's own client class (`openai.DefaultAsyncHttpxClient`, ...: httpx2 clients), made for `spec`."""
    import httpcore2
    import httpx2

    return _with_asyncio_reads(client_class(**_policy(spec, httpx2, httpcore2)), httpcore2)


def raise_refusal(error: BaseException) -> None:
    """Raises the refusal behind an SDK's connection error, if there is one, as itself.

    The SDKs wrap whatever the transport raised in their connection error (which reads as "retry, check the
    server is running"); a refused address or redirect must read as what it is and not be retried.
    """
    refused = refused_in(error)
    if refused is not None:
        raise refused from None


def _policy(spec: ModelSpec, httpx_module: ModuleType, httpcore_module: ModuleType) -> dict[str, Any]:
    """Client arguments for httpx or httpx2 (their APIs are the same; their classes are not)."""
    # Idle connections are dropped before servers drop them: llama.cpp's (cpp-httplib) closes one after 5 s,
    # httpx's default keeps one 5 s, and a request sent on a connection the server is closing fails.
    limits = httpx_module.Limits(
        max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE
    )
    options: dict[str, Any] = {
        "follow_redirects": False,
        "event_hooks": {"response": [_refuse_redirects(spec.label)]},
    }
    if not spec.refuses_private_addresses:
        options["verify"] = ssl_context()
        options["limits"] = limits
        return options
    transport = httpx_module.AsyncHTTPTransport(verify=ssl_context(), limits=limits)
    pool = _pool_of(transport, httpcore_module)
    if pool is None:
        # fail closed: a transport we cannot guard must not connect at all
        raise RuntimeError(
            f"{httpx_module.__name__} {httpx_module.__version__}: its connection pool has changed and "
            "private addresses cannot be refused; install the version pyproject.toml allows"
        )
    pool._network_backend = GuardedBackend(AsyncioBackend(httpcore_module), httpcore_module, spec.label)
    options["transport"] = transport
    return options


def _pool_of(transport: object, httpcore_module: ModuleType) -> Any:
    """The httpcore connection pool behind an httpx transport, if it still has the shape we know."""
    pool = getattr(transport, "_pool", None)
    if isinstance(pool, httpcore_module.AsyncConnectionPool) and hasattr(pool, "_network_backend"):
        return pool
    return None


def _with_asyncio_reads(client: Client, httpcore_module: ModuleType) -> Client:
    """`client`'s direct connections made on asyncio's streams (`moot.models._net`) rather than anyio's.

    Done on the made client, not by passing a transport, so a client without the private-address guard
    keeps httpx's HTTP(S)_PROXY support (httpx mounts proxies only when no transport is given); proxied
    connections keep httpx's own backend. A pool of another shape is left as it is: only slower.
    """
    pool = _pool_of(getattr(client, "_transport", None), httpcore_module)
    if pool is not None and not isinstance(pool._network_backend, GuardedBackend):
        pool._network_backend = AsyncioBackend(httpcore_module)
    return client


def _refuse_redirects(label: str) -> Callable[[Any], Awaitable[None]]:
    """A response hook that turns every 3xx into a NetworkRefused, before any redirect could be followed."""

    async def hook(response: Any) -> None:
        status = int(response.status_code)
        if 300 <= status < 400:
            raise redirect_refusal(label, status, str(response.url), response.headers.get("location"))

    return hook


def redirect_refusal(label: str, status: int, url: str, location: str | None) -> NetworkRefused:
    """The error for a redirect from `url` to `location`: never followed, wherever it points."""
    return NetworkRefused(
        f"{label}: the server answered with a redirect (HTTP {status}) to {_shown(url, location)}; redirects "
        "are not followed: set base_url to the final address",
        model=label,
        status=status,
    )


def _shown(url: str, location: str | None) -> str:
    """Where a redirect points, without its query or credentials (either may carry a key)."""
    if not location:
        return "nowhere (no Location header)"
    try:
        parts = urlsplit(str(httpx.URL(url).join(location)))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except (httpx.InvalidURL, ValueError):
        return "an address that is not a valid URL"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"[:300]
