"""Exports: Markdown for people, JSON for programs, from the same transcript."""

from __future__ import annotations

import json

import pytest

from moot.engine import Run
from moot.export import export

from .helpers import room


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_json_export_holds_entries_usage_and_the_conclusion_B16(language: str) -> None:
    spec = room("board", names=("Alice", "Bob"), moderator="Chair", rounds=1, language=language)
    run = Run(spec, room_id="r42")
    run.intervene("Mind the budget")
    await run.wait()
    document = json.loads(export("r42", spec, run.transcript, status="completed", fmt="json"))
    assert document["room_id"] == "r42" and document["rounds_run"] == 1
    assert set(document["conclusion"]) >= {"summary", "decision_advice", "consensus_points", "dissent_points"}
    kinds = [(e["round"], e["kind"], e["speaker"]) for e in document["entries"]]
    assert kinds[0] == (0, "task", "user") and (0, "intervention", "user") in kinds
    assert (1, "summary", "Chair") in kinds and kinds[-1] == (1, "conclusion", "Chair")
    speech = next(e for e in document["entries"] if e["kind"] == "speech")
    assert speech["text"] and speech["usage"]["total_tokens"] > 0
    assert document["usage"]["total_tokens"] == sum(
        u["total_tokens"] for u in document["usage_by_agent"].values()
    )


async def test_markdown_export_reads_as_a_document_B15() -> None:
    spec = room("board", names=("Alice", "Bob"), moderator="Chair", rounds=1, language="zh")
    run = Run(spec, room_id="r7")
    await run.wait()
    text = export("r7", spec, run.transcript, status="completed", fmt="md")
    assert text.startswith("# Should we open-source")
    for heading in ("## 开场", "## 第1轮", "## 结论", "**决策建议:**", "**共识:**", "**分歧:**"):
        assert heading in text
    assert "**Alice**" in text and "**Chair** (本轮小结)" in text


def test_an_unknown_format_is_refused() -> None:
    spec = room("sequential", names=("Alice",), rounds=1)
    with pytest.raises(ValueError, match="choose one of md, json"):
        export("x", spec, Run(spec).transcript, status="idle", fmt="pdf")
