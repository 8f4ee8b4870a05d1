"""An httpcore network backend on asyncio's own streams: the model stream's reads at a third of the cost.

httpcore's default backend on asyncio is anyio's, which for every read of a socket enters a cancel scope
and resumes, then pauses, the transport's reading (two `epoll_ctl` calls): at one model token per read that
is most of what a streamed token costs Moot to take in (decision 0012, `bench/read_bench.py`). asyncio's
`StreamReader` buffers what arrives and pauses only when its buffer is full, and a read with data waiting
returns at once. httpx, httpcore and h11 still do the HTTP: this module only moves bytes.

`errors` is the httpcore module (httpcore for httpx, httpcore2 for the SDKs' httpx2) whose exceptions are
raised, since each httpx maps only its own httpcore's errors to its public ones.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections.abc import Iterable
from types import ModuleType
from typing import Any

__all__ = ["AsyncioBackend"]

LIMIT = 2**16  # bytes buffered before reading pauses (asyncio's default)


class AsyncioStream:
    """One connection (httpcore's `AsyncNetworkStream` interface) over an asyncio reader and writer."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, errors: ModuleType
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._errors = errors
        self._loop = asyncio.get_running_loop()
        self._deadline = 0.0  # when the read in progress times out
        self._timer: asyncio.TimerHandle | None = None  # at or before the deadline; moved on lazily
        self._reading: asyncio.Task[Any] | None = None  # the task in read(), while it waits
        self._expired = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        """The bytes buffered, or the next that arrive.

        The read timeout costs no timer per read: each read moves a deadline, and one timer per connection,
        when it fires, either follows the deadline on or ends the read waiting past it.
        """
        if timeout is None:
            self._deadline = 0.0
        else:
            self._deadline = self._loop.time() + timeout
            if self._timer is None:
                self._timer = self._loop.call_at(self._deadline, self._expire)
        task = self._reading = asyncio.current_task()
        try:
            return await self._reader.read(max_bytes)
        except asyncio.CancelledError:
            if not self._expired:
                raise
            self._expired = False
            if task is not None and task.uncancel() > 0:
                raise  # cancelled from outside too: that wins
            raise self._errors.ReadTimeout(f"no bytes from the server for {timeout:g}s") from None
        except OSError as exc:
            raise self._errors.ReadError(str(exc) or type(exc).__name__) from exc
        finally:
            self._reading = None

    def _expire(self) -> None:
        self._timer = None
        if self._reading is None or not self._deadline:
            return  # not reading now, or reading without a timeout: the next read arms it again
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        self._expired = True
        self._reading.cancel()  # delivered inside read(): the task waits there and nowhere else

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise self._errors.WriteTimeout(f"the server took no bytes for {timeout:g}s") from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: written after the transport closed
            raise self._errors.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer.get_extra_info("ssl_object") is None:
            self._writer.close()
        else:  # no TLS goodbye to wait for (as httpcore's own backend): a silent peer would hold it 30 s
            self._writer.transport.abort()
        await asyncio.sleep(0)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            await self.aclose()
            raise self._errors.ConnectTimeout(f"the TLS handshake took longer than {timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise self._errors.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info in ("ssl_object", "socket"):
            return self._writer.get_extra_info(info)
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "is_readable":  # asked of an idle pooled connection: has the server closed it?
            if self._reader.at_eof() or self._writer.is_closing():
                return True
            sock = self._writer.get_extra_info("socket")
            return sock is not None and bool(select.select([sock], [], [], 0)[0])
        return None


class AsyncioBackend:
    """httpcore's `AsyncNetworkBackend` interface on asyncio streams (TCP only: no provider URL names a
    Unix socket)."""

    def __init__(self, errors: ModuleType) -> None:
        self._errors = errors

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None, limit=LIMIT
                )
        except TimeoutError:
            raise self._errors.ConnectTimeout(
                f"connecting to {host}:{port} took longer than {timeout:g}s"
            ) from None
        except OSError as exc:
            raise self._errors.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = writer.get_extra_info("socket")  # asyncio has set TCP_NODELAY
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer, self._errors)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncioStream:
        raise self._errors.ConnectError("Unix sockets are not used for model servers")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
