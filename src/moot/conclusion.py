"""The structured end of a discussion (B11, B16), and reading it out of a model's reply."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moot.positions import POSITION_SCHEMA, Position


class Conclusion(BaseModel):
    """What a person can act on: the four fields of the board seed's result."""

    model_config = ConfigDict(extra="ignore")

    summary: str = Field(min_length=1)
    decision_advice: str = ""
    consensus_points: list[str] = Field(default_factory=list)
    dissent_points: list[str] = Field(default_factory=list)
    positions: list[Position] = Field(default_factory=list)


CONCLUSION_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["summary", "decision_advice", "consensus_points", "dissent_points"],
    "properties": {
        "summary": {"type": "string"},
        "decision_advice": {"type": "string"},
        "consensus_points": {"type": "array", "items": {"type": "string"}},
        "dissent_points": {"type": "array", "items": {"type": "string"}},
        "positions": {"type": "array", "items": POSITION_SCHEMA},
    },
}

# What servers that enforce a schema (by grammar: llama.cpp, vLLM; OpenAI's structured outputs) are asked
# for: the same object, with bounds on each text so that even a small model that rambles ends the object
# well inside the answer's token limit, instead of being cut off mid-string.
CONCLUSION_RESPONSE_SCHEMA: dict[str, object] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["summary", "decision_advice", "consensus_points", "dissent_points"],
    "properties": {
        "summary": {"type": "string", "minLength": 1, "maxLength": 600},
        "decision_advice": {"type": "string", "maxLength": 400},
        "consensus_points": {
            "type": "array",
            "maxItems": 4,
            "items": {"type": "string", "maxLength": 160},
        },
        "dissent_points": {"type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 160}},
    },
}

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class ConclusionInvalid(ValueError):
    """The reply is not a conclusion; the message is what the model is told when asked again."""


def parse_conclusion(text: str) -> Conclusion:
    """Reads a JSON conclusion, tolerating code fences and prose around the object."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    candidates.append(text)
    last_error = "the reply holds no JSON object"
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError as exc:
            last_error = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            continue
        if not isinstance(data, dict):
            last_error = "the JSON is not an object"
            continue
        for key in ("consensus_points", "dissent_points"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        try:
            return Conclusion.model_validate(data)
        except ValidationError as exc:
            last_error = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors(include_url=False)
            )
    raise ConclusionInvalid(last_error)
