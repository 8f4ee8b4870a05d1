"""Rooms, entries and events built through the public models, for the storage tests."""

from __future__ import annotations

from typing import Any

from moot.events import Event, RoundStarted, TurnCompleted, TurnStarted
from moot.models import Usage
from moot.spec import RoomSpec
from moot.transcript import USER, Entry


def room_spec(**extra: Any) -> RoomSpec:
    data: dict[str, Any] = {
        "task": "Should we open-source our engine?\nWe have two customers who pay for it.",
        "protocol": "board",
        "max_rounds": 2,
        "models": {"sim": {"provider": "simulated", "seed": 1}},
        "agents": [
            {"name": "Alice", "persona": "an engineer"},
            {"name": "Bob", "persona": "a lawyer"},
            {"name": "Chair", "role": "moderator"},
        ],
    }
    data.update(extra)
    return RoomSpec.from_data(data)


def task() -> Entry:
    return Entry(kind="task", round=0, stage=-1, speaker=USER, text="Should we open-source our engine?")


def speech(
    round_: int, speaker: str, slot: int, text: str = "", *, tokens: tuple[int, int] = (10, 5)
) -> Entry:
    return Entry(
        kind="speech",
        round=round_,
        slot=slot,
        speaker=speaker,
        text=text or f"{speaker} in round {round_}",
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        model="simulated:simulated",
        colour="#3cb44b",
        finish_reason="stop",
    )


def completed(entry: Entry, seq: int) -> list[Event]:
    """The started and completed events of a turn, numbered from `seq`."""
    return [
        TurnStarted(
            seq=seq, turn_id=entry.turn_id, round=entry.round, kind="speech", speaker=entry.speaker, model="m"
        ),
        TurnCompleted(
            seq=seq + 1,
            turn_id=entry.turn_id,
            round=entry.round,
            kind="speech",
            speaker=entry.speaker,
            text=entry.text,
            usage=entry.usage or Usage(),
            finish_reason="stop",
            model="m",
            created_at=entry.created_at,
        ),
    ]


def round_started(seq: int, round_: int = 1) -> RoundStarted:
    return RoundStarted(seq=seq, round=round_, max_rounds=2)
