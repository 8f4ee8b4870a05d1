"""A fake LLM server per test, and model declarations and adapters pointing at it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import pytest
import uvloop

from moot.models import Completion, Model, ModelRequest, build_model
from moot.spec import ModelSpec
from moot.testing.servers import FakeLLMServer

KEY = "sk-test-0123456789abcdef"


class Collect(Protocol):
    async def __call__(
        self, model: Model, request: ModelRequest, deltas: list[str] | None = None
    ) -> tuple[list[str], Completion]: ...


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The lean adapter's own reader (test_wire) runs on both loops Moot runs on: asyncio's, and uvloop,
    which `moot serve` and `moot worker` use where it is installed (it comes with uvicorn[standard])."""
    if item.path.name == "test_wire.py":
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
def api_key() -> str:
    return KEY


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def make_spec(server: FakeLLMServer) -> Callable[..., ModelSpec]:
    """A declaration for the fake server, with retries fast enough for tests; fields override."""

    def make(provider: str = "openai", **fields: Any) -> ModelSpec:
        data: dict[str, Any] = {
            "provider": provider,
            "model": "fake-model",
            "base_url": server.url + "/v1" if provider == "openai" else server.url,
            "api_key": KEY,
            "timeout": 5,
            "max_retries": 2,
            "retry_backoff": 0.01,
            "retry_max_wait": 0.05,
        }
        data.update(fields)
        return ModelSpec.model_validate(data)

    return make


@pytest.fixture
async def make_model() -> AsyncIterator[Callable[[ModelSpec], Model]]:
    """Builds adapters the way the engine does, and closes them after the test."""
    made: list[Model] = []

    def make(spec: ModelSpec) -> Model:
        made.append(build_model(spec))
        return made[-1]

    yield make
    for model in made:
        await model.aclose()


@pytest.fixture
def collect() -> Collect:
    """Runs one stream to its end: the text deltas, and the Completion that closed it.

    Deltas go into `deltas` as they come, so a test can see what arrived before a stream broke.
    """

    async def run(
        model: Model, request: ModelRequest, deltas: list[str] | None = None
    ) -> tuple[list[str], Completion]:
        deltas = [] if deltas is None else deltas
        completions: list[Completion] = []
        async for item in model.stream(request):
            if isinstance(item, Completion):
                completions.append(item)
            else:
                assert not completions, "nothing follows the Completion"
                deltas.append(item)
        assert len(completions) == 1, "a stream ends with exactly one Completion"
        return deltas, completions[0]

    return run


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
