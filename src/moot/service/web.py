"""The page `moot serve` serves: one HTML shell and its plain JS and CSS from the package (static/web), no
build step and nothing from another host.

    GET  /                   the page: rooms, or the sign-in form
    GET  /rooms/{id}         the page of one room (deep link, reload-safe); /new, /providers, /templates too
    GET  /login?token=T      signs the browser in (session cookie) and redirects to /, the token gone
    POST /login              {"token": ...} from the sign-in form
    POST /logout             signs out
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from moot.service.deps import StoreDep, user_for_token
from moot.service.session import COOKIE, MAX_AGE, CSRFGuard

WEB_DIR = Path(__file__).parent / "static" / "web"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


class SignIn(BaseModel):
    token: str = Field(min_length=1, max_length=500)


def _shell() -> HTMLResponse:
    return HTMLResponse((WEB_DIR / "index.html").read_text("utf-8"), headers=PAGE_HEADERS)


def _sign_in(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.get("/")
@router.get("/new")
@router.get("/providers")
@router.get("/templates")
async def page() -> HTMLResponse:
    return _shell()


@router.get("/rooms/{room_id}")
async def room_page(room_id: str) -> HTMLResponse:
    return _shell()


@router.get("/login", response_model=None)
async def login(
    request: Request, store: StoreDep, token: Annotated[str | None, Query(max_length=500)] = None
) -> Response:
    """With `?token=`: a valid token signs in and leaves for `/`; a wrong one shows the form again."""
    if token is None:
        return _shell()
    user = await user_for_token(token, store)
    if user is None:
        return RedirectResponse("/login?failed=1", status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)
    _sign_in(response, request, token)
    return response


@router.post("/login", status_code=status.HTTP_204_NO_CONTENT)
async def login_form(body: SignIn, request: Request, response: Response, store: StoreDep) -> None:
    if await user_for_token(body.token.strip(), store) is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "this token does not work; ask your admin for one")
    _sign_in(response, request, body.token.strip())


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def install_web(app: FastAPI) -> None:
    """The page's routes, and the CSRF guard on writes signed in by its cookie."""
    app.include_router(router)
    app.add_middleware(CSRFGuard)
