"""Schemathesis hunts the whole OpenAPI for server errors and answers that break the schema.

It runs against the real app on uvicorn (on a thread of its own: schemathesis calls synchronously), on
SQLite and PostgreSQL, with a few deterministic examples per operation, valid and invalid alike. Users
are fuzzed with the admin's token, everything else with a member's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from store.fixtures import Database

from .helpers import ADMIN_TOKEN, make_settings, running_server

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CONFIG = schemathesis.Config.from_dict({"generation": {"database": "none"}})
EXAMPLES = 5  # per operation, valid and invalid together


class ThreadedServer:
    """`running_server` on a thread with its own event loop, for synchronous callers."""

    def __init__(self, database: Database, tmp_path: Path) -> None:
        self.database = database
        self.settings = make_settings(tmp_path, provider_test_timeout=1.0)
        self.url = ""
        self.member_token = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="moot-schemathesis")

    async def _serve(self) -> None:
        try:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            async with running_server(self.database, self.settings) as live:
                self.url, self.member_token = live.url, await live.new_user()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture
def threaded_server(database: Database, tmp_path: Path) -> Iterator[ThreadedServer]:
    if database.backend == "postgresql":
        asyncio.run(database.clear())
    with ThreadedServer(database, tmp_path) as server:
        yield server


def fuzz(operation: APIOperation, headers: dict[str, str]) -> None:
    """Valid and invalid requests of one operation; the checks fail the test on the first problem."""
    cases = st.one_of([operation.as_strategy(generation_mode=mode) for mode in GenerationMode])

    @hypothesis.settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=cases)
    def call(case: Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)

    call()


def test_no_input_makes_a_server_error_or_breaks_the_schema(threaded_server: ThreadedServer) -> None:
    loaded = schemathesis.openapi.from_url(f"{threaded_server.url}/openapi.json", config=CONFIG)
    # A room's event stream may follow the room for ever; the stream tests cover it.
    operations = [result.ok() for result in loaded.exclude(path_regex=r"/events$").get_all_operations()]
    assert len(operations) > 20
    for operation in operations:
        admin = operation.path.startswith("/api/v1/users")
        fuzz(operation, {"Authorization": f"Bearer {ADMIN_TOKEN if admin else threaded_server.member_token}"})
