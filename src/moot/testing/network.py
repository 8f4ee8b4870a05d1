"""A network a test controls: names that resolve as the test says, and a server that only redirects.

The private-address guard judges the address a name resolves to, so a test of it needs a resolver it
controls (to rebind a name from public to 127.0.0.1 between two lookups) and a way to reach a fake server
on loopback through an address the guard accepts. `FakeNetwork` does both, the second as a NAT would:
`routes` sends a connection to a public address, once the guard has accepted it, to a loopback one.

    network = FakeNetwork({"llm.test": ["1.2.3.4"]}, routes={"1.2.3.4": "127.0.0.1"})
    with using_network(network):                      # moot.models._guard: every connection resolves here
        network.answer("llm.test", ["1.2.3.4"], ["127.0.0.1"])    # public once, loopback from then on
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

__all__ = ["FakeNetwork", "Redirector"]


class FakeNetwork:
    """Names resolve to the answers a test gave, in turn; the last answer repeats. IP literals are themselves.

    `lookups` records each (name, answer), so a test can show the name was looked up where it expects.
    """

    def __init__(
        self, names: Mapping[str, Sequence[str]] | None = None, *, routes: Mapping[str, str] | None = None
    ) -> None:
        self._answers: dict[str, deque[list[str]]] = {}
        for name, addresses in (names or {}).items():
            self.answer(name, addresses)
        self.routes = dict(routes or {})
        self.lookups: list[tuple[str, list[str]]] = []

    def answer(self, name: str, *answers: Sequence[str]) -> None:
        """The addresses `name` resolves to at its next lookups, one answer per lookup; the last repeats."""
        self._answers[name.lower()] = deque(list(answer) for answer in answers)

    async def resolve(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        answers = self._answers.get(host.lower())
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not a name of this fake network")
        answer = answers.popleft() if len(answers) > 1 else answers[0]
        self.lookups.append((host, answer))
        return list(answer)

    def route(self, address: str) -> str:
        return self.routes.get(address, address)


class Redirector:
    """An HTTP server that answers every request with a redirect to `location` (plus the request's path).

    `requests` holds each request line it answered, so a test can show the redirect was sent.
    """

    def __init__(self, location: str, *, status: int = 307, keep_path: bool = True) -> None:
        self.location = location
        self.status = status
        self.keep_path = keep_path
        self.requests: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line = head.split("\r\n", 1)[0]
            self.requests.append(request_line)
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(length)
            path = request_line.split(" ")[1] if request_line.count(" ") >= 2 else "/"
            target = self.location + (path if self.keep_path else "")
            body = b'{"error": {"message": "moved"}}'
            writer.write(
                f"HTTP/1.1 {self.status} Moved\r\nlocation: {target}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode("latin-1")
                + body
            )
            await writer.drain()
        writer.close()
