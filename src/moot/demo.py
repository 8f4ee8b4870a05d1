"""A ready-made room on the simulated model, so anyone can watch a discussion with no key and no network.

The agents are written for the simulated model as much as for a person: the first clause of each persona,
thinking style and decision framework is what it quotes back, so each one reads well on its own.
"""

from __future__ import annotations

from typing import Any

from moot.spec import Language, ProtocolName, RoomSpec

# Fast enough to keep moving, slow enough to read along: `moot demo` (board, 2 rounds) takes about 20 s.
DEFAULT_TOKENS_PER_SECOND = 40.0

_EN: dict[str, Any] = {
    "title": "Open-sourcing the core engine",
    "task": "Should our 40-person startup open-source its core engine?",
    "agents": [
        {
            "name": "Helen",
            "role": "moderator",
            "persona": "a veteran board chair who has steered three companies through pivots",
            "thinking_style": "separate facts from opinions and keep the core question in view",
            "speaking_style": "calm, structured, brief; names who said what",
            "decision_framework": "what the board can act on by Monday morning",
            "colour": "#d4af37",
            "avatar": "🧭",
        },
        {
            "name": "Maya",
            "role": "member",
            "persona": "a cautious CFO who has watched two start-ups run out of cash",
            "thinking_style": "model the downside first, then the upside",
            "speaking_style": "crisp, numeric, a little dry",
            "decision_framework": "whether we keep eighteen months of runway",
            "colour": "#e6194b",
            "avatar": "📊",
        },
        {
            "name": "Tomás",
            "role": "member",
            "persona": "the CTO who wrote the first version of the engine",
            "thinking_style": "reason from first principles about what is truly hard to copy",
            "speaking_style": "concrete and technical, with examples from the code base",
            "decision_framework": "whether the choice can be reversed cheaply",
            "colour": "#4363d8",
            "avatar": "🔧",
        },
        {
            "name": "Priya",
            "role": "member",
            "persona": "an ambitious head of growth who built a developer community from zero",
            "thinking_style": "look for the distribution channel before the product",
            "speaking_style": "energetic and story-driven",
            "decision_framework": "whether it grows the number of developers who know us",
            "colour": "#3cb44b",
            "avatar": "🚀",
        },
        {
            "name": "Jonas",
            "role": "member",
            "persona": "an independent director and sceptical former founder",
            "thinking_style": "run a pre-mortem and ask how this fails",
            "speaking_style": "blunt, short sentences, pointed questions",
            "decision_framework": "whether a competitor could use it against us within a year",
            "colour": "#f58231",
            "avatar": "🔍",
        },
    ],
}

_ZH: dict[str, Any] = {
    "title": "私董会：是否进入东南亚市场",
    "task": "我们是一家年营收两亿元的智能家居公司，明年是否应该进入东南亚市场？",
    "agents": [
        {
            "name": "周老师",
            "role": "moderator",
            "persona": "资深私董会教练，主持过上百场企业家私董会",
            "thinking_style": "先厘清问题，再追问假设，最后聚焦行动",
            "speaking_style": "温和而有节奏，善于提问和归纳",
            "decision_framework": "这次讨论能否让案主带走可执行的下一步",
            "colour": "#d4af37",
            "avatar": "🧭",
        },
        {
            "name": "陈静",
            "role": "member",
            "persona": "谨慎的前上市公司财务总监，经历过两次海外扩张失败",
            "thinking_style": "先算最坏情况下的现金流，再谈增长",
            "speaking_style": "用数字说话，简洁克制",
            "decision_framework": "现金流能否撑过十八个月",
            "colour": "#e6194b",
            "avatar": "📊",
        },
        {
            "name": "王磊",
            "role": "member",
            "persona": "连续创业者，带领团队在越南和印尼从零做到上亿营收",
            "thinking_style": "先找到第一个能跑通的城市，再谈复制",
            "speaking_style": "直接、接地气，爱讲一线故事",
            "decision_framework": "窗口期会不会在我们犹豫时关上",
            "colour": "#3cb44b",
            "avatar": "🚀",
        },
        {
            "name": "林晓",
            "role": "member",
            "persona": "跨境供应链专家，熟悉东南亚各国的关税和渠道",
            "thinking_style": "从渠道、物流和本地合规逐项拆解",
            "speaking_style": "条理清楚，习惯分一二三来讲",
            "decision_framework": "供应链和渠道能否在半年内落地",
            "colour": "#4363d8",
            "avatar": "🚢",
        },
        {
            "name": "赵敏",
            "role": "member",
            "persona": "投资人，专注消费科技赛道，对风险保持怀疑",
            "thinking_style": "用事前验尸法，先设想失败的样子",
            "speaking_style": "犀利，常常追问一句为什么",
            "decision_framework": "投入产出比是否优于深耕国内市场",
            "colour": "#f58231",
            "avatar": "🔍",
        },
    ],
}

_ROOMS: dict[str, dict[str, Any]] = {"en": _EN, "zh": _ZH}


def demo_room(
    protocol: ProtocolName = "board",
    rounds: int = 2,
    language: Language = "en",
    tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND,
    seed: int = 0,
    model: dict[str, Any] | None = None,
) -> RoomSpec:
    """A board of four members and a moderator on the simulated model; the same people in every protocol.

    `tokens_per_second` paces the stream so a person can read along (0 streams at once, for tests).
    `model`: another model declaration for every agent (`local_model` gives the local GGUF model's).
    """
    base = _ROOMS[language]
    data = {
        "title": base["title"],
        "task": base["task"],
        "protocol": protocol,
        # a selector round is one speech: the demo gives every member as many turns as the rounds asked
        "max_rounds": rounds * (len(base["agents"]) - 1) if protocol == "selector" else rounds,
        "language": language,
        "models": {
            "sim": model or {"provider": "simulated", "seed": seed, "tokens_per_second": tokens_per_second}
        },
        "agents": base["agents"],
    }
    return RoomSpec.from_data(data, source="demo room")


def local_model(path: str) -> dict[str, Any]:
    """The demo's declaration of a local GGUF model: short replies, one slot per member, modest threads."""
    return {"provider": "llamacpp", "model_path": path, "max_tokens": 120, "slots": 4, "context_window": 2048}
