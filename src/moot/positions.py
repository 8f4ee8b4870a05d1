"""Where each member stands: structured positions, read from a chair's summary, and how much they agree.

A chair's round summary ends with a JSON block of positions, one per member:
`{"positions": [{"agent": "Alice", "stance": "support", "confidence": 0.8, "changed": false, "reason": "..."}]}`.
The conclusion carries the same list. Positions asked on their own, apart from the summary's prose, come as an
object keyed by member (`{"positions": {"Alice": {"stance": ...}}}`), a shape a grammar can hold to. The consensus score of a round is the confidence-weighted share of the
largest stance: each member counts for its confidence in the stance it holds, `undecided` counts for none, and
the score is the largest stance's weight divided by the number of members who gave a position (0 to 1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Stance = Literal["support", "oppose", "conditional", "undecided"]
STANCES: tuple[Stance, ...] = ("support", "oppose", "conditional", "undecided")


class Position(BaseModel):
    """One member's stance at the end of a round or of the discussion."""

    model_config = ConfigDict(extra="ignore")

    agent: str = Field(min_length=1)
    stance: Stance
    confidence: float = Field(ge=0, le=1)
    changed: bool = False
    reason: str = ""


POSITION_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["agent", "stance", "confidence", "changed", "reason"],
    "properties": {
        "agent": {"type": "string"},
        "stance": {"enum": list(STANCES)},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "changed": {"type": "boolean"},
        "reason": {"type": "string"},
    },
}
POSITIONS_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["positions"],
    "properties": {"positions": {"type": "array", "items": POSITION_SCHEMA}},
}


def positions_response_schema(members: Sequence[str]) -> dict[str, object]:
    """What a server that enforces a schema is asked for when positions are asked on their own: an object
    keyed by member (each member exactly once, as a grammar can hold a model to), reasons kept short."""
    position = {
        "type": "object",
        "additionalProperties": False,
        "required": ["stance", "confidence", "changed", "reason"],
        "properties": {
            "stance": {"type": "string", "enum": list(STANCES)},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "changed": {"type": "boolean"},
            "reason": {"type": "string", "maxLength": 200},
        },
    }
    by_member = {
        "type": "object",
        "additionalProperties": False,
        "required": list(members),
        "properties": dict.fromkeys(members, position),
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["positions"],
        "properties": {"positions": by_member},
    }


_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


class PositionsInvalid(ValueError):
    """The reply holds no valid positions; the message is what the model is told when asked again."""


def parse_positions(text: str, members: Sequence[str]) -> list[Position]:
    """The positions block of a summary: the last JSON object holding `positions`, one per member.

    Names are matched without regard to case; a position for someone who is not a member is an error, and
    so is a member left out.
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    start = text.rfind('{"positions"')
    if start == -1:
        start = text.rfind("{")
    end = text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    if text.lstrip().startswith("{"):
        candidates.append(text)  # tried first: an answer that is all JSON (positions asked on their own)
    error = "the reply holds no JSON object with positions"
    for candidate in reversed(candidates):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError as exc:
            error = f"the positions are not valid JSON: {exc.msg}"
            continue
        listed = data.get("positions") if isinstance(data, dict) else None
        if isinstance(listed, dict):  # keyed by member, as positions asked on their own are
            listed = [{**p, "agent": name} if isinstance(p, dict) else p for name, p in listed.items()]
        if not isinstance(listed, list):
            error = 'the JSON object needs a "positions" list'
            continue
        try:
            positions = [Position.model_validate(p) for p in listed]
        except ValidationError as exc:
            error = "; ".join(
                f"positions.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            continue
        return _match(positions, members)
    raise PositionsInvalid(error)


def strip_positions(text: str) -> str:
    """The summary's prose: the text without its positions block (kept apart, as data)."""
    cut = [m.start() for m in _FENCE.finditer(text) if '"positions"' in m.group(1)]
    if not cut:
        start = text.rfind('{"positions"')
        cut = [start] if start != -1 else []
    return text[: cut[-1]].rstrip() if cut and text[: cut[-1]].strip() else text


def _match(positions: list[Position], members: Sequence[str]) -> list[Position]:
    by_name = {m.casefold(): m for m in members}
    found: dict[str, Position] = {}
    for position in positions:
        name = by_name.get(position.agent.strip().casefold())
        if name is None:
            raise PositionsInvalid(
                f"'{position.agent}' is not a member; the members are {', '.join(members)}"
            )
        found[name] = position.model_copy(update={"agent": name})
    missing = [m for m in members if m not in found]
    if missing:
        raise PositionsInvalid(f"no position for {', '.join(missing)}: give one for every member")
    return [found[m] for m in members]


def consensus_score(positions: Sequence[Position]) -> float:
    """The confidence-weighted share of the largest stance (undecided never leads), from 0 to 1."""
    if not positions:
        return 0.0
    weights = {stance: 0.0 for stance in STANCES if stance != "undecided"}
    for position in positions:
        if position.stance != "undecided":
            weights[position.stance] += position.confidence
    return round(max(weights.values()) / len(positions), 4)


def leading_stance(positions: Sequence[Position]) -> Stance:
    """The stance with the most weight; undecided when nobody took one."""
    weights: dict[Stance, float] = {}
    for position in positions:
        if position.stance != "undecided":
            weights[position.stance] = weights.get(position.stance, 0.0) + position.confidence
    return max(weights, key=lambda s: weights[s]) if weights else "undecided"
