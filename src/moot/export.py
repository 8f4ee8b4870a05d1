"""A discussion written out: Markdown for people, JSON for programs. One place, for the CLI and the service."""

from __future__ import annotations

import json
from typing import Any

from moot.conclusion import Conclusion
from moot.models import Usage
from moot.spec import RoomSpec
from moot.transcript import Entry, Transcript

FORMATS = ("md", "json")

_HEADINGS = {
    "en": {
        "task": "Task", "round": "Round {n}", "opening": "Opening", "conclusion": "Conclusion",
        "summary": "Summary", "advice": "Decision advice", "consensus": "Consensus", "dissent": "Dissent",
        "usage": "Token usage", "positions": "Positions", "intervention": "user (stepped in)", "failed": "could not speak",
        "round_summary": "summary of the round", "fallback": "(made without a valid model answer)",
    },
    "zh": {
        "task": "议题", "round": "第{n}轮", "opening": "开场", "conclusion": "结论",
        "summary": "总结", "advice": "决策建议", "consensus": "共识", "dissent": "分歧",
        "usage": "Token 用量", "positions": "各方立场", "intervention": "用户（插话）", "failed": "未能发言",
        "round_summary": "本轮小结", "fallback": "（未得到有效的模型回答，由系统生成）",
    },
}  # fmt: skip


def _usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "estimated": usage.estimated,
        "cost_usd": usage.cost_usd,
    }


def to_json(room_id: str, spec: RoomSpec, transcript: Transcript, *, status: str) -> str:
    """Entries with round, kind, speaker, text and token usage, and the conclusion's fields."""
    entry = transcript.conclusion
    conclusion: Conclusion | None = entry.conclusion if entry else None
    document = {
        "room_id": room_id,
        "task": spec.task,
        "title": spec.title,
        "protocol": spec.protocol,
        "language": spec.language,
        "max_rounds": spec.max_rounds,
        "status": status,
        "rounds_run": transcript.last_round,
        "entries": [
            {
                "round": e.round,
                "kind": e.kind,
                "speaker": e.speaker,
                "text": e.text,
                "failed": e.failed,
                "error": e.error,
                "usage": _usage(e.usage),
                "model": e.model,
                "created_at": e.created_at,
            }
            for e in transcript
        ],
        "conclusion": (conclusion.model_dump() | {"fallback": entry.fallback})
        if conclusion and entry
        else None,
        "conclusions": [
            (e.conclusion.model_dump() | {"number": n, "round": e.round, "fallback": e.fallback})
            for n, e in enumerate(transcript.conclusions(), 1)
            if e.conclusion is not None
        ],
        "usage": _usage(transcript.usage()),
        "usage_by_agent": {name: _usage(u) for name, u in transcript.usage_by_speaker().items()},
        "cost_usd": transcript.cost_usd(),
    }
    return json.dumps(document, ensure_ascii=False, indent=2)


def to_markdown(room_id: str, spec: RoomSpec, transcript: Transcript, *, status: str) -> str:
    """The discussion as a document a person reads: rounds, speakers, summaries, then the conclusion."""
    h = _HEADINGS[spec.language]
    lines = [f"# {spec.title or spec.task.splitlines()[0][:100]}", ""]
    lines += [f"**{h['task']}:** {spec.task}", "", f"`{room_id}` · {spec.protocol} · {status}", ""]
    current = -1
    earlier = transcript.conclusions()[:-1]  # a follow-up question went on past these: kept, numbered
    for entry in transcript:
        if entry.kind == "conclusion" and entry in earlier and entry.conclusion is not None:
            lines += ["", f"## {h['conclusion']} {earlier.index(entry) + 1}", ""]
            lines += _conclusion_lines(entry.conclusion, entry.fallback, h)
            continue
        if entry.kind in ("task", "conclusion"):
            continue
        if entry.round != current and entry.kind != "intervention":
            current = entry.round
            lines += ["", f"## {h['opening'] if current == 0 else h['round'].format(n=current)}", ""]
        lines += _entry_lines(entry, spec.language)
    conclusion_entry = transcript.conclusion
    if conclusion_entry is not None and conclusion_entry.conclusion is not None:
        numbered = f" {len(earlier) + 1}" if earlier else ""
        lines += ["", f"## {h['conclusion']}{numbered}", ""]
        lines += _conclusion_lines(conclusion_entry.conclusion, conclusion_entry.fallback, h)
    usage = transcript.usage()
    cost = f" · ${usage.cost_usd:.4f}" if usage.cost_usd else ""
    lines += ["", f"_{h['usage']}: {usage.total_tokens}{' (~)' if usage.estimated else ''}{cost}_", ""]
    return "\n".join(lines)


def _conclusion_lines(c: Conclusion, fallback: bool, h: dict[str, str]) -> list[str]:
    lines = [f"_{h['fallback']}_", ""] if fallback else []
    lines += [f"**{h['summary']}:** {c.summary}", "", f"**{h['advice']}:** {c.decision_advice}", ""]
    for title, points in ((h["consensus"], c.consensus_points), (h["dissent"], c.dissent_points)):
        if points:
            lines += [f"**{title}:**", "", *(f"- {p}" for p in points), ""]
    if c.positions:
        lines += [f"**{h['positions']}:**", ""]
        lines += [
            f"- {p.agent}: {p.stance} ({p.confidence:.2f}){' — ' + p.reason if p.reason else ''}"
            for p in c.positions
        ]
        lines += [""]
    return lines


def _entry_lines(entry: Entry, language: str) -> list[str]:
    h = _HEADINGS[language]
    if entry.kind == "intervention":
        return [f"> **{h['intervention']}:** {entry.text}", ""]
    if entry.failed:
        return [f"**{entry.speaker}** — _{h['failed']}: {entry.error}_", ""]
    label = f" ({h['round_summary']})" if entry.kind == "summary" else ""
    return [f"**{entry.speaker}**{label}", "", entry.text, ""]


def export(room_id: str, spec: RoomSpec, transcript: Transcript, *, status: str, fmt: str) -> str:
    if fmt == "md":
        return to_markdown(room_id, spec, transcript, status=status)
    if fmt == "json":
        return to_json(room_id, spec, transcript, status=status)
    raise ValueError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "export", "to_json", "to_markdown"]
