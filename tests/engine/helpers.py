"""Rooms and runs built through the public API, for the engine tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from moot.engine import Run
from moot.events import Event
from moot.models import Model
from moot.spec import RoomSpec
from moot.transcript import Transcript


def room(
    protocol: str = "sequential",
    *,
    names: Sequence[str] = ("Alice", "Bob", "Carol"),
    moderator: str | None = None,
    rounds: int = 2,
    language: str = "en",
    **extra: Any,
) -> RoomSpec:
    agents: list[dict[str, Any]] = [
        {"name": n, "persona": f"{n}'s persona", "decision_framework": f"{n}'s framework"} for n in names
    ]
    if moderator:
        agents.append({"name": moderator, "role": "moderator", "persona": "a neutral chair"})
    data: dict[str, Any] = {
        "task": "Should we open-source our engine?",
        "protocol": protocol,
        "max_rounds": rounds,
        "language": language,
        "models": {"sim": {"provider": "simulated", "seed": 1}},
        "agents": agents,
    }
    data.update(extra)
    return RoomSpec.from_data(data)


async def collect(run: Run) -> list[Event]:
    return [event async for event in run]


async def run_all(
    spec: RoomSpec, models: Mapping[str, Model] | None = None, transcript: Transcript | None = None
) -> tuple[Run, list[Event]]:
    run = Run(spec, models=models, transcript=transcript)
    return run, await collect(run)


def of_type(events: Sequence[Event], type_: str) -> list[Any]:
    return [e for e in events if e.type == type_]


def turn_order(events: Sequence[Event]) -> list[tuple[int, str, str]]:
    """(round, kind, speaker) of every completed turn, in stream order."""
    return [(e.round, e.kind, e.speaker) for e in of_type(events, "turn_completed")]
