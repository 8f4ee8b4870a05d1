"""An offline model that plays a discussion convincingly, for demos and tests that must not touch a network.

It reads the structured `TurnContext` rather than the prompt, and draws every choice from an RNG seeded by
`spec.seed` mixed with a SHA-256 of the turn (never Python's salted `hash()`), so the same seed and request
give the same words in every process. Stances are read back from earlier speeches by keywords, which lets
summaries and the conclusion report who stood where, whichever model spoke.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from moot.models import Completion, Model, ModelRequest, TurnContext, Usage, estimate_tokens
from moot.spec import ModelSpec

__all__ = ["MARKERS", "SimulatedModel"]

Stance = Literal["support", "oppose", "conditional", "unknown"]

MARKERS: dict[str, str] = {"en": "(simulated) ", "zh": "（模拟）"}
_MIN_SLEEP = 0.02  # seconds of lag gathered before sleeping: a fast stream sleeps in batches, not per piece

_CJK_RANGES = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_CJK = re.compile(f"[{_CJK_RANGES}]")
_PIECE = re.compile(f"([{_CJK_RANGES}]+)|([^\\s{_CJK_RANGES}]+\\s*|\\s+)")
_CLAUSE_END = re.compile(r"[.;!?。；！？\n]")
_SENTENCE = re.compile(r"[^.!?。！？]*(?:[.!?。！？]+[”\"]?|$)")
_PERSONA_PREFIX = re.compile(r"^(?:(?:you are|you're|i am|i'm|as)\s+|你是|我是|作为)", re.IGNORECASE)
_REASON = re.compile(r"\bbecause\b|\bprovided\b|\bonly if\b|[;:；：]|因为|前提是|条件是")
_QUOTED_QUESTION = re.compile(r"“([^”]+[?？])”")
_ASIDE = re.compile(r"[“”\"()（）—]")
_TIDY = re.compile(r"([?？!！])([”\"])[.。]")  # no full stop after a quoted question
_TRAILING = "。.,，;；:：!！、 —-"
# Conditional phrases first so that "conditional support" / "有条件支持" count as one conditional match;
# "disagree" and "不支持" match as opposition before their "agree" / "支持" tails can.
_STANCE = re.compile(
    r"(?P<conditional>conditional(?:ly)?(?: support| yes)?|provided\b|only if|on condition|as long as"
    r"|subject to|有条件(?:地)?(?:支持|赞成)?|前提是|条件是|除非)"
    r"|(?P<oppose>oppos\w*|against|reject\w*|disagree\w*|push back|反对|不赞成|不支持|不同意)"
    r"|(?P<support>support\w*|in favou?r|agree\w*|endorse\w*|支持|赞成|同意)",
    re.IGNORECASE,
)
_STANCES: tuple[Stance, ...] = ("support", "oppose", "conditional")
_CAUTIOUS = re.compile(r"cautio|risk|scept|skept|conservat|谨慎|风险|保守|怀疑", re.IGNORECASE)
_BOLD = re.compile(
    r"bold|growth|entrepreneur|ambitio|visionar|aggressive|激进|增长|创业|大胆|进取", re.IGNORECASE
)


@dataclass(frozen=True)
class _Voice:
    """Everything the simulated model can say in one language; several templates per part for variety."""

    sep: str
    quote: str
    openers: tuple[str, ...]
    reactive_openers: tuple[str, ...]
    final_openers: tuple[str, ...]
    shifted: str
    persona: tuple[str, ...]
    thinking: tuple[str, ...]
    framework: tuple[str, ...]
    verdict: dict[str, tuple[str, ...]]
    engage: dict[str, tuple[str, ...]]
    engage_chair: tuple[str, ...]
    engage_first: tuple[str, ...]
    concern: dict[str, tuple[str, ...]]
    argument: dict[str, tuple[str, ...]]
    intervention: tuple[str, ...]
    answer: dict[str, str]
    position: dict[str, tuple[str, ...]]
    reason: dict[str, tuple[str, ...]]
    # opening
    welcome: tuple[str, ...]
    core: tuple[str, ...]
    core_given: tuple[str, ...]
    open_question: tuple[str, ...]
    table: str
    chair_persona: str
    ground_rules: tuple[str, ...]
    invite: tuple[str, ...]
    early_question: str
    # summary and digest
    summary_head: tuple[str, ...]
    verbs: dict[str, tuple[str, ...]]
    view_line: str
    digest_head: str
    digest_chair: str
    digest_line: str
    together: str
    stance_plural: dict[str, str]
    pro_together: str
    thin_common: str
    split_pro_opp: str
    split_conditions: str
    no_split: str
    floor: str
    floor_next: str
    floor_last: str
    next_focus: tuple[str, ...]
    focus_opp: str
    focus_cond: str
    focus_any: str
    last_round: str
    settle_split: str
    settle_terms: str
    # conclusion
    rounds: str
    rounds_one: str
    lean: dict[str, str]
    group: dict[str, tuple[str, str]]
    no_views: str
    advice_conditions: str
    advice_go: str
    advice_stop: str
    advice_split: str
    advice_none: str
    consensus_pro: tuple[str, str]
    consensus_all: str
    consensus_generic: str
    consensus_cond: str
    consensus_opp: tuple[str, str]
    consensus_measure: str
    dissent_opp: str
    dissent_cond: str
    dissent_unclear: str
    dissent_pace: str
    # a request without context
    reply: tuple[str, ...]


_EN = _Voice(
    sep=" ",
    quote="“{}”",
    openers=(
        "Round {round} of {max_rounds}, so let me be direct.",
        "We're in round {round} of {max_rounds}; I'll keep this tight.",
        "A few thoughts for round {round}.",
        "Let me come at this from my own corner.",
    ),
    reactive_openers=(
        "I've been listening closely, and here is my take.",
        "Good points so far; let me add mine.",
    ),
    final_openers=("This is our last round, so I'll be plain.", "Final round, so no hedging from me."),
    shifted="I have moved a little since the first round.",
    persona=(
        "I speak as {persona}, and that shapes what I notice first.",
        "Given where I sit ({persona}), I read this mostly as a question of consequences.",
        "Wearing my own hat ({persona}), I keep coming back to who carries the risk.",
        "My background is simple to state: {persona}.",
    ),
    thinking=(
        "How I think matters here: {thinking}.",
        "Applying my usual approach ({thinking}), the picture gets clearer.",
        "I'll reason the way I always do: {thinking}.",
    ),
    framework=(
        "My test is {framework}, and {verdict}.",
        "By my decision rule ({framework}), {verdict}.",
        "Run it through my framework ({framework}) and {verdict}.",
    ),
    verdict={
        "support": ("it passes", "the case holds up", "the numbers point one way"),
        "oppose": (
            "it fails that test today",
            "the case does not hold up yet",
            "I cannot get it over the bar",
        ),
        "conditional": (
            "it passes only with guard-rails",
            "it clears the bar only narrowly",
            "it holds up only if we limit the downside",
        ),
    },
    engage={
        "agree": (
            "{name} said {quote}, and I agree; I'd only add that timing matters.",
            "I'm with {name} on this: {quote} is the heart of it.",
            "{name} made the point I was going to make: {quote}.",
        ),
        "disagree": (
            "I have to push back on {name}, who said {quote}; that underrates {concern}.",
            "{name} argues {quote}; I read the same facts the other way, because of {concern}.",
            "Where I part ways with {name} is {quote}: it skips over {concern}.",
        ),
        "partial": (
            "{name} is half right with {quote}; the other half is {concern}.",
            "I take {name}'s point, {quote}, but we cannot ignore {concern}.",
            "{name}'s words were {quote}; fair, yet they leave {concern} out of the picture.",
        ),
    },
    engage_chair=(
        "{name} opened by asking {quote}; let me answer that head-on.",
        "{name} framed it as {quote}, so here is my answer.",
    ),
    engage_first=(
        "Nobody has spoken yet, so I'll set out a position for others to test.",
        "Let me go first and give you something to push on.",
    ),
    concern={
        "support": ("the cost of waiting", "what we lose by standing still", "the evidence we already have"),
        "oppose": (
            "how hard this would be to reverse",
            "the hidden cost in people and attention",
            "what happens if the first results disappoint",
        ),
        "conditional": (
            "who owns it when things go wrong",
            "how we would know it is failing",
            "the budget ceiling",
        ),
    },
    argument={
        "support": (
            "Waiting costs more than a careful start, and a small first step teaches us more than another "
            "month of analysis.",
            "The upside is real and the first step is reversible: exactly the kind of bet we should take.",
            "We already have enough evidence to begin; what we lack is momentum.",
        ),
        "oppose": (
            "The downside is concentrated and hard to undo, while the upside is still a forecast.",
            "We would be spending attention we do not have on a benefit nobody has measured.",
            "Nothing in the numbers so far tells me this beats simply improving what we already do.",
        ),
        "conditional": (
            "I could back a limited version: a time-boxed trial with a clear owner and a number that tells "
            "us to stop.",
            "The idea is sound, but only in a form we can reverse if the early signals are weak.",
            "Done in stages, with a review before any large commitment, this could work.",
        ),
    },
    intervention=(
        "To the question from the floor, {quote}: {answer}",
        "Someone watching asked {quote}, a fair question; {answer}",
        "On the point raised from outside the room, {quote}: {answer}",
    ),
    answer={
        "support": "my answer is that the risk is manageable if we start small.",
        "oppose": "it is one more reason I would not rush.",
        "conditional": "it belongs on the list of things we settle before starting.",
    },
    position={
        "support": (
            "My position: I support it, because {reason}.",
            "So I support going ahead; {reason}.",
            "Put me down as in favour: {reason}.",
        ),
        "oppose": (
            "My position: I oppose it as it stands, because {reason}.",
            "So I'm against it for now; {reason}.",
            "Put me down as opposed: {reason}.",
        ),
        "conditional": (
            "My position: conditional support, provided {reason}.",
            "So I'd support it only if {reason}.",
            "Count me as a conditional yes: {reason}.",
        ),
    },
    reason={
        "support": ("the first step is cheap and we learn fast", "the opportunity will not wait for us"),
        "oppose": ("we cannot undo it cheaply if it goes wrong", "the benefit is still unproven"),
        "conditional": (
            "we cap the budget and review after ninety days",
            "one named owner reports the numbers every month",
            "we settle today on the signal that would make us stop",
        ),
    },
    welcome=(
        "Good morning, everyone, and welcome. Today's topic: {task}.",
        "Let's begin. We are here to discuss {task}.",
        "Thank you for coming. On the table today: {task}.",
    ),
    core=(
        "The core question for this board is simple to state and hard to answer: {question}",
        "What we must decide is this: {question}",
    ),
    core_given=(
        "That is the question this board must answer: yes, no, or yes on terms we can name.",
        "By the end of round {max_rounds} we owe a clear answer to it, with the terms spelled out.",
    ),
    open_question=(
        "should we act on this, and if so, on what terms?",
        "what should we actually do, and what would make us change course?",
    ),
    table="Around the table we have {members}; we have {rounds}, and I will sum up after each.",
    chair_persona="As {persona}, I'll keep us honest and on time.",
    ground_rules=(
        "Please speak from your own experience, name the colleague you are answering, and end with a clear "
        "position.",
        "Be concrete, answer each other by name, and tell us plainly where you stand.",
    ),
    invite=("{first}, would you start us off?", "{first}, the floor is yours."),
    early_question="A question has already come in from the floor, {quote}; let's keep it in mind.",
    summary_head=(
        "That closes round {round} of {max_rounds}. Here is where we stand.",
        "Thank you all; round {round} of {max_rounds} is done, so let me pull it together.",
        "Let me sum up round {round} of {max_rounds}.",
    ),
    verbs={
        "support": ("backs the proposal", "is in favour", "supports moving ahead"),
        "oppose": ("opposes it", "is against it for now", "argues against it"),
        "conditional": (
            "supports it only with conditions",
            "gives a conditional yes",
            "would back a limited version",
        ),
        "unknown": ("has not taken a clear side yet", "keeps the question open"),
    },
    view_line="{name} {verb}: {quote}.",
    digest_head="Digest of the discussion so far.",
    digest_chair="{name} opened with {quote}.",
    digest_line="{name} {verb}, arguing {quote}.",
    together="{names} agree on direction: they {stance}.",
    stance_plural={
        "support": "support moving ahead",
        "oppose": "oppose it for now",
        "conditional": "want conditions",
    },
    pro_together="{names} all see value in moving ahead, at least in some form.",
    thin_common="Common ground is thin, but nobody disputes that the question deserves a clear answer.",
    split_pro_opp="The real split has {opp} on one side and {pro} on the other.",
    split_conditions="The split is about conditions: {sup} would move now, {cond} would set guard-rails.",
    no_split="There is no sharp split yet; the open issue is pace and scale.",
    floor="Someone watching asked {quote}.",
    floor_next="Let's take that up directly in the next round.",
    floor_last="The conclusion will answer it.",
    next_focus=("For round {next}, I'd like us to focus on {focus}.", "Next round, please address {focus}."),
    focus_opp="what evidence would move {names}",
    focus_cond="whether {names}'s conditions can realistically be met",
    focus_any="the risks we may be underrating",
    last_round="That was our final round; the conclusion must settle {settle}.",
    settle_split="whether {pro} or {opp} carry the decision, and on what terms",
    settle_terms="the terms and the first checkpoint",
    rounds="After {count} rounds on {task}, ",
    rounds_one="After one round on {task}, ",
    lean={
        "go": "the board leans toward going ahead",
        "stop": "the board leans against going ahead",
        "split": "the board is evenly split",
    },
    group={
        "support": ("{names} supports it", "{names} support it"),
        "conditional": ("{names} supports it with conditions", "{names} support it with conditions"),
        "oppose": ("{names} opposes it", "{names} oppose it"),
        "unknown": ("{names} took no clear side", "{names} took no clear side"),
    },
    no_views="the board heard no clear positions, so no decision can be recommended with confidence.",
    advice_conditions=(
        "Go ahead in a limited, time-boxed form that meets {cond}'s conditions ({point}), and review it "
        "against the concerns raised at the first checkpoint."
    ),
    advice_go="Go ahead with a small first step and a fixed review date; keep the risks raised on the list.",
    advice_stop=(
        "Do not commit yet: answer {opp}'s objections ({point}) first, then bring a smaller proposal back "
        "to the board."
    ),
    advice_split="Defer the decision by one short cycle and run a cheap test that can settle the split.",
    advice_none="Gather the missing views before deciding.",
    consensus_pro=("{names} sees real value in moving ahead", "{names} see real value in moving ahead"),
    consensus_all="Everyone ({names}) wants clear checkpoints and an owner, not an open-ended commitment",
    consensus_generic="Any decision needs clear checkpoints and a named owner",
    consensus_cond="{names}'s conditions are a workable basis for a decision: {quote}",
    consensus_opp=(
        "Even {names} accepts that the underlying problem is real",
        "Even {names} accept that the underlying problem is real",
    ),
    consensus_measure="The risks raised in the discussion should be measured, not assumed",
    dissent_opp="{name} still opposes it: {quote}",
    dissent_cond="{name} supports it only on conditions: {quote}",
    dissent_unclear="{names} did not state a clear position",
    dissent_pace="No one opposed outright, but the pace and scale of the first step were left open",
    reply=(
        "On {quote}: start small, measure what matters, and decide on evidence rather than enthusiasm. "
        "If the first results hold up, scale up; if not, stop early while it is still cheap.",
        "You asked about {quote}. My short answer: it depends on what is reversible. Do the reversible part "
        "now, test the rest, and commit only when the numbers agree with the story.",
    ),
)

_ZH = _Voice(
    sep="",
    quote="“{}”",
    openers=(
        "第{round}轮（共{max_rounds}轮），我直接说重点。",
        "进入第{round}轮，我简单说几句。",
        "我从自己的角度谈一谈。",
    ),
    reactive_openers=("听了大家的发言，我谈谈自己的看法。", "前面几位说得很充分，我补充几点。"),
    final_openers=("这是最后一轮了，我把话说明白。", "已经是最后一轮，我就不绕弯子了。"),
    shifted="和第一轮相比，我的看法有所松动。",
    persona=(
        "作为{persona}，我最先关注的是后果由谁承担。",
        "从我的位置看（{persona}），这件事首先是个取舍问题。",
        "我的背景是{persona}，这决定了我看问题的角度。",
    ),
    thinking=(
        "我习惯这样思考：{thinking}。",
        "按我一贯的思路（{thinking}），问题其实没那么复杂。",
        "用我的方式来想——{thinking}——答案会清楚一些。",
    ),
    framework=(
        "我的判断标准是{framework}，{verdict}。",
        "用我的决策框架（{framework}）来衡量，{verdict}。",
        "拿“{framework}”这把尺子量一量，{verdict}。",
    ),
    verdict={
        "support": ("这件事是过关的", "结论相当明确", "这笔账算得过来"),
        "oppose": ("目前还过不了关", "现有的依据还不够", "我没法说服自己"),
        "conditional": ("只有加上护栏才能过关", "勉强过线", "关键要把下行风险控制住"),
    },
    engage={
        "agree": (
            "{name}刚才说{quote}，这点我很认同，只想补充一句：时机同样重要。",
            "在这一点上我和{name}站在一起：{quote}，这正是关键。",
            "{name}说出了我想说的话：{quote}。",
        ),
        "disagree": (
            "我不同意{name}的看法。{name}认为{quote}，但这低估了{concern}。",
            "{name}提到{quote}，同样的事实我看出的是相反的结论，原因在于{concern}。",
            "我和{name}的分歧在于{quote}这一点：它忽略了{concern}。",
        ),
        "partial": (
            "{name}说{quote}，有一半道理，另一半在于{concern}。",
            "我理解{name}的意思——{quote}——但还得把{concern}考虑进去。",
            "{quote}，{name}这么说不无道理，但{concern}同样不能忽视。",
        ),
    },
    engage_chair=("{name}开场问到{quote}，我正面回答。", "回应{name}开场时提出的{quote}，我的看法如下。"),
    engage_first=("还没有人发言，我先抛出一个立场，供大家检验。", "我先来，给大家一个可以反驳的靶子。"),
    concern={
        "support": ("等待的代价", "原地不动的损失", "我们手里已有的证据"),
        "oppose": ("一旦出错有多难回头", "人力和注意力上的隐性成本", "初期结果不理想时怎么办"),
        "conditional": ("出了问题由谁负责", "我们怎么判断它正在失败", "预算的上限"),
    },
    argument={
        "support": (
            "等待的成本高于谨慎起步的成本，小步试水比再分析一个月学到的更多。",
            "收益是实实在在的，第一步也可以回退，这正是值得下的注。",
            "我们手上的证据已经足够起步，缺的是推进的势头。",
        ),
        "oppose": (
            "下行风险集中且难以逆转，而收益还停留在预测上。",
            "我们会把本就紧张的精力投到一个没人量化过的收益上。",
            "到目前为止，没有数据表明这比改进现有做法更好。",
        ),
        "conditional": (
            "我能接受一个有限的版本：限时试点，明确负责人，并设定一个叫停的指标。",
            "思路是对的，但必须采取一种早期信号不好时能撤回的形式。",
            "分阶段推进、在大笔投入之前先做评估，这件事是可行的。",
        ),
    },
    intervention=(
        "关于场外提出的问题{quote}：{answer}",
        "有旁听的朋友问{quote}，问得好，{answer}",
        "刚才有人插话说{quote}，{answer}",
    ),
    answer={
        "support": "我的回答是，只要从小处起步，风险是可控的。",
        "oppose": "这恰恰是我主张不要仓促行事的又一个理由。",
        "conditional": "这应该列入我们启动前必须落实的事项。",
    },
    position={
        "support": (
            "我的立场：支持，因为{reason}。",
            "所以我赞成推进，因为{reason}。",
            "请把我算作支持的一方：{reason}。",
        ),
        "oppose": (
            "我的立场：反对，至少在现阶段，因为{reason}。",
            "所以我暂时反对，因为{reason}。",
            "请把我算作反对的一方：{reason}。",
        ),
        "conditional": (
            "我的立场：有条件支持，前提是{reason}。",
            "所以我是有条件地赞成：{reason}。",
            "请把我算作有条件支持的一方，条件是{reason}。",
        ),
    },
    reason={
        "support": ("第一步成本低、见效快", "机会不会等我们"),
        "oppose": ("一旦出错很难低成本地回头", "收益还没有得到验证"),
        "conditional": ("预算封顶、九十天后复盘", "由一位明确的负责人每月汇报数据", "今天就商定好叫停的信号"),
    },
    welcome=(
        "各位好，欢迎参加今天的私董会。今天的议题是{task}。",
        "我们开始吧。今天要讨论的是{task}。",
        "感谢各位到场。今天摆在桌面上的问题是{task}。",
    ),
    core=("核心问题说起来简单，回答起来难：{question}", "我们必须回答的是：{question}"),
    core_given=(
        "这就是董事会今天必须回答的问题：做、不做，还是在讲清楚条件的前提下去做。",
        "第{max_rounds}轮结束时，我们要给出一个明确的答案，并把条件讲清楚。",
    ),
    open_question=(
        "要不要做？如果做，以什么条件、什么节奏来做？",
        "我们到底该怎么做？出现什么情况时应该改变方向？",
    ),
    table="参加讨论的有{members}，共{rounds}，每轮结束后我来做小结。",
    chair_persona="作为{persona}，我会尽量保持中立，控制好节奏。",
    ground_rules=(
        "请大家从自己的经验出发，点名回应其他人的观点，最后给出明确立场。",
        "发言时请直接回应前面的同事，讲清楚你站在哪一边、为什么。",
    ),
    invite=("{first}，请你先来。", "先请{first}发言。"),
    early_question="已经有旁听的朋友提问：{quote}，请大家在发言中一并考虑。",
    summary_head=(
        "第{round}轮（共{max_rounds}轮）到此结束，我来做个小结。",
        "感谢各位，第{round}轮的讨论很充分，我归纳一下。",
        "我们把第{round}轮（共{max_rounds}轮）的要点梳理一下。",
    ),
    verbs={
        "support": ("支持推进", "投了赞成票", "主张尽快推进"),
        "oppose": ("持反对意见", "暂时反对", "认为不应推进"),
        "conditional": ("有条件地支持", "给出了有条件的赞成", "愿意支持一个有限的版本"),
        "unknown": ("尚未表明明确立场", "还在观望"),
    },
    view_line="{name}{verb}：{quote}。",
    digest_head="此前讨论摘要：",
    digest_chair="{name}开场提出{quote}。",
    digest_line="{name}{verb}，理由是{quote}。",
    together="{names}方向一致，都{stance}。",
    stance_plural={"support": "支持推进", "oppose": "反对推进", "conditional": "希望先设定条件"},
    pro_together="{names}都认为值得以某种形式推进。",
    thin_common="共识还不多，但大家都认同这个问题需要一个明确的答案。",
    split_pro_opp="真正的分歧在于：{opp}站在一边，{pro}站在另一边。",
    split_conditions="分歧主要在条件上：{sup}主张现在就推进，{cond}则希望先设好护栏。",
    no_split="目前没有尖锐的对立，悬而未决的是节奏和规模。",
    floor="有旁听的朋友提出{quote}，",
    floor_next="下一轮请大家正面回应。",
    floor_last="我们会在结论中给出回答。",
    next_focus=("第{next}轮请大家重点讨论{focus}。", "下一轮，希望大家聚焦于{focus}。"),
    focus_opp="什么样的证据能改变{names}的看法",
    focus_cond="{names}提出的条件能否真正落实",
    focus_any="我们可能低估了哪些风险",
    last_round="这是最后一轮，结论需要解决的是{settle}。",
    settle_split="由{pro}还是{opp}的意见主导决策，以及以什么条件推进",
    settle_terms="推进的条件和第一个检查点",
    rounds="经过{count}轮围绕{task}的讨论，",
    rounds_one="经过一轮围绕{task}的讨论，",
    lean={"go": "董事会倾向于推进", "stop": "董事会倾向于暂不推进", "split": "董事会意见分成两派"},
    group={
        "support": ("{names}支持", "{names}支持"),
        "conditional": ("{names}有条件支持", "{names}有条件支持"),
        "oppose": ("{names}反对", "{names}反对"),
        "unknown": ("{names}未表明明确立场", "{names}未表明明确立场"),
    },
    no_views="董事会没有听到明确的立场，因此无法有把握地给出决策建议。",
    advice_conditions="以有限、限时的方式推进，满足{cond}提出的条件（{point}），并在第一个检查点对照各方顾虑进行复盘。",
    advice_go="推进，但从小的第一步开始，并定好复盘日期；把讨论中提到的风险列入清单。",
    advice_stop="暂不投入：先回应{opp}的质疑（{point}），再把一个规模更小的方案提交董事会。",
    advice_split="把最终决定推迟一个短周期，先做一个低成本的测试来化解分歧。",
    advice_none="先补齐缺失的意见，再做决定。",
    consensus_pro=("{names}认为推进这件事有实际价值", "{names}都认为推进这件事有实际价值"),
    consensus_all="所有人（{names}）都希望设置明确的检查点和负责人，而不是无限期投入",
    consensus_generic="任何决定都需要明确的检查点和负责人",
    consensus_cond="{names}提出的条件可以作为决策基础：{quote}",
    consensus_opp=("即便是{names}也承认背后的问题确实存在", "即便是{names}也承认背后的问题确实存在"),
    consensus_measure="讨论中提出的风险应当用数据衡量，而不是凭感觉判断",
    dissent_opp="{name}仍然反对：{quote}",
    dissent_cond="{name}只在满足条件时支持：{quote}",
    dissent_unclear="{names}没有表明明确立场",
    dissent_pace="没有人明确反对，但第一步的节奏和规模仍未定论",
    reply=(
        "关于{quote}：从小处着手，盯住真正重要的指标，用证据而不是热情做决定；初步结果站得住就扩大，站不住就趁早、低成本地收手。",
        "你问的是{quote}。我的简短回答是：关键看哪些事可以回头。能回头的部分现在就做，其余的先试，等数据和设想一致时再全力投入。",
    ),
)

_VOICES: dict[str, _Voice] = {"en": _EN, "zh": _ZH}


@dataclass(frozen=True, slots=True)
class _View:
    """One participant's latest stance as read from their words, with the sentence that states it."""

    name: str
    stance: Stance
    point: str
    text: str


class SimulatedModel(Model):
    """Plays any turn offline: deterministic per seed, in character, in the room's language (B6, B11, B15)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.label = spec.label
        self.seed = spec.seed or 0
        self.rate = spec.tokens_per_second or 0.0

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        text = _compose(request, self.seed)
        rng = _rng(self.seed, "pieces", text)
        pieces, finish = _fit(_pieces(text, rng), request.max_tokens)
        if self.rate:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for index, piece in enumerate(pieces, 1):
                lag = start + index / self.rate - loop.time()
                if lag > _MIN_SLEEP:
                    await asyncio.sleep(lag)
                yield piece
        else:
            for piece in pieces:
                yield piece
        reply = "".join(pieces)
        prompt = estimate_tokens(request.system) + sum(estimate_tokens(m.content) for m in request.messages)
        usage = Usage(input_tokens=prompt, output_tokens=estimate_tokens(reply), estimated=True)
        yield Completion(text=reply, usage=usage, finish_reason=finish, model=self.spec.name)


def _compose(request: ModelRequest, seed: int) -> str:
    """The whole reply to a request: the same seed and request always give the same text."""
    ctx = request.context
    if ctx is None:
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), request.system)
        language = "zh" if len(_CJK.findall(last)) * 3 > len(last) else "en"
        if not request.json_output:
            voice = _VOICES[language]
            reply = _rng(seed, "reply", last).choice(voice.reply)
            return MARKERS[language] + reply.format(quote=_quoted(voice, _clip(last, language)))
        ctx = TurnContext(kind="conclusion", speaker="", language=language)
    language = ctx.language if ctx.language in _VOICES else "en"
    turn = _Turn(
        ctx, _VOICES[language], language, seed, _rng(seed, ctx.speaker, ctx.kind, ctx.round, ctx.task)
    )
    if ctx.kind == "ranking":
        return turn.ranking()
    if ctx.kind == "selection":
        return turn.selection()
    if ctx.kind == "conclusion" or request.json_output:
        return turn.conclusion()
    build = {"opening": turn.opening, "summary": turn.summary, "digest": turn.digest}.get(
        ctx.kind, turn.speech
    )
    text = _TIDY.sub(r"\1\2", MARKERS[language] + build())
    if ctx.ask == "delphi_estimate":
        text += f"\n\nESTIMATE: {turn.estimate():g}"
    if ctx.kind == "summary":
        block = json.dumps({"positions": turn.member_positions()}, ensure_ascii=False)
        text += f"\n\n```json\n{block}\n```"
    return text


class _Turn:
    """Writes one turn from its context; every choice comes from the seed, the turn and the speaker's seat."""

    def __init__(self, ctx: TurnContext, voice: _Voice, language: str, seed: int, rng: random.Random) -> None:
        self.ctx, self.voice, self.language, self.seed, self.rng = ctx, voice, language, seed, rng
        self.seat = ctx.members.index(ctx.speaker) if ctx.speaker in ctx.members else 0

    def pick(self, options: Sequence[str], **fields: object) -> str:
        return self.rng.choice(options).format(**fields)

    def vary(self, options: Sequence[str], part: int, **fields: object) -> str:
        """Rotates templates by seat and round, so speakers of one round rarely share a sentence frame."""
        base = _rng(self.seed, self.ctx.task, part).randrange(len(options))
        index = base + self.seat + self.ctx.round * (part % 2 + 1)
        return options[index % len(options)].format(**fields)

    def quote(self, text: str, limit: int | None = None) -> str:
        return _quoted(self.voice, _clip(text, self.language, limit))

    def names(self, views: Sequence[_View] | Sequence[str]) -> str:
        names = [v if isinstance(v, str) else v.name for v in views]
        if len(names) < 2:
            return "".join(names)
        if self.language == "zh":
            return "、".join(names[:-1]) + "和" + names[-1]
        return ", ".join(names[:-1]) + " and " + names[-1]

    def task(self) -> str:
        return self.quote(
            self.ctx.task or ("今天的议题" if self.language == "zh" else "the question before us")
        )

    def join(self, parts: Sequence[str]) -> str:
        return self.voice.sep.join(p for p in parts if p)

    # --- a member's speech ----------------------------------------------------------------------------------

    def stance(self) -> Stance:
        """One stance per speaker for the whole run, spread over the seats so that a room disagrees;
        a cautious persona never supports outright and a bold one never opposes outright. A debater
        argues their side."""
        ctx = self.ctx
        if ctx.side:
            return "support" if ctx.side == "proposition" else "oppose"
        if ctx.speaker in ctx.members:
            order = list(_STANCES)
            _rng(self.seed, "stances", ctx.task).shuffle(order)
            stance = order[self.seat % len(order)]
        else:
            stance = _rng(self.seed, ctx.speaker, "stance", ctx.task).choice(_STANCES)
        character = " ".join((ctx.persona, ctx.thinking_style, ctx.decision_framework))
        if (stance == "support" and _CAUTIOUS.search(character)) or (
            stance == "oppose" and _BOLD.search(character)
        ):
            return "conditional"
        return stance

    def speech(self) -> str:
        ctx, voice = self.ctx, self.voice
        mine = self.stance()
        final = ctx.round >= ctx.max_rounds > 1
        shifted = mine == "oppose" and final and self.rng.random() < 0.4
        if shifted:
            mine = "conditional"
        others = self.views()
        openers = (
            voice.openers
            + (voice.reactive_openers if others else ())
            + (voice.final_openers if final else ())
        )
        opener = self.vary(openers, 0, round=ctx.round, max_rounds=ctx.max_rounds)
        persona = _phrase(ctx.persona, self.language, 14)
        thinking = _phrase(ctx.thinking_style, self.language, 12)
        framework = _phrase(ctx.decision_framework, self.language, 12)
        verdict = self.rng.choice(voice.verdict[mine])
        character = [
            self.vary(voice.persona, 1, persona=persona) if persona else "",
            self.vary(voice.thinking, 2, thinking=thinking) if thinking else "",
            self.vary(voice.framework, 3, framework=framework, verdict=verdict) if framework else "",
        ]
        engage = self.engagement(mine, others)
        character.insert(self.rng.choice((0, 2, 3)), engage)
        argument = self.vary(voice.argument[mine], 4)
        if ctx.interventions and thinking and framework:
            argument = ""  # the answer to the floor takes the argument's place, keeping the speech short
        parts = [opener, voice.shifted if shifted else "", *character, argument]
        if ctx.interventions:
            quote = self.quote(ctx.interventions[-1], 12)
            parts.append(self.vary(voice.intervention, 5, quote=quote, answer=voice.answer[mine]))
        parts.append(self.vary(voice.position[mine], 6, reason=self.rng.choice(voice.reason[mine])))
        return self.join(parts)

    def engagement(self, mine: Stance, others: Sequence[_View]) -> str:
        """Answers an earlier member by name and quote, or the chair when only the chair has spoken."""
        voice = self.voice
        if others:
            target = others[-1] if self.rng.random() < 0.6 else self.rng.choice(others)
            fields = {"name": target.name, "quote": self.quote(_fragment(target.text, self.rng))}
            relation = _relation(mine, target.stance)
            return self.pick(voice.engage[relation], concern=self.rng.choice(voice.concern[mine]), **fields)
        chair = [(name, text) for name, text in self.ctx.earlier if name != self.ctx.speaker]
        if chair:
            name, text = chair[-1]
            return self.pick(voice.engage_chair, name=name, quote=self.quote(_question(text)))
        return self.rng.choice(voice.engage_first)

    # --- the chair's turns ----------------------------------------------------------------------------------

    def views(self) -> list[_View]:
        """Each member's latest speech read as a stance, in member order (else in order of appearance)."""
        ctx = self.ctx
        latest: dict[str, str] = {}
        for name, text in ctx.earlier:
            if name != ctx.speaker and (not ctx.members or name in ctx.members):
                latest.pop(name, None)
                latest[name] = text
        order = [m for m in ctx.members if m in latest] if ctx.members else list(latest)
        return [
            _View(name, _stance_of(latest[name]), _key_point(latest[name]), latest[name]) for name in order
        ]

    def opening(self) -> str:
        ctx, voice = self.ctx, self.voice
        task = _clip(ctx.task, self.language) if ctx.task else ""
        if task.endswith(("?", "？")):
            core = self.pick(voice.core_given, max_rounds=ctx.max_rounds)
        else:
            core = self.pick(voice.core, question=self.rng.choice(voice.open_question))
        persona = _phrase(ctx.persona, self.language, 12)
        members = list(ctx.members)
        parts = [
            self.pick(voice.welcome, task=self.task()),
            core,
            voice.table.format(members=self.names(members), rounds=_rounds(ctx)) if members else "",
            voice.chair_persona.format(persona=persona) if persona else "",
            self.rng.choice(voice.ground_rules),
            voice.early_question.format(quote=self.quote(ctx.interventions[-1], 12))
            if ctx.interventions
            else "",
            self.pick(voice.invite, first=members[0]) if members else "",
        ]
        return self.join(parts)

    def positions(self, views: Sequence[_View]) -> tuple[str, str]:
        """Where the views agree and where they split, as two sentences."""
        voice = self.voice
        groups = _groups(views)
        pro = _pro(views)
        largest = max(_STANCES, key=lambda s: len(groups[s]))
        if len(groups[largest]) >= 2:
            agreement = voice.together.format(
                names=self.names(groups[largest]), stance=voice.stance_plural[largest]
            )
        elif len(pro) >= 2:
            agreement = voice.pro_together.format(names=self.names(pro))
        else:
            agreement = voice.thin_common
        if pro and groups["oppose"]:
            split = voice.split_pro_opp.format(pro=self.names(pro), opp=self.names(groups["oppose"]))
        elif groups["support"] and groups["conditional"]:
            sup, cond = self.names(groups["support"]), self.names(groups["conditional"])
            split = voice.split_conditions.format(sup=sup, cond=cond)
        else:
            split = voice.no_split
        return agreement, split

    def summary(self) -> str:
        ctx, voice = self.ctx, self.voice
        views = self.views()
        groups = _groups(views)
        parts = [self.pick(voice.summary_head, round=ctx.round, max_rounds=ctx.max_rounds)]
        for view in views:
            verb = self.rng.choice(voice.verbs[view.stance])
            parts.append(voice.view_line.format(name=view.name, verb=verb, quote=self.quote(view.point, 12)))
        parts += self.positions(views)
        last = ctx.round >= ctx.max_rounds
        for text in ctx.interventions:
            answer = voice.floor_last if last else voice.floor_next
            parts.append(voice.floor.format(quote=self.quote(text, 12)) + voice.sep + answer)
        pro, opp, cond = _pro(views), groups["oppose"], groups["conditional"]
        if last:
            settle = voice.settle_terms
            if pro and opp:
                settle = voice.settle_split.format(pro=self.names(pro), opp=self.names(opp))
            parts.append(voice.last_round.format(settle=settle))
        else:
            focus = voice.focus_any
            if opp:
                focus = voice.focus_opp.format(names=self.names(opp))
            elif cond:
                focus = voice.focus_cond.format(names=self.names(cond))
            parts.append(self.pick(voice.next_focus, next=ctx.round + 1, focus=focus))
        return self.join(parts)

    def estimate(self) -> float:
        """A number from 0 to 100 that leans with the speaker's stance, and moves halfway to the panel's
        median once earlier estimates are in view."""
        lean = {"support": 75.0, "conditional": 55.0, "oppose": 25.0}.get(self.stance(), 50.0)
        own = lean + _rng(self.seed, self.ctx.speaker, self.ctx.task, "estimate").uniform(-10, 10)
        seen = [
            float(m)
            for _, text in self.ctx.earlier
            for m in re.findall(r"ESTIMATE:\s*(-?\d+(?:\.\d+)?)", text)
        ]
        if seen:
            others = sorted(seen)
            median = (
                others[len(others) // 2]
                if len(others) % 2
                else sum(others[len(others) // 2 - 1 : len(others) // 2 + 1]) / 2
            )
            own = own + (median - own) * min(1.0, 0.5 * (self.ctx.round - 1))
        return round(own)

    def ranking(self) -> str:
        """Ranks anonymous answers: those that share the reviewer's stance first, the rest by the seed."""
        mine = self.stance()
        texts = dict(self.ctx.earlier)
        labels = list(self.ctx.options)
        self.rng.shuffle(labels)
        labels.sort(key=lambda label: _relation(mine, _stance_of(texts.get(label, ""))) != "agree")
        reason = (
            "与我立场一致、论证具体的回答排在前面"
            if self.language == "zh"
            else "answers that argue my view concretely come first"
        )
        return json.dumps({"ranking": labels, "reason": reason}, ensure_ascii=False)

    def selection(self) -> str:
        """Names who has waited longest to speak (the first of the options in a tie), with why."""
        ctx = self.ctx
        last_spoke = {name: index for index, (name, _) in enumerate(ctx.earlier)}
        options = list(ctx.options) or list(ctx.members)
        chosen = min(options, key=lambda name: (last_spoke.get(name, -1), options.index(name)))
        heard = chosen in last_spoke
        if self.language == "zh":
            reason = f"{chosen}已经有一阵没发言了" if heard else f"我们还没有听到{chosen}的意见"
        else:
            reason = (
                f"{chosen} has not spoken for a while" if heard else f"we have not heard from {chosen} yet"
            )
        return json.dumps({"next": chosen, "reason": reason}, ensure_ascii=False)

    def member_positions(self) -> list[dict[str, object]]:
        """Each member's stance as read from their words, with a confidence and whether it moved."""
        ctx = self.ctx
        views = {v.name: v for v in self.views()}
        said: dict[str, list[str]] = {}
        for name, text in ctx.earlier:
            said.setdefault(name, []).append(text)
        positions: list[dict[str, object]] = []
        for name in ctx.members:
            view = views.get(name)
            if view is None:
                positions.append(
                    {"agent": name, "stance": "undecided", "confidence": 0.0, "changed": False, "reason": "-"}
                )
                continue
            stance = "undecided" if view.stance == "unknown" else view.stance
            earlier = said.get(name, [])[:-1]
            changed = bool(earlier) and _stance_of(earlier[-1]) != view.stance
            confidence = round(_rng(self.seed, name, ctx.round, ctx.task, "confidence").uniform(0.55, 0.9), 2)
            reason = _clip(view.point, self.language, 16) or "-"
            positions.append(
                {
                    "agent": name,
                    "stance": stance,
                    "confidence": confidence,
                    "changed": changed,
                    "reason": reason,
                }
            )
        return positions

    def digest(self) -> str:
        ctx, voice = self.ctx, self.voice
        views = self.views()
        parts = [voice.digest_head]
        chair = next(((n, t) for n, t in ctx.earlier if ctx.members and n not in ctx.members), None)
        if chair is not None:
            parts.append(voice.digest_chair.format(name=chair[0], quote=self.quote(_question(chair[1]), 12)))
        for view in views:
            verb = self.rng.choice(voice.verbs[view.stance])
            parts.append(
                voice.digest_line.format(name=view.name, verb=verb, quote=self.quote(view.point, 10))
            )
        if views:
            parts += self.positions(views)
        return self.join(parts)

    def conclusion(self) -> str:
        """Pure JSON for `parse_conclusion`; the simulated marker opens the summary string, not the reply."""
        ctx, voice, zh = self.ctx, self.voice, self.language == "zh"
        views = self.views()
        groups = _groups(views)
        pro, opp, cond = _pro(views), groups["oppose"], groups["conditional"]
        count = ctx.round or ctx.max_rounds
        summary = (voice.rounds if count > 1 else voice.rounds_one).format(count=count, task=self.task())
        advice = voice.advice_none
        if not views:
            summary += voice.no_views
        else:
            lean = "go" if len(pro) > len(opp) else "stop" if len(opp) > len(pro) else "split"
            clauses = [
                voice.group[stance][len(groups[stance]) > 1].format(names=self.names(groups[stance]))
                for stance in ("support", "conditional", "oppose", "unknown")
                if groups[stance]
            ]
            summary += voice.lean[lean] + ("：" if zh else ": ") + ("；" if zh else "; ").join(clauses)
            summary += "。" if zh else "."
            if lean == "go" and cond:
                point = _clip(cond[0].point, self.language, 12)
                advice = voice.advice_conditions.format(cond=self.names(cond), point=point)
            elif lean == "go":
                advice = voice.advice_go
            elif lean == "stop":
                advice = voice.advice_stop.format(
                    opp=self.names(opp), point=_clip(opp[0].point, self.language, 12)
                )
            else:
                advice = voice.advice_split
        consensus: list[str] = []
        if pro:
            consensus.append(voice.consensus_pro[len(pro) > 1].format(names=self.names(pro)))
        consensus.append(
            voice.consensus_all.format(names=self.names(views)) if views else voice.consensus_generic
        )
        if cond:
            consensus.append(
                voice.consensus_cond.format(names=self.names(cond), quote=self.quote(cond[0].point, 12))
            )
        if opp:
            consensus.append(voice.consensus_opp[len(opp) > 1].format(names=self.names(opp)))
        consensus.append(voice.consensus_measure)
        dissent = [voice.dissent_opp.format(name=v.name, quote=self.quote(v.point, 12)) for v in opp]
        if groups["support"] and cond:
            sup = self.names(groups["support"])
            dissent.append(voice.split_conditions.format(sup=sup, cond=self.names(cond)).rstrip("。."))
        dissent += [voice.dissent_cond.format(name=v.name, quote=self.quote(v.point, 12)) for v in cond]
        if groups["unknown"]:
            dissent.append(voice.dissent_unclear.format(names=self.names(groups["unknown"])))
        if not dissent:
            dissent.append(voice.dissent_pace)
        result = {
            "summary": MARKERS[self.language] + summary,
            "decision_advice": advice,
            "consensus_points": consensus[:3],
            "dissent_points": dissent[:3],
            "positions": self.member_positions() if ctx.members else [],
        }
        return json.dumps(result, ensure_ascii=False, indent=2)


def _rng(*parts: object) -> random.Random:
    """An RNG that depends only on its inputs, the same in every process (unlike the salted `hash()`)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _strip_marker(text: str) -> str:
    text = text.strip()
    for marker in MARKERS.values():
        text = text.removeprefix(marker.strip()).strip()
    return text


def _sentences(text: str) -> list[str]:
    """Sentences with their closing punctuation and any closing quote mark; a quoted question inside a
    sentence does not end it."""
    sentences: list[str] = []
    for piece in _SENTENCE.findall(_strip_marker(text)):
        piece = piece.strip()
        if sentences and (piece[:1] in ",;:，；：、" or piece[:1].islower()):
            sentences[-1] += " " + piece if piece[:1].isalpha() else piece
        elif piece:
            sentences.append(piece)
    return sentences


def _clip(text: str, language: str, limit: int | None = None) -> str:
    """A short, quotable fragment: at most `limit` words (English) or twice that many characters (Chinese)."""
    text = " ".join(_strip_marker(text).split())
    limit = limit or 14
    if language == "zh" or _CJK.search(text):
        clipped = len(text) > limit * 2
        text = text[: limit * 2]
    else:
        words = text.split(" ")
        clipped = len(words) > limit
        text = " ".join(words[:limit])
    text = text.rstrip(_TRAILING)
    return text + "…" if clipped else text


def _quoted(voice: _Voice, text: str) -> str:
    return voice.quote.format(text.strip("“”\"'"))


def _phrase(text: str, language: str, limit: int) -> str:
    """A persona or style reduced to its first clause, fit to follow "as" or sit in parentheses."""
    first = next((c.strip() for c in _CLAUSE_END.split(text) if c.strip()), "")
    phrase = _clip(_PERSONA_PREFIX.sub("", first), language, limit)
    if len(phrase) > 1 and phrase[0].isupper() and phrase[1].islower():
        phrase = phrase[0].lower() + phrase[1:]
    return phrase


def _stance_of(text: str) -> Stance:
    """The stance a speech ends on: the last stance word wins, so quotes of others earlier do not count."""
    last: Stance = "unknown"
    for match in _STANCE.finditer(text):
        last = next(s for s in _STANCES if match.group(s))
    return last


def _key_point(text: str) -> str:
    """The gist of the sentence that states a position: its reason where a short label or "because" leads."""
    sentences = _sentences(text)
    stated = next((s for s in reversed(sentences) if _STANCE.search(s)), sentences[-1] if sentences else "")
    for match in reversed(list(_REASON.finditer(stated))):
        rest = stated[match.end() :].strip()
        if len(rest.split()) >= 4 or len(_CJK.findall(rest)) >= 6:
            return rest
    return stated


def _question(text: str) -> str:
    """What the chair asked: a quoted question, else the last question after its colon, else line one."""
    sentences = _sentences(text)
    quoted = _QUOTED_QUESTION.search(text)
    if quoted:
        return quoted[1]
    asked = [s for s in sentences if s.rstrip('”"').endswith(("?", "？"))]
    if asked:
        return re.split(r"[:：]\s*", asked[-1])[-1]
    return sentences[0] if sentences else ""


def _fragment(text: str, rng: random.Random) -> str:
    """A point worth answering: the stated position, or the sentence just before it when that is plain (no
    quotes or asides), which is where speakers tend to put their argument."""
    sentences = _sentences(text)
    stated = max((i for i, s in enumerate(sentences) if _STANCE.search(s)), default=len(sentences))
    argument = sentences[stated - 1] if stated >= 2 else ""
    if _ASIDE.search(argument) or len(argument) < 12 or rng.random() < 0.5:
        return _key_point(text)
    return argument


def _relation(mine: Stance, theirs: Stance) -> str:
    if mine == theirs:
        return "agree"
    if {mine, theirs} == {"support", "oppose"}:
        return "disagree"
    return "partial"


def _groups(views: Sequence[_View]) -> dict[Stance, list[_View]]:
    groups: dict[Stance, list[_View]] = {"support": [], "oppose": [], "conditional": [], "unknown": []}
    for view in views:
        groups[view.stance].append(view)
    return groups


def _pro(views: Sequence[_View]) -> list[_View]:
    """Those who back the proposal in some form, in seat order."""
    return [v for v in views if v.stance in ("support", "conditional")]


def _pieces(text: str, rng: random.Random) -> list[str]:
    """Word-sized deltas: an English word with its trailing space, or one to three Chinese characters."""
    pieces: list[str] = []
    for match in _PIECE.finditer(text):
        cjk = match.group(1)
        if cjk is None:
            pieces.append(match.group(0))
            continue
        start = 0
        while start < len(cjk):
            size = rng.choice((1, 2, 2, 3))
            pieces.append(cjk[start : start + size])
            start += size
    return pieces


def _fit(pieces: list[str], max_tokens: int) -> tuple[list[str], str]:
    """Stops where a real model would run out of `max_tokens`, reporting finish_reason "length"."""
    if estimate_tokens("".join(pieces)) <= max_tokens:
        return pieces, "stop"
    kept: list[str] = []
    for piece in pieces:
        if estimate_tokens("".join(kept) + piece) > max_tokens:
            break
        kept.append(piece)
    return kept, "length"


def _rounds(ctx: TurnContext) -> str:
    """ "1 round" / "3 rounds" / "共3轮": the count with its noun, in the room's language."""
    if ctx.language == "zh":
        return f"{ctx.max_rounds}轮"
    return f"{ctx.max_rounds} round{'s' if ctx.max_rounds != 1 else ''}"
