"""Opening the page as a user, and what every page must never do (reach another origin, log an error)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Request, expect

from service.helpers import LiveServer

# Chromium logs every 4xx answer as a console error; the page expects some (401 before signing in, 409).
EXPECTED = (r"Failed to load resource: the server responded with a status of 4\d\d",)
TIMEOUT_MS = 60_000  # a loaded 2-core machine runs the server, the browser and the tests at once
expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Watched:
    """A page with the log of its requests and of the errors it showed."""

    page: Page
    context: BrowserContext
    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        """Requests to anywhere but the server's own origin (data: URLs fetch nothing)."""
        return [
            url
            for url in self.requests
            if not url.startswith("data:")
            and f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" != self.origin
        ]

    def check(self) -> None:
        assert self.foreign() == [], f"the page asked another origin: {self.foreign()}"
        assert self.errors == [], f"the page showed errors: {self.errors}"


async def open_page(
    browser: Browser,
    live: LiveServer,
    token: str | None = None,
    *,
    locale: str = "en-GB",
    allow_errors: tuple[str, ...] = (),
    via: str | None = None,
) -> Watched:
    """A fresh browser context in `locale`, signed in by the login URL with `token` when given; `via` is
    another address of the server (a CutProxy's)."""
    base = via or live.url
    context = await browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    watched = Watched(page, context, base)

    def on_request(request: Request) -> None:
        watched.requests.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        text = message.text
        if message.type == "error" and not any(re.search(p, text) for p in (*EXPECTED, *allow_errors)):
            watched.errors.append(text)

    def on_error(error: Any) -> None:
        watched.errors.append(str(error))

    page.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", on_error)
    if token is not None:
        await page.goto(f"{base}/login?token={token}")
        await page.wait_for_url(f"{base}/")
        await page.wait_for_selector("#who:has-text('Signed in'), #who:has-text('当前用户')")
    return watched


class CutProxy:
    """A TCP relay between the browser and the server that a test can cut (every connection dropped at
    once, as a network failure does) and point at another server (a restart on another port)."""

    def __init__(self, target: str) -> None:
        self.target = 0
        self.point(target)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.cuts = 0

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> CutProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def point(self, target: str) -> None:
        """Relays new connections to the server at `target` from now on."""
        self.target = urlsplit(target).port or 80

    def cut(self) -> None:
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))
