"""Structured answers (rankings, positions, the conclusion) from servers that take a JSON schema, refuse it,
or ignore the response format altogether: recorded through the engine against a fake server that speaks the
real protocol, on both OpenAI transports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from moot.engine import Run
from moot.events import Event
from moot.spec import RoomSpec
from moot.testing.servers import FakeLLMServer

MEMBERS = ("Ana", "Ben", "Cleo")
CONCLUSION = {"summary": "Open on Sundays.", "decision_advice": "Try it for a month.", "consensus_points": [],
              "dissent_points": []}  # fmt: skip


def model_answer(body: dict[str, Any], *, prose: bool = False) -> str:
    """A model that gets the task right; with `prose`, as a model unbound by a grammar writes: the object in a
    fenced block after a sentence."""
    asked = body["messages"][-1]["content"]
    if found := re.search(r"using each of these labels once: (.*)\.", asked):
        data: object = {"ranking": found.group(1).split(", "), "reason": "clearer reasons"}
    elif "where each member stands, as one JSON object" in asked:
        data = {"positions": {m: {"stance": "support", "confidence": 0.8, "changed": False, "reason": "r"}
                              for m in MEMBERS}}  # fmt: skip
    elif "final conclusion" in asked:
        data = CONCLUSION
    else:
        return "Sunday trade pays for itself within a season."
    text = json.dumps(data)
    return f"Here it is:\n```json\n{text}\n```" if prose else text


def room(protocol: str, server: FakeLLMServer, transport: str) -> RoomSpec:
    return RoomSpec.from_data(
        {
            "task": "Should a small bakery open on Sundays?",
            "protocol": protocol,
            "max_rounds": 1,
            "models": {"m": {"provider": "openai", "model": "fake-model", "base_url": f"{server.url}/v1",
                             "api_key": "k", "transport": transport, "max_retries": 0}},
            "agents": [{"name": "Chair", "role": "moderator"}, *({"name": m} for m in MEMBERS)],
        }
    )  # fmt: skip


def of_type(events: list[Event], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


def formats(server: FakeLLMServer) -> list[str]:
    return [r.body["response_format"]["type"] for r in server.requests if "response_format" in r.body]


@pytest.mark.parametrize("transport", ["lean", "sdk"])
async def test_a_server_that_refuses_json_schema_is_asked_for_a_json_object_and_that_is_remembered(
    transport: str,
) -> None:
    async with FakeLLMServer(reply=model_answer, response_formats=["json_object", "text"]) as server:
        events = [e async for e in Run(room("council", server, transport))]

    assert events[-1].type == "room_completed" and not of_type(events, "turn_failed")
    asked = [(r.body["response_format"]["json_schema"]["name"] if "json_schema" in r.body["response_format"]
              else "", r.body["response_format"]["type"]) for r in server.requests if "response_format" in r.body]  # fmt: skip
    # the three rankings go at once, with the schema, until the first refusal is known: each refused one is
    # asked again with json_object, and remembered for rankings; the conclusion learns the same once
    refused = asked.count(("ranking", "json_schema"))
    assert 1 <= refused <= 3 and asked[:refused] == [("ranking", "json_schema")] * refused
    assert asked[refused:] == [("", "json_object")] * 3 + [("conclusion", "json_schema"), ("", "json_object")]
    [aggregated] = of_type(events, "rankings_aggregated")
    assert sum(a.reviews for a in aggregated.answers) == 6  # every review read
    assert not of_type(events, "room_concluded")[0].fallback
    ranking = server.requests[3].body["response_format"]["json_schema"]["schema"]["properties"]["ranking"]
    assert sorted(ranking["enum"]) == [["A", "B"], ["B", "A"]]  # each order of the two labels: none twice


@pytest.mark.parametrize("transport", ["lean", "sdk"])
@pytest.mark.parametrize("protocol", ["board", "council"])
async def test_a_server_that_ignores_the_response_format_still_gives_valid_structured_answers(
    transport: str, protocol: str
) -> None:
    async with FakeLLMServer(reply=lambda body: model_answer(body, prose=True)) as server:
        events = [e async for e in Run(room(protocol, server, transport))]

    assert events[-1].type == "room_completed" and not of_type(events, "turn_failed")
    assert not of_type(events, "turn_restarted")  # the objects are read out of the prose: nothing asked twice
    assert set(formats(server)) == {"json_schema"}  # nothing refused it, so nothing was downgraded
    if protocol == "board":
        # the summary held no positions: they were asked apart, answered in prose, and read
        [recorded] = of_type(events, "positions_recorded")
        assert [p.agent for p in recorded.positions] == list(MEMBERS)
        summaries = [e for e in of_type(events, "turn_completed") if e.kind == "summary"]
        assert summaries[0].text == "Sunday trade pays for itself within a season."  # the prose stays as said
        apart = [
            r.body
            for r in server.requests
            if "Now give where each member stands" in r.body["messages"][-1]["content"]
        ]
        assert len(apart) == 1 and apart[0]["response_format"]["json_schema"]["name"] == "positions"
        assert apart[0]["messages"][-2] == {"role": "assistant", "content": summaries[0].text}
    else:
        [aggregated] = of_type(events, "rankings_aggregated")
        assert sum(a.reviews for a in aggregated.answers) == 6
    assert of_type(events, "room_concluded")[0].summary == "Open on Sundays."
