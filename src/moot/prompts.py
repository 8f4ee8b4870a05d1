"""Every word Moot says to a model or a person, in English and Chinese (B15), and how prompts are built.

Roles follow L9: an agent's own earlier turns are `assistant`; the task, everyone else's turns and people's
interventions are `user`, each prefixed with its speaker's name, so no agent mistakes others' words for its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from moot.conclusion import CONCLUSION_RESPONSE_SCHEMA, CONCLUSION_SCHEMA
from moot.models import Message, ModelRequest, TurnContext
from moot.spec import AgentSpec, Language, RoomSpec
from moot.transcript import USER, Entry

STOP_COMMANDS: frozenset[str] = frozenset({"/stop", "stop", "停止讨论", "结束讨论", "/停止", "停止"})


def is_stop_command(text: str) -> bool:
    """True for the stop commands of both languages, ignoring case, spaces and closing punctuation (B9)."""
    return text.strip().strip("。.!！").strip().casefold() in STOP_COMMANDS


@dataclass(frozen=True)
class _Texts:
    task: str
    user_label: str
    digest_label: str
    you_are: str
    with_others: str
    persona: str
    thinking: str
    speaking: str
    framework: str
    rules: str
    chair_rules: str
    speech: str
    board_speech: str
    opening: str
    summary: str
    summary_interventions: str
    summary_last: str
    positions: str
    positions_apart: str
    conclusion: str
    conclusion_retry: str
    read_retry: str
    choose: str
    digest: str
    fallback_summary: str
    fallback_advice: str
    placeholder: str


TEXTS: dict[str, _Texts] = {
    "en": _Texts(
        task="Task for discussion: {task}",
        user_label="user (a person watching the discussion)",
        digest_label="Summary of the earlier discussion",
        you_are="You are {name}.",
        with_others="You are in a discussion with {others}.",
        persona="Who you are: {text}",
        thinking="How you think: {text}",
        speaking="How you speak: {text}",
        framework="How you decide: {text}",
        rules=(
            "Stay in character. Speak only as {name}, in your own voice; never write lines for other "
            "participants and never prefix your reply with your name. Answer in English."
        ),
        chair_rules=(
            "You chair the meeting: stay neutral, keep it focused, and make sure every view is heard. "
            "Answer in English."
        ),
        speech=(
            "Round {round} of {max_rounds}. It is your turn, {name}. Respond to the task and to what the others "
            "have said: name the speakers you agree or disagree with, add something new, and take a clear "
            "position. Keep it under {words} words."
        ),
        board_speech=(
            "Board meeting on: {task}\nRound {round} of {max_rounds}. Speak as {name}. Stay in character and "
            "be concise (under {words} words). Engage with earlier speakers by name, say where you agree or "
            "disagree and why, and end with a clear position."
        ),
        opening=(
            "You chair this board meeting; the members are {members}. Open it: introduce the topic, state "
            "the core question the board must answer, and invite the members to give their views. "
            "Keep it under {words} words."
        ),
        summary=(
            "Round {round} of {max_rounds} has ended. As chair, summarise it: the core view of each member, "
            "where they agree, where they disagree, and what the next round should explore. "
            "Keep it under {words} words."
        ),
        summary_interventions="A person stepped in during this round; address what they said: {texts}",
        summary_last="This was the last round: say so, and name what the conclusion must settle.",
        positions=(
            "After the summary, give where each member stands as one JSON object in a ```json block: "
            '{{"positions": [{{"agent": name, "stance": "support" | "oppose" | "conditional" | "undecided", '
            '"confidence": 0 to 1, "changed": true if their stance changed since the previous round, '
            '"reason": one line}}]}}, with one position for each of: {members}.'
        ),
        positions_apart=(
            "Now give where each member stands, as one JSON object and nothing else: "
            '{{"positions": {{member name: {{"stance": "support" | "oppose" | "conditional" | "undecided", '
            '"confidence": 0 to 1, "changed": true if their stance changed since the previous round, '
            '"reason": one line}}}}}}, with exactly one entry for each of: {members}.'
        ),
        conclusion=(
            "The discussion is over. As chair, give the final conclusion as one JSON object and nothing else, "
            "with exactly these fields: summary (string), decision_advice (string), consensus_points (list of "
            "strings), dissent_points (list of strings), positions (list: for each member, agent, stance "
            "(support, oppose, conditional or undecided), confidence (0 to 1), changed (bool) and a one-line "
            "reason). Write the values in English. JSON schema: {schema}"
        ),
        conclusion_retry=(
            "Your answer could not be used: {error}. Answer again with only the JSON object, exactly as asked."
        ),
        read_retry="Your answer could not be used: {error}. Answer again, exactly as asked.",
        choose="Who speaks next? Send one of: {options}",
        digest=(
            "Summarise the discussion so far faithfully and briefly, in English: who said what, their "
            "positions, agreements, disagreements and anything people asked. Your summary will stand in for "
            "the full text for later speakers.\n\n{history}"
        ),
        fallback_summary="The discussion ended before a conclusion could be made ({reason}). Last points: {points}",
        fallback_advice="No decision advice: review the transcript before acting.",
        placeholder="(no model could answer for {name})",
    ),
    "zh": _Texts(
        task="讨论议题：{task}",
        user_label="用户（旁听讨论的人）",
        digest_label="此前讨论的摘要",
        you_are="你是{name}。",
        with_others="你正在与{others}一起讨论。",
        persona="你的身份：{text}",
        thinking="你的思维方式：{text}",
        speaking="你的表达风格：{text}",
        framework="你的决策框架：{text}",
        rules="保持角色。只以{name}的身份、用自己的口吻发言；不要替其他参与者发言，也不要在回复开头写自己的名字。请用中文回答。",
        chair_rules="你是会议主持人：保持中立，把握方向，确保每种观点都被听到。请用中文回答。",
        speech=(
            "第{round}轮，共{max_rounds}轮。轮到你发言了，{name}。回应议题和其他人的发言：点名说明你赞同或反对谁，"
            "补充新的观点，并表明清晰的立场。控制在{words}字以内。"
        ),
        board_speech=(
            "私董会议题：{task}\n第{round}轮，共{max_rounds}轮。请以{name}的身份发言。保持角色，简明扼要（{words}字以内）。"
            "点名回应之前的发言者，说明你赞同或反对之处及理由，最后给出明确立场。"
        ),
        opening=(
            "你主持这次私董会，成员有：{members}。请开场：介绍议题，提出董事会必须回答的核心问题，并邀请成员发表看法。"
            "控制在{words}字以内。"
        ),
        summary=(
            "第{round}轮（共{max_rounds}轮）已结束。请以主持人身份总结本轮：每位成员的核心观点、共识、分歧，"
            "以及下一轮应探讨的方向。控制在{words}字以内。"
        ),
        summary_interventions="本轮有用户插话，请回应他们的意见：{texts}",
        summary_last="这是最后一轮：请说明这一点，并指出结论需要解决的问题。",
        positions=(
            "总结之后，用一个```json代码块给出每位成员的立场："
            '{{"positions": [{{"agent": 姓名, "stance": "support" | "oppose" | "conditional" | "undecided", '
            '"confidence": 0到1, "changed": 立场自上一轮以来是否改变, "reason": 一句话理由}}]}}，'
            "以下每位成员各一条：{members}。"
        ),
        positions_apart=(
            "现在给出每位成员的立场，只输出一个JSON对象，不要有其他文字："
            '{{"positions": {{成员姓名: {{"stance": "support" | "oppose" | "conditional" | "undecided", '
            '"confidence": 0到1, "changed": 立场自上一轮以来是否改变, "reason": 一句话理由}}}}}}，'
            "以下每位成员恰好一条：{members}。"
        ),
        conclusion=(
            "讨论已结束。请以主持人身份给出最终结论，只输出一个JSON对象，不要有任何其他文字，字段必须是："
            "summary（字符串）、decision_advice（字符串）、consensus_points（字符串列表）、dissent_points（字符串列表）、"
            "positions（列表：每位成员一条，含agent、stance（support、oppose、conditional或undecided）、"
            "confidence（0到1）、changed（布尔值）和一句话的reason）。"
            "字段值用中文书写。JSON schema：{schema}"
        ),
        conclusion_retry="你的回答无法使用：{error}。请严格按要求重新回答，只输出JSON对象。",
        read_retry="你的回答无法使用：{error}。请严格按要求重新回答。",
        choose="下一位由谁发言？请发送其中一个名字：{options}",
        digest=(
            "请用中文忠实而简要地总结目前为止的讨论：谁说了什么、各自的立场、共识、分歧，以及用户提出的问题。"
            "你的总结将代替完整记录供后续发言者参考。\n\n{history}"
        ),
        fallback_summary="讨论在得出结论前结束（{reason}）。最后的要点：{points}",
        fallback_advice="没有决策建议：请在行动前查看完整记录。",
        placeholder="（没有可用的模型为{name}作答）",
    ),
}

WORDS: dict[str, dict[str, int]] = {
    "en": {"speech": 150, "opening": 120, "summary": 200},
    "zh": {"speech": 250, "opening": 200, "summary": 350},
}


def texts(language: Language | str) -> _Texts:
    return TEXTS[language]


def speaker_line(entry: Entry, language: str) -> str:
    """How another participant's words appear to an agent: `[Name] text`."""
    name = texts(language).user_label if entry.speaker == USER else entry.speaker
    return f"[{name}] {entry.text}"


def system_prompt(room: RoomSpec, agent: AgentSpec, *, chairing: bool) -> str:
    t = texts(room.language)
    others = [a.name for a in room.agents if a.active and a.name != agent.name]
    parts = [agent.system_prompt.strip()] if agent.system_prompt else [t.you_are.format(name=agent.name)]
    if others:
        parts.append(t.with_others.format(others=", ".join(others)))
    for template, value in (
        (t.persona, agent.persona),
        (t.thinking, agent.thinking_style),
        (t.speaking, agent.speaking_style),
        (t.framework, agent.decision_framework),
    ):
        if value.strip():
            parts.append(template.format(text=value.strip()))
    parts.append(t.chair_rules if chairing else t.rules.format(name=agent.name))
    return "\n".join(parts)


def history_messages(
    room: RoomSpec, agent: AgentSpec, entries: Sequence[Entry], digest: Entry | None
) -> list[Message]:
    """The transcript as this agent sees it (L9), oldest first; consecutive user lines are merged."""
    t = texts(room.language)
    lines: list[tuple[str, str]] = []
    for entry in entries:
        if entry.failed or not entry.text:
            continue
        if entry.kind == "task":
            lines.append(("user", t.task.format(task=entry.text)))
            if digest is not None:
                lines.append(("user", f"[{t.digest_label}] {digest.text}"))
        elif entry.is_turn and entry.speaker == agent.name:
            lines.append(("assistant", entry.text))
        else:
            lines.append(("user", speaker_line(entry, room.language)))
    return _merge(lines)


def _merge(lines: Sequence[tuple[str, str]]) -> list[Message]:
    messages: list[Message] = []
    for role, content in lines:
        if messages and messages[-1].role == role:
            messages[-1] = Message(role=messages[-1].role, content=f"{messages[-1].content}\n\n{content}")
        else:
            messages.append(Message(role="user" if role == "user" else "assistant", content=content))
    return messages


def instruction(
    room: RoomSpec,
    agent: AgentSpec,
    kind: str,
    round_: int,
    interventions: Sequence[str],
    ask: str = "",
) -> str:
    """The closing user message that tells this turn what to do (B5, B6, B8, B11); `ask` names the prompt
    where the protocol chose one (a board member's speech), else the turn's kind does."""
    t = texts(room.language)
    words = WORDS[room.language]
    members = ", ".join(a.name for a in room.members)
    if kind == "opening":
        return t.opening.format(members=members, words=words["opening"])
    if kind == "summary":
        text = t.summary.format(round=round_, max_rounds=room.max_rounds, words=words["summary"])
        if interventions:
            text += "\n" + t.summary_interventions.format(texts=" / ".join(interventions))
        if round_ >= room.max_rounds:
            text += "\n" + t.summary_last
        return text + "\n" + t.positions.format(members=members)
    if kind == "conclusion":
        return t.conclusion.format(schema=json.dumps(CONCLUSION_SCHEMA, ensure_ascii=False))
    template = t.board_speech if ask == "board_speech" else t.speech
    return template.format(
        task=room.task, round=round_, max_rounds=room.max_rounds, name=agent.name, words=words["speech"]
    )


def build_request(
    room: RoomSpec,
    agent: AgentSpec,
    *,
    kind: str,
    round_: int,
    visible: Sequence[Entry],
    digest: Entry | None,
    max_tokens: int,
    temperature: float | None,
    ask: str = "",
    instruction_text: str | None = None,
) -> ModelRequest:
    """Everything one turn sends to its model: system prompt, history (L9) and the turn's instruction.

    `instruction_text` replaces the instruction `ask` (or the kind) names: a protocol's own prompt."""
    chairing = kind in ("opening", "summary", "conclusion", "selection")
    shown = [e for e in visible if digest is None or e.kind == "task" or e.key >= (digest.covers or e.key)]
    interventions = _interventions_since_last_turn(visible, agent.name)
    messages = history_messages(room, agent, shown, digest)
    messages = _merge(
        [(m.role, m.content) for m in messages]
        + [
            (
                "user",
                instruction_text
                if instruction_text is not None
                else instruction(room, agent, kind, round_, interventions, ask),
            )
        ]
    )
    context = TurnContext(
        kind=kind,
        speaker=agent.name,
        language=room.language,
        task=room.task,
        persona=agent.persona,
        thinking_style=agent.thinking_style,
        speaking_style=agent.speaking_style,
        decision_framework=agent.decision_framework,
        round=round_,
        max_rounds=room.max_rounds,
        earlier=tuple(
            (e.speaker, e.text)
            for e in shown
            if e.kind in ("opening", "speech", "summary") and not e.failed and e.speaker != agent.name
        ),
        interventions=tuple(interventions),
        members=tuple(a.name for a in room.members),
    )
    return ModelRequest(
        system=system_prompt(room, agent, chairing=chairing),
        messages=tuple(messages),
        max_tokens=max_tokens,
        temperature=temperature,
        json_output=kind == "conclusion",
        schema=CONCLUSION_RESPONSE_SCHEMA if kind == "conclusion" else None,
        schema_name="conclusion",
        context=context,
    )


def _interventions_since_last_turn(visible: Sequence[Entry], speaker: str) -> list[str]:
    texts_: list[str] = []
    for entry in reversed(visible):
        if entry.speaker == speaker and entry.is_turn:
            break
        if entry.kind == "intervention" and entry.command != "stop":
            texts_.append(entry.text)
    return texts_[::-1]


def apart_request(
    request: ModelRequest,
    reply: str,
    *,
    instruction_text: str,
    schema: dict[str, object],
    schema_name: str,
    max_tokens: int,
) -> ModelRequest:
    """Asks for the structured part a free-text reply lacks, on its own: the same conversation with the reply,
    then the instruction, answered in JSON (held to `schema` where the server can) within its own limit."""
    return replace(
        request,
        messages=(*request.messages, Message("assistant", reply or "-"), Message("user", instruction_text)),
        max_tokens=max_tokens,
        json_output=True,
        schema=schema,
        schema_name=schema_name,
    )


def digest_request(
    room: RoomSpec, entries: Sequence[Entry], previous: Entry | None, max_tokens: int
) -> ModelRequest:
    """Asks the moderator's model to compress a stretch of history (B10)."""
    t = texts(room.language)
    lines = [f"[{t.digest_label}] {previous.text}"] if previous is not None else []
    lines += [speaker_line(e, room.language) for e in entries if not e.failed and e.text]
    moderator = room.moderator
    name = moderator.name if moderator else "moderator"
    return ModelRequest(
        system=t.chair_rules,
        messages=(Message(role="user", content=t.digest.format(history="\n\n".join(lines))),),
        max_tokens=max_tokens,
        context=TurnContext(
            kind="digest",
            speaker=name,
            language=room.language,
            task=room.task,
            earlier=tuple((e.speaker, e.text) for e in entries if e.is_turn and not e.failed),
            members=tuple(a.name for a in room.members),
        ),
    )
