"""Takes the README's screenshots of the page: a live board meeting and its conclusion, in English and
Chinese, from a server on a temporary database with the offline simulated model.

    .venv/bin/python scripts/screenshots.py          # writes docs/page-*.png (needs /usr/bin/chromium)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from playwright.async_api import Page, async_playwright

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from service.helpers import make_settings, running_server  # noqa: E402
from store.fixtures import sqlite_database  # noqa: E402


def room(example: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / example).read_text("utf-8"))
    data["max_rounds"] = 2
    data["models"]["sim"]["tokens_per_second"] = 25
    return data


async def shoot(page: Page, base: str, token: str, spec: dict[str, Any], lang: str, http: Any) -> None:
    created = (await http.post("/rooms", json=spec)).json()
    await http.post(f"/rooms/{created['id']}/run")
    await page.goto(f"{base}/rooms/{created['id']}")
    await page.wait_for_function(
        "() => document.querySelectorAll('.grid article.turn[data-state=speaking] .body p').length >= 3",
        timeout=120_000,
    )
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.grid article.turn .body')].every(b => b.textContent.length > 120)",
        timeout=120_000,
    )
    await page.screenshot(path=ROOT / "docs" / f"page-live-{lang}.png")
    await page.wait_for_selector("#conclusion-card", timeout=300_000)
    await page.wait_for_function("() => window.mootRoom.room.status === 'completed'", timeout=60_000)
    await page.locator("#conclusion-card").scroll_into_view_if_needed()
    await page.evaluate("() => window.scrollBy(0, 200)")
    await page.screenshot(path=ROOT / "docs" / f"page-conclusion-{lang}.png")


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        async with (
            running_server(sqlite_database(tmp), make_settings(tmp)) as live,
            async_playwright() as driver,
        ):
            token = await live.new_user("grace")
            browser = await driver.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            for lang, locale, example in (("en", "en-GB", "board_en.yaml"), ("zh", "zh-CN", "board_zh.yaml")):
                context = await browser.new_context(
                    locale=locale, viewport={"width": 1360, "height": 860}, device_scale_factor=1
                )
                page = await context.new_page()
                await page.goto(f"{live.url}/login?token={token}")
                await page.wait_for_url(f"{live.url}/")
                async with live.client(token) as http:
                    await shoot(page, live.url, token, room(example), lang, http)
                await context.close()
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
