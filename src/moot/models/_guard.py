"""Private addresses refused where the socket opens, not only where the URL was first read.

With MOOT_BLOCK_PRIVATE_URLS on, the service must never send a request to this machine, its private network
or a cloud metadata service, whatever the URL looks like, wherever a redirect points, and whatever a name
resolves to by the time the connection opens (DNS rebinding: public when checked, 127.0.0.1 when used). So
the check sits in the connection pool's network backend (`GuardedBackend`): it resolves the name itself,
refuses the connection if any address is private, loopback, link-local, unspecified, multicast or reserved
(IPv4 forms such as 2130706433 or 0x7f.1, and IPv6 forms that embed IPv4, included: the address judged is
the one the resolver returned), and opens the socket to the address it judged. TLS still verifies the name.

Names are resolved through the process's `Network`: the system resolver, or, in tests, one the test
controls (`using_network`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from moot.exceptions import ModelRequestError

__all__ = [
    "GuardedBackend",
    "Network",
    "NetworkRefused",
    "SystemNetwork",
    "current_network",
    "judged_addresses",
    "refusal",
    "refused_in",
    "refused_reason",
    "using_network",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix: the low 32 bits are an IPv4 address
_POLICY = "this server refuses private addresses (MOOT_BLOCK_PRIVATE_URLS is on)"


class NetworkRefused(ModelRequestError):
    """A connection Moot refused to open or follow: a private address, or a redirect. Retrying cannot help."""


class Network(Protocol):
    """How names become addresses, and where a socket for a checked address really goes."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """The IP addresses of `host`, in the order to try them; OSError when it cannot be resolved."""
        ...

    def route(self, address: str) -> str:
        """The address to open the socket to for a checked one: itself, except in a test's fake network."""
        ...


class SystemNetwork:
    """The operating system's resolver (which reads 2130706433 and 0x7f.1 as 127.0.0.1, as the OS would)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def route(self, address: str) -> str:
        return address


_network: Network = SystemNetwork()


def current_network() -> Network:
    return _network


@contextlib.contextmanager
def using_network(network: Network) -> Iterator[Network]:
    """Resolves every name through `network` while the block runs: a resolver a test controls."""
    global _network
    previous, _network = _network, network
    try:
        yield network
    finally:
        _network = previous


def refused_reason(address: IPAddress) -> str | None:
    """Why a connection to `address` is refused ("a loopback address"), or None when it may be opened."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refused_reason(address.ipv4_mapped)
        if address in _NAT64:
            return refused_reason(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for embedded in (address.sixtofour, *(address.teredo or ())):
            if embedded is not None and (reason := refused_reason(embedded)) is not None:
                return reason
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address, which reaches this machine"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved or non-public address"
    return None


def refusal(host: str, addresses: Iterable[str]) -> str | None:
    """What is wrong when `host` resolved to `addresses`, or None when every one of them may be used.

    One bad address refuses the name: a DNS answer that mixes public and private addresses is an attack.
    """
    found = False
    for text in addresses:
        found = True
        try:
            address = ipaddress.ip_address(text.partition("%")[0])  # a zone (fe80::1%eth0) adds nothing
        except ValueError:
            return f"'{host[:100]}' resolves to {text[:100]!r}, which is not an IP address"
        reason = refused_reason(address)
        if reason is not None:
            said = f"{address} is {reason}"
            if address != _literal(host):
                said = f"'{host[:100]}' resolves to {address}, {reason}"
            return f"{said}; {_POLICY}"
    return None if found else f"'{host[:100]}' resolves to no address"


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def judged_addresses(host: str, port: int, label: str) -> list[str]:
    """Where a socket to `host` may open: the addresses the process's `Network` resolved it to, each judged
    and routed. NetworkRefused when one is refused; OSError (saying so) when the name does not resolve."""
    network = current_network()
    try:
        addresses = await network.resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise OSError(f"cannot resolve '{host}': {exc}") from None
    reason = refusal(host, addresses)
    if reason is not None:
        raise NetworkRefused(f"{label}: not connecting: {reason}", model=label)
    return [network.route(address) for address in addresses]


class _Errors(Protocol):
    """The exceptions of one httpcore package (httpcore for httpx, httpcore2 for httpx2)."""

    ConnectError: type[Exception]
    ConnectTimeout: type[Exception]


class GuardedBackend:
    """An httpcore network backend that connects only to addresses it resolved and judged itself.

    It wraps the pool's own backend (`inner`): only `connect_tcp` changes; Unix sockets are refused, since
    no provider URL names one. `errors` is the httpcore module whose exceptions httpx maps to its own.
    """

    def __init__(self, inner: Any, errors: _Errors, label: str) -> None:
        self._inner = inner
        self._errors = errors
        self._label = label

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        try:
            async with asyncio.timeout(timeout):
                addresses = await judged_addresses(host, port, self._label)
        except TimeoutError:
            raise self._errors.ConnectTimeout(f"resolving '{host}' took longer than {timeout:g}s") from None
        except OSError as exc:
            raise self._errors.ConnectError(str(exc)) from None
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (self._errors.ConnectError, self._errors.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # refusal() refused an empty list
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        raise NetworkRefused(f"{self._label}: not connecting to the Unix socket {path[:100]}; {_POLICY}")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def refused_in(error: BaseException) -> NetworkRefused | None:
    """The refusal behind an SDK's connection error: the SDKs wrap whatever their transport raised."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, NetworkRefused):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
