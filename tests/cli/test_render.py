"""The terminal view drawn from hand-made event streams: retries, failures and warnings included."""

from __future__ import annotations

import io

from rich.console import Console

from moot.cli._render import Renderer
from moot.events import (
    AgentInfo,
    Event,
    RoomConcluded,
    RoomFailed,
    RoomStarted,
    RoomWarning,
    RoundProgress,
    RoundStarted,
    TurnCompleted,
    TurnDelta,
    TurnFailed,
    TurnKind,
    TurnRestarted,
    TurnStarted,
)
from moot.models import Usage


def draw(events: list[Event], width: int = 60) -> str:
    out = io.StringIO()
    renderer = Renderer(Console(file=out, width=width, color_system=None))
    for event in events:
        renderer.handle(event)
    renderer.close()
    return out.getvalue()


def started(language: str = "en") -> RoomStarted:
    agents = [
        AgentInfo(name="Ann", role="moderator", colour="#ff0000", model="openai:gpt-4o-mini"),
        AgentInfo(name="Bo", role="member", colour="not-a-colour", model="simulated:simulated"),
        AgentInfo(name="Cy", role="member", colour="blue", model="simulated:simulated"),
    ]
    return RoomStarted(room_id="r", task="Ship it?", protocol="board", language=language, max_rounds=1,
                       agents=agents, moderator="Ann", simulated=True)  # fmt: skip


def turn(speaker: str, text: str, kind: TurnKind = "speech") -> TurnCompleted:
    return TurnCompleted(turn_id=f"r1:{kind}:{speaker}", round=1, kind=kind, speaker=speaker, text=text,
                         usage=Usage(), finish_reason="stop", model="simulated:simulated", created_at=0)  # fmt: skip


def test_a_restarted_turn_says_its_partial_text_is_discarded() -> None:
    out = draw([
        started(),
        RoundStarted(round=1, max_rounds=1),
        TurnStarted(turn_id="r1:speech:Bo", round=1, kind="speech", speaker="Bo", model="simulated:simulated"),
        TurnDelta(turn_id="r1:speech:Bo", round=1, speaker="Bo", text="half a thou"),
        TurnRestarted(turn_id="r1:speech:Bo", round=1, speaker="Bo", attempt=2, reason="stream cut",
                      model="simulated:simulated"),
        TurnDelta(turn_id="r1:speech:Bo", round=1, speaker="Bo", text="A whole thought."),
        turn("Bo", "A whole thought."),
        TurnStarted(turn_id="r1:speech:Cy", round=1, kind="speech", speaker="Cy", model="simulated:simulated"),
        TurnFailed(turn_id="r1:speech:Cy", round=1, kind="speech", speaker="Cy", error="no key",
                   error_type="ModelUnavailable"),
        RoomWarning(code="moderator_substituted", message="Bo chairs instead"),
        RoomFailed(round=1, error="the sky fell", error_type="RunError"),
    ], width=100)  # fmt: skip
    assert "SIMULATED — Bo, Cy: offline simulated model" in out
    assert "↻ Bo: stream cut (retrying…; the partial text above is discarded)" in out
    assert "A whole thought." in out
    assert "Cy  ✗ could not speak: no key" in out
    assert "⚠ Bo chairs instead" in out
    assert "The discussion failed" in out
    assert "the sky fell" in out


def test_speakers_at_once_are_printed_whole_in_turn_order() -> None:
    out = draw([
        started(),
        RoundProgress(round=1, states={"Bo": "pending", "Cy": "pending"}, completed=0, total=2),
        TurnDelta(turn_id="r1:speech:Cy", round=1, speaker="Cy", text="Cy first "),
        TurnDelta(turn_id="r1:speech:Bo", round=1, speaker="Bo", text="Bo second"),
        turn("Cy", "Cy first to finish."),
        TurnFailed(turn_id="r1:speech:Bo", round=1, kind="speech", speaker="Bo", error="timeout",
                   error_type="TimeoutError"),
        RoundProgress(round=1, states={"Bo": "failed", "Cy": "completed"}, completed=2, total=2),
    ])  # fmt: skip
    assert "2 speakers at once" in out
    assert out.index("Bo  ✗ could not speak: timeout") < out.index("Cy first to finish.")


def test_chinese_text_wraps_without_opening_a_line_with_punctuation() -> None:
    text = "我们需要认真讨论这个问题，" * 12
    out = draw([
        started("zh"),
        TurnStarted(turn_id="r0:opening:Ann", round=0, kind="opening", speaker="Ann", model="openai:gpt-4o-mini"),
        *(TurnDelta(turn_id="r0:opening:Ann", round=0, speaker="Ann", text=text[i : i + 3])
          for i in range(0, len(text), 3)),
        turn("Ann", text, "opening"),
        RoomConcluded(round=1, speaker="Ann", summary="总结。", decision_advice="", consensus_points=[],
                      dissent_points=["赵敏反对"], fallback=True),
    ], width=40)  # fmt: skip
    lines = out.splitlines()
    assert all(not line.strip().startswith("，") for line in lines)
    assert "".join(line.strip() for line in lines if line.startswith("  ") and "，" in line) == text
    for label in ("开场", "结论", "决策建议", "共识", "分歧", "（无）", "• 赵敏反对", "兜底结论"):
        assert label in out


def test_hardening_13_text_that_streams_while_a_person_types_waits_below_their_line() -> None:
    from moot.cli._drive import RichSink

    out = io.StringIO()
    sink = RichSink(Console(file=out, width=60, color_system=None, force_terminal=True), interactive=True)
    sink.handle(started())
    sink.handle(RoundStarted(round=1, max_rounds=1))
    sink.handle(
        TurnStarted(turn_id="r1:speech:Bo", round=1, kind="speech", speaker="Bo", model="simulated:simulated")
    )
    sink.handle(TurnDelta(turn_id="r1:speech:Bo", round=1, speaker="Bo", text="first words "))
    before = out.getvalue()
    assert sink.keys("weigh") == []
    sink.handle(TurnDelta(turn_id="r1:speech:Bo", round=1, speaker="Bo", text="LATER WORDS "))
    while_typing = out.getvalue()[len(before) :]
    assert "LATER" not in while_typing  # held while the line is open
    assert "✋ step in › weigh" in while_typing
    # a backspace edits the line, an arrow key is no text, Enter hands it over
    assert sink.keys("\x7fht the cost\x1b[D\r") == ["weight the cost"]
    after = out.getvalue()[len(before) :]
    closed = after.rindex("\r\x1b[2K")  # the typed line is erased...
    assert after.index("LATER WORDS") > closed  # ...and what waited is drawn where the stream stood
    assert "\x1b[1A" in after[closed:]
    sink.close()
