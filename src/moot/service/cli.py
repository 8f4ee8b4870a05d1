"""`moot serve` runs the HTTP service; `moot users add|token` hand out tokens from the server's machine.

Mount them into the main CLI with `app.command("serve")(serve)` and `app.add_typer(users_app)`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from pydantic import ValidationError

from moot.exceptions import MootError
from moot.service.auth import hash_token, new_token
from moot.service.logs import log_config
from moot.service.schemas import UserCreate
from moot.settings import get_settings
from moot.store import Store, UserRole

users_app = typer.Typer(
    name="users", help="People who may use the HTTP service, and their tokens.", no_args_is_help=True
)
GRACEFUL_SECONDS = 5  # watchers' streams stay open; a shutdown does not wait for them longer than this


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1, or MOOT_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default 8000, or MOOT_PORT).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the API (docs at /docs). Rooms run inside the server; stopping it pauses them, the next start
    resumes them. SQLite in the data directory unless MOOT_DATABASE_URL says otherwise."""
    import uvicorn

    from moot import tracing
    from moot.service import create_app

    settings = get_settings()
    settings = settings.model_copy(
        update={"host": host or settings.host, "port": settings.port if port is None else port}
    )
    try:
        tracing.setup(settings.tracing)  # MOOT_TRACING=otlp: spans of every run, turn and model call
    except MootError as exc:
        raise _fail(exc) from None
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        log_level=log_level,
        log_config=log_config(log_level),  # every handler scrubs tokens and keys from what it writes
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )


def _fail(exc: MootError) -> typer.Exit:
    typer.secho(f"✗ {exc}", fg="red", err=True)
    return typer.Exit(1)


@users_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    role: Annotated[str, typer.Option(help="readonly, member or admin.")] = "member",
) -> None:
    """Add a user and print their token (shown only this once)."""
    try:
        user = UserCreate.model_validate({"name": name, "role": role})
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors(include_url=False))
        raise typer.BadParameter(problems) from None
    token = new_token()

    async def go() -> None:
        async with Store.from_url() as store:
            await store.ensure_schema()
            await store.create_user(user.name, role=user.role, token_hash=hash_token(token))

    try:
        asyncio.run(go())
    except MootError as exc:
        raise _fail(exc) from None
    typer.echo(f"added {name} ({role}); their token, shown only now:\n{token}")


@users_app.command("token")
def user_token(
    name: Annotated[str, typer.Argument(help="The user's name, e.g. admin.")],
    url: Annotated[
        bool, typer.Option("--url", help="Print the page's sign-in address with the token.")
    ] = False,
) -> None:
    """Give a user a new token and print it; their old token stops working."""
    token = new_token()

    async def go() -> UserRole | None:
        async with Store.from_url() as store:
            await store.ensure_schema()
            user = await store.user_by_name(name)
            if user is not None:
                await store.update_user(user.id, token_hash=hash_token(token))
            return None if user is None else user.role

    try:
        role = asyncio.run(go())
    except MootError as exc:
        raise _fail(exc) from None
    if role is None:
        typer.secho(f"✗ no user '{name}'; add one with `moot users add {name}`", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"a new token for {name} ({role}); the old one no longer works:\n{token}")
    if url:
        settings = get_settings()
        typer.echo(
            f"open this address to sign in:\nhttp://{settings.host}:{settings.port}/login?token={token}"
        )
