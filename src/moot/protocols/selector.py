"""Selector: one speaker at a time, chosen as the discussion goes. Before each speech the chair names who
speaks next and why (or, by the room's `speaker_selection`, round robin or chance; in the library, any
function; or `manual`, a person, who is asked with `choice_requested` and answers with a member's name).
A name that is not a member is asked for again, then round robin stands in. Each round is one speech, so
`max_rounds` counts speeches.

Events: `speaker_selected` after the chair's choice.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from moot.events import Event, SpeakerSelected
from moot.protocols._base import Protocol, RequestContext, Step, Turn, Unreadable, one_turn
from moot.transcript import Transcript

if TYPE_CHECKING:
    from moot.models import ModelRequest
    from moot.spec import RoomSpec

# A function that names the next speaker from the room, the transcript so far and the round to come.
Choose = Callable[["RoomSpec", Transcript, int], str]

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "choose": (
            "As chair, name who should speak next to move the discussion forward, one of: {options}. Answer "
            'with one JSON object and nothing else: {{"next": name, "reason": "one line: why them now"}}.'
        ),
        "fallback": "round robin, because the chair named no member",
    },
    "zh": {
        "choose": (
            "请以主持人身份指定下一位发言者，以推动讨论，从以下成员中选一位：{options}。"
            '只输出一个JSON对象，不要有其他文字：{{"next": 姓名, "reason": "一句话：为什么现在由他发言"}}。'
        ),
        "fallback": "主持人没有指定有效成员，按顺序轮流",
    },
}
_JSON = re.compile(r"\{.*\}", re.DOTALL)


def person_choice(transcript: Transcript, round_: int, members: Sequence[str]) -> str | None:
    """The member a person named for a round: the first words since the last speech that are a member's
    name (`Bob`, or `/next Bob`), any case."""
    by_name = {m.casefold(): m for m in members}
    last = [e for e in transcript if e.kind == "speech" and e.round < round_]
    since = last[-1].key if last else (0, -2, 0, 0)
    for entry in transcript:
        if entry.kind == "intervention" and entry.key > since:
            name = entry.text.strip().removeprefix("/next").strip().casefold()
            if name in by_name:
                return by_name[name]
    return None


def choice_schema(members: Sequence[str]) -> dict[str, object]:
    """What a server that enforces a schema is asked for: a member's name and a short reason."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["next", "reason"],
        "properties": {
            "next": {"type": "string", "enum": list(members)},
            "reason": {"type": "string", "maxLength": 200},
        },
    }


class Selector(Protocol):
    name = "selector"
    chaired = True

    def structured(self, turn: Turn) -> bool:
        return turn.kind in ("selection", "conclusion")

    def __init__(self, choose: Choose | None = None) -> None:
        """`choose`: a function that names each next speaker, in place of the room's `speaker_selection`."""
        self.choose = choose

    def plan(self, room: RoomSpec, transcript: Transcript) -> Iterator[Step]:
        members = [a.name for a in room.members]
        chair = self.chair(room)
        for round_ in range(1, room.max_rounds + 1):
            turn_robin = members[(round_ - 1) % len(members)]
            spoken = next((e.speaker for e in transcript if e.kind == "speech" and e.round == round_), None)
            if self.choose is not None and spoken is not None:
                speaker = spoken  # the function chose already: it is asked once per round, never again
            elif self.choose is not None:
                named = self.choose(room, transcript, round_)
                speaker = named if named in members else turn_robin
            elif room.speaker_selection == "chair" and chair is not None:
                yield one_turn("selection", chair.name, round_, 0, ask="selector_choose")
                entry = transcript.turn(round_, "selection", chair.name)
                if entry is None:
                    return
                chosen = entry.data.get("next") if entry.data and not entry.failed else None
                speaker = chosen if isinstance(chosen, str) and chosen in members else turn_robin
            elif room.speaker_selection == "manual":
                chosen = spoken or person_choice(transcript, round_, members)
                if chosen is None:
                    yield Step(round=round_, turns=(), awaiting=tuple(members))
                    return
                speaker = chosen
            elif room.speaker_selection == "random":
                seed = hashlib.sha256(f"{room.task}\x1f{round_}".encode()).digest()
                speaker = random.Random(int.from_bytes(seed[:8], "big")).choice(members)
            else:
                speaker = turn_robin
            yield one_turn("speech", speaker, round_, 1)

    def request(self, ctx: RequestContext) -> ModelRequest:
        if ctx.turn.kind != "selection":
            return super().request(ctx)
        options = tuple(a.name for a in ctx.room.members)
        text = TEXTS[ctx.room.language]["choose"].format(options=", ".join(options))
        request = ctx.build(instruction_text=text)
        context = replace(request.context, ask=ctx.turn.ask, options=options) if request.context else None
        return replace(
            request, json_output=True, schema=choice_schema(options), schema_name="choice", context=context
        )

    def read(self, room: RoomSpec, turn: Turn, text: str, transcript: Transcript) -> dict[str, Any] | None:
        if turn.kind != "selection":
            return None
        members = [a.name for a in room.members]
        match = _JSON.search(text)
        try:
            data = json.loads(match.group(0)) if match else None
        except json.JSONDecodeError as exc:
            raise Unreadable(f"not valid JSON: {exc.msg}") from None
        if not isinstance(data, dict) or not isinstance(data.get("next"), str):
            raise Unreadable('give one JSON object with "next": the name of a member')
        by_name = {m.casefold(): m for m in members}
        name = by_name.get(data["next"].strip().casefold())
        if name is None:
            raise Unreadable(f"'{data['next']}' is not a member; name one of {', '.join(members)}")
        return {"next": name, "reason": str(data.get("reason", ""))[:500], "by": "chair"}

    def fallback(self, room: RoomSpec, turn: Turn, text: str) -> dict[str, Any] | None:
        if turn.kind != "selection":
            return None
        members = [a.name for a in room.members]
        name = members[(turn.round - 1) % len(members)]
        return {"next": name, "reason": TEXTS[room.language]["fallback"], "by": "round_robin"}

    def before_step(self, room: RoomSpec, transcript: Transcript, step: Step) -> list[Event]:
        """Announces a speaker chosen without the chair (a function, a person, chance or turn order)."""
        if room.speaker_selection == "chair" and self.choose is None and self.chair(room) is not None:
            return []  # the chair's choice was announced after its selection turn
        by: str = room.speaker_selection
        if self.choose is not None:
            by = "function"
        elif by == "chair":
            by = "round_robin"  # no chair to choose
        elif by == "manual":
            by = "person"
        return [
            SpeakerSelected(round=turn.round, speaker=turn.speaker, by=by)
            for turn in step.turns
            if turn.kind == "speech"
        ]

    def after_step(self, room: RoomSpec, transcript: Transcript, step: Step) -> list[Event]:
        events: list[Event] = []
        for turn in step.turns:
            if turn.kind != "selection":
                continue
            entry = transcript.turn(turn.round, turn.kind, turn.speaker)
            data = entry.data if entry is not None and entry.data else self.fallback(room, turn, "")
            if data is not None:
                events.append(
                    SpeakerSelected(
                        round=turn.round, speaker=data["next"], by=data.get("by", "chair"),
                        reason=data.get("reason", ""),
                    )
                )  # fmt: skip
        return events
