"""How often a small local model gives valid structured answers: conclusions, positions, council rankings.

    python bench/local_conclusions.py                 # 10 meetings on the first GGUF model `moot models` lists
    python bench/local_conclusions.py --meetings 20 --model path/to/model.gguf
    python bench/local_conclusions.py --protocol council

Each board meeting: a moderator and two members, one round (opening, two speeches in parallel, summary with
the members' positions, conclusion); a council: a moderator and three members (answers, rankings of the two
other answers, conclusion). Replies of at most 60 tokens, structured answers under their own limit. A
conclusion is valid when the engine did not fall back (it parsed the model's JSON into the four fields, after
at most one retry); positions when `positions_recorded` names every member; a ranking when it was read
(every other answer ranked once). The server is asked with `response_format: json_schema` where it takes it
(llama.cpp does).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from moot.engine import Run
from moot.events import Event, PositionsRecorded, RankingsAggregated, RoomConcluded, TurnRestarted
from moot.models.llamacpp import find_models
from moot.spec import RoomSpec

TASKS = (
    "Should a small bakery open on Sundays?",
    "Should our team move from weekly to daily stand-up meetings?",
    "Should the library lend out tools as well as books?",
    "Should a startup of five people hire a full-time designer?",
    "Should the city close the old bridge to cars?",
)


def room(task: str, path: str, protocol: str) -> RoomSpec:
    members = [
        {"name": "Ana", "persona": "an optimist who looks for the upside"},
        {"name": "Ben", "persona": "a sceptic who counts the costs"},
    ]
    if protocol == "council":
        members.append({"name": "Cleo", "persona": "an accountant"})
    return RoomSpec.from_data(
        {
            "task": task,
            "protocol": protocol,
            "max_rounds": 1,
            "models": {
                "local": {
                    "provider": "llamacpp",
                    "model_path": path,
                    "max_tokens": 60,
                    "slots": 3,
                    "threads": 1,
                    "context_window": 2048,
                }
            },
            "agents": [{"name": "Chair", "role": "moderator", "persona": "a careful chair"}, *members],
        }
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meetings", type=int, default=10)
    parser.add_argument("--model", help="a GGUF file; the first one `moot models` lists by default")
    parser.add_argument("--protocol", choices=("board", "council"), default="board")
    args = parser.parse_args()
    path = args.model or str(find_models()[0])
    valid = retried = structured = asked = 0
    started = time.perf_counter()
    for index in range(args.meetings):
        spec = room(TASKS[index % len(TASKS)], path, args.protocol)
        events: list[Event] = [event async for event in Run(spec)]
        concluded = next((e for e in events if isinstance(e, RoomConcluded)), None)
        restarts = sum(
            isinstance(e, TurnRestarted) and e.turn_id.endswith(":conclusion:Chair") for e in events
        )
        ok = concluded is not None and not concluded.fallback
        valid += ok
        retried += restarts > 0
        members = {a.name for a in spec.members}
        if args.protocol == "board":  # one summary: its positions, for every member
            asked += 1
            structured += any(
                isinstance(e, PositionsRecorded) and {p.agent for p in e.positions} == members for e in events
            )
        else:  # each member's ranking of the others' answers
            asked += len(members)
            reviews = [a.reviews for e in events if isinstance(e, RankingsAggregated) for a in e.answers]
            structured += sum(reviews) // max(len(members) - 1, 1)
        summary = concluded.summary[:100] if concluded else "-"
        print(f"meeting {index + 1}: {'valid' if ok else 'FALLBACK'} (restarts {restarts}) {summary!r}")
    elapsed = time.perf_counter() - started
    what = "positions" if args.protocol == "board" else "rankings"
    print(
        f"valid conclusions: {valid} of {args.meetings} ({retried} needed a retry); valid {what}: "
        f"{structured} of {asked}; {elapsed / args.meetings:.1f} s per meeting"
    )


if __name__ == "__main__":
    asyncio.run(main())
