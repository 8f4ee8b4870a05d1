"""A board meeting watched live: members side by side, a person stepping in, pause and resume, reloads and
cuts; the page ends with exactly the stored transcript."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect

from service.helpers import LiveServer, make_settings, running_server
from store.fixtures import sqlite_database

from .pages import CutProxy, open_page


def board(speed: float, rounds: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "title": "Four-day week",
        "task": "Should our studio move to a four-day week?",
        "protocol": "board",
        "max_rounds": rounds,
        "models": {"sim": {"provider": "simulated", "seed": 5, "tokens_per_second": speed}},
        "default_model": "sim",
        "agents": [
            {"name": "Chair", "role": "moderator", "colour": "#d4af37"},
            {"name": "Ana", "colour": "teal"},
            {"name": "Ben"},
            {"name": "Cy"},
        ],
        **extra,
    }


def words(text: str) -> str:
    """The letters and digits of a text: what stays the same between Markdown and its rendering."""
    return "".join(re.findall(r"\w+", text))


POSITIONS = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def prose_and_stances(text: str) -> tuple[str, list[list[str]]]:
    """A summary's prose, and the members' stances from its closing positions block (which the page shows
    as a table, not as text)."""
    blocks = [m for m in POSITIONS.finditer(text) if '"positions"' in m.group(1)]
    if not blocks or not text[: blocks[-1].start()].strip():
        return text, []
    positions = json.loads(blocks[-1].group(1))["positions"]
    return text[: blocks[-1].start()].rstrip(), [[p["agent"], p["stance"]] for p in positions]


async def same_as_stored(page: Page, live: LiveServer, token: str, room_id: str) -> None:
    """Every stored turn is on the page once, with exactly its text; nothing else is."""
    async with live.client(token) as http:
        entries = (await http.get(f"/rooms/{room_id}/messages", params={"limit": 100})).json()["items"]
    turns = [e for e in entries if e["kind"] in ("opening", "speech", "summary", "conclusion")]
    shown = await page.evaluate(
        """() => [...document.querySelectorAll('article.turn')].map(card => ({
            id: card.dataset.turn, state: card.dataset.state,
            text: window.mootRoom.turns.get(card.dataset.turn).text,
            shown: (() => {
                const body = card.querySelector('.body').cloneNode(true);
                body.querySelectorAll('.positions-box').forEach((box) => box.remove());
                return body.textContent;
            })(),
            positions: [...card.querySelectorAll('.body .positions-box table.positions tbody tr')]
                .map(row => [row.dataset.agent, row.dataset.stance])}))"""
    )
    expected = {f"r{e['round']}:{e['kind']}:{e['speaker']}": e["text"] for e in turns if not e["failed"]}
    assert [s["id"] for s in shown if s["state"] == "done"] == list(expected)
    for card in shown:
        assert card["text"] == expected[card["id"]], card["id"]
        prose, stances = prose_and_stances(card["text"]) if ":summary:" in card["id"] else (card["text"], [])
        assert words(card["shown"]) == words(prose), card["id"]
        assert card["positions"] == stances, card["id"]
    if any(e["kind"] == "summary" for e in turns):  # the chair gave positions: the page shows them
        assert any(card["positions"] for card in shown)
    body = await page.locator("#timeline").inner_text()
    for entry in turns:
        assert entry["speaker"] in body


async def test_board_meeting_from_the_form_live_with_an_intervention(
    live: LiveServer, browser: Browser
) -> None:
    token = await live.new_user()
    watched = await open_page(browser, live, token)
    page = watched.page
    await page.click("nav a[href='/new']")
    await page.fill("#task", "Should we open a second office in Lisbon?")
    await page.fill("#rounds", "2")
    names = page.locator("#agents input[name=name]")
    await expect(names).to_have_count(3)
    await page.click("#add-agent")
    await names.nth(3).fill("Dee")
    await page.click("#create-run")
    await page.wait_for_url(re.compile(r"/rooms/\w+$"))
    room_id = page.url.rsplit("/", 1)[1]

    # several members speak at once, side by side in the round's grid
    await page.wait_for_function(
        "() => document.querySelectorAll('.grid article.turn[data-state=speaking]').length >= 2",
        polling="raf",
    )
    await page.fill("#intervene", "Please weigh the cost of hiring in Lisbon.")
    await page.press("#intervene", "Enter")
    note = page.locator(".note.intervention").first
    await expect(note).to_contain_text("Please weigh the cost of hiring in Lisbon.")
    await expect(note.locator(".addressed")).to_contain_text("the moderator addressed this")
    summaries = page.locator("article.turn.k-summary .body")
    await expect(summaries.filter(has_text="weigh the cost of hiring").first).to_be_visible()  # answered
    await expect(page.locator("#room-status")).to_have_text("completed")
    card = page.locator("#conclusion-card")
    await expect(card).to_contain_text("Conclusion")
    await expect(card.locator("ul.consensus li").first).to_be_visible()
    await expect(page.locator("#usage tr[data-agent=Ana]")).to_have_count(1)
    await same_as_stored(page, live, token, room_id)
    watched.check()
    await watched.context.close()


async def test_pause_resume_reload_and_cuts_lose_no_word(live: LiveServer, browser: Browser) -> None:
    token = await live.new_user()
    async with live.client(token) as http:
        room = (await http.post("/rooms", json=board(speed=60, rounds=3))).json()
        assert (await http.post(f"/rooms/{room['id']}/run")).status_code == 202
    async with CutProxy(live.url) as proxy:
        watched = await open_page(browser, live, token, via=proxy.url, allow_errors=(r"net::ERR_",))
        page = watched.page
        await page.goto(f"{proxy.url}/rooms/{room['id']}")
        speaking = "article.turn[data-state=speaking] .body p"
        await page.wait_for_selector(speaking)
        await page.set_viewport_size({"width": 900, "height": 500})
        await page.wait_for_function(
            "() => document.documentElement.scrollHeight > window.innerHeight + 300 && window.scrollY > 200"
        )
        await expect(page.locator("#back-live")).to_be_hidden()  # it follows the end by itself
        await page.mouse.move(450, 250)
        await page.mouse.wheel(0, -3000)  # the reader scrolls up: the page stops following
        await expect(page.locator("#back-live")).to_be_visible()
        seen = await page.evaluate("() => [window.mootRoom.lastSeq, window.scrollY]")
        await page.wait_for_function("(seq) => window.mootRoom.lastSeq > seq + 5", arg=seen[0])
        assert await page.evaluate("() => window.scrollY") == seen[1]
        await page.click("#back-live")
        await expect(page.locator("#back-live")).to_be_hidden()
        await expect(page.locator("#pause")).to_be_enabled()
        await page.click("#pause")
        await expect(page.locator("#room-status")).to_have_text("paused")
        await expect(page.locator("#run")).to_have_text("Resume")
        await expect(page.locator("#run")).to_be_enabled()
        await expect(page.locator("#pause")).to_be_disabled()
        await page.click("#run")
        await expect(page.locator("#room-status")).to_have_text("running")

        await page.wait_for_selector(speaking)
        await page.reload()  # mid-stream: the page replays from the start, then goes on live
        await page.wait_for_selector(speaking)
        for _ in range(3):  # every connection cut while turns stream; the page picks up where it was
            seen = await page.evaluate("() => window.mootRoom.lastSeq")
            await page.wait_for_function(
                "(seen) => window.mootRoom.lastSeq > seen + 3 || window.mootRoom.room.status === 'completed'",
                arg=seen,
            )
            proxy.cut()
            await expect(page.locator("#connection")).to_be_visible()
        await expect(page.locator("#room-status")).to_have_text("completed")
        await expect(page.locator("#conclusion-card")).to_be_visible()
        await expect(page.locator("#connection")).to_be_hidden()
        await same_as_stored(page, live, token, room["id"])
        watched.check()
        await watched.context.close()


async def test_a_server_restart_mid_meeting_loses_no_word(tmp_path: Path, browser: Browser) -> None:
    database, settings = sqlite_database(tmp_path), make_settings(tmp_path)
    async with CutProxy("http://127.0.0.1:9") as proxy:
        async with running_server(database, settings) as first:
            proxy.point(first.url)
            token = await first.new_user()
            async with first.client(token) as http:
                room = (await http.post("/rooms", json=board(speed=60, rounds=2))).json()
                await http.post(f"/rooms/{room['id']}/run")
            watched = await open_page(browser, first, token, via=proxy.url, allow_errors=(r"net::ERR_",))
            page = watched.page
            await page.goto(f"{proxy.url}/rooms/{room['id']}")
            await page.wait_for_selector(".grid article.turn[data-state=speaking] .body p")
        # the server is gone (it paused the room on its way out); the page keeps trying
        await expect(page.locator("#connection")).to_be_visible()
        async with running_server(database, settings) as second:
            proxy.point(second.url)
            await expect(page.locator("#room-status")).to_have_text("completed")
            await expect(page.locator("#conclusion-card")).to_be_visible()
            await same_as_stored(page, second, token, room["id"])
            watched.check()
            await watched.context.close()


async def test_a_sequential_room_reads_as_a_conversation(live: LiveServer, browser: Browser) -> None:
    token = await live.new_user()
    spec = {
        "task": "Name our new product",
        "protocol": "sequential",
        "max_rounds": 2,
        "models": {"sim": {"provider": "simulated", "seed": 2, "tokens_per_second": 0}},
        "default_model": "sim",
        "agents": [{"name": "Ana", "persona": "a marketer"}, {"name": "Ben", "persona": "an engineer"}],
    }
    async with live.client(token) as http:
        room = (await http.post("/rooms", json=spec)).json()
        await http.post(f"/rooms/{room['id']}/run")
    watched = await open_page(browser, live, token)
    page = watched.page
    await page.goto(f"{live.url}/rooms/{room['id']}")
    await expect(page.locator("#room-status")).to_have_text("completed")
    speeches = page.locator(".flow article.turn.k-speech")
    await expect(speeches).to_have_count(4)
    assert await page.locator(".grid article.turn").count() == 0
    assert [await s.get_attribute("data-speaker") for s in await speeches.all()] == ["Ana", "Ben"] * 2
    await same_as_stored(page, live, token, room["id"])
    async with page.expect_download() as download:
        await page.click("#export-md")
    saved = await (await download.value).path()
    exported = await asyncio.to_thread(Path(saved).read_text, "utf-8")
    assert "Name our new product" in exported and "Ana" in exported and "Ben" in exported
    watched.check()
    await watched.context.close()
