"""The real app on uvicorn, on a free port of this process, once per backend (SQLite and PostgreSQL).

Two fixtures serve it; tests drive it over HTTP with httpx:

    async def test_something(server: LiveServer) -> None:         # a fresh server and database per test
        token = await server.new_user()                           # a member with a fresh name; or role=...
        async with server.client(token) as http:                  # httpx on .../api/v1 with a bearer token
            room = (await http.post("/rooms", json={...})).json()

    pytestmark = pytest.mark.asyncio(loop_scope="module")         # at the top of the module, then:
    async def test_quicker(shared_server: LiveServer) -> None:    # one server per module and backend
        ...                                                       # tests keep apart by their own users

`server.url` is the root (`/healthz`, `/metrics`, `/docs`), `server.api` the API's base URL; WebSocket
clients connect to `server.url.replace("http", "ws", 1) + "/api/v1/rooms/{id}/ws?token=..."`. `server.app`
is the FastAPI app (`app.state.manager`, `app.state.store`), `server.database` its database and
`server.admin_token` the admin's token. `fake_llm` is a FakeLLMServer speaking the OpenAI and Anthropic
wire protocols (on a thread of its own), whose replies make board meetings conclude. helpers.py has `provider_for(http, fake_llm)`,
which stores a provider pointing at it, `wait_for(http, room_id, "completed")`, which polls a room until
it gets there, and `running_server(database, settings)` for a server of other settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from moot.store import Store
from moot.testing.servers import FakeLLMServer
from store.fixtures import BACKENDS, Database, database, postgres_database, sqlite_database, store_factory

from .helpers import LLM_KEY, LiveServer, make_settings, reply, running_server

__all__ = ["database", "postgres_database", "store_factory"]


@pytest.fixture
async def server(
    database: Database, store_factory: Callable[[], Store], tmp_path: Path
) -> AsyncIterator[LiveServer]:
    """A fresh server on a fresh database, for one test (`store_factory` empties PostgreSQL's tables)."""
    async with running_server(database, make_settings(tmp_path)) as live:
        yield live


@pytest.fixture(scope="module", params=BACKENDS)
def shared_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Database:
    """One database per module and backend: a SQLite file, or the session's PostgreSQL schema emptied."""
    if request.param == "sqlite":
        return sqlite_database(tmp_path_factory.mktemp("service"))
    postgres: Database = request.getfixturevalue("postgres_database")
    asyncio.run(postgres.clear())
    return postgres


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(
    shared_database: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveServer]:
    """One server per module and backend, for modules whose tests run in the module's event loop."""
    async with running_server(shared_database, make_settings(tmp_path_factory.mktemp("data"))) as live:
        yield live


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    """A fake provider on a thread of its own, so that it serves tests of any event loop scope."""
    with FakeLLMServer(api_key=LLM_KEY, reply=reply, reply_tokens=8) as fake:
        yield fake
