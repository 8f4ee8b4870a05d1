"""Debate: two sides (proposition, opposition) speak in turn, round after round, and a judge (the chair)
decides with reasons. Sides come from the room file's `sides:`; members it leaves out alternate.

Events: the usual turn events; the judge's verdict is the conclusion (`room_concluded`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from moot.protocols._base import Protocol, RequestContext, Step, one_turn
from moot.transcript import Transcript

if TYPE_CHECKING:
    from moot.models import ModelRequest
    from moot.spec import RoomSpec

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "proposition": "for the motion",
        "opposition": "against the motion",
        "speech": (
            "Debate, round {round} of {max_rounds}. The motion: {task}\nYou speak for the {side_name} side "
            "({side}). Make your side's strongest case, answer the other side's last points by name, and do "
            "not concede the motion. Keep it under {words} words."
        ),
        "judge": (
            "You judged this debate. Decide which side won on the arguments made, not on your own view: say "
            "who won and why in the summary, your verdict on the motion in decision_advice, the points both "
            "sides accepted in consensus_points and the points still disputed in dissent_points."
        ),
    },
    "zh": {
        "proposition": "支持动议",
        "opposition": "反对动议",
        "speech": (
            "辩论，第{round}轮，共{max_rounds}轮。动议：{task}\n你代表{side_name}方（{side}）。"
            "为你方提出最有力的论证，点名回应对方上一轮的论点，不要让步。控制在{words}字以内。"
        ),
        "judge": (
            "你是本场辩论的评判。请只根据双方提出的论证（而不是你自己的观点）判断哪一方获胜："
            "在summary中说明谁赢了及原因，在decision_advice中给出你对动议的裁决，"
            "在consensus_points中列出双方都接受的观点，在dissent_points中列出仍有争议的观点。"
        ),
    },
}
SIDE_NAMES = {
    "en": {"proposition": "proposition", "opposition": "opposition"},
    "zh": {"proposition": "正", "opposition": "反"},
}
WORDS = {"en": 150, "zh": 250}


def sides(room: RoomSpec) -> dict[str, str]:
    """Each member's side: as the room file gives it, the others alternating from the proposition."""
    given = room.sides or {}
    found: dict[str, str] = {}
    for index, agent in enumerate(room.members):
        found[agent.name] = given.get(agent.name) or ("proposition" if index % 2 == 0 else "opposition")
    return found


def speaking_order(room: RoomSpec) -> list[str]:
    """Proposition and opposition alternate, each side in turn order, the larger side's rest at the end."""
    by_side = sides(room)
    prop = [n for n, s in by_side.items() if s == "proposition"]
    opp = [n for n, s in by_side.items() if s == "opposition"]
    order: list[str] = []
    for index in range(max(len(prop), len(opp))):
        order += [side[index] for side in (prop, opp) if index < len(side)]
    return order


class Debate(Protocol):
    name = "debate"
    chaired = True

    def plan(self, room: RoomSpec, transcript: Transcript) -> Iterator[Step]:
        order = speaking_order(room)
        for round_ in range(1, room.max_rounds + 1):
            for index, name in enumerate(order):
                yield one_turn("speech", name, round_, index, ask="debate_speech")

    def request(self, ctx: RequestContext) -> ModelRequest:
        from moot.prompts import instruction

        room, agent, turn = ctx.room, ctx.agent, ctx.turn
        t = TEXTS[room.language]
        side = ""
        if turn.kind == "speech":
            side = sides(room).get(agent.name, "proposition")
            text = t["speech"].format(
                round=turn.round, max_rounds=room.max_rounds, task=room.task, side=t[side],
                side_name=SIDE_NAMES[room.language][side], words=WORDS[room.language],
            )  # fmt: skip
        else:
            text = t["judge"] + "\n" + instruction(room, agent, turn.kind, turn.round, [])
        request = ctx.build(instruction_text=text)
        if request.context is None:
            return request
        return replace(request, context=replace(request.context, ask=turn.ask, side=side))
