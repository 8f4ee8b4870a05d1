"""`moot db`: migrate the configured database, or show which schema revision it is at."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.text import Text

from moot.store import Store
from moot.store._errors import StoreError

EXIT_DATABASE = 2  # bad input or configuration, as everywhere in the CLI

db_app = typer.Typer(
    name="db",
    help="The database (MOOT_DATABASE_URL, else a SQLite file in the data directory).",
    no_args_is_help=True,
)


def _fail(exc: StoreError) -> typer.Exit:
    Console(stderr=True).print(Text(f"✗ {exc}", style="red"), soft_wrap=True)
    return typer.Exit(EXIT_DATABASE)


@db_app.command()
def upgrade() -> None:
    """Migrate the database to the newest schema; run it again at any time."""

    async def go() -> tuple[str, str | None]:
        async with Store.from_url() as store:
            await store.upgrade()
            return store.url, await store.revision()

    try:
        url, revision = asyncio.run(go())
    except StoreError as exc:
        raise _fail(exc) from None
    typer.echo(f"{url}: at revision {revision} (newest)")


@db_app.command()
def current() -> None:
    """Print the schema revision the database is at."""

    async def go() -> tuple[str, str | None]:
        async with Store.from_url() as store:
            return store.url, await store.revision()

    try:
        url, revision = asyncio.run(go())
    except StoreError as exc:
        raise _fail(exc) from None
    head = Store.head_revision()
    if revision == head:
        typer.echo(f"{url}: at revision {revision} (newest)")
    else:
        typer.echo(f"{url}: at revision {revision or 'none'}, newest is {head}; run `moot db upgrade`")
