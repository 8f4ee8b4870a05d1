"""What the terminal view says, in the room's language (B15)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Labels:
    simulated_all: str
    simulated_some: str
    task: str
    protocol: str
    protocols: dict[str, str]
    rounds_format: str
    one_round: str
    model: str
    moderator: str
    member: str
    inactive: str
    opening: str
    round: str
    round_done: str
    summary_of: str
    together: str
    done: str
    states: dict[str, str]
    retrying: str
    discarded: str
    failed: str
    you: str
    stepped_in: str
    stop: str
    concluding: str
    compressed: str
    conclusion: str
    fallback: str
    summary: str
    advice: str
    consensus: str
    dissent: str
    none: str
    finished: str
    reasons: dict[str, str]
    usage: str
    agent: str
    input: str
    output: str
    total: str
    cost: str
    positions: str
    stances: dict[str, str]
    consensus_score: str
    ranked: str
    selected: str
    estimates: str
    estimated: str
    paused: str
    stopped: str
    save_hint: str
    room_failed: str
    interactive: str
    typing: str

    def rounds(self, count: int) -> str:
        return self.one_round if count == 1 else self.rounds_format.format(n=count)

    def pause(self, round_: int, reason: str, *, saved: bool, save_hint: bool = False) -> str:
        """What a pause means here: a stored room can be resumed, an unsaved one is only stopped."""
        if saved:
            return self.paused.format(n=round_, reason=reason)
        line = self.stopped.format(n=round_, reason=reason)
        return f"{line} {self.save_hint}" if save_hint else line


EN = Labels(
    simulated_all="SIMULATED — offline simulated model, no real model was called",
    simulated_some="SIMULATED — {names}: offline simulated model",
    task="Task",
    protocol="Protocol",
    protocols={"board": "board meeting", "sequential": "sequential", "parallel": "parallel"},
    rounds_format="{n} rounds",
    one_round="1 round",
    model="Model",
    moderator="moderator",
    member="member",
    inactive="inactive",
    opening="Opening",
    round="Round {n} of {m}",
    round_done="end of round {n}",
    summary_of="round {n} summary",
    together="{n} speakers at once",
    done="{done}/{total} done",
    states={"pending": "waiting", "streaming": "speaking", "completed": "done", "failed": "failed"},
    retrying="retrying…",
    discarded="retrying…; the partial text above is discarded",
    failed="could not speak",
    you="you",
    stepped_in="stepped in",
    stop="asked to stop; the discussion ends",
    concluding="{name} is writing the conclusion…",
    compressed="history compressed: {entries} entries, {before} → {after} tokens",
    conclusion="Conclusion",
    fallback="fallback: made without a valid model answer",
    summary="Summary",
    advice="Decision advice",
    consensus="Consensus",
    dissent="Dissent",
    none="(none)",
    finished="Finished after {rounds}: {reason}.",
    reasons={
        "max_rounds": "every round was held",
        "stop_command": "stopped on request",
        "token_budget": "the token budget was spent",
        "all_failed": "every member failed",
        "no_members": "no member could speak",
        "consensus": "the members reached consensus",
        "cost_budget": "the cost budget was reached",
        "time_budget": "the time budget was reached",
    },
    usage="Token usage",
    agent="Agent",
    input="Input",
    output="Output",
    total="Total",
    cost="Cost (USD)",
    positions="Positions",
    stances={
        "support": "supports",
        "oppose": "opposes",
        "conditional": "supports on conditions",
        "undecided": "undecided",
    },
    consensus_score="Round {n}: consensus {score:.0%} ({leading})",
    ranked="Peer ranking (mean rank, first places): {lines}",
    selected="{speaker} speaks next ({by}): {reason}",
    estimates="Round {n} estimates: median {median:g}, from {low:g} to {high:g}",
    estimated="~ estimated: the model reported no usage",
    paused="Discussion paused at round {n} ({reason}).",
    stopped="Discussion stopped at round {n} ({reason}); it was not saved, so it cannot be resumed.",
    save_hint="Run it with --save to be able to resume it later.",
    room_failed="The discussion failed",
    interactive="Type a line and press Enter to step in; /stop ends the discussion with a conclusion.",
    typing="step in",
)

ZH = Labels(
    simulated_all="模拟 — 离线模拟模型，未调用任何真实模型",
    simulated_some="模拟 — {names}：离线模拟模型",
    task="议题",
    protocol="形式",
    protocols={"board": "私董会", "sequential": "轮流发言", "parallel": "同时发言"},
    rounds_format="{n} 轮",
    one_round="1 轮",
    model="模型",
    moderator="主持人",
    member="成员",
    inactive="未出席",
    opening="开场",
    round="第 {n} 轮（共 {m} 轮）",
    round_done="第 {n} 轮结束",
    summary_of="第 {n} 轮总结",
    together="{n} 人同时发言",
    done="已完成 {done}/{total}",
    states={"pending": "等待中", "streaming": "发言中", "completed": "已完成", "failed": "失败"},
    retrying="重试中…",
    discarded="重试中…；上面的部分内容作废",
    failed="未能发言",
    you="你",
    stepped_in="插话",
    stop="要求结束讨论",
    concluding="{name} 正在撰写结论…",
    compressed="历史已压缩：{entries} 条，{before} → {after} tokens",
    conclusion="结论",
    fallback="兜底结论：模型未给出有效回答",
    summary="总结",
    advice="决策建议",
    consensus="共识",
    dissent="分歧",
    none="（无）",
    finished="讨论结束，共 {rounds}：{reason}。",
    reasons={
        "max_rounds": "已完成全部轮次",
        "stop_command": "应要求提前结束",
        "token_budget": "已用完 token 预算",
        "all_failed": "所有成员发言失败",
        "no_members": "没有成员可以发言",
        "consensus": "成员已达成共识",
        "cost_budget": "已达到费用预算",
        "time_budget": "已达到时间预算",
    },
    usage="Token 用量",
    agent="成员",
    input="输入",
    output="输出",
    total="合计",
    cost="费用（美元）",
    positions="各方立场",
    stances={"support": "支持", "oppose": "反对", "conditional": "有条件支持", "undecided": "未表态"},
    consensus_score="第 {n} 轮：共识度 {score:.0%}（{leading}）",
    ranked="互评排名（平均名次，第一名次数）：{lines}",
    selected="下一位发言：{speaker}（{by}）：{reason}",
    estimates="第 {n} 轮估计：中位数 {median:g}，范围 {low:g} 到 {high:g}",
    estimated="~ 为估算值：模型未报告用量",
    paused="讨论已在第 {n} 轮暂停（{reason}）。",
    stopped="讨论已在第 {n} 轮停止（{reason}）；本次讨论未保存，无法继续。",
    save_hint="加上 --save 运行，之后即可继续讨论。",
    room_failed="讨论失败",
    interactive="输入一行文字并回车即可插话；输入 /stop 或“停止讨论”结束讨论并生成结论。",
    typing="插话",
)


def labels(language: str) -> Labels:
    return ZH if language == "zh" else EN
