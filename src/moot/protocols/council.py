"""Council: every member answers on their own and at once; then each ranks the others' answers, shown
without names under labels shuffled for each reviewer; the chair synthesises the answers and the rankings.

Events: `rankings_aggregated` after the reviews (mean rank, and how often each answer was ranked first).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from moot.events import Event, RankedAnswer, RankingsAggregated
from moot.protocols._base import Protocol, RequestContext, Step, Turn, Unreadable, together
from moot.transcript import Transcript

if TYPE_CHECKING:
    from moot.models import ModelRequest
    from moot.spec import AgentSpec, RoomSpec

LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "answer": (
            "Answer the task on your own, from your expertise: give your answer, your reasons and the main "
            "risk. The other members answer at the same time without seeing you. Keep it under {words} words."
        ),
        "reviewer": (
            "You review answers to a task, judging each on its merits: is it right, well reasoned and useful? "
            "The authors are anonymous. Answer in English."
        ),
        "rank": (
            "Task: {task}\n\nHere are the other members' answers, each under a label:\n\n{answers}\n\n"
            "Rank them from best to worst. Answer with one JSON object and nothing else: "
            '{{"ranking": [labels, best first], "reason": "one line"}}, using each of these labels once: '
            "{labels}."
        ),
        "rankings": "How the members ranked each other's answers (mean rank, then first places): {lines}",
        "synthesis": (
            "As chair, synthesise the council's answers into one decision, weighing the rankings above."
        ),
    },
    "zh": {
        "answer": (
            "请独立回答议题，从你的专业出发：给出你的答案、理由和主要风险。其他成员同时作答，看不到你的回答。"
            "控制在{words}字以内。"
        ),
        "reviewer": "你负责评审对一个议题的回答，只看内容本身：是否正确、论证是否充分、是否有用。作者是匿名的。请用中文回答。",
        "rank": (
            "议题：{task}\n\n以下是其他成员的回答，每个回答有一个标签：\n\n{answers}\n\n"
            "请从好到差排序。只输出一个JSON对象，不要有其他文字："
            '{{"ranking": [标签，最好的在前], "reason": "一句话理由"}}，以下标签每个用一次：{labels}。'
        ),
        "rankings": "成员互评的排名（平均名次，以及被评为第一的次数）：{lines}",
        "synthesis": "请以主持人身份，结合上面的互评排名，把委员会的回答综合成一个决定。",
    },
}
WORDS = {"en": 200, "zh": 350}


def labels_for(room: RoomSpec, reviewer: str, authors: Sequence[str]) -> dict[str, str]:
    """Label -> author, shuffled for each reviewer, the same for a room every time (so a resumed room shows
    a reviewer the same labels)."""
    seed = hashlib.sha256("\x1f".join((room.task, reviewer, *authors)).encode()).digest()
    order = list(authors)
    random.Random(int.from_bytes(seed[:8], "big")).shuffle(order)
    return {LABELS[i]: author for i, author in enumerate(order)}


def ranking_schema(labels: Sequence[str]) -> dict[str, object]:
    """What a server that enforces a schema is asked for. For up to four labels, the ranking is one of their
    orders (at most 24), so a grammar gives each label exactly once; beyond that, labels and their number are
    held, and a label given twice is caught on reading and asked again."""
    ranking: dict[str, object]
    if len(labels) <= 4:
        ranking = {"type": "array", "enum": [list(order) for order in itertools.permutations(labels)]}
    else:
        items = {"type": "string", "enum": list(labels)}
        ranking = {"type": "array", "items": items, "minItems": len(labels), "maxItems": len(labels)}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["ranking", "reason"],
        "properties": {"ranking": ranking, "reason": {"type": "string", "maxLength": 200}},
    }


class Council(Protocol):
    name = "council"
    chaired = True

    def structured(self, turn: Turn) -> bool:
        return turn.kind in ("ranking", "conclusion")

    def plan(self, room: RoomSpec, transcript: Transcript) -> Iterator[Step]:
        """One round; a follow-up question to the concluded council adds rounds of answers and reviews."""
        names = [a.name for a in room.members]
        follow_up = transcript.follow_up
        rounds = [1, *(range(follow_up.round + 1, room.max_rounds + 1) if follow_up is not None else ())]
        for round_ in rounds:
            yield together("speech", names, round_, 0, ask="council_answer")
            yield together("ranking", names, round_, 1, ask="council_rank")

    def request(self, ctx: RequestContext) -> ModelRequest:
        from moot.models import Message, ModelRequest
        from moot.prompts import instruction

        room, agent, turn, transcript = ctx.room, ctx.agent, ctx.turn, ctx.transcript
        t = TEXTS[room.language]
        if turn.kind == "speech":
            text = t["answer"].format(words=WORDS[room.language])
            return _with(ctx.build(instruction_text=text), ask=turn.ask)
        if turn.kind == "ranking":
            answers = _answers(transcript, turn.round, exclude=agent.name)
            labels = labels_for(room, agent.name, list(answers))
            shown = "\n\n".join(f"[{label}] {answers[author]}" for label, author in labels.items())
            prompt = t["rank"].format(task=room.task, answers=shown, labels=", ".join(labels))
            return ModelRequest(
                system=t["reviewer"],
                messages=(Message(role="user", content=prompt),),
                max_tokens=ctx.max_tokens,
                temperature=ctx.temperature,
                json_output=True,
                schema=ranking_schema(list(labels)) if labels else None,
                schema_name="ranking",
                context=_context(room, agent, turn, options=tuple(labels), earlier=tuple(
                    (label, answers[author]) for label, author in labels.items()
                )),
            )  # fmt: skip
        # the chair's synthesis: the answers by name, and how they were ranked
        lines = "; ".join(_line(r) for r in aggregate(room, transcript))
        text = "\n".join(
            (
                t["rankings"].format(lines=lines or "-"),
                t["synthesis"],
                instruction(room, agent, "conclusion", turn.round, []),
            )
        )
        kept = [e for e in ctx.visible if e.kind != "ranking"]
        return ctx.build(instruction_text=text, visible=kept)

    def read(self, room: RoomSpec, turn: Turn, text: str, transcript: Transcript) -> dict[str, Any] | None:
        if turn.kind != "ranking":
            return None
        labels = labels_for(room, turn.speaker, list(_answers(transcript, turn.round, exclude=turn.speaker)))
        ranking = _parse_ranking(text, list(labels))
        return {"ranking": [labels[label] for label in ranking], "labels": labels}

    def after_step(self, room: RoomSpec, transcript: Transcript, step: Step) -> list[Event]:
        if not any(t.kind == "ranking" for t in step.turns):
            return []
        return [RankingsAggregated(round=step.round, answers=aggregate(room, transcript, step.round))]


def aggregate(room: RoomSpec, transcript: Transcript, round_: int | None = None) -> list[RankedAnswer]:
    """Each answer's mean rank over the reviews that ranked it, and how often it came first; best first.
    The last round's reviews unless a round is given."""
    if round_ is None:
        round_ = max((e.round for e in transcript if e.kind == "ranking"), default=1)
    ranks: dict[str, list[int]] = {a.name: [] for a in room.members}
    for entry in transcript:
        if (
            entry.kind == "ranking"
            and entry.round == round_
            and not entry.failed
            and entry.data
            and "ranking" in entry.data
        ):
            for place, author in enumerate(entry.data["ranking"], 1):
                ranks.setdefault(author, []).append(place)
    answers = [
        RankedAnswer(
            agent=name,
            mean_rank=round(sum(places) / len(places), 3) if places else None,
            first_places=places.count(1),
            reviews=len(places),
        )
        for name, places in ranks.items()
    ]
    return sorted(answers, key=lambda a: (a.mean_rank is None, a.mean_rank or 0.0, -a.first_places))


def _line(answer: RankedAnswer) -> str:
    mean = f"{answer.mean_rank:g}" if answer.mean_rank is not None else "-"
    return f"{answer.agent} {mean} ({answer.first_places})"


def _answers(transcript: Transcript, round_: int, *, exclude: str) -> dict[str, str]:
    return {
        e.speaker: e.text
        for e in transcript
        if e.kind == "speech" and e.round == round_ and not e.failed and e.text and e.speaker != exclude
    }


_JSON = re.compile(r"\{.*\}", re.DOTALL)


def _parse_ranking(text: str, labels: list[str]) -> list[str]:
    match = _JSON.search(text)
    try:
        data = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError as exc:
        raise Unreadable(f"not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("ranking"), list):
        raise Unreadable('give one JSON object with a "ranking" list of labels')
    ranking = [str(label).strip().strip("[]").upper() for label in data["ranking"]]
    if sorted(ranking) != sorted(labels):
        raise Unreadable(
            f"rank each of the labels {', '.join(labels)} exactly once (got {', '.join(ranking)})"
        )
    return ranking


def _with(request: ModelRequest, **fields: Any) -> ModelRequest:
    if request.context is None:
        return request
    return replace(request, context=replace(request.context, **fields))


def _context(room: RoomSpec, agent: AgentSpec, turn: Turn, **fields: Any) -> Any:
    from moot.models import TurnContext

    return TurnContext(
        kind=turn.kind,
        speaker=agent.name,
        language=room.language,
        task=room.task,
        persona=agent.persona,
        round=turn.round,
        max_rounds=room.max_rounds,
        ask=turn.ask,
        **fields,
    )
