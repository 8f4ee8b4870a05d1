"""Opening the page as a user, and what every page must never do (reach another origin, log an error)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Request

from service.helpers import LiveServer

# Chromium logs every 4xx answer as a console error; the page expects some (401 before signing in, 409).
EXPECTED = (r"Failed to load resource: the server responded with a status of 4\d\d",)
TIMEOUT_MS = 60_000  # a loaded 2-core machine runs the server, the browser and the tests at once


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
            if not url.startswith("data:") and f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" != self.origin
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
) -> Watched:
    """A fresh browser context in `locale`, signed in by the login URL with `token` when given."""
    context = await browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    watched = Watched(page, context, live.url)

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
        await page.goto(f"{live.url}/login?token={token}")
        await page.wait_for_url(f"{live.url}/")
        await page.wait_for_selector("#who:has-text('Signed in'), #who:has-text('当前用户')")
    return watched
