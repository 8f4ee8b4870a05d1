"""Protocols are pure functions of the transcript: the next step follows from what is stored."""

from __future__ import annotations

import pytest

from moot.conclusion import Conclusion
from moot.protocols import Finish, Step, get_protocol
from moot.spec import RoomSpec
from moot.transcript import Entry, Transcript


def _room(protocol: str, rounds: int = 2, moderator: bool = True) -> RoomSpec:
    agents = [{"name": n, "model": "simulated"} for n in ("A", "B")]
    if moderator:
        agents.append({"name": "M", "role": "moderator", "model": "simulated"})
    return RoomSpec.from_data({"task": "t", "protocol": protocol, "max_rounds": rounds, "agents": agents})


def _walk(room: RoomSpec, transcript: Transcript) -> list[list[tuple[int, str, str]]]:
    """Plays the protocol to the end, every turn succeeding, and lists the steps."""
    protocol = get_protocol(room.protocol)
    steps: list[list[tuple[int, str, str]]] = []
    while not isinstance(step := protocol.next_step(room, transcript), Finish):
        assert isinstance(step, Step)
        steps.append([(t.round, t.kind, t.speaker) for t in step.turns])
        for t in step.turns:
            transcript.add(
                Entry(kind=t.kind, round=t.round, stage=t.stage, slot=t.slot, speaker=t.speaker, text="x")
            )
    return steps


def test_board_plan_B5_B6_B8() -> None:
    steps = _walk(_room("board"), Transcript())
    assert steps == [
        [(0, "opening", "M")],
        [(1, "speech", "A"), (1, "speech", "B")],
        [(1, "summary", "M")],
        [(2, "speech", "A"), (2, "speech", "B")],
        [(2, "summary", "M")],
        [(2, "conclusion", "M")],
    ]


def test_sequential_plan_without_moderator_has_no_conclusion_L5() -> None:
    steps = _walk(_room("sequential", moderator=False), Transcript())
    assert steps == [[(1, "speech", "A")], [(1, "speech", "B")], [(2, "speech", "A")], [(2, "speech", "B")]]


def test_parallel_turns_see_the_round_start_and_sequential_turns_see_everything_L6() -> None:
    room = _room("parallel")
    step = get_protocol("parallel").next_step(room, Transcript())
    assert isinstance(step, Step) and step.concurrent
    assert {t.sees for t in step.turns} == {(1, 0, 1, 0)}
    seq = get_protocol("sequential").next_step(_room("sequential"), Transcript())
    assert isinstance(seq, Step) and seq.turns[0].sees == seq.turns[0].key


def test_a_half_done_parallel_round_resumes_with_only_the_missing_turns_L10() -> None:
    room = _room("parallel")
    transcript = Transcript([Entry(kind="speech", round=1, stage=0, slot=2, speaker="B", text="done")])
    step = get_protocol("parallel").next_step(room, transcript)
    assert isinstance(step, Step)
    assert [(t.speaker, t.slot, t.sees) for t in step.turns] == [("A", 1, (1, 0, 1, 0))]


def test_a_stop_intervention_jumps_to_the_conclusion_B9() -> None:
    room = _room("board", rounds=5)
    transcript = Transcript()
    transcript.add(Entry(kind="opening", round=0, stage=0, slot=1, speaker="M", text="hi"))
    transcript.add(
        Entry(kind="intervention", round=0, stage=0, slot=1000, speaker="user", text="/stop", command="stop")
    )
    step = get_protocol("board").next_step(room, transcript)
    assert isinstance(step, Step) and step.is_conclusion and step.stop_reason == "stop_command"


def test_turn_identity_is_unique_in_a_transcript() -> None:
    transcript = Transcript([Entry(kind="speech", round=1, speaker="A", text="x")])
    with pytest.raises(ValueError, match="already"):
        transcript.add(Entry(kind="speech", round=1, speaker="A", text="again"))


def test_hardening_3_a_provisional_conclusion_neither_ends_the_discussion_nor_is_seen_B12() -> None:
    room = _room("board")
    transcript = Transcript()
    protocol = get_protocol("board")
    for kind, round_, speaker in (("opening", 0, "M"), ("speech", 1, "A"), ("speech", 1, "B")):
        transcript.add(Entry(kind=kind, round=round_, stage=0, slot=1, speaker=speaker, text="x"))
    failed = Entry(
        kind="conclusion", round=1, stage=9, slot=1, speaker="M", text="fallback",
        conclusion=Conclusion(summary="fallback"), fallback=True, provisional=True,
    )  # fmt: skip
    transcript.add(failed)

    step = protocol.next_step(room, transcript)  # the room failed before its summary: it goes on there
    assert isinstance(step, Step) and [(t.round, t.kind) for t in step.turns] == [(1, "summary")]
    assert not transcript.concluded and transcript.conclusion is failed  # it stands until a real one
    assert failed not in transcript.before((9, 0, 0, 0)) and not failed.is_turn
    assert [s for s in _walk(room, transcript) if s[0][1] == "conclusion"] == [[(2, "conclusion", "M")]]
    assert transcript.concluded and transcript.conclusion is not failed
    assert transcript.conclusion is not None and not transcript.conclusion.provisional
