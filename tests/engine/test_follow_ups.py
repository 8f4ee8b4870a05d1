"""A concluded room can go on: a follow-up question adds rounds on the same transcript and a new conclusion;
the earlier conclusions are kept, numbered."""

from __future__ import annotations

import json

from moot.engine import Run
from moot.export import to_json, to_markdown

from .helpers import of_type, room, turn_order


async def test_a_follow_up_question_adds_rounds_and_a_numbered_conclusion() -> None:
    spec = room("board", names=("Alice", "Bob"), moderator="Chair", rounds=2, follow_up_rounds=1)
    first = Run(spec)
    await first.wait()
    assert [e.turn_id for e in first.transcript.conclusions()] == ["r2:conclusion:Chair"]

    second = Run(spec, transcript=first.transcript)
    second.intervene("But what if we keep the enterprise features closed?")
    events = [e async for e in second]
    [asked] = of_type(events, "intervention_added")
    assert asked.follow_up and not asked.stop
    assert turn_order(events) == [
        (3, "speech", "Alice"), (3, "speech", "Bob"), (3, "summary", "Chair"), (3, "conclusion", "Chair"),
    ]  # fmt: skip
    [concluded] = of_type(events, "room_concluded")
    assert concluded.number == 2 and concluded.round == 3
    speech = next(r for r in second.transcript if r.kind == "speech" and r.round == 3)
    assert speech.text  # the members heard the question (it is in their history as the user's words)
    assert [e.turn_id for e in second.transcript.conclusions()] == [
        "r2:conclusion:Chair",
        "r3:conclusion:Chair",
    ]
    assert (
        second.result is not None
        and second.result.conclusion == second.transcript.conclusions()[-1].conclusion
    )

    document = json.loads(to_json("room", spec, second.transcript, status="completed"))
    assert [c["number"] for c in document["conclusions"]] == [1, 2]
    markdown = to_markdown("room", spec, second.transcript, status="completed")
    assert "## Conclusion 1" in markdown and "## Conclusion 2" in markdown
    assert (
        markdown.index("## Conclusion 1")
        < markdown.index("enterprise features")
        < markdown.index("## Conclusion 2")
    )


async def test_an_earlier_stop_or_consensus_does_not_end_the_follow_up() -> None:
    spec = room("board", names=("Alice", "Bob"), moderator="Chair", rounds=3, follow_up_rounds=2)
    first = Run(spec)
    first.stop()
    await first.wait()
    assert first.result is not None and first.result.stop_reason == "stop_command"
    last = first.transcript.last_round
    second = Run(spec, transcript=first.transcript)
    second.intervene("And if we wait a year?")
    events = [e async for e in second]
    rounds = sorted({r for r, kind, _ in turn_order(events) if kind == "speech"})
    assert rounds == [last + 1, last + 2]
    assert of_type(events, "room_completed")[0].stop_reason == "max_rounds"


async def test_a_question_the_prompt_shows_the_members() -> None:
    spec = room("sequential", names=("Alice", "Bob"), moderator="M", rounds=1)
    first = Run(spec)
    await first.wait()
    second = Run(spec, transcript=first.transcript)
    second.intervene("What about the licence?")
    await second.wait()
    follow_up = first.transcript.follow_up
    assert follow_up is not None and follow_up.text == "What about the licence?"
    assert len(second.transcript.conclusions()) == 2
