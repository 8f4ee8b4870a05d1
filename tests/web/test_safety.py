"""Model text is untrusted: a reply full of markup is shown as text, runs nothing and fetches nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from moot.testing.servers import FakeLLMServer
from service.helpers import LLM_KEY, LiveServer, provider_for

from .pages import open_page

HOSTILE = (
    "Here is my view <script>window.pwned = 1</script>\n"
    '<img src="http://evil.example/x.png" onerror="window.pwned = 2">\n\n'
    "[click me](javascript:window.pwned=3) and [fine](https://example.com/a) and [data](data:text/html,hi)\n\n"
    "**bold** `code` ![pic](http://evil.example/pic.png)"
)
CONCLUSION = json.dumps(
    {
        "summary": "<img src=x onerror=window.pwned=4> summed up",
        "decision_advice": "[go](javascript:window.pwned=5)",
        "consensus_points": ["<b onmouseover=window.pwned=6>agree</b>"],
        "dissent_points": ["<svg onload=window.pwned=7>"],
    }
)


def hostile(body: dict[str, Any]) -> str:
    last = body["messages"][-1]["content"]
    return CONCLUSION if "JSON" in str(last) else HOSTILE


@pytest.fixture
def hostile_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=LLM_KEY, reply=hostile, token_delay=0.001) as fake:
        yield fake


async def test_a_hostile_reply_is_shown_as_text(
    live: LiveServer, browser: Browser, hostile_llm: FakeLLMServer
) -> None:
    token = await live.new_user()
    async with live.client(token) as http:
        await provider_for(http, hostile_llm)
        spec = {
            "task": "Say something dangerous",
            "protocol": "board",
            "max_rounds": 1,
            "default_model": "local",
            "agents": [{"name": "Chair", "role": "moderator"}, {"name": "Eve"}, {"name": "Mal"}],
        }
        room = (await http.post("/rooms", json=spec)).json()
        await http.post(f"/rooms/{room['id']}/run")
    watched = await open_page(browser, live, token)
    page = watched.page
    await page.goto(f"{live.url}/rooms/{room['id']}")
    await expect(page.locator("#room-status")).to_have_text("completed")
    await expect(page.locator("#conclusion-card")).to_contain_text("<img src=x onerror=window.pwned=4>")
    eve = page.locator("article.turn[data-speaker=Eve] .body")
    await expect(eve).to_contain_text("<script>window.pwned = 1</script>")
    await expect(eve).to_contain_text('<img src="http://evil.example/x.png" onerror="window.pwned = 2">')
    found = await page.evaluate(
        """() => ({
            pwned: window.pwned === undefined ? null : window.pwned,
            dangerous: document.querySelectorAll('main script, main img, main svg, main iframe, main [onerror]').length,
            hrefs: [...document.querySelectorAll('main a[href]')].map(a => [a.textContent, a.getAttribute('href'), a.rel]),
        })"""
    )
    assert found["pwned"] is None and found["dangerous"] == 0
    page_links = [h for h in found["hrefs"] if not h[1].startswith("/")]
    assert ["fine", "https://example.com/a"] in [h[:2] for h in page_links]
    assert all(href.startswith(("https://", "http://")) for _, href, _ in page_links), page_links
    assert all("noopener" in rel for _, _, rel in page_links)
    assert not {"click me", "data", "go"} & {text for text, _, _ in page_links}
    await expect(eve.locator("strong")).to_have_text("bold")
    watched.check()  # nothing fetched from evil.example
    await watched.context.close()


CASES = [
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](  javascript:alert(1))",
    "[x](java\\nscript:alert(1))",
    "[x](data:text/html,<script>alert(1)</script>)",
    "[x](vbscript:msgbox)",
    "[x](//evil.example/a)",
    "![i](https://evil.example/i.png)",
    "<b onmouseover=alert(1)>hover</b>",
    "<a href='javascript:alert(1)'>a</a>",
    "```\n</code></pre><script>alert(1)</script>\n```",
    "> " * 200 + "deep",
    "*" * 5000 + "a" + "_" * 5000,
    "# <img src=x onerror=alert(1)>",
    "- [y](javascript:void(0))\n- <iframe src=//evil.example>",
]


async def test_markdown_renderer_builds_only_safe_nodes(live: LiveServer, browser: Browser) -> None:
    watched = await open_page(browser, live)
    page = watched.page
    await page.goto(f"{live.url}/login")
    results = await page.evaluate(
        """async (cases) => {
            const md = await import('/static/web/md.js');
            return cases.map(text => {
                const node = md.renderMarkdown(text);
                return {
                    tags: [...node.querySelectorAll('*')].map(e => e.tagName.toLowerCase()),
                    attrs: [...node.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name)),
                    hrefs: [...node.querySelectorAll('a')].map(a => a.getAttribute('href')),
                    text: node.textContent,
                };
            });
        }""",
        CASES,
    )
    allowed = {
        "p",
        "br",
        "strong",
        "em",
        "code",
        "pre",
        "a",
        "ul",
        "ol",
        "li",
        "blockquote",
        "h3",
        "h4",
        "hr",
    }
    for case, result in zip(CASES, results, strict=True):
        assert set(result["tags"]) <= allowed, (case, result["tags"])
        assert set(result["attrs"]) <= {"href", "rel", "target", "referrerpolicy", "start"}, case
        assert all(href.startswith(("http://", "https://")) for href in result["hrefs"]), case
    assert results[0]["hrefs"] == [] and results[0]["text"] == CASES[0]
    assert "<script>alert(1)</script>" in results[10]["text"]
    sample = await page.evaluate(
        """async () => {
            const md = await import('/static/web/md.js');
            const node = md.renderMarkdown('## Plan\\n\\n1. **first** step\\n2. see https://example.com/x.\\n\\n> quoted');
            return [...node.children].map(e => e.tagName.toLowerCase() + ':' + e.textContent);
        }"""
    )
    assert sample == ["h4:Plan", "ol:first stepsee https://example.com/x.", "blockquote:quoted"]
    watched.check()
    await watched.context.close()


STREAMED = [
    "One.\n\nTwo **bold**.\n\n- a\n- b\n\n1. x\n2. y\n\n3. z\n\n> q\n> r\n\nend",
    "```\ncode\n\nstill code\n```\n\nafter\n\n~~~py\n```\n\n~~~\n\nlast",
    "```\n~~~\n```\n\ntext\n\n```\nopen\n\nnever closed",
    "\n\n\n# H\n\ntext\n\n\n\n---\n\nmore",
]


async def test_a_streamed_turn_renders_as_its_whole_text(live: LiveServer, browser: Browser) -> None:
    """The page keeps a streaming turn's settled blocks and renders only the rest: the same in the end."""
    watched = await open_page(browser, live)
    page = watched.page
    await page.goto(f"{live.url}/login")
    results = await page.evaluate(
        """async (texts) => {
            const md = await import('/static/web/md.js');
            return texts.map(text => {
                const done = document.createElement('div');
                let stable = 0, tail = '';
                for (let end = 1; end <= text.length; end++) {
                    const cut = md.settledEnd(text.slice(0, end), stable);
                    if (cut > stable) { done.append(...md.renderMarkdown(text.slice(stable, cut)).childNodes); stable = cut; }
                    tail = md.renderMarkdown(text.slice(stable, end)).innerHTML;
                }
                return [done.innerHTML + tail, md.renderMarkdown(text).innerHTML];
            });
        }""",
        STREAMED,
    )
    for text, (streamed, whole) in zip(STREAMED, results, strict=True):
        assert streamed == whole, text
    watched.check()
    await watched.context.close()
