"""Signing in: by the login URL (the token leaves the address bar), by the form, and out again."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, expect

from service.helpers import LiveServer

from .pages import open_page


async def test_sign_in_by_url_then_out_then_by_form(live: LiveServer, browser: Browser) -> None:
    token = await live.new_user("grace")
    watched = await open_page(browser, live, token)
    page = watched.page
    assert "token" not in page.url
    await expect(page.locator("#who")).to_have_text("Signed in as grace")
    (cookie,) = await watched.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == ("moot_session", True, "Strict")
    assert await page.evaluate("document.cookie") == ""  # out of reach of scripts

    await page.click("#signout")
    await page.wait_for_selector("form#signin")
    assert await watched.context.cookies() == []

    await page.goto(f"{live.url}/login?token=moot_wrong")
    await expect(page.locator("form#signin .error")).to_be_visible()
    await page.fill("#token", token)
    await page.click("form#signin button[type=submit]")
    await expect(page.locator("#who")).to_have_text("Signed in as grace")
    await page.goto(f"{live.url}/rooms/nosuchroom")  # a deep link answers with the page
    await expect(page.locator("main .error")).to_have_text("There is no such room.")
    watched.check()
    await watched.context.close()


async def test_cookie_writes_need_this_sites_pages(live: LiveServer) -> None:
    token = await live.new_user()
    cookie = {"Cookie": f"moot_session={token}"}
    body = {"task": "t", "agents": [{"name": "A", "model": "simulated"}]}
    async with httpx.AsyncClient(base_url=live.api) as http:
        assert (await http.get("/users/me", headers=cookie)).status_code == 200
        foreign = {**cookie, "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        refused = await http.post("/rooms", json=body, headers=foreign)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert (await http.post("/rooms", json=body, headers=cookie)).status_code == 403  # says nothing
        for query in ("?xtoken=1", "?token=", "?token"):  # only a real ?token= replaces the cookie
            sneaky = await http.post(f"/rooms{query}", json=body, headers=foreign)
            assert sneaky.status_code == 403, query
        own = {**cookie, "Origin": live.url}
        assert (await http.post("/rooms", json=body, headers=own)).status_code == 201
        same = {**cookie, "Sec-Fetch-Site": "same-origin"}
        assert (await http.post("/rooms", json=body, headers=same)).status_code == 201
        bearer = {"Authorization": f"Bearer {token}", "Origin": "http://evil.example"}
        assert (await http.post("/rooms", json=body, headers=bearer)).status_code == 201  # programs
        page = await http.get(live.url + "/")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"]
