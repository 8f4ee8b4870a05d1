"""Delphi: an anonymous panel. Members answer without seeing names; from round 2 each sees the others'
previous answers, anonymised, and may revise. Each answer ends with a number; the numbers of each round are
aggregated (median and spread), and the chair concludes from them.

Events: `estimates_aggregated` after each round.
"""

from __future__ import annotations

import hashlib
import random
import re
import statistics
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from moot.events import EstimatesAggregated, Event
from moot.protocols._base import Protocol, RequestContext, Step, Turn, Unreadable, together
from moot.transcript import Transcript

if TYPE_CHECKING:
    from moot.models import ModelRequest
    from moot.spec import RoomSpec

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "panelist": "Panelist {n}",
        "system": (
            "You sit on an anonymous expert panel. Nobody knows who wrote which answer: judge answers on their "
            "merits, and write only your own. Answer in English."
        ),
        "persona": "Who you are: {text}",
        "task": "Question for the panel: {task}",
        "previous": "The panel's answers in round {round}, anonymised:\n\n{answers}",
        "yours": "Your own answer in round {round}:\n{text}",
        "ask": (
            "Round {round} of {max_rounds}. Give your answer and your reasons in under {words} words{revise}. "
            "End with one line `ESTIMATE: <number>`: your numeric answer (where the question asks for no "
            "number, your confidence from 0 to 100 that the answer is yes)."
        ),
        "revise": ", revising it where the others' reasons persuade you",
        "aggregate": "Round {round}: median {median}, from {low} to {high} (interquartile spread {spread})",
        "chair": "The panel's estimates, round by round: {lines}. Conclude from them: say where the panel "
        "converged and what the median answer is.",
    },
    "zh": {
        "panelist": "专家{n}",
        "system": "你是匿名专家组的一员。没有人知道哪个回答是谁写的：只根据内容评判他人的回答，只写你自己的回答。请用中文回答。",
        "persona": "你的身份：{text}",
        "task": "专家组的问题：{task}",
        "previous": "第{round}轮专家组的匿名回答：\n\n{answers}",
        "yours": "你在第{round}轮的回答：\n{text}",
        "ask": (
            "第{round}轮，共{max_rounds}轮。请在{words}字以内给出你的回答和理由{revise}。"
            "最后单独一行写 `ESTIMATE: <数字>`：你的数值答案（如果问题不要求数字，就写你认为答案为“是”的把握，0到100）。"
        ),
        "revise": "，如果其他人的理由说服了你，可以修改你的回答",
        "aggregate": "第{round}轮：中位数{median}，范围{low}到{high}（四分位距{spread}）",
        "chair": "专家组各轮的估计：{lines}。请据此给出结论：说明专家组在哪些方面趋于一致，以及中位数答案是多少。",
    },
}
WORDS = {"en": 150, "zh": 250}
_ESTIMATE = re.compile(r"ESTIMATE\s*[:：]\s*\**\s*(-?\d+(?:[.,]\d+)?)", re.IGNORECASE)


def parse_estimate(text: str) -> float:
    found = _ESTIMATE.findall(text)
    if not found:
        raise Unreadable("end your answer with one line `ESTIMATE: <number>`")
    return float(found[-1].replace(",", "."))


def panel_order(room: RoomSpec, reader: str, authors: Sequence[str], round_: int) -> list[str]:
    """The order the others' answers are shown to one reader: shuffled per reader and round, the same for a
    room every time."""
    seed = hashlib.sha256("\x1f".join((room.task, reader, str(round_), *authors)).encode()).digest()
    order = list(authors)
    random.Random(int.from_bytes(seed[:8], "big")).shuffle(order)
    return order


class Delphi(Protocol):
    name = "delphi"
    chaired = True

    def plan(self, room: RoomSpec, transcript: Transcript) -> Iterator[Step]:
        names = [a.name for a in room.members]
        for round_ in range(1, room.max_rounds + 1):
            yield together("speech", names, round_, 0, ask="delphi_estimate")

    def request(self, ctx: RequestContext) -> ModelRequest:
        from moot.models import Message, ModelRequest, TurnContext
        from moot.prompts import instruction

        room, agent, turn = ctx.room, ctx.agent, ctx.turn
        t = TEXTS[room.language]
        if turn.kind != "speech":  # the chair concludes from the estimates, names and all
            lines = "; ".join(_aggregate_line(room, e) for e in aggregates(room, ctx.transcript)) or "-"
            text = t["chair"].format(lines=lines) + "\n" + instruction(room, agent, turn.kind, turn.round, [])
            return ctx.build(instruction_text=text)
        parts = [t["task"].format(task=room.task)]
        earlier: list[tuple[str, str]] = []
        previous = turn.round - 1
        if previous >= 1:
            answers = _round_answers(ctx.transcript, previous)
            own = answers.pop(agent.name, None)
            order = panel_order(room, agent.name, list(answers), previous)
            earlier = [(t["panelist"].format(n=i), answers[name]) for i, name in enumerate(order, 1)]
            shown = "\n\n".join(f"[{label}] {text}" for label, text in earlier)
            parts.append(t["previous"].format(round=previous, answers=shown or "-"))
            if own is not None:
                parts.append(t["yours"].format(round=previous, text=own))
        revise = t["revise"] if previous >= 1 else ""
        parts.append(
            t["ask"].format(
                round=turn.round, max_rounds=room.max_rounds, words=WORDS[room.language], revise=revise
            )
        )
        system = t["system"]
        if agent.persona.strip():
            system += "\n" + t["persona"].format(text=agent.persona.strip())
        return ModelRequest(
            system=system,
            messages=(Message(role="user", content="\n\n".join(parts)),),
            max_tokens=ctx.max_tokens,
            temperature=ctx.temperature,
            context=TurnContext(
                kind="speech", speaker=agent.name, language=room.language, task=room.task,
                persona=agent.persona, round=turn.round, max_rounds=room.max_rounds,
                earlier=tuple(earlier), ask=turn.ask,
            ),
        )  # fmt: skip

    def read(self, room: RoomSpec, turn: Turn, text: str, transcript: Transcript) -> dict[str, Any] | None:
        if turn.kind != "speech":
            return None
        return {"estimate": parse_estimate(text)}

    def after_step(self, room: RoomSpec, transcript: Transcript, step: Step) -> list[Event]:
        if not any(t.kind == "speech" for t in step.turns):
            return []
        return [a for a in aggregates(room, transcript) if a.round == step.round]


def aggregates(room: RoomSpec, transcript: Transcript) -> list[EstimatesAggregated]:
    """Each round's estimates, with their median, range and interquartile spread."""
    rounds: dict[int, dict[str, float]] = {}
    for entry in transcript:
        if entry.kind == "speech" and not entry.failed and entry.data and "estimate" in entry.data:
            rounds.setdefault(entry.round, {})[entry.speaker] = float(entry.data["estimate"])
    found = []
    for round_, estimates in sorted(rounds.items()):
        values = sorted(estimates.values())
        spread = None
        if len(values) >= 2:
            quartiles = statistics.quantiles(values, n=4, method="inclusive")
            spread = round(quartiles[2] - quartiles[0], 4)
        found.append(
            EstimatesAggregated(
                round=round_,
                estimates=estimates,
                median=statistics.median(values) if values else None,
                low=values[0] if values else None,
                high=values[-1] if values else None,
                spread=spread if len(values) >= 2 else 0.0,
            )
        )
    return found


def _aggregate_line(room: RoomSpec, event: EstimatesAggregated) -> str:
    return TEXTS[room.language]["aggregate"].format(
        round=event.round, median=f"{event.median:g}", low=f"{event.low:g}", high=f"{event.high:g}",
        spread=f"{event.spread:g}",
    )  # fmt: skip


def _round_answers(transcript: Transcript, round_: int) -> dict[str, str]:
    return {
        e.speaker: e.text
        for e in transcript
        if e.kind == "speech" and e.round == round_ and not e.failed and e.text
    }
