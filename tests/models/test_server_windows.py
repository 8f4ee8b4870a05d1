"""A server's context window, as adapters learn it from `GET /v1/models`: asked once for rooms that start
together, kept a few minutes per process, and asked again where the server did not answer."""

from __future__ import annotations

import asyncio

import pytest

from moot.models import _windows
from moot.models.openai import OpenAILeanModel
from moot.spec import ModelSpec
from moot.testing.servers import FakeLLMServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(_windows, "ANSWERS", _windows.ServerAnswers(ttl=300, size=8, clock=clock))
    return clock


def model(server: FakeLLMServer, *, key: str = "k", name: str = "fake-model") -> OpenAILeanModel:
    spec = ModelSpec.model_validate(
        {"provider": "openai", "model": name, "base_url": server.url + "/v1", "api_key": key}
    )
    return OpenAILeanModel(spec)


async def windows(models: list[OpenAILeanModel]) -> list[int | None]:
    try:
        return list(await asyncio.gather(*(m.server_window() for m in models)))
    finally:
        for m in models:
            await m.aclose()


async def test_rooms_that_start_together_on_one_server_share_one_request(clock: Clock) -> None:
    async with FakeLLMServer(context_window=4096, announce_window=True) as server:
        assert await windows([model(server) for _ in range(12)]) == [4096] * 12
        assert server.models_asked == 1
        assert await windows([model(server) for _ in range(3)]) == [4096] * 3  # kept: not asked again
        assert server.models_asked == 1


async def test_an_answer_is_kept_for_its_lifetime_then_asked_again(clock: Clock) -> None:
    async with FakeLLMServer(context_window=4096, announce_window=True) as server:
        assert await windows([model(server)]) == [4096]
        clock.now += 299
        server.context_window = 2048  # restarted with another window: seen once the answer is old
        assert await windows([model(server)]) == [4096]
        assert server.models_asked == 1
        clock.now += 2
        assert await windows([model(server)]) == [2048]
        assert server.models_asked == 2


async def test_a_server_that_did_not_answer_is_asked_again_next_time(clock: Clock) -> None:
    async with FakeLLMServer(context_window=4096, announce_window=True, api_key="other") as server:
        assert await windows([model(server, key="k")]) == [None]  # 401: no answer, nothing kept
        server.api_key = "k"
        assert await windows([model(server, key="k")]) == [4096]
        assert await windows([model(server, key="k")]) == [4096]
        assert server.models_asked == 2


async def test_a_stated_absence_of_a_window_is_an_answer_and_kept(clock: Clock) -> None:
    async with FakeLLMServer() as server:  # a 200 that states no window
        assert await windows([model(server), model(server)]) == [None, None]
        assert await windows([model(server)]) == [None]
        assert server.models_asked == 1


async def test_answers_are_kept_per_model_and_credentials_and_no_key_shows_in_a_cache_key(
    clock: Clock,
) -> None:
    secret = "sk-very-secret-key-0123456789"
    async with FakeLLMServer(context_window=4096, announce_window=True, models=("a", "b")) as server:
        await windows([model(server, key=secret, name="a")])
        await windows([model(server, key="other-key", name="a")])
        await windows([model(server, key=secret, name="b")])
        assert server.models_asked == 3
    kept = repr(list(_windows.ANSWERS._kept))
    assert secret not in kept and "other-key" not in kept
    assert _windows.credentials_digest(secret) in kept


async def test_at_most_size_answers_are_kept_the_least_recently_used_going_first(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    monkeypatch.setattr(_windows, "ANSWERS", _windows.ServerAnswers(size=2, clock=clock))
    async with FakeLLMServer(context_window=4096, announce_window=True, models=("a", "b", "c")) as server:
        for name in ("a", "b", "a", "c"):  # c pushes b out: a was used since
            await windows([model(server, name=name)])
        assert server.models_asked == 3
        await windows([model(server, name="a")])
        assert server.models_asked == 3
        await windows([model(server, name="b")])
        assert server.models_asked == 4


async def test_an_asker_cancelled_while_waiting_leaves_the_request_to_the_others(clock: Clock) -> None:
    async with FakeLLMServer(context_window=4096, announce_window=True) as server:
        first, second = model(server), model(server)
        leaving = asyncio.create_task(first.server_window())
        staying = asyncio.create_task(second.server_window())
        await asyncio.sleep(0)  # both are waiting on the one request now
        leaving.cancel()
        assert await staying == 4096
        assert leaving.cancelled()
        assert server.models_asked == 1
        await first.aclose()
        await second.aclose()


async def test_with_no_lifetime_every_start_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_windows, "ANSWERS", _windows.ServerAnswers(ttl=0))
    async with FakeLLMServer(context_window=4096, announce_window=True) as server:
        assert await windows([model(server) for _ in range(3)]) == [4096] * 3
        assert server.models_asked == 3
