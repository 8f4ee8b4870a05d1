"""What a person's browser gets: the API docs, served with their scripts from this package, and the page
the first start's login URL opens.

Swagger UI and ReDoc come from the package (src/moot/service/static, with their licences), not from a
CDN, so /docs works on a machine without internet access (decision 0006).
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from moot.store import UserRecord

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"


def install_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc), both on same-origin assets under /static."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    openapi_url = app.openapi_url or "/openapi.json"
    favicon = f"{STATIC_URL}/swagger-ui/favicon-32x32.png"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=favicon,
            # no badge fetched from the online validator: nothing leaves the browser for another host
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            redoc_js_url=f"{STATIC_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )


def wants_html(accept: str | None) -> bool:
    """True when a browser asked: text/html is accepted and ranked above application/json.

    Programs send `application/json`, `*/*` or nothing, and get JSON.
    """
    ranks: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks[media.lower()] = max(quality, ranks.get(media.lower(), 0.0))
    page = ranks.get("text/html", 0.0)
    return page > 0 and page >= ranks.get("application/json", 0.0)


def signed_in_page(user: UserRecord) -> HTMLResponse:
    """A small page for the login URL: who you are, and where to go next."""
    name, role = html.escape(user.name), html.escape(user.role)
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Moot: signed in as {name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}
code{{background:#f3f3f3;padding:.1em .3em}}</style></head>
<body><h1>Signed in as {name}</h1>
<p>Your token is valid; your level is <b>{role}</b>.</p>
<p>This address holds your token: keep it to yourself, and do not share or bookmark it where others see it.</p>
<ul>
<li><a href="/docs">API documentation</a> (Swagger UI): press <i>Authorize</i> and paste the token from this
page's address (the part after <code>token=</code>) to try the calls.</li>
<li><a href="/redoc">API reference</a> (ReDoc).</li>
</ul>
<p>Programs send <code>Authorization: Bearer &lt;token&gt;</code>; this same address answers them with JSON.</p>
</body></html>
"""
    return HTMLResponse(body, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
