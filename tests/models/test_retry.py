"""The retry policy and the mapping of provider failures onto Moot's exceptions."""

from __future__ import annotations

import email.utils
import gc
from datetime import UTC, datetime, timedelta

import pytest

from moot.exceptions import ModelAuthError, ModelError, ModelRequestError, TransientModelError
from moot.models.retry import error_detail, retry_after, retrying, status_error
from moot.spec import ModelSpec

SPEC = ModelSpec(provider="openai", max_retries=4, retry_backoff=0.5, retry_max_wait=1.5)


async def run_until_done(spec: ModelSpec, errors: list[ModelError], slept: list[float]) -> int:
    """Runs a call that raises `errors` in turn, then succeeds; the attempts made. Waits go into `slept`."""

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    attempts = 0
    async for attempt in retrying(spec, sleep=sleep):
        with attempt:
            attempts += 1
            if errors:
                raise errors.pop(0)
    return attempts


async def test_backoff_doubles_up_to_the_cap() -> None:
    slept: list[float] = []
    errors: list[ModelError] = [TransientModelError("busy") for _ in range(4)]
    assert await run_until_done(SPEC, errors, slept) == 5
    assert slept == [0.5, 1.0, 1.5, 1.5]


async def test_retry_after_is_waited_but_never_past_the_cap() -> None:
    slept: list[float] = []
    errors: list[ModelError] = [TransientModelError("slow down", retry_after=s) for s in (0.2, 60.0)]
    assert await run_until_done(SPEC, errors, slept) == 3
    assert slept == [0.2, 1.5]


async def test_giving_up_reraises_the_last_error_itself() -> None:
    last = TransientModelError("still down")
    errors: list[ModelError] = [TransientModelError("down") for _ in range(4)]
    with pytest.raises(TransientModelError) as caught:
        await run_until_done(SPEC, [*errors, last], [])
    assert caught.value is last


async def test_an_attempt_leaves_nothing_for_the_collector() -> None:
    """A model call's retry state is freed by reference counting: a server makes one per model call, and
    its full collections walk whatever is left in cycles."""

    async def call(fails: int) -> int:
        errors: list[ModelError] = [TransientModelError("busy") for _ in range(fails)]
        return await run_until_done(SPEC, errors, [])

    gc.collect()
    gc.disable()
    try:
        for fails in (0, 0, 1, 2):
            await call(fails)
        assert gc.collect() == 0
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "error", [ModelAuthError("bad key"), ModelRequestError("bad model"), ModelError("bug")]
)
async def test_other_errors_are_not_retried(error: ModelError) -> None:
    errors, slept = [error, error], list[float]()
    with pytest.raises(type(error)):
        await run_until_done(SPEC, errors, slept)
    assert (errors, slept) == ([error], [])


async def test_no_retries_means_one_attempt() -> None:
    errors: list[ModelError] = [TransientModelError("down"), TransientModelError("down")]
    with pytest.raises(TransientModelError):
        await run_until_done(SPEC.model_copy(update={"max_retries": 0}), errors, [])
    assert len(errors) == 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "0.25"}) == 0.25
    soon = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (retry_after({"retry-after": soon}) or 0) <= 30
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date gone by: no wait
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            b'{"error": {"message": "The model `x` does not exist", "type": "invalid_request_error"}}',
            "The model",
        ),
        (
            {"message": "Rate limit reached", "type": "requests"},
            "Rate limit reached",
        ),  # the openai SDK's body
        ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "Overloaded"),
        (b'{"error": "model \'llama9\' not found"}', "model 'llama9' not found"),  # Ollama
        (
            b'{"object": "error", "message": "max_tokens is too large", "code": 400}',
            "max_tokens is too large",
        ),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
    ],
)
def test_error_detail_finds_the_servers_words(body: object, said: str) -> None:
    assert said in error_detail(body)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ModelRequestError),
        (401, ModelAuthError),
        (403, ModelAuthError),
        (404, ModelRequestError),
        (408, TransientModelError),
        (422, ModelRequestError),
        (429, TransientModelError),
        (500, TransientModelError),
        (503, TransientModelError),
        (529, TransientModelError),
    ],
)
def test_statuses_map_to_what_a_retry_can_mend(status: int, kind: type[ModelError]) -> None:
    error = status_error(SPEC, status, "the server's words")
    assert type(error) is kind
    assert error.status == status
    assert "the server's words" in str(error)


def test_a_key_the_server_echoes_is_scrubbed() -> None:
    error = status_error(SPEC, 401, "Incorrect API key provided: sk-secret-123", key="sk-secret-123")
    assert "sk-secret-123" not in str(error)
    assert "OPENAI_API_KEY" in str(error)
