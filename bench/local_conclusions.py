"""How often a small local model ends a board meeting with a valid conclusion.

    python bench/local_conclusions.py                 # 10 meetings on the first GGUF model `moot models` lists
    python bench/local_conclusions.py --meetings 20 --model path/to/model.gguf

Each meeting: a moderator and two members, one round (opening, two speeches in parallel, summary,
conclusion), replies of at most 60 tokens, the conclusion under its own limit. A conclusion is valid when the
engine did not fall back (it parsed the model's JSON into the four fields, after at most one retry). The
server is asked for the conclusion with `response_format: json_schema` where it takes it (llama.cpp does).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from moot.engine import Run
from moot.events import RoomConcluded, TurnRestarted
from moot.models.llamacpp import find_models
from moot.spec import RoomSpec

TASKS = (
    "Should a small bakery open on Sundays?",
    "Should our team move from weekly to daily stand-up meetings?",
    "Should the library lend out tools as well as books?",
    "Should a startup of five people hire a full-time designer?",
    "Should the city close the old bridge to cars?",
)


def room(task: str, path: str) -> RoomSpec:
    return RoomSpec.from_data(
        {
            "task": task,
            "protocol": "board",
            "max_rounds": 1,
            "models": {
                "local": {
                    "provider": "llamacpp",
                    "model_path": path,
                    "max_tokens": 60,
                    "slots": 2,
                    "threads": 1,
                    "context_window": 2048,
                }
            },
            "agents": [
                {"name": "Chair", "role": "moderator", "persona": "a careful chair"},
                {"name": "Ana", "persona": "an optimist who looks for the upside"},
                {"name": "Ben", "persona": "a sceptic who counts the costs"},
            ],
        }
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meetings", type=int, default=10)
    parser.add_argument("--model", help="a GGUF file; the first one `moot models` lists by default")
    args = parser.parse_args()
    path = args.model or str(find_models()[0])
    valid = retried = 0
    started = time.perf_counter()
    for index in range(args.meetings):
        concluded: RoomConcluded | None = None
        restarts = 0
        async for event in Run(room(TASKS[index % len(TASKS)], path)):
            if isinstance(event, RoomConcluded):
                concluded = event
            elif isinstance(event, TurnRestarted) and event.turn_id.endswith(":conclusion:Chair"):
                restarts += 1
        ok = concluded is not None and not concluded.fallback
        valid += ok
        retried += restarts > 0
        summary = concluded.summary[:100] if concluded else "-"
        print(f"meeting {index + 1}: {'valid' if ok else 'FALLBACK'} (restarts {restarts}) {summary!r}")
    elapsed = time.perf_counter() - started
    print(
        f"valid conclusions: {valid} of {args.meetings} ({retried} needed a retry); "
        f"{elapsed / args.meetings:.1f} s per meeting"
    )


if __name__ == "__main__":
    asyncio.run(main())
