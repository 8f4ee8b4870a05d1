"""The simulated model: offline, deterministic per seed, in character, bilingual, paced like a stream."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest

from moot.conclusion import parse_conclusion
from moot.models import Completion, Message, Model, ModelRequest, TurnContext, build_model
from moot.models.simulated import MARKERS, SimulatedModel
from moot.spec import ModelSpec

CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")

EN_TASK = "Should we move our billing service to microservices this year?"
ZH_TASK = "公司是否应该在今年把计费系统迁移到微服务？"
EN_AGENTS: dict[str, tuple[str, str, str]] = {
    "Ada": (
        "a cautious CFO who has seen three failed rewrites",
        "asks for numbers first",
        "payback in 18 months",
    ),
    "Ben": ("a growth-minded product lead", "thinks in customer outcomes", "ship what customers notice"),
    "Chen": ("a staff engineer who runs on-call", "first principles", "reversibility over elegance"),
    "Dora": ("an outside investor", "looks for asymmetric bets", "expected value with a safety margin"),
}
ZH_AGENTS: dict[str, tuple[str, str, str]] = {
    "王芳": ("一位谨慎的财务总监", "先看数据再谈观点", "十八个月内收回成本"),
    "李强": ("一位关注增长的产品负责人", "从客户结果出发思考", "先交付客户能感知到的东西"),
    "陈静": ("负责值班的资深工程师", "第一性原理", "可逆性优先于优雅"),
    "赵敏": ("一位外部投资人", "寻找不对称的机会", "带安全边际的期望值"),
}


def model(seed: int | None = 0, tokens_per_second: float | None = None) -> SimulatedModel:
    spec = ModelSpec(provider="simulated", seed=seed, tokens_per_second=tokens_per_second)
    return SimulatedModel(spec)


def request(context: TurnContext | None, *, text: str = "Your turn.", **options: Any) -> ModelRequest:
    return ModelRequest(
        system="You are in a discussion.", messages=(Message("user", text),), context=context, **options
    )


async def play(sim: Model, req: ModelRequest) -> tuple[list[str], Completion]:
    """Every delta and the one closing Completion, checking the stream's shape on the way."""
    pieces: list[str] = []
    ends: list[Completion] = []
    async for item in sim.stream(req):
        assert not ends, "nothing may follow the Completion"
        if isinstance(item, Completion):
            ends.append(item)
        else:
            pieces.append(item)
    assert len(ends) == 1
    assert "".join(pieces) == ends[0].text
    return pieces, ends[0]


async def text_of(sim: Model, req: ModelRequest) -> str:
    return (await play(sim, req))[1].text


async def board_meeting(sim: Model, language: str = "en", rounds: int = 3) -> list[tuple[str, str, str]]:
    """A whole board meeting spoken by one simulated model: (kind, speaker, text) of every turn."""
    agents, task, chair = (EN_AGENTS, EN_TASK, "Mia") if language == "en" else (ZH_AGENTS, ZH_TASK, "主持人")
    members = tuple(agents)
    turns: list[tuple[str, str, str]] = []

    async def say(kind: str, speaker: str, round_: int, **extra: Any) -> str:
        earlier = tuple((s, t) for k, s, t in turns if s != speaker and k in ("opening", "speech", "summary"))
        ctx = TurnContext(
            kind=kind,
            speaker=speaker,
            language=language,
            task=task,
            round=round_,
            max_rounds=rounds,
            earlier=earlier,
            members=members,
            **extra,
        )
        text = await text_of(sim, request(ctx, json_output=kind == "conclusion"))
        turns.append((kind, speaker, text))
        return text

    await say("opening", chair, 0)
    for round_ in range(1, rounds + 1):
        for name, (persona, thinking, framework) in agents.items():
            style = {"persona": persona, "thinking_style": thinking, "decision_framework": framework}
            await say("speech", name, round_, **style)
        await say("summary", chair, round_)
    await say("conclusion", chair, rounds)
    return turns


def speech_context(language: str = "en", **extra: Any) -> TurnContext:
    """Ben's turn in round 2, after Ada spoke (in her words as a real model might put them)."""
    agents, task = (EN_AGENTS, EN_TASK) if language == "en" else (ZH_AGENTS, ZH_TASK)
    (first, _), (name, (persona, thinking, framework)) = list(agents.items())[:2]
    said = (
        "I oppose the rewrite. Our last migration cost two quarters and delivered nothing customers noticed."
        if language == "en"
        else "我反对这次重写。上一次迁移花了两个季度，客户却什么都没感受到。"
    )
    fields: dict[str, Any] = {
        "kind": "speech",
        "speaker": name,
        "language": language,
        "task": task,
        "persona": persona,
        "thinking_style": thinking,
        "decision_framework": framework,
        "round": 2,
        "max_rounds": 3,
        "earlier": ((first, said),),
        "members": tuple(agents),
    }
    fields.update(extra)
    return TurnContext(**fields)


async def test_same_seed_same_words_other_seed_other_words() -> None:
    ctx = speech_context()
    first = await text_of(model(seed=7), request(ctx))
    again = await text_of(model(seed=7), request(ctx))
    other = await text_of(model(seed=8), request(ctx))
    assert first == again
    assert first != other
    assert await text_of(model(seed=None), request(ctx)) == await text_of(model(seed=0), request(ctx))


async def test_whole_meeting_is_deterministic() -> None:
    assert await board_meeting(model(seed=3)) == await board_meeting(model(seed=3))
    assert await board_meeting(model(seed=3)) != await board_meeting(model(seed=4))


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_every_reply_is_marked_simulated_B15(language: str) -> None:
    # covers: B15 (both languages)
    marker = MARKERS[language]
    assert marker == ("(simulated) " if language == "en" else "（模拟）")
    for kind, _, text in await board_meeting(model(), language):
        if kind == "conclusion":
            assert text.lstrip().startswith("{")
            assert json.loads(text)["summary"].startswith(marker)
        else:
            assert text.startswith(marker), (kind, text)


async def test_chinese_room_speaks_chinese_B15() -> None:
    # covers: B15 (both languages)
    for kind, _, text in await board_meeting(model(), "zh"):
        # the structured positions use the schema's English keys and stances; the words are what we measure
        if kind == "conclusion":
            text = " ".join(str(v) for k, v in json.loads(text).items() if k != "positions")
        text = text.split("```json")[0]
        visible = [ch for ch in text if not ch.isspace()]
        share = sum(1 for ch in visible if CJK.match(ch)) / len(visible)
        assert share > 0.7, (kind, share, text)
    for _, _, text in await board_meeting(model(), "en"):
        assert not CJK.search(text)


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_speech_is_in_character_and_answers_a_speaker_B6(language: str) -> None:
    # covers: B6 (in-character speech), B15 (both languages)
    ctx = speech_context(language)
    for seed in range(6):
        text = await text_of(model(seed), request(ctx))
        speaker, said = ctx.earlier[0]
        assert speaker in text
        fragment = said.split(".")[0] if language == "en" else said.split("。")[0]
        quoted = re.findall(r"“([^”]+)”", text)
        assert any(q.rstrip("…") in said or fragment in q for q in quoted), text
        assert ctx.persona in text or ctx.decision_framework in text
        stance = r"support|oppos|against|in favour|conditional" if language == "en" else r"支持|反对|赞成"
        assert re.search(stance, text), text


async def test_speeches_vary_and_stay_in_length() -> None:
    for language in ("en", "zh"):
        speeches = [t for k, _, t in await board_meeting(model(seed=5), language) if k == "speech"]
        assert len(set(speeches)) == len(speeches) == 12
        openers = {re.split(r"[.。]", s, maxsplit=1)[0] for s in speeches}
        assert len(openers) >= 4
        for text in speeches:
            size = len(text.split()) if language == "en" else len(text)
            low, high = (60, 140) if language == "en" else (120, 260)
            assert low <= size <= high, (size, text)


async def test_a_room_disagrees_and_the_round_is_mentioned() -> None:
    turns = await board_meeting(model(seed=2))
    speeches = [t for k, _, t in turns if k == "speech"]
    assert any("round 2" in s.lower() or "round 3" in s.lower() for s in speeches)
    kinds = {("oppos" in s or "against" in s, "support" in s or "favour" in s) for s in speeches}
    assert len(kinds) >= 2, "everyone took the same side"


async def test_first_speaker_answers_the_chair() -> None:
    ctx = TurnContext(
        kind="speech",
        speaker="Ada",
        task=EN_TASK,
        persona="a cautious CFO",
        round=1,
        max_rounds=2,
        earlier=(("Mia", f"Welcome. We are here to discuss “{EN_TASK}” Ada, please start."),),
        members=("Ada", "Ben"),
    )
    text = await text_of(model(), request(ctx))
    assert "Mia" in text
    assert "billing service" in text


async def test_speech_and_summary_address_interventions() -> None:
    asked = "What about the hiring plan?"
    speech = await text_of(model(), request(speech_context(interventions=(asked,))))
    assert asked in speech
    earlier = tuple((name, f"My position: I support it, because {name} likes it.") for name in ("Ada", "Ben"))
    ctx = TurnContext(
        kind="summary",
        speaker="Mia",
        task=EN_TASK,
        round=1,
        max_rounds=2,
        earlier=earlier,
        interventions=(asked,),
        members=("Ada", "Ben"),
    )
    summary = await text_of(model(), request(ctx))
    assert asked in summary
    assert "Ada" in summary
    assert "Ben" in summary
    assert "round 2" in summary.lower()


async def test_summary_names_members_agreement_and_split() -> None:
    earlier = (
        ("Mia", "Welcome. What should we do?"),
        ("Ada", "I oppose it: the benefit is unproven."),
        ("Ben", "My position: I support it, because customers are waiting."),
        ("Chen", "I support it as well, because the risk is small."),
    )
    ctx = TurnContext(
        kind="summary",
        speaker="Mia",
        task=EN_TASK,
        round=3,
        max_rounds=3,
        earlier=earlier,
        members=("Ada", "Ben", "Chen"),
    )
    text = await text_of(model(), request(ctx))
    for name in ("Ada", "Ben", "Chen"):
        assert name in text
    assert "customers are waiting" in text
    assert "final round" in text.lower()
    assert "Ben and Chen agree" in text


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_conclusion_is_pure_json_that_parses_B11(language: str) -> None:
    # covers: B11 (valid JSON conclusion), B15 (both languages)
    turns = await board_meeting(model(seed=1), language)
    kind, _, text = turns[-1]
    assert kind == "conclusion"
    data = json.loads(text)
    conclusion = parse_conclusion(text)
    assert conclusion.summary == data["summary"]
    assert conclusion.summary.startswith(MARKERS[language])
    assert conclusion.decision_advice
    assert 2 <= len(conclusion.consensus_points) <= 3
    assert 1 <= len(conclusion.dissent_points) <= 3
    members = EN_AGENTS if language == "en" else ZH_AGENTS
    points = " ".join(conclusion.consensus_points + conclusion.dissent_points)
    assert sum(name in points for name in members) >= 2


async def test_conclusion_reports_who_opposed_B11() -> None:
    # covers: B11 (valid JSON conclusion)
    earlier = (
        ("Ada", "I oppose it: the benefit is unproven and hard to reverse."),
        ("Ben", "My position: I support it, because customers are waiting."),
        ("Chen", "I support it only if we cap the budget at one team."),
    )
    ctx = TurnContext(kind="conclusion", speaker="Mia", task=EN_TASK, round=2, max_rounds=2, earlier=earlier)
    conclusion = parse_conclusion(await text_of(model(), request(ctx, json_output=True)))
    assert any("Ada" in p and "benefit is unproven" in p for p in conclusion.dissent_points)
    assert any("Chen" in p for p in conclusion.dissent_points + conclusion.consensus_points)
    assert "Ben" in conclusion.summary
    assert "leans toward going ahead" in conclusion.summary


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_conclusion_without_speeches_is_still_valid_B11(language: str) -> None:
    # covers: B11 (valid JSON conclusion), B15 (both languages)
    ctx = TurnContext(kind="conclusion", speaker="Mia", language=language, task=EN_TASK, max_rounds=1)
    conclusion = parse_conclusion(await text_of(model(), request(ctx, json_output=True)))
    assert conclusion.summary.startswith(MARKERS[language])
    assert conclusion.consensus_points
    assert conclusion.dissent_points


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_digest_names_speakers_and_positions(language: str) -> None:
    turns = await board_meeting(model(), language, rounds=1)
    members = tuple(EN_AGENTS if language == "en" else ZH_AGENTS)
    earlier = tuple((s, t) for k, s, t in turns if k in ("opening", "speech", "summary"))
    ctx = TurnContext(
        kind="digest", speaker=turns[0][1], language=language, task="t", earlier=earlier, members=members
    )
    text = await text_of(model(), request(ctx))
    assert text.startswith(MARKERS[language])
    for name in members:
        assert name in text
    assert re.search(
        r"support|oppos|against|favour|conditional" if language == "en" else r"支持|反对|赞成", text
    )


async def test_without_context_answers_the_last_message() -> None:
    en = await text_of(model(), request(None, text="Is a four-day week worth trying?"))
    assert en.startswith("(simulated) ")
    assert "four-day week" in en
    zh = await text_of(model(), request(None, text="我们应该尝试四天工作制吗？"))
    assert zh.startswith("（模拟）")
    assert "四天工作制" in zh
    asked_json = await text_of(model(), request(None, text="Conclude as JSON.", json_output=True))
    assert parse_conclusion(asked_json).summary.startswith("(simulated) ")


async def test_streams_word_sized_pieces_with_estimated_usage() -> None:
    sim = model()
    pieces, done = await play(sim, request(speech_context()))
    assert len(pieces) > 40
    assert all(len(p.split()) == 1 for p in pieces)
    assert done.usage.estimated
    assert done.usage.input_tokens > 0
    assert done.usage.output_tokens > 0
    assert done.finish_reason == "stop"
    assert done.model == "simulated"
    assert sim.label == "simulated:simulated"
    pieces, _ = await play(sim, request(speech_context("zh")))
    cjk_only = [p for p in pieces if all(CJK.match(ch) for ch in p)]
    assert len(cjk_only) > len(pieces) / 2
    assert all(1 <= len(p) <= 3 for p in cjk_only)


async def test_max_tokens_cuts_the_reply_like_a_real_model() -> None:
    _, done = await play(model(), request(speech_context(), max_tokens=12))
    assert done.finish_reason == "length"
    assert 0 < done.usage.output_tokens <= 12


def test_build_model_gives_the_simulated_model() -> None:
    assert isinstance(build_model(ModelSpec(provider="simulated", seed=2)), SimulatedModel)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every asyncio.sleep the simulated model awaits; the sleeps still happen."""
    calls: list[float] = []
    real = asyncio.sleep

    async def spy(delay: float, result: Any = None) -> Any:
        calls.append(delay)
        return await real(delay, result)

    monkeypatch.setattr(asyncio, "sleep", spy)  # the model calls asyncio.sleep through the module
    return calls


@pytest.mark.parametrize("rate", [None, 0])
async def test_speed_zero_never_sleeps(rate: float | None, sleeps: list[float]) -> None:
    pieces, _ = await play(model(tokens_per_second=rate), request(speech_context()))
    assert pieces
    assert sleeps == []


async def test_tokens_per_second_paces_the_stream(sleeps: list[float]) -> None:
    req = request(None, text="Should we hire?")
    pieces, _ = await play(model(), req)
    rate = 60.0
    started = time.monotonic()
    await play(model(tokens_per_second=rate), req)
    assert time.monotonic() - started >= len(pieces) / rate - 0.05
    assert sleeps


async def test_fast_streams_sleep_in_batches(sleeps: list[float]) -> None:
    pieces, _ = await play(model(tokens_per_second=1000), request(speech_context()))
    assert 0 < len(sleeps) <= len(pieces) / 10
