"""The rest of what a person does on the page: rooms list, providers, a room from a file, in Chinese."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from moot.testing.servers import FakeLLMServer
from service.helpers import LLM_KEY, LiveServer, reply

from .pages import open_page

EXAMPLES = Path(__file__).parents[2] / "examples"
SHIPPED = Path(__file__).parents[2] / "src/moot/service/static/web/examples"


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=LLM_KEY, reply=reply, reply_tokens=8) as fake:
        yield fake


def test_the_page_ships_the_examples_as_they_are() -> None:
    for copy in SHIPPED.iterdir():
        assert copy.read_text("utf-8") == (EXAMPLES / copy.name).read_text("utf-8"), copy.name


async def test_rooms_list_search_and_delete(live: LiveServer, browser: Browser) -> None:
    token = await live.new_user()
    async with live.client(token) as http:
        for task in ("Hire a designer?", "Move to Lisbon?"):
            body = {"task": task, "agents": [{"name": "A", "model": "simulated"}]}
            assert (await http.post("/rooms", json=body)).status_code == 201
    watched = await open_page(browser, live, token)
    page = watched.page
    rows = page.locator("#rooms tbody tr[data-room]")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text("Move to Lisbon?")  # the newest first
    await page.fill("#search", "designer")
    await expect(rows).to_have_count(1)
    await rows.first.locator("button.delete").click()
    await rows.first.locator("button.confirm-delete").click()
    await expect(rows).to_have_count(0)
    await page.fill("#search", "")
    await expect(rows).to_have_count(1)
    async with live.client(token) as http:
        assert (await http.get("/rooms")).json()["total"] == 1
    watched.check()
    await watched.context.close()


async def test_add_a_provider_and_test_it(
    live: LiveServer, browser: Browser, fake_llm: FakeLLMServer
) -> None:
    token = await live.new_user()
    watched = await open_page(browser, live, token)
    page = watched.page
    await page.click("nav a[href='/providers']")
    for name, key in (("local", LLM_KEY), ("wrongkey", "sk-not-the-key-0000000000")):
        await page.fill("#p-name", name)
        await page.fill("#p-base-url", fake_llm.url + "/v1")
        await page.fill("#p-model", "fake-model")
        await page.fill("#p-key", key)
        await page.click("#add-provider button[type=submit]")
        await expect(page.locator(f"li[data-provider={name}]")).to_contain_text("key stored")
    await page.click("li[data-provider=local] button.test")
    await expect(page.locator("li[data-provider=local] .test-result")).to_contain_text("works: fake-model")
    await page.click("li[data-provider=wrongkey] button.test")
    result = page.locator("li[data-provider=wrongkey] .test-result.error")
    await expect(result).to_contain_text("key")
    assert LLM_KEY not in await page.content()
    watched.check()
    await watched.context.close()


async def test_a_chinese_board_meeting_from_a_room_file(live: LiveServer, browser: Browser) -> None:
    token = await live.new_user()
    watched = await open_page(browser, live, token, locale="zh-CN")
    page = watched.page
    await expect(page.locator("nav")).to_contain_text("讨论室")
    await page.click("nav a[href='/new']")
    await page.fill("#room-file", "task: 一个议题\nprotocol: nope\nagents: []\n")
    await page.click("#create-file")
    await expect(page.locator("#file-error")).to_contain_text("room: protocol")
    example = (SHIPPED / "board_zh.yaml").read_text("utf-8")
    await page.select_option("#example", "board_zh.yaml")
    await expect(page.locator("#room-file")).to_have_value(example)
    await page.fill("#room-file", example.replace("tokens_per_second: 40", "tokens_per_second: 150"))
    await page.click("#create-file")
    await page.wait_for_url("**/rooms/*")
    await page.wait_for_selector(".grid article.turn[data-state=speaking] .body p")
    await page.fill("#intervene", "停止讨论")  # the Chinese stop command ends the meeting with a conclusion
    await page.press("#intervene", "Enter")
    await expect(page.locator(".note.intervention")).to_contain_text("要求结束讨论")
    await expect(page.locator("#room-status")).to_have_text("已结束")
    await expect(page.locator("#room-protocol")).to_have_text("私董会")
    await expect(page.locator(".note.completed")).to_have_text("讨论结束（有人叫停）")
    await expect(page.locator("section.round[data-round='1'] h2")).to_contain_text("第 1 轮")
    card = page.locator("#conclusion-card")
    await expect(card).to_contain_text("结论")
    await expect(card).to_contain_text("决策建议")
    await expect(page.locator("article.turn[data-speaker=陈静]")).to_have_count(1)
    await page.click("#lang")
    await expect(page.locator("#conclusion-card")).to_contain_text("Decision advice")
    watched.check()
    await watched.context.close()


async def test_an_agent_template_joins_the_new_room_form(live: LiveServer, browser: Browser) -> None:
    token = await live.new_user()
    watched = await open_page(browser, live, token)
    page = watched.page
    await page.click("nav a[href='/templates']")
    form = page.locator("#add-template")
    await form.locator("input[name=name]").fill("Maya")
    await form.locator("textarea[name=persona]").fill("a careful lawyer")
    await form.locator("input[name=colour]").fill("teal")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#templates")).to_contain_text("Maya")
    await expect(page.locator("#templates")).to_contain_text("a careful lawyer")
    await page.click("nav a[href='/new']")
    await page.select_option("select[name=template]", label="Maya")
    names = page.locator("#agents input[name=name]")
    await expect(names).to_have_count(4)
    await expect(names.nth(3)).to_have_value("Maya")
    await expect(page.locator("#agents textarea[name=persona]").nth(3)).to_have_value("a careful lawyer")
    watched.check()
    await watched.context.close()
